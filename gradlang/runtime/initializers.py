"""Initialisers: how each kind of `param … = kind(args)` draws a param's first values.

One entry per kind, as the optimizers have (optimizers.py): a function of (shape, args, rng) that
returns the values, in float64. The kinds are those the compiler makes (frontend/builtins.py; `xavier_*` are
made `glorot_*` there, a number `constant`, a literal list `values`). The program's seeded generator
is passed to every entry in declaration order, so a seed gives the same params every time.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ops.shapes import DTYPES


def fans(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out): [in, out] for a weight matrix; conv kernels [out, in, kh, kw] count the window."""
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    if len(shape) == 2:
        return shape[0], shape[1]
    window = int(np.prod(shape[2:]))
    return shape[1] * window, shape[0] * window


def _glorot_uniform(shape, args, rng):
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 * args[0] / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _glorot_normal(shape, args, rng):
    fan_in, fan_out = fans(shape)
    return rng.normal(0.0, np.sqrt(2.0 * args[0] / (fan_in + fan_out)), size=shape)


def _he_uniform(shape, args, rng):
    limit = np.sqrt(6.0 * args[0] / fans(shape)[0])
    return rng.uniform(-limit, limit, size=shape)


def _he_normal(shape, args, rng):
    return rng.normal(0.0, np.sqrt(2.0 * args[0] / fans(shape)[0]), size=shape)


INITIALIZERS: dict[str, Callable[[tuple, tuple, np.random.Generator], np.ndarray]] = {
    "zeros": lambda shape, args, rng: np.zeros(shape),
    "ones": lambda shape, args, rng: np.ones(shape),
    "constant": lambda shape, args, rng: np.full(shape, args[0]),
    "values": lambda shape, args, rng: np.array(args).reshape(shape),
    "normal": lambda shape, args, rng: rng.normal(args[0], args[1], size=shape),
    "uniform": lambda shape, args, rng: rng.uniform(args[0], args[1], size=shape),
    "glorot_uniform": _glorot_uniform,
    "glorot_normal": _glorot_normal,
    "he_uniform": _he_uniform,
    "he_normal": _he_normal,
}


def initial_value(spec, rng: np.random.Generator) -> np.ndarray:
    """A param's first value (`spec`: its ParamSpec), C-contiguous in its dtype. A param with no
    values gets zeros and draws nothing (its fans could be 0, and no draw keeps the stream as it was)."""
    dtype = DTYPES[spec.dtype]
    if 0 in spec.shape:
        return np.zeros(spec.shape, dtype)
    value = INITIALIZERS[spec.init.kind](spec.shape, spec.init.args, rng)
    return np.array(value, dtype=dtype, order="C")   # (ascontiguousarray would make a scalar 1-D)
