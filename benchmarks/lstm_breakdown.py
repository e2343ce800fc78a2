"""Where the LSTM benchmark's training step spends its time, and what the alternatives measured
(docs/architecture.md, "Where the LSTM step's time goes"): `python -m benchmarks.lstm_breakdown`.

Run it with one BLAS thread (`OPENBLAS_NUM_THREADS=1`), as the numbers in the docs were. It prints
- the step kernel by kernel (helper thread off): its products, the recurrent ones among them, the rest;
- NumPy on a gate's strided columns of z against a contiguous array;
- stacking the input projections xₜ @ W and the input gradients dzₜ @ Wᵀ of all steps;
- the round trip of a hand-off to a blocked second Python thread;
- a hand-fused NumPy LSTM cell, forward and backward per time step, checked against the cell
  written op by op.
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
from gradlang.lowering.schedule import InPlace, IntoBuffer
from gradlang.ops.primitives import sigmoid

from .__main__ import token_feed

BATCH, STEPS, HIDDEN, N_IN = 32, 50, 128, 32
F32 = np.float32


def _us(statement: str, namespace: dict, number: int) -> float:
    """Best of five repeats of `number` runs, in µs per run."""
    return min(timeit.repeat(statement, globals=namespace, number=number, repeat=5)) / number * 1e6


def step_breakdown(repeats: int) -> dict:
    """The training step run kernel by kernel: total, products, recurrent products, calls."""
    prog = gradlang.compile(Path(__file__).with_name("lstm.grad"), seed=0, no_opt=("helper-thread",))
    feed = token_feed(BATCH, STEPS)
    for _ in range(3):
        prog.step(feed)
    ex = max(prog.runner.executables.values(), key=lambda e: len(e.schedule.steps))
    sched, graph = ex.schedule, ex.graph
    captured = {}
    run = ex._run

    def capture(inputs, params):
        captured["args"] = inputs, params
        return run(inputs, params)
    ex._run = capture
    prog.step(feed)
    ex._run = run
    inputs, params = captured["args"]
    products = recurrent = total = 0.0
    for _ in range(repeats):
        env = dict(sched.preloaded)
        env.update({sched.input_slots[n]: v for n, v in zip(ex.input_names, inputs) if n in sched.input_slots})
        env.update({sched.param_slots[n]: v for n, v in zip(ex.param_names, params) if n in sched.param_slots})
        for node, (kernel, operands, result, frees) in zip(sched.nodes, sched.steps):
            args = [env[o] for o in operands]
            call, keywords = kernel, {}
            if isinstance(kernel, InPlace):
                call, keywords = kernel.kernel, {"out": args[kernel.index]}
            elif isinstance(kernel, IntoBuffer):
                call, keywords = kernel.kernel, {"out": kernel.buffer}
            start = time.perf_counter()
            env[result] = call(*args, **keywords)
            spent = time.perf_counter() - start
            total += spent
            if graph.op(node) == "matmul":
                products += spent
                shapes = [a.shape for a in args]
                if shapes in ([(BATCH, HIDDEN), (HIDDEN, 4 * HIDDEN)], [(BATCH, 4 * HIDDEN), (4 * HIDDEN, HIDDEN)]):
                    recurrent += spent
            for slot in frees:
                env.pop(slot, None)
    return {"calls": len(sched.steps), "total_ms": total / repeats * 1e3, "products_ms": products / repeats * 1e3,
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


class FusedCell:
    """One LSTM time step by hand in NumPy, the gates' activations kept in one [B, 4H] buffer
    (order i, f, g, o, as stdlib/rnn.grad's lstm_cell) for the backward pass."""

    def __init__(self, forget_bias: float = 1.0):
        h = HIDDEN
        self.forget_bias = F32(forget_bias)
        self.i, self.f, self.g, self.o = (slice(k * h, (k + 1) * h) for k in range(4))
        self.tmp = np.empty((BATCH, h), F32)
        self.factor = np.empty((BATCH, 4 * h), F32)

    def forward(self, z, c, acts, tanh_c, h_out, c_out):
        """z is overwritten. acts, tanh_c: saved for `backward`."""
        i, f, g, o = self.i, self.f, self.g, self.o
        z[:, f] += self.forget_bias
        sigmoid(z, out=acts)                   # one contiguous pass over all four gates,
        np.tanh(z[:, g], out=acts[:, g])       # the candidate's block then written over
        np.multiply(acts[:, f], c, out=c_out)
        np.multiply(acts[:, i], acts[:, g], out=self.tmp)
        c_out += self.tmp
        np.tanh(c_out, out=tanh_c)
        np.multiply(acts[:, o], tanh_c, out=h_out)

    def backward(self, acts, c, tanh_c, dh, dc, dz, dc_prev):
        """dz [B, 4H] and dc_prev from the cotangents of h and c."""
        i, f, g, o = self.i, self.f, self.g, self.o
        tmp, factor = self.tmp, self.factor
        np.multiply(dh, tanh_c, out=dz[:, o])
        np.multiply(tanh_c, tanh_c, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= acts[:, o]
        tmp *= dh
        tmp += dc                                       # the whole cotangent of c
        np.multiply(tmp, acts[:, g], out=dz[:, i])
        np.multiply(tmp, c, out=dz[:, f])
        np.multiply(tmp, acts[:, i], out=dz[:, g])
        np.multiply(tmp, acts[:, f], out=dc_prev)
        np.subtract(1, acts, out=factor)                # s(1 − s) for the sigmoid gates,
        factor *= acts
        np.multiply(acts[:, g], acts[:, g], out=factor[:, g])
        np.subtract(1, factor[:, g], out=factor[:, g])  # 1 − g² for the candidate
        dz *= factor


def _cell_op_by_op(z, c, dh, dc, forget_bias=1.0):
    """The same time step as stdlib's lstm_cell writes it, and its gradient, op by op (float64)."""
    h = HIDDEN
    zi, zf, zg, zo = (z[:, k * h:(k + 1) * h] for k in range(4))
    i, f, g, o = 1 / (1 + np.exp(-zi)), 1 / (1 + np.exp(-(zf + forget_bias))), np.tanh(zg), 1 / (1 + np.exp(-zo))
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    dc_total = dc + dh * o * (1 - np.tanh(c_new) ** 2)
    dz = np.concatenate([dc_total * g * i * (1 - i), dc_total * c * f * (1 - f), dc_total * i * (1 - g * g),
                         dh * np.tanh(c_new) * o * (1 - o)], axis=1)
    return h_new, c_new, dz, dc_total * f


def fused_cell(rounds: int) -> dict:
    """The hand-fused cell over STEPS time steps, forward and backward, µs per time step."""
    rng = np.random.default_rng(0)
    cell = FusedCell()
    zs = [rng.standard_normal((BATCH, 4 * HIDDEN)).astype(F32) for _ in range(STEPS)]
    cs = [rng.standard_normal((BATCH, HIDDEN)).astype(F32) for _ in range(STEPS)]
    dhs = [rng.standard_normal((BATCH, HIDDEN)).astype(F32) for _ in range(STEPS)]
    acts = [np.empty((BATCH, 4 * HIDDEN), F32) for _ in range(STEPS)]
    tanh_cs, h_outs, c_outs = ([np.empty((BATCH, HIDDEN), F32) for _ in range(STEPS)] for _ in range(3))
    dz, dc, dc_prev = np.empty((BATCH, 4 * HIDDEN), F32), np.zeros((BATCH, HIDDEN), F32), np.empty((BATCH, HIDDEN), F32)

    dc_next = rng.standard_normal((BATCH, HIDDEN)).astype(F32)   # the check: one step, against op by op
    cell.forward(zs[0].copy(), cs[0], acts[0], tanh_cs[0], h_outs[0], c_outs[0])
    cell.backward(acts[0], cs[0], tanh_cs[0], dhs[0], dc_next, dz, dc_prev)
    h_ref, c_ref, dz_ref, dc_ref = _cell_op_by_op(*(a.astype(np.float64) for a in (zs[0], cs[0], dhs[0], dc_next)))
    for got, want in ((h_outs[0], h_ref), (c_outs[0], c_ref), (dz, dz_ref), (dc_prev, dc_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    forward, backward = [], []
    for _ in range(rounds):
        work = [z.copy() for z in zs]
        start = time.perf_counter()
        for t in range(STEPS):
            cell.forward(work[t], cs[t], acts[t], tanh_cs[t], h_outs[t], c_outs[t])
        middle = time.perf_counter()
        for t in reversed(range(STEPS)):
            cell.backward(acts[t], cs[t], tanh_cs[t], dhs[t], dc, dz, dc_prev)
            dc, dc_prev = dc_prev, dc
        end = time.perf_counter()
        forward.append(middle - start)
        backward.append(end - middle)
    return {"forward_us_per_step": statistics.median(forward) / STEPS * 1e6,
            "backward_us_per_step": statistics.median(backward) / STEPS * 1e6}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lstm_breakdown", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: to check the script runs")
    args = parser.parse_args(argv)
    scale = 1 if args.quick else 20
    results = {"step (helper thread off)": step_breakdown(repeats=scale),
               "strided columns": strided_columns(number=100 * scale),
               "stacking over time steps": stacking(number=2 * scale),
               "hand-off to a second thread": hand_off(round_trips=100 * scale),
               "hand-fused cell": fused_cell(rounds=scale)}
    for section, values in results.items():
        print(section)
        for name, value in values.items():
            print(f"  {name:32} {value:10.1f}" if isinstance(value, float) else f"  {name:32} {value:10}")
    return results


if __name__ == "__main__":
    main()
