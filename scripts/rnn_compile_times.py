"""Print the compile-time table of docs/rnn.md: each recurrent cell unrolled over T steps (embedding 32 →
cell 64 → dense 65, batch 32), timed stage by stage in a fresh process, as a user's first compile is.

    python scripts/rnn_compile_times.py
"""
from __future__ import annotations

import subprocess
import sys
import time

SOURCE = """
import nn
import rnn
input t : i64[B, {steps}]
input y : i64[B, {steps}]
emb = nn.embedding(65, 32)
cell = rnn.{cell}(32, 64)
run = rnn.unroll(cell, emb(t), cell.zero_state(t))
loss = cross_entropy(nn.dense(64, 65)(run[0]), y)
"""
ROWS = [("rnn_cell", 100), ("gru_cell", 100), ("lstm_cell", 25), ("lstm_cell", 50), ("lstm_cell", 100)]


def measure(cell: str, steps: int) -> str:
    """One row, measured in this process: elaborate, differentiate + simplify, schedule, nodes."""
    import gradlang
    from gradlang.stages import training_schedule
    start = time.perf_counter()
    program = gradlang.compile(SOURCE.format(cell=cell, steps=steps))
    elaborated = time.perf_counter()
    nodes = len(program.gradient_graph())
    differentiated = time.perf_counter()
    training_schedule(program, 32)
    scheduled = time.perf_counter()
    return (f"| `{cell}`, T = {steps} | {elaborated - start:.2f} s | {differentiated - elaborated:.2f} s | "
            f"{scheduled - differentiated:.2f} s | {nodes:,} |")


def main() -> None:
    print("| cell | elaborate | differentiate + simplify | schedule | gradient graph nodes |")
    print("| --- | --- | --- | --- | --- |")
    for cell, steps in ROWS:
        row = subprocess.run([sys.executable, __file__, cell, str(steps)], capture_output=True, text=True, check=True)
        print(row.stdout.strip())


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(measure(sys.argv[1], int(sys.argv[2])))
    else:
        main()
