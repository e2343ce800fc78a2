"""Peak memory of an MNIST MLP training run against what the program needs to hold.

    python -m benchmarks.memory [--program PATH] [--steps N]

Run in a fresh process (the parent benchmark starts one), so that the peak resident set size
(`VmHWM` in /proc/self/status) is this run's alone. Prints one JSON object: the peak RSS, the RSS of
the interpreter with NumPy and gradlang imported (not the program's memory), and the bound the
program needs — data + params + optimizer state + one batch's activations, each computed from the
arrays' sizes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAM = HERE.parent / "examples" / "mnist_mlp.grad"


def rss_bytes(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak so far), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line")


def measure(program: Path, steps: int) -> dict:
    import numpy as np

    import gradlang
    from gradlang.lowering.cost import training_step_cost
    from gradlang.runtime.train import Reporter

    baseline = rss_bytes("VmRSS")                   # Python + NumPy + gradlang, before the program exists

    class PeakAtLastStep(Reporter):
        """Records the peak when the training loop ends, before the run's closing evaluation."""

        loop_peak = 0

        def step(self, done, total, loss, seconds):
            if done == total:
                self.loop_peak = rss_bytes("VmHWM")

    prog = gradlang.compile(program)
    train = prog.load_data()
    reporter = PeakAtLastStep()
    result = prog.train(data=train, steps=steps, reporter=reporter)   # also evaluates the plan's test set
    peak = rss_bytes("VmHWM")

    batch = prog.plan.get("batch") or len(next(iter(train.values())))   # no batch setting: full batch
    test = prog.load_data(setting="test") if "test" in prog.plan else {}
    cost = training_step_cost(prog, batch)
    sizes = {
        "data": sum(np.asarray(a).nbytes for a in list(train.values()) + list(test.values())),
        "params": sum(p.nbytes for p in prog.params.values()),
        "optimizer_state": sum(np.asarray(a).nbytes for a in prog.optimizer_state().values()),
        # the step's live intermediate buffers at their peak, plus the batch fed to it
        "activations": cost.backward.peak_bytes + cost.input_bytes,
    }
    shown = program.resolve().relative_to(HERE.parent) if program.resolve().is_relative_to(HERE.parent) else program
    return {"program": str(shown), "steps": result.steps, "batch": batch, "peak_rss": peak,
            "loop_peak_rss": reporter.loop_peak, "baseline_rss": baseline, "bound": sum(sizes.values()),
            "bound_parts": sizes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--program", type=Path, default=PROGRAM)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.program, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
