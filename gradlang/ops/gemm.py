"""Large matrix products planned by measurement: one BLAS call, or the inner dimension in parts.

BLAS libraries block a product by its inner dimension K, and a library tuned for one CPU can block
badly on another: NumPy's OpenBLAS (Haswell kernels) on an AMD EPYC runs a float32 [128, 784] @
[784, 128] at half the speed of the same product computed as two accumulated halves of K, while
float64, or [256, 784] @ [784, 512], show nothing of the kind. No rule predicts that, so the
scheduler times the candidates once per shape, layout and dtype, on the machine that will run them,
and keeps the winner for the life of the process.

A split plan sums in a different order, so its results differ from one call's in the last bits;
within a process every product of a shape uses one plan. Set GRADLANG_MATMUL_TUNING=0 for results
that do not depend on a measurement (one BLAS call always).
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

# Products smaller than this many multiply-adds are not worth a measurement (~0.2 ms at 20 GFLOP/s);
# larger than MAX_MACS, the measurement would cost too much time and memory at compile time (an
# evaluation batch of 10,000 examples), and large products run near peak anyway.
MIN_MACS = 4_000_000
MAX_MACS = 64_000_000
MIN_PART = 128          # each part of a split inner dimension has at least this many terms
MARGIN = 1.15           # a split plan must beat one call by this factor, so noise does not flip it
ROUNDS = 5

_plans: dict[tuple, object] = {}


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


def plan_matmul(a_shape: tuple, b_shape: tuple, dtype, a_transposed: bool, b_transposed: bool, timer=None):
    """The kernel for a 2-D product of these shapes (`*_transposed`: the operand is the transpose
    of a C-ordered array, as a VJP's `transpose` gives): np.matmul unless a split measured faster.
    `timer(kernel, a, b) -> seconds` replaces the clock in tests."""
    (m, k), (_, n) = a_shape, b_shape
    if not tuning_enabled() or not MIN_MACS <= m * k * n <= MAX_MACS or k < 2 * MIN_PART:
        return np.matmul
    key = (a_shape, b_shape, np.dtype(dtype).str, a_transposed, b_transposed)
    if key not in _plans:
        _plans[key] = _measure(key, timer or _time_one_call)
    return _plans[key]


def _operand(shape: tuple, dtype, transposed: bool, rng) -> np.ndarray:
    values = rng.random(shape[::-1] if transposed else shape, dtype=np.dtype(dtype))   # float32 or float64
    return values.T if transposed else values


def _time_one_call(kernel, a, b) -> float:
    start = time.perf_counter()
    kernel(a, b)
    return time.perf_counter() - start


def _measure(key: tuple, timer) -> object:
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
    return candidates[best] if medians[best] * MARGIN < medians[0] else np.matmul
