"""Benchmarks: a compiled gradlang step against hand-written NumPy doing exactly the same computation,
and against the frameworks a user would pick instead: PyTorch eager and JAX (jit).

    python -m benchmarks [--rounds N] [--json PATH] [--only NAME ...] [--clock wall|cpu] [--contended]

Cases: `mlp`, `linreg`, `cnn`, `lstm`, `attention` (training steps), `compile` (time per IR node) and
`memory` (peak RSS of an MNIST MLP training run against the arrays it needs; skipped without MNIST).
Each step case times every system in the same process, interleaved (A B C A B C …) after a warm-up,
so drift in the machine's speed hits them all, with a short pause between samples so that a peer's
idle worker threads (PyTorch's OpenMP team, XLA's pool) stop spinning before the next sample, and
then 0.1 s of untimed steps, so that each is timed as a training loop runs it, step after step; it
reports the median time per step of each, gradlang's ratio to the NumPy reference and to the best
peer (the faster of PyTorch and JAX), and the spread (the interquartile range as a fraction of the
median). Every reference is checked to give the same loss and gradients as gradlang before
anything is timed. PyTorch and JAX are optional (`pip install -e '.[bench]'`): a missing one is
skipped with a message.

Threads: NumPy (and so gradlang) uses OpenBLAS's threads, set by OPENBLAS_NUM_THREADS before the run.
With OPENBLAS_NUM_THREADS=1 every system gets one thread's worth: PyTorch is set to one thread, and
the process is pinned to one CPU, because no flag limits XLA's CPU thread pool (it sizes itself from
the CPUs the process may use). Otherwise each library uses its default threads. `--clock cpu`
measures the process's CPU time (all its threads: XLA runs a step on threads of its own) and sets
PyTorch to one thread; use it with OPENBLAS_NUM_THREADS=1. `--contended` keeps another process (a
Python busy loop on one CPU) running for the whole measurement, to show how each system degrades
when a core it would use is taken.

Kernels: the header names the kernels NumPy's OpenBLAS ran on (`Haswell`: AVX2, `SkylakeX`: AVX-512),
which OpenBLAS chooses for the CPU unless OPENBLAS_CORETYPE forces them. PyTorch and JAX bring their
own BLAS and are not affected: forcing the AVX2 kernels on an AVX-512 CPU slows the NumPy side alone
(the LSTM step's [32,128] @ [128,512] product from 28 to 42 µs here).
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
from gradlang.runtime.threads import blas_kernels

from . import references_jax, references_torch
from .references import LinRegReference, MLPReference
from .references_dl import AttentionReference, CNNReference, LSTMReference

HERE = Path(__file__).resolve().parent


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]

# the frameworks gradlang is compared with: their modules (version(), available()) and how to install them
PEERS = {"pytorch": references_torch, "jax": references_jax}
PEER_LABELS = {"numpy": "NumPy", "pytorch": "PyTorch", "jax": "JAX"}
INSTALL = "pip install -e '.[bench]'"
# The pause before each sample, so that the last system's idle worker threads have stopped spinning:
# none spin with one thread each; with default threads OpenBLAS's threads spin for up to 2^28 cycles (~0.1 s)
# after a call, PyTorch's OpenMP team and XLA's pool for far less. main picks one.
SETTLE_S = {"one thread": 0.005, "default threads": 0.25}
settle_s = SETTLE_S["one thread"]
# After the pause, each system runs this long untimed before its sample, to be timed as a training
# loop runs it, step after step: after 0.1 s or more without steps, the next steps of a system that
# hands work to a second thread that blocks between tasks ran at about one thread's speed here
# (gradlang's MNIST CNN step: 15 ms for the first two steps after a 0.25 s pause, 9.3 ms after
# ten more; on one CPU 14.6 ms either way), as if the two threads shared a core until the
# scheduler had seen both busy.
REWARM_S = 0.1


def per_step(fn, steps: int) -> float:
    start = clock()
    for _ in range(steps):
        fn()
    return (clock() - start) / steps


def interleaved(sides: dict, rounds: int, steps: int, warmup: int = 3, settle: float | None = None) -> dict:
    """Time each side (a function running one step) `rounds` times, the sides in turn (A B C A B C …),
    each sample `steps` calls after a pause (`settle`) and `REWARM_S` of untimed steps, all after a
    warm-up (where a jit compiles); the median and spread of each,
    and gradlang's ratios: `ratio` to NumPy, `ratio_<peer>` to each peer, and `ratio_best_peer` to
    the fastest peer (`best_peer`)."""
    for fn in sides.values():
        per_step(fn, warmup * steps)
    samples = {name: [] for name in sides}
    settle = settle_s if settle is None else settle
    for _ in range(rounds):
        for name, fn in sides.items():
            time.sleep(settle)
            warm_until = time.perf_counter() + REWARM_S
            fn()
            while time.perf_counter() < warm_until:
                fn()
            samples[name].append(per_step(fn, steps))
    out = {}
    for name, times in samples.items():
        median = statistics.median(times)
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [median, median, median]
        out[name] = {"median_s": median, "spread": (q[2] - q[0]) / median}
    if "gradlang" in out:
        mine = out["gradlang"]["median_s"]
        if "numpy" in out:
            out["ratio"] = mine / out["numpy"]["median_s"]
        timed = [name for name in PEERS if name in out]
        for name in timed:
            out[f"ratio_{name}"] = mine / out[name]["median_s"]
        if timed:
            best = min(timed, key=lambda name: out[name]["median_s"])
            out["best_peer"] = best
            out["ratio_best_peer"] = mine / out[best]["median_s"]
    return out


def peer_references(prog, feed, makers: dict) -> dict:
    """The installed peers' references for a case ({peer: make(params)}), each checked against
    gradlang on `feed`; a peer that is not installed is left out (main says so once)."""
    out = {}
    for name, make in makers.items():
        if PEERS[name].available():
            reference = make(prog.params)
            check_same(prog, feed, reference, list(prog.params))
            out[name] = reference
    return out


def time_case(prog, feed, numpy_reference, peers: dict, rounds: int, steps: int, extra=None) -> dict:
    """gradlang, the NumPy reference, each peer and any `extra` sides, interleaved."""
    x, y = feed["x"], feed["y"]
    sides = {"gradlang": lambda: prog.step(feed), "numpy": lambda: numpy_reference.step(x, y)}
    for name, reference in peers.items():
        sides[name] = (lambda r: lambda: r.step(x, y))(reference)
    sides.update(extra or {})
    return interleaved(sides, rounds, steps)


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
    peers = peer_references(prog, feed, {"pytorch": references_torch.TorchMLP, "jax": references_jax.JaxMLP})
    x = feed["x"]
    p = reference.p
    z1, h2, d3 = x @ p["W1"], np.ones((128, 64), np.float32), np.ones((128, 10), np.float32)
    dh1, dh2 = np.ones((128, 128), np.float32), np.ones((128, 64), np.float32)

    def gemms():   # the eight matrix products of one step: the BLAS floor
        x @ p["W1"], z1 @ p["W2"], h2 @ p["W3"]
        h2.T @ d3, d3 @ p["W3"].T, z1.T @ dh2, dh2 @ p["W2"].T, x.T @ dh1
    result = time_case(prog, feed, reference, peers, rounds, steps=50, extra={"blas_floor": gemms})
    result["ratio_blas_floor"] = result["gradlang"]["median_s"] / result["blas_floor"]["median_s"]
    return result


def case_linreg(rounds: int) -> dict:
    prog = gradlang.compile(HERE / "linreg.grad")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 1000).astype(np.float32)
    feed = {"x": x, "y": (3.0 * x + 2.0 + rng.normal(0, 0.1, 1000)).astype(np.float32)}
    reference = LinRegReference(prog.params, 1000)
    check_same(prog, feed, reference, ["w", "b"])
    peers = peer_references(prog, feed, {"pytorch": references_torch.TorchLinReg, "jax": references_jax.JaxLinReg})
    return time_case(prog, feed, reference, peers, rounds, steps=500)


def cnn_feed(batch: int, seed: int = 0) -> dict:
    """Random images of MNIST's shape and dtype ([B, 1, 28, 28] in [0, 1)) and labels 0–9."""
    rng = np.random.default_rng(seed)
    return {"x": rng.random((batch, 1, 28, 28), dtype=np.float32), "y": rng.integers(0, 10, batch)}


