"""Print the compile-time table of docs/rnn.md: each recurrent cell unrolled over T steps (embedding 32 →
cell 64 → dense 65, batch 32), timed stage by stage in a fresh process, as a user's first compile is,
and then its training step (median of 10, batch 32).

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
    """One row, measured in this process: elaborate, differentiate + simplify, schedule, nodes, step."""
    import statistics

    import numpy as np

    import gradlang
    from gradlang.stages import training_schedule
    start = time.perf_counter()
    program = gradlang.compile(SOURCE.format(cell=cell, steps=steps))
    elaborated = time.perf_counter()
    nodes = len(program.gradient_graph())
    differentiated = time.perf_counter()
    training_schedule(program, 32)
    scheduled = time.perf_counter()
    rng = np.random.default_rng(0)
    feed = {"t": rng.integers(0, 65, (32, steps)), "y": rng.integers(0, 65, (32, steps))}
    step_times = []
    for _ in range(13):
        begin = time.perf_counter()
        program.step(feed)
        step_times.append(time.perf_counter() - begin)
    step = statistics.median(step_times[3:])
    return (f"| `{cell}`, T = {steps} | {elaborated - start:.2f} s | {differentiated - elaborated:.2f} s | "
            f"{scheduled - differentiated:.2f} s | {nodes:,} | {step * 1e3:.0f} ms |")


def main() -> None:
    print("| cell | elaborate | differentiate + simplify | schedule | gradient graph nodes | training step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for cell, steps in ROWS:
        row = subprocess.run([sys.executable, __file__, cell, str(steps)], capture_output=True, text=True, check=True)
        print(row.stdout.strip())


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(measure(sys.argv[1], int(sys.argv[2])))
    else:
        main()
