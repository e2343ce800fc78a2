"""Benchmarks: a compiled gradlang step against hand-written NumPy doing exactly the same computation.

    python -m benchmarks [--rounds N] [--json PATH] [--only NAME ...] [--clock wall|cpu]

Cases: `mlp`, `linreg`, `cnn`, `lstm`, `attention` (training steps), `compile` (time per IR node) and
`memory` (peak RSS of an MNIST MLP training run against the arrays it needs; skipped without MNIST).
Each step case alternates the two sides (A B A B …) after a warm-up, so drift in the machine's speed
hits both; it reports the median time per step of each side, their ratio and the spread (the
interquartile range as a fraction of the median). References are checked to give the same loss and
gradients as gradlang before anything is timed. With PyTorch installed (`pip install -e '.[bench]'`),
the MLP and linear regression are also timed against PyTorch eager, in a block of their own.
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

import numpy as np

import gradlang

from . import references_torch
from .references import LinRegReference, MLPReference
from .references_dl import AttentionReference, CNNReference, LSTMReference

HERE = Path(__file__).resolve().parent


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCKS["wall"]


def per_step(fn, steps: int) -> float:
    start = clock()
    for _ in range(steps):
        fn()
    return (clock() - start) / steps


def interleaved(sides: dict, rounds: int, steps: int, warmup: int = 3) -> dict:
    for fn in sides.values():
        per_step(fn, warmup * steps)
    samples = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            samples[name].append(per_step(fn, steps))
    out = {}
    for name, times in samples.items():
        median = statistics.median(times)
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [median, median, median]
        out[name] = {"median_s": median, "spread": (q[2] - q[0]) / median}
    if "gradlang" in out and "numpy" in out:
        out["ratio"] = out["gradlang"]["median_s"] / out["numpy"]["median_s"]
    return out


def pytorch_reference(prog, feed, make_reference):
    """PyTorch eager's version of the case, checked against gradlang, or None without torch."""
    if not references_torch.available():
        return None
    reference = make_reference(prog.params)
    check_same(prog, feed, reference, list(prog.params))
    return reference


def with_pytorch(result: dict, prog, feed, reference, rounds: int, steps: int) -> dict:
    """`result` plus PyTorch eager (`reference`, None without torch) against gradlang, interleaved
    in a block of their own: PyTorch's OpenMP threads keep spinning after each op and would slow
    whichever side ran next in the NumPy comparison."""
    if reference is not None:
        block = interleaved({"gradlang": lambda: prog.step(feed),
                             "pytorch": lambda: reference.step(feed["x"], feed["y"])}, rounds, steps)
        result["pytorch"] = dict(block["pytorch"], gradlang_median_s=block["gradlang"]["median_s"])
        result["ratio_pytorch"] = block["gradlang"]["median_s"] / block["pytorch"]["median_s"]
    return result


def check_same(prog, feed, reference, params_order) -> None:
    """Raise AssertionError unless the reference's loss and gradients match gradlang's on `feed`. The
    absolute tolerance scales with each gradient's size: averaged losses give tiny gradients (~1e-4
    for the LSTM), which a fixed one would let through unchecked."""
    loss, grads = reference.loss_and_grads(feed["x"], feed["y"])
    assert abs(prog.loss(feed) - loss) <= 1e-4 * max(1.0, abs(loss)), (prog.loss(feed), loss)
    ours = prog.gradients(feed)
    for name in params_order:
        scale = max(float(np.abs(ours[name]).max()), float(np.abs(grads[name]).max()))
        np.testing.assert_allclose(ours[name], grads[name], rtol=2e-3, atol=1e-4 * scale, err_msg=name)


def case_mlp(rounds: int) -> dict:
    prog = gradlang.compile(HERE / "mlp.grad")
    rng = np.random.default_rng(0)
    feed = {"x": rng.random((128, 784), dtype=np.float32), "y": rng.integers(0, 10, 128)}
    reference = MLPReference(prog.params, 128)
    check_same(prog, feed, reference, list(prog.params))
    torch_reference = pytorch_reference(prog, feed, references_torch.TorchMLP)
    x, y = feed["x"], feed["y"]
    p = reference.p
    z1, h2, d3 = x @ p["W1"], np.ones((128, 64), np.float32), np.ones((128, 10), np.float32)
    dh1, dh2 = np.ones((128, 128), np.float32), np.ones((128, 64), np.float32)

    def gemms():   # the eight matrix products of one step: the BLAS floor
        x @ p["W1"], z1 @ p["W2"], h2 @ p["W3"]
        h2.T @ d3, d3 @ p["W3"].T, z1.T @ dh2, dh2 @ p["W2"].T, x.T @ dh1
    result = interleaved({"gradlang": lambda: prog.step(feed), "numpy": lambda: reference.step(x, y),
                          "blas_floor": gemms}, rounds, steps=50)
    result["ratio_blas_floor"] = result["gradlang"]["median_s"] / result["blas_floor"]["median_s"]
    return with_pytorch(result, prog, feed, torch_reference, rounds, steps=50)


