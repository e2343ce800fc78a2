"""Data-parallel throughput on the MNIST MLP (examples/mnist_mlp.grad): examples per second at K ranks.

    python -m benchmarks.distributed [--ranks 1 2] [--steps 200] [--warmup 20] [--rounds 3] [--json PATH]

Configurations: `alone` (one process, no MPI: the baseline) and `mpi×K` for each K in --ranks, each
started as `mpiexec -n K python -m benchmarks.distributed --worker …`. Every rank loads MNIST and
compiles the example (float32, the file's global batch of 128), takes `warmup` steps, then times
`steps` steps between two synchronisations; rank 0 reports examples per second and the share of the
time spent in the gradient all-reduce (waiting for the slower rank included) and the CPU time rank 0
used per step (on a machine shared with other work, wall time measures the neighbours too; CPU time
shows what a rank costs). Rounds alternate the
configurations, so drift in the machine's load hits them all; the medians are reported.

BLAS is held to one thread per rank (OPENBLAS_NUM_THREADS=1 …), so that K ranks use K cores and the
baseline uses one. MNIST is read from $GRADLANG_DATA, else ../shared/data beside the clone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "mnist_mlp.grad"
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def worker(steps: int, warmup: int, alone: bool) -> dict:
    """The timed loop, in one rank (or alone): the global batches `gradlang run` would take, in order."""
    import numpy as np

    import gradlang
    from gradlang.runtime.data import batches
    from gradlang.runtime.distributed import DataParallel

    class TimedDataParallel(DataParallel):
        """Counts the seconds spent in all-reduces."""
        reducing = 0.0

        def allreduce(self, buffer, op, what):
            start = time.perf_counter()
            try:
                return super().allreduce(buffer, op, what)
            finally:
                self.reducing += time.perf_counter() - start

    program = gradlang.compile(EXAMPLE)
    parallel = None if alone else TimedDataParallel(timeout=600)
    program.distributed = parallel
    data = program.load_data()
    names = [n for n in program.input_names if n in data]
    n, size = len(data[names[0]]), program.plan["batch"]

    def global_batches():
        while True:
            for idx in batches(n, size, program.rng):
                yield {k: data[k][idx] for k in names}

    feeds = global_batches()
    for _ in range(warmup):
        program.step(next(feeds))
    sync = (lambda: parallel.allreduce(np.zeros(1), parallel._mpi.SUM, "barrier")) if parallel else (lambda: None)
    sync()
    reduced_before = parallel.reducing if parallel else 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = program.step(next(feeds))
    sync()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    reducing = (parallel.reducing - reduced_before) if parallel else 0.0
    return {"ranks": parallel.size if parallel else 1, "rank": parallel.rank if parallel else 0,
            "seconds": seconds, "examples_per_s": steps * size / seconds,
            "allreduce_share": reducing / seconds, "cpu_ms_per_step": 1e3 * cpu / steps, "loss": float(loss)}


def run_config(name: str, ranks: int, args, env: dict) -> dict:
    from gradlang.runtime.distributed import find_mpiexec
    command = [sys.executable, "-m", "benchmarks.distributed", "--worker", "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
    if name == "alone":
        command.append("--alone")
    else:
        mpiexec = find_mpiexec()
        if mpiexec is None:
            raise SystemExit("mpiexec not found: pip install -e '.[mpi]'")
        command = [mpiexec, "-n", str(ranks), *command]
    done = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="K values to run under mpiexec")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation, caches)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration, alternated")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--alone", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(args.steps, args.warmup, args.alone)
        if result["rank"] == 0:
            print(json.dumps(result), flush=True)
        return 0

    env = {**os.environ, **ONE_THREAD}
    shared = HERE.parent.parent / "shared" / "data"
    if "GRADLANG_DATA" not in env and shared.is_dir():
        env["GRADLANG_DATA"] = str(shared)
    configs = [("alone", 1)] + [(f"mpi×{k}", k) for k in args.ranks]
    samples: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for round_ in range(args.rounds):
        for name, ranks in configs:
            result = run_config(name, ranks, args, env)
            samples[name].append(result)
            print(f"round {round_ + 1}: {name:<6} {result['examples_per_s']:9,.0f} examples/s  "
                  f"(all-reduce {result['allreduce_share']:.0%} of the time, "
                  f"{result['cpu_ms_per_step']:.1f} ms CPU per step)", file=sys.stderr, flush=True)
    base = statistics.median(r["examples_per_s"] for r in samples["alone"])
    summary = {}
    print(f"MNIST MLP (784-512-256-10), global batch 128, {args.steps} steps, float32, 1 BLAS thread per rank")
    print(f"{'configuration':<14}{'examples/s':>12}{'vs alone':>10}{'all-reduce':>12}{'CPU ms/step':>13}")
    for name, ranks in configs:
        rate = statistics.median(r["examples_per_s"] for r in samples[name])
        share = statistics.median(r["allreduce_share"] for r in samples[name])
        cpu = statistics.median(r["cpu_ms_per_step"] for r in samples[name])
        summary[name] = {"ranks": ranks, "examples_per_s": rate, "speedup": rate / base, "allreduce_share": share,
                         "cpu_ms_per_step": cpu, "runs": [r["examples_per_s"] for r in samples[name]]}
        print(f"{name:<14}{rate:>12,.0f}{rate / base:>9.2f}×{share:>11.0%}{cpu:>13.1f}")
    if args.json:
        machine = {"python": platform.python_version(), "platform": platform.platform(),
                   "cpus": os.cpu_count(), "load_average": os.getloadavg()}
        args.json.write_text(json.dumps({"machine": machine, "steps": args.steps, "results": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