def token_feed(batch: int, length: int, vocab: int = 65, seed: int = 0) -> dict:
    """Random token ids [B, T] of a 65-character vocabulary and next-token targets of the same shape."""
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(0, vocab, (batch, length)), "y": rng.integers(0, vocab, (batch, length))}


def step_case(program: str, feed: dict, make_reference, peer_makers: dict, rounds: int, steps: int) -> dict:
    """Compile `program`, check the NumPy reference and each installed peer against it on `feed`, then
    time them all interleaved."""
    prog = gradlang.compile(HERE / program)
    reference = make_reference(prog.params)
    check_same(prog, feed, reference, list(prog.params))
    peers = peer_references(prog, feed, peer_makers)
    return time_case(prog, feed, reference, peers, rounds, steps)


CNN_BATCH = 64
LSTM_BATCH, LSTM_STEPS = 32, 50
ATTENTION_BATCH, ATTENTION_LENGTH = 32, 32


def case_cnn(rounds: int) -> dict:
    return step_case("cnn.grad", cnn_feed(CNN_BATCH), lambda p: CNNReference(p, CNN_BATCH),
                     {"pytorch": references_torch.TorchCNN, "jax": references_jax.JaxCNN}, rounds, steps=2)


def case_lstm(rounds: int) -> dict:
    return step_case("lstm.grad", token_feed(LSTM_BATCH, LSTM_STEPS),
                     lambda p: LSTMReference(p, LSTM_BATCH, LSTM_STEPS),
                     {"pytorch": references_torch.TorchLSTM, "jax": references_jax.JaxLSTM}, rounds, steps=3)