def case_linreg(rounds: int) -> dict:
    prog = gradlang.compile(HERE / "linreg.grad")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 1000).astype(np.float32)
    feed = {"x": x, "y": (3.0 * x + 2.0 + rng.normal(0, 0.1, 1000)).astype(np.float32)}
    reference = LinRegReference(prog.params, 1000)
    check_same(prog, feed, reference, ["w", "b"])
    torch_reference = pytorch_reference(prog, feed, references_torch.TorchLinReg)
    result = interleaved({"gradlang": lambda: prog.step(feed),
                          "numpy": lambda: reference.step(feed["x"], feed["y"])}, rounds, steps=500)
    return with_pytorch(result, prog, feed, torch_reference, rounds, steps=500)


def cnn_feed(batch: int, seed: int = 0) -> dict:
    """Random images of MNIST's shape and dtype ([B, 1, 28, 28] in [0, 1)) and labels 0–9."""
    rng = np.random.default_rng(seed)
    return {"x": rng.random((batch, 1, 28, 28), dtype=np.float32), "y": rng.integers(0, 10, batch)}


def token_feed(batch: int, length: int, vocab: int = 65, seed: int = 0) -> dict:
    """Random token ids [B, T] of a 65-character vocabulary and next-token targets of the same shape."""
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(0, vocab, (batch, length)), "y": rng.integers(0, vocab, (batch, length))}


def step_case(program: str, feed: dict, make_reference, rounds: int, steps: int) -> dict:
    """Compile `program`, check the reference against it on `feed`, then time both steps interleaved."""
    prog = gradlang.compile(HERE / program)
    reference = make_reference(prog.params)
    check_same(prog, feed, reference, list(prog.params))
    x, y = feed["x"], feed["y"]
    return interleaved({"gradlang": lambda: prog.step(feed), "numpy": lambda: reference.step(x, y)},
                       rounds, steps=steps)


CNN_BATCH = 64
LSTM_BATCH, LSTM_STEPS = 32, 50
ATTENTION_BATCH, ATTENTION_LENGTH = 32, 32


def case_cnn(rounds: int) -> dict:
    return step_case("cnn.grad", cnn_feed(CNN_BATCH), lambda p: CNNReference(p, CNN_BATCH), rounds, steps=2)


def case_lstm(rounds: int) -> dict:
    return step_case("lstm.grad", token_feed(LSTM_BATCH, LSTM_STEPS),
                     lambda p: LSTMReference(p, LSTM_BATCH, LSTM_STEPS), rounds, steps=3)


def case_attention(rounds: int) -> dict:
    return step_case("attention.grad", token_feed(ATTENTION_BATCH, ATTENTION_LENGTH),
                     lambda p: AttentionReference(p, ATTENTION_BATCH, ATTENTION_LENGTH), rounds, steps=5)


MEMORY_STEPS = 300
MEMORY_TARGET = 1.5


def data_dir() -> Path:
    """Where the MNIST files are looked for: $GRADLANG_DATA, else ../shared/data beside the clone."""
    return Path(os.environ.get("GRADLANG_DATA") or HERE.parent.parent / "shared" / "data")


