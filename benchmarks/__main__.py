"""Benchmarks: a compiled gradlang step against hand-written NumPy doing exactly the same computation.

    python -m benchmarks [--rounds N] [--json PATH] [--only NAME ...]

Each case alternates the two sides (A B A B …) after a warm-up, so drift in the machine's speed
hits both; it reports the median time per step of each side, their ratio and the spread (the
interquartile range as a fraction of the median). References are checked to give the same loss and
gradients as gradlang before anything is timed.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import gradlang

from .references import LinRegReference, MLPReference

HERE = Path(__file__).resolve().parent


def per_step(fn, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def interleaved(sides: dict, rounds: int, steps: int, warmup: int = 3) -> dict:
    for fn in sides.values():
        per_step(fn, warmup * steps)
    samples = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            samples[name].append(per_step(fn, steps))
    out = {}
    for name, times in samples.items():
        q = statistics.quantiles(times, n=4)
        out[name] = {"median_s": statistics.median(times), "spread": (q[2] - q[0]) / statistics.median(times)}
    return out


def check_same(prog, feed, reference, params_order) -> None:
    loss, grads = reference.loss_and_grads(feed["x"], feed["y"])
    assert abs(prog.loss(feed) - loss) <= 1e-4 * max(1.0, abs(loss)), (prog.loss(feed), loss)
    ours = prog.gradients(feed)
    for name in params_order:
        np.testing.assert_allclose(ours[name], grads[name], rtol=2e-3, atol=1e-5, err_msg=name)


def case_mlp(rounds: int) -> dict:
    prog = gradlang.compile(HERE / "mlp.grad")
    rng = np.random.default_rng(0)
    feed = {"x": rng.random((128, 784), dtype=np.float32), "y": rng.integers(0, 10, 128)}
    reference = MLPReference(prog.params, 128)
    check_same(prog, feed, reference, list(prog.params))
    x, y = feed["x"], feed["y"]
    p = reference.p
    z1, h2, d3 = x @ p["W1"], np.ones((128, 64), np.float32), np.ones((128, 10), np.float32)
    dh1, dh2 = np.ones((128, 128), np.float32), np.ones((128, 64), np.float32)

    def gemms():   # the eight matrix products of one step: the BLAS floor
        x @ p["W1"], z1 @ p["W2"], h2 @ p["W3"]
        h2.T @ d3, d3 @ p["W3"].T, z1.T @ dh2, dh2 @ p["W2"].T, x.T @ dh1
    result = interleaved({"gradlang": lambda: prog.step(feed), "numpy": lambda: reference.step(x, y),
                          "blas_floor": gemms}, rounds, steps=50)
    return result


def case_linreg(rounds: int) -> dict:
    prog = gradlang.compile(HERE / "linreg.grad")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 1000).astype(np.float32)
    feed = {"x": x, "y": (3.0 * x + 2.0 + rng.normal(0, 0.1, 1000)).astype(np.float32)}
    reference = LinRegReference(prog.params, 1000)
    check_same(prog, feed, reference, ["w", "b"])
    return interleaved({"gradlang": lambda: prog.step(feed),
                        "numpy": lambda: reference.step(feed["x"], feed["y"])}, rounds, steps=500)


def mlp_source(layers: int, width: int = 16) -> str:
    lines = [f"input x : f32[B, {width}]", "input y : i64[B]"]
    h = "x"
    for i in range(layers):
        lines += [f"param W{i} : [{width}, {width}] = he_normal", f"param b{i} : [{width}] = zeros",
                  f"h{i} = relu({h} @ W{i} + b{i})"]
        h = f"h{i}"
    lines.append(f"loss = cross_entropy({h}, y)")
    return "\n".join(lines) + "\n"


def case_compile(rounds: int) -> dict:
    """Parse → elaborate → differentiate → simplify → schedule, per IR node, for deeper and deeper MLPs."""
    out = {}
    feed = {"x": np.zeros((4, 16), np.float32), "y": np.zeros(4, np.int64)}
    for layers in (10, 100, 1000):
        source = mlp_source(layers)
        times = []
        for _ in range(max(1, rounds // (layers // 10 + 1)) if layers > 10 else rounds):
            start = time.perf_counter()
            prog = gradlang.compile(source)
            prog.gradients(feed)          # forces differentiation, simplification and scheduling
            times.append(time.perf_counter() - start)
        nodes = len(prog.gradient_graph())
        seconds = statistics.median(times)
        out[f"{layers} layers"] = {"seconds": seconds, "nodes": nodes, "us_per_node": seconds / nodes * 1e6}
    return out


CASES = {"mlp": case_mlp, "linreg": case_linreg, "compile": case_compile}


def table(results: dict) -> str:
    rows = ["| case | gradlang | reference | ratio | spread (g / ref) |", "| --- | --- | --- | --- | --- |"]
    for name in ("mlp", "linreg"):
        if name in results:
            r = results[name]
            g, n = r["gradlang"], r["numpy"]
            rows.append(f"| {name} step | {g['median_s'] * 1e6:,.1f} µs | {n['median_s'] * 1e6:,.1f} µs (NumPy) | "
                        f"{g['median_s'] / n['median_s']:.2f}× | {g['spread']:.0%} / {n['spread']:.0%} |")
            if "blas_floor" in r:
                b = r["blas_floor"]
                rows.append(f"| mlp vs BLAS floor | {g['median_s'] * 1e6:,.1f} µs | {b['median_s'] * 1e6:,.1f} µs "
                            f"(8 GEMMs) | {g['median_s'] / b['median_s']:.2f}× | {g['spread']:.0%} / "
                            f"{b['spread']:.0%} |")
    if "compile" in results:
        c = results["compile"]
        for k, v in c.items():
            rows.append(f"| compile {k} | {v['seconds'] * 1e3:,.0f} ms | {v['nodes']} nodes | "
                        f"{v['us_per_node']:.0f} µs/node | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES))
    args = parser.parse_args(argv)
    results = {"machine": {"python": sys.version.split()[0], "numpy": np.__version__,
                           "platform": platform.platform(), "processor": platform.processor()}}
    for name in args.only or CASES:
        results[name] = CASES[name](args.rounds)
    print(table(results))
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
