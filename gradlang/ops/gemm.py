"""Large matrix products planned by measurement: one BLAS call, or the inner dimension in parts.

BLAS libraries block a product by its inner dimension K, and a library tuned for one CPU can block
badly on another: NumPy's OpenBLAS (Haswell kernels) on an AMD EPYC runs a float32 [128, 784] @
[784, 128] at half the speed of the same product computed as two accumulated halves of K, while
float64, or [256, 784] @ [784, 512], show nothing of the kind. No rule predicts that, so the
scheduler times the candidates once per shape, layout and dtype, on the machine that will run them.

A split plan sums in a different order, so its results differ from one call's in the last bits.
So that they do not differ between runs, a plan once measured is kept in a file (FFTW's "wisdom"):
`$GRADLANG_MATMUL_PLANS`, else `~/.cache/gradlang/matmul-plans.json`, per machine, NumPy version and
BLAS thread setting. Later processes on the machine, a resumed run among them, read the plan there
and make the same choice. Delete the file to measure again; set GRADLANG_MATMUL_TUNING=0 for one
BLAS call always.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# Products smaller than this many multiply-adds are not worth a measurement (~0.2 ms at 20 GFLOP/s);
# larger than MAX_MACS, the measurement would cost too much time and memory at compile time (an
# evaluation batch of 10,000 examples), and large products run near peak anyway.
MIN_MACS = 4_000_000
MAX_MACS = 64_000_000
MAX_ELEMENTS = 8_000_000     # operands and result together: a skinny product measures on less than 64 MB
MIN_PART = 128          # each part of a split inner dimension has at least this many terms
MARGIN = 1.15           # a split plan must beat one call by this factor, so noise does not flip it
ROUNDS = 5

_plans: dict[tuple, object] = {}   # this process's plans: (shapes, dtype, layouts) → kernel


class SplitK:
    """a @ b as the sum of `parts` products over consecutive ranges of the inner dimension."""

    __slots__ = ("bounds",)

    def __init__(self, inner: int, parts: int):
        step = -(-inner // parts)
        self.bounds = tuple(range(0, inner, step)) + (inner,)

    def __call__(self, a, b, out=None):
        lo, hi = self.bounds[0], self.bounds[1]
        out = np.matmul(a[:, lo:hi], b[lo:hi], out=out)
        for lo, hi in zip(self.bounds[1:-1], self.bounds[2:]):
            out += np.matmul(a[:, lo:hi], b[lo:hi])
        return out

    def __repr__(self):
        return f"SplitK({len(self.bounds) - 1} parts)"


def tuning_enabled() -> bool:
    return os.environ.get("GRADLANG_MATMUL_TUNING", "1") != "0"


def plans_path() -> Path:
    """Where measured plans are kept."""
    env = os.environ.get("GRADLANG_MATMUL_PLANS")
    return Path(env) if env else Path.home() / ".cache" / "gradlang" / "matmul-plans.json"


def _machine() -> str:
    """What a plan depends on besides the product: the CPU, NumPy (and the BLAS it ships), threads."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    return f"{cpu}; {os.cpu_count()} cpus; numpy {np.__version__}; BLAS threads {threads}"


def _entry(key: tuple) -> str:
    a_shape, b_shape, dtype, a_transposed, b_transposed = key
    layout = ("T" if a_transposed else "N") + ("T" if b_transposed else "N")
    return f"{a_shape[0]}x{a_shape[1]} @ {b_shape[0]}x{b_shape[1]} {np.dtype(dtype).name} {layout}"


def _read_plans(path: Path) -> dict:
    """The file's plans for this machine: entry → parts (1 = one call). A missing or damaged file
    is no plans at all — it is a cache."""
    try:
        table = json.loads(path.read_text()).get(_machine(), {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and v in (1, 2, 4)} \
        if isinstance(table, dict) else {}


def _remember(key: tuple, parts: int) -> None:
    """Add a measured plan to the file (read again and replaced whole, so concurrent writers lose
    at most each other's newest entry); a file that cannot be written is left alone."""
    path = plans_path()
    try:
        try:
            everything = json.loads(path.read_text())
            if not isinstance(everything, dict):
                everything = {}
        except (OSError, ValueError):
            everything = {}
        table = everything.setdefault(_machine(), {})
        if not isinstance(table, dict):
            table = everything[_machine()] = {}
        table[_entry(key)] = parts
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            json.dump(everything, tmp, indent=1, sort_keys=True)
        os.replace(tmp.name, path)
    except OSError:
        pass


def _kernel(parts: int, inner: int):
    return np.matmul if parts == 1 else SplitK(inner, parts)


def plan_matmul(a_shape: tuple, b_shape: tuple, dtype, a_transposed: bool, b_transposed: bool, timer=None):
    """The kernel for a 2-D product of these shapes (`*_transposed`: the operand is the transpose
    of a C-ordered array, as a VJP's `transpose` gives): np.matmul unless a split measured faster.
    `timer(kernel, a, b) -> seconds` replaces the clock in tests."""
    (m, k), (_, n) = a_shape, b_shape
    if (not tuning_enabled() or not MIN_MACS <= m * k * n <= MAX_MACS or k < 2 * MIN_PART
            or m * k + k * n + m * n > MAX_ELEMENTS):
        return np.matmul
    key = (a_shape, b_shape, np.dtype(dtype).str, a_transposed, b_transposed)
    if key not in _plans:
        parts = _read_plans(plans_path()).get(_entry(key))
        if parts is None:
            parts = _measure(key, timer or _time_one_call)
            _remember(key, parts)
        _plans.setdefault(key, _kernel(parts, k))
    return _plans[key]


def _operand(shape: tuple, dtype, transposed: bool, rng) -> np.ndarray:
    values = rng.random(shape[::-1] if transposed else shape, dtype=np.dtype(dtype))   # float32 or float64
    return values.T if transposed else values


def _time_one_call(kernel, a, b) -> float:
    start = time.perf_counter()
    kernel(a, b)
    return time.perf_counter() - start


def _measure(key: tuple, timer) -> int:
    """How many parts the inner dimension is best computed in (1: one BLAS call)."""
    a_shape, b_shape, dtype, a_transposed, b_transposed = key
    rng = np.random.default_rng(0)
    a = _operand(a_shape, dtype, a_transposed, rng)
    b = _operand(b_shape, dtype, b_transposed, rng)
    inner = a_shape[1]
    candidates = [np.matmul] + [SplitK(inner, parts) for parts in (2, 4) if inner // parts >= MIN_PART]
    for kernel in candidates:   # warm up: first calls allocate BLAS buffers and fault pages in
        kernel(a, b)
    times: list[list[float]] = [[] for _ in candidates]
    for _ in range(ROUNDS):     # interleaved, so drift in the machine's speed hits every candidate
        for kernel, samples in zip(candidates, times):
            samples.append(timer(kernel, a, b))
    medians = [statistics.median(samples) for samples in times]
    best = min(range(len(candidates)), key=medians.__getitem__)
    if best == 0 or medians[best] * MARGIN >= medians[0]:
        return 1
    return len(candidates[best].bounds) - 1