def case_memory(rounds: int) -> dict:
    """Peak RSS of a short MNIST MLP training run (examples/mnist_mlp.grad) in a fresh process, against
    data + params + optimizer state + one batch's activations. The interpreter's own footprint (Python,
    NumPy and gradlang imported) is no part of the program's memory: the target is checked against the
    peak net of it, and the raw ratio is reported beside it."""
    folder = data_dir()
    if not (folder / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        message = f"skipped: no MNIST in {folder} (set GRADLANG_DATA to a folder holding mnist/)"
        print(f"memory: {message}", file=sys.stderr)
        return {"skipped": message}
    env = dict(os.environ, GRADLANG_DATA=str(folder))
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--steps", str(MEMORY_STEPS)],
                          cwd=HERE.parent, env=env, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    net = out["peak_rss"] - out["baseline_rss"]
    out["ratio_raw"] = out["peak_rss"] / out["bound"]
    out["ratio_net"] = net / out["bound"]
    out["ratio_net_loop"] = (out["loop_peak_rss"] - out["baseline_rss"]) / out["bound"]
    out["target"] = MEMORY_TARGET
    out["target_checked_against"] = "ratio_net"
    out["meets_target"] = out["ratio_net"] <= MEMORY_TARGET
    return out


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
            start = clock()
            prog = gradlang.compile(source)
            prog.gradients(feed)          # forces differentiation, simplification and scheduling
            times.append(clock() - start)
        nodes = len(prog.gradient_graph())
        seconds = statistics.median(times)
        out[f"{layers} layers"] = {"seconds": seconds, "nodes": nodes, "us_per_node": seconds / nodes * 1e6}
    return out


CASES = {"mlp": case_mlp, "linreg": case_linreg, "cnn": case_cnn, "lstm": case_lstm,
         "attention": case_attention, "compile": case_compile, "memory": case_memory}

STEP_LABELS = {
    "mlp": "mlp step",
    "linreg": "linreg step",
    "cnn": f"cnn step (MNIST CNN, batch {CNN_BATCH})",
    "lstm": f"lstm step (T {LSTM_STEPS}, batch {LSTM_BATCH}, hidden 128)",
    "attention": f"attention step (block, batch {ATTENTION_BATCH}, T {ATTENTION_LENGTH}, d 64, 4 heads)",
}


def _megabytes(n: int) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def memory_row(r: dict) -> str:
    if "skipped" in r:
        return f"| memory | {r['skipped']} | | | |"
    return (f"| memory (MNIST MLP, {r['steps']} steps) | peak {_megabytes(r['peak_rss'])}, "
            f"{_megabytes(r['peak_rss'] - r['baseline_rss'])} net of {_megabytes(r['baseline_rss'])} imports | "
            f"bound {_megabytes(r['bound'])} | {r['ratio_net']:.2f}× net ({r['ratio_raw']:.2f}× raw, "
            f"{r['ratio_net_loop']:.2f}× net up to the last step; target ≤ {r['target']}× net) | |")


def table(results: dict) -> str:
    rows = ["| case | gradlang | reference | ratio | spread (g / ref) |", "| --- | --- | --- | --- | --- |"]
    for name, label in STEP_LABELS.items():
        if name in results:
            r = results[name]
            g, n = r["gradlang"], r["numpy"]
            unit, scale = ("ms", 1e3) if n["median_s"] >= 1e-2 else ("µs", 1e6)
            rows.append(f"| {label} | {g['median_s'] * scale:,.1f} {unit} | {n['median_s'] * scale:,.1f} {unit} "
                        f"(NumPy) | {g['median_s'] / n['median_s']:.2f}× | {g['spread']:.0%} / {n['spread']:.0%} |")
            if "pytorch" in r:   # from a block of its own: gradlang's time there, beside PyTorch's
                t, mine = r["pytorch"], r["pytorch"]["gradlang_median_s"]
                rows.append(f"| {name} vs PyTorch eager | {mine * scale:,.1f} {unit} | "
                            f"{t['median_s'] * scale:,.1f} {unit} (PyTorch) | {r['ratio_pytorch']:.2f}× | "
                            f"— / {t['spread']:.0%} |")
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
    if "memory" in results:
        rows.append(memory_row(results["memory"]))
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES))
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: this thread's CPU time, which other "
                             "processes on a busy machine disturb less (use with one BLAS thread)")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    if args.clock == "cpu":
        references_torch.one_thread()   # a thread's CPU time would not count PyTorch's other threads
    results = {"machine": {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                           "python": sys.version.split()[0], "numpy": np.__version__,
                           "platform": platform.platform(), "processor": platform.processor(),
                           "clock": args.clock, "pytorch": references_torch.version()}}
    for name in args.only or CASES:
        results[name] = CASES[name](args.rounds)
    m = results["machine"]
    print(f"{m['date']}, {m['cores']} cores, {m['processor'] or m['platform']}, NumPy {m['numpy']}, "
          f"{args.clock} clock, {os.environ.get('OPENBLAS_NUM_THREADS', 'default')} BLAS threads\n")
    print(table(results))
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
