"""Where the LSTM benchmark's training step spends its time, and what the alternatives measured
(docs/architecture.md, "Where the LSTM step's time goes"): `python -m benchmarks.lstm_breakdown`.

Run it with one BLAS thread (`OPENBLAS_NUM_THREADS=1`), as the numbers in the docs were. It prints
- the step kernel by kernel (helper thread off): its products, the recurrent ones among them, the rest;
- NumPy on a gate's strided columns of z against a contiguous array;
- stacking the input projections xₜ @ W and the input gradients dzₜ @ Wᵀ of all steps;
- the round trip of a hand-off to a blocked second Python thread.
"""
from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time
import timeit
from pathlib import Path

import numpy as np

import gradlang

from .__main__ import token_feed

BATCH, STEPS, HIDDEN, N_IN = 32, 50, 128, 32
F32 = np.float32


def _us(statement: str, namespace: dict, number: int) -> float:
    """Best of five repeats of `number` runs, in µs per run."""
    return min(timeit.repeat(statement, globals=namespace, number=number, repeat=5)) / number * 1e6


def _timer_overhead() -> float:
    """Seconds that timing one call adds: two clock reads and a call that does nothing."""
    def nothing():
        return None
    spans = []
    for _ in range(2000):
        start = time.perf_counter()
        nothing()
        spans.append(time.perf_counter() - start)
    return statistics.median(spans)


def step_breakdown(repeats: int) -> dict:
    """The training step as generated (whole), then run kernel by kernel, each call's time less the
    timer's own: total, products, recurrent products, the rest, calls."""
    prog = gradlang.compile(Path(__file__).with_name("lstm.grad"), seed=0, no_opt=("helper-thread",))
    runner = prog.runner
    inputs = runner.feed(token_feed(BATCH, STEPS))
    exe = runner.training_update.executable(inputs)
    params = runner.leaf_list
    for _ in range(3):
        exe.run(inputs, params)
    sched, graph = exe.schedule, exe.graph
    overhead = _timer_overhead()
    products = recurrent = total = 0.0
    for _ in range(repeats):
        env = exe.leaf_values(inputs, params)
        for node, (kernel, operands, result, frees) in zip(sched.nodes, sched.steps):
            args = [env[o] for o in operands]
            start = time.perf_counter()
            env[result] = kernel(*args)
            spent = time.perf_counter() - start - overhead
            total += spent
            if graph.op(node) == "matmul":
                products += spent
                shapes = [a.shape for a in args]
                if shapes in ([(BATCH, HIDDEN), (HIDDEN, 4 * HIDDEN)], [(BATCH, 4 * HIDDEN), (4 * HIDDEN, HIDDEN)]):
                    recurrent += spent
            for slot in frees:
                env.pop(slot, None)
    whole = []
    for _ in range(repeats):
        start = time.perf_counter()
        exe.run(inputs, params)
        whole.append(time.perf_counter() - start)
    return {"calls": len(sched.steps), "generated_step_ms": statistics.median(whole) * 1e3,
            "total_ms": total / repeats * 1e3, "products_ms": products / repeats * 1e3,
            "recurrent_products_ms": recurrent / repeats * 1e3, "the_rest_ms": (total - products) / repeats * 1e3}


def strided_columns(number: int) -> dict:
    """A multiply and a tanh on one gate's columns of z [B, 4H] against a contiguous [B, H] array."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((BATCH, 4 * HIDDEN)).astype(F32)
    a, b = rng.standard_normal((2, BATCH, HIDDEN)).astype(F32)
    out = np.empty_like(a)
    gate = z[:, HIDDEN:2 * HIDDEN]
    ns = {"np": np, "z": z, "a": a, "b": b, "out": out, "gate": gate}
    return {"multiply_contiguous_us": _us("np.multiply(a, b, out=out)", ns, number),
            "multiply_strided_us": _us("np.multiply(gate, b, out=out)", ns, number),
            "tanh_contiguous_us": _us("np.tanh(a, out=out)", ns, number),
            "tanh_strided_us": _us("np.tanh(gate, out=out)", ns, number)}


def stacking(number: int) -> dict:
    """The 50 input projections and input gradients one at a time against one stacked product."""
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((BATCH, STEPS, N_IN)).astype(F32)
    w = rng.standard_normal((N_IN, 4 * HIDDEN)).astype(F32)
    w_t = np.ascontiguousarray(w.T)
    hu = rng.standard_normal((BATCH, 4 * HIDDEN)).astype(F32)
    dzs = [rng.standard_normal((BATCH, 4 * HIDDEN)).astype(F32) for _ in range(STEPS)]
    stacked = (xs.reshape(-1, N_IN) @ w).reshape(BATCH, STEPS, 4 * HIDDEN)
    dz_stacked = np.stack(dzs, axis=1)
    ns = {"np": np, "xs": xs, "w": w, "w_t": w_t, "hu": hu, "dzs": dzs, "stacked": stacked,
          "dz_stacked": dz_stacked, "STEPS": STEPS, "N_IN": N_IN}
    return {
        "projections_per_step_us": _us("[xs[:, t] @ w for t in range(STEPS)]", ns, number),
        "projections_stacked_us": _us("xs.reshape(-1, N_IN) @ w", ns, number),
        "add_contiguous_us": _us("[np.add(hu, dzs[t], out=hu) for t in range(STEPS)]", ns, number),
        "add_stacked_rows_us": _us("[np.add(hu, stacked[:, t], out=hu) for t in range(STEPS)]", ns, number),
        "input_gradients_per_step_us": _us("[dz @ w_t for dz in dzs]", ns, number),
        "input_gradients_stacked_us": _us("dz_stacked.reshape(-1, dz_stacked.shape[2]) @ w_t", ns, number),
        "stack_dz_copy_us": _us("np.stack(dzs, axis=1)", ns, number),
    }


def hand_off(round_trips: int) -> dict:
    """A value handed to a second thread blocked on a queue, and handed back: µs per round trip."""
    to_helper, back = queue.SimpleQueue(), queue.SimpleQueue()

    def helper():
        while (item := to_helper.get()) is not None:
            back.put(item)
    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    times = []
    for i in range(round_trips):
        start = time.perf_counter()
        to_helper.put(i)
        back.get()
        times.append(time.perf_counter() - start)
        if i % 10 == 0:
            time.sleep(0.0002)   # let the helper block, as between a step's kernels
    to_helper.put(None)
    thread.join()
    times.sort()
    return {"median_us": statistics.median(times) * 1e6, "p90_us": times[int(0.9 * len(times))] * 1e6}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lstm_breakdown", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: to check the script runs")
    args = parser.parse_args(argv)
    scale = 1 if args.quick else 20
    results = {"step (helper thread off)": step_breakdown(repeats=scale),
               "strided columns": strided_columns(number=100 * scale),
               "stacking over time steps": stacking(number=2 * scale),
               "hand-off to a second thread": hand_off(round_trips=100 * scale)}
    for section, values in results.items():
        print(section)
        for name, value in values.items():
            print(f"  {name:32} {value:10.1f}" if isinstance(value, float) else f"  {name:32} {value:10}")
    return results


if __name__ == "__main__":
    main()