def case_attention(rounds: int) -> dict:
    return step_case("attention.grad", token_feed(ATTENTION_BATCH, ATTENTION_LENGTH),
                     lambda p: AttentionReference(p, ATTENTION_BATCH, ATTENTION_LENGTH),
                     {"pytorch": references_torch.TorchAttention, "jax": references_jax.JaxAttention},
                     rounds, steps=5)


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
        for _ in range(max(3, rounds // (layers // 10 + 1)) if layers > 10 else rounds):   # a median of ≥ 3
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


def _time(seconds: float, unit: str, scale: float) -> str:
    return f"{seconds * scale:,.1f} {unit}"


def step_rows(results: dict) -> list[str]:
    """One row per step case: each system's median per step, gradlang's ratios to NumPy and to the best
    peer, and the spreads; the MLP's BLAS floor on a row of its own."""
    systems = ["gradlang", "numpy", *PEERS]
    rows = ["| case | gradlang | NumPy | PyTorch | JAX | gradlang / NumPy | gradlang / best peer | "
            "spread (g / NumPy / PyTorch / JAX) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, label in STEP_LABELS.items():
        if name not in results:
            continue
        r = results[name]
        g = r["gradlang"]
        unit, scale = ("ms", 1e3) if g["median_s"] >= 1e-2 else ("µs", 1e6)
        times = [_time(r[k]["median_s"], unit, scale) if k in r else "—" for k in systems]
        spreads = " / ".join(f"{r[k]['spread']:.0%}" if k in r else "—" for k in systems)
        best = f"{r['ratio_best_peer']:.2f}× ({PEER_LABELS[r['best_peer']]})" if "best_peer" in r else "— (no peer)"
        rows.append(f"| {label} | {' | '.join(times)} | {r['ratio']:.2f}× | {best} | {spreads} |")
        if "blas_floor" in r:
            b = r["blas_floor"]
            rows.append(f"| mlp vs BLAS floor (its 8 GEMMs alone) | {_time(g['median_s'], unit, scale)} | "
                        f"{_time(b['median_s'], unit, scale)} (floor) | | | {r['ratio_blas_floor']:.2f}× | | "
                        f"{g['spread']:.0%} / {b['spread']:.0%} (floor) |")
    return rows


def table(results: dict) -> str:
    out = []
    if any(name in results for name in STEP_LABELS):
        out.append("\n".join(step_rows(results)))
    rows = []
    if "compile" in results:
        c = results["compile"]
        for k, v in c.items():
            rows.append(f"| compile {k} | {v['seconds'] * 1e3:,.0f} ms | {v['nodes']} nodes | "
                        f"{v['us_per_node']:.0f} µs/node | |")
    if "memory" in results:
        rows.append(memory_row(results["memory"]))
    if rows:
        out.append("\n".join(["| case | gradlang | reference | ratio | |", "| --- | --- | --- | --- | --- |", *rows]))
    return "\n\n".join(out)


def one_blas_thread() -> bool:
    """Whether NumPy's OpenBLAS was told to use one thread (it reads the variable when it loads)."""
    return os.environ.get("OPENBLAS_NUM_THREADS") == "1"


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def pin(cpus) -> None:
    """Set the CPU affinity of every thread of this process (os.sched_setaffinity(0, …) moves only the
    calling thread; threads started later inherit it)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:            # a thread that ended meanwhile
            pass


def set_threads(clock_name: str) -> dict:
    """Give the peers the threads NumPy has (see the module's docstring); returns what each system uses
    and the CPU the process is pinned to (None when it is not)."""
    one = one_blas_thread()
    if one or clock_name == "cpu":
        references_torch.one_thread()
    pinned = None
    if one and hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task"):
        pinned = allowed_cpus()[0]
        pin({pinned})
    if clock_name == "cpu" and not one:
        print("note: --clock cpu counts every thread's CPU time, OpenBLAS's idle spinning included: "
              "use it with OPENBLAS_NUM_THREADS=1", file=sys.stderr)
    return {"blas": os.environ.get("OPENBLAS_NUM_THREADS", "default"), "pytorch": references_torch.threads(),
            "jax": (f"XLA's pool, pinned with the process to CPU {pinned}" if pinned is not None
                    else "XLA's default pool") if references_jax.available() else None,
            "pinned_cpu": pinned}


BUSY_LOOP = "import os, sys\nif hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, {int(sys.argv[1])})\n" \
            "while True: pass\n"


def start_busy(cpus: list[int], pinned: int | None) -> tuple[subprocess.Popen, int]:
    """A Python busy loop in a process of its own, on one CPU: the last of `cpus` (those this process
    may use), or when this process is pinned, another one than it (the same one when there is no other)."""
    others = [c for c in cpus if c != pinned]
    cpu = others[-1] if others else cpus[-1]
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(cpu)])
    time.sleep(0.2)                # its start-up, so that the warm-ups already run against it
    return busy, cpu


def stop_busy(busy: subprocess.Popen) -> None:
    busy.kill()
    busy.wait()


def header(m: dict) -> str:
    t = m["threads"]
    if t["pinned_cpu"] is not None:
        threads = (f"1 BLAS thread, PyTorch 1 thread, all on CPU {t['pinned_cpu']} "
                   "(process pinned: no flag limits XLA's thread pool)")
    else:
        threads = (f"{t['blas']} BLAS threads, PyTorch {t['pytorch'] or '—'} threads, "
                   f"JAX {'default pool' if t['jax'] else '—'}")
    versions = ", ".join(f"{PEER_LABELS[k]} {m[k] or 'not installed'}" for k in ("numpy", *PEERS))
    if m.get("blas_kernels"):
        versions = versions.replace("NumPy ", f"NumPy (OpenBLAS {m['blas_kernels']} kernels) ", 1)
    machine = m["processor"] or m["platform"]
    line = f"{m['date']}, {m['cores']} cores, {machine}, {versions}, {m['clock']} clock, {threads}"
    if m["contended"] is not None:
        line += f"\nCONTENDED: a busy-loop process kept CPU {m['contended']['cpu']} busy throughout"
    return line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES))
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: the process's CPU time, which other "
                             "processes on a busy machine disturb less (use with OPENBLAS_NUM_THREADS=1)")
    parser.add_argument("--contended", action="store_true",
                        help="keep a busy-loop process running on one CPU while measuring, to show how each "
                             "system degrades when another process takes a core")
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="train examples/mnist_cnn.grad and the same model in PyTorch to 99%% test accuracy "
                             "and report both training times (minutes; needs MNIST: GRADLANG_DATA or --data-dir)")
    parser.add_argument("--data-dir", type=Path, help="where mnist/ is, for --time-to-accuracy")
    args = parser.parse_args(argv)
    if args.time_to_accuracy:
        from .time_to_accuracy import report, time_to_accuracy
        result = time_to_accuracy(args.data_dir)
        sys.stdout.write(report(result))
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written to {args.json}")
        return 0
    global clock, settle_s
    clock = CLOCKS[args.clock]
    settle_s = SETTLE_S["one thread" if one_blas_thread() else "default threads"]
    affinity = allowed_cpus()
    threads = set_threads(args.clock)
    for name, module in PEERS.items():
        if not module.available():
            print(f"{PEER_LABELS[name]}: not installed, skipped ({INSTALL})", file=sys.stderr)
    results = {"machine": {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                           "python": sys.version.split()[0], "numpy": np.__version__,
                           "blas_kernels": blas_kernels(),
                           "platform": platform.platform(), "processor": platform.processor(),
                           "clock": args.clock, "pytorch": references_torch.version(),
                           "jax": references_jax.version(), "threads": threads, "contended": None}}
    busy = None
    try:
        if args.contended:
            busy, cpu = start_busy(affinity, threads["pinned_cpu"])
            results["machine"]["contended"] = {"cpu": cpu}
        for name in args.only or CASES:
            results[name] = CASES[name](args.rounds)
    finally:
        if busy is not None:
            stop_busy(busy)
        if threads["pinned_cpu"] is not None:
            pin(set(affinity))     # as it was (main may run inside a longer-lived process: the tests)
    print(header(results["machine"]) + "\n")
    print(table(results))
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
