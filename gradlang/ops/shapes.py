"""Shapes with symbolic dimensions, and the NumPy broadcasting rule over them.

A shape is a tuple of dims; a dim is an `int` or a `str` naming a dimension bound at run time (the
batch `B`). Two symbolic dims are equal only when they have the same name.
"""
from __future__ import annotations

from collections import Counter
from math import prod

import numpy as np

Dim = int | str
Shape = tuple

DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
FLOATS = ("f32", "f64")
INTS = ("i32", "i64")
MAX_RANK = 64   # NumPy refuses an array of more dimensions


class ShapeError(Exception):
    """Raised by a shape rule; the graph builder attaches the source span."""


def fmt_shape(shape: Shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def fmt_type(shape: Shape, dtype: str) -> str:
    return f"{dtype}{fmt_shape(shape)}"


def broadcast(*shapes: Shape) -> Shape:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        sized = dims - {1}
        if len(sized) > 1:
            differ = " vs ".join(str(d) for d in sorted(sized, key=str))
            raise ShapeError("shapes " + " and ".join(fmt_shape(s) for s in shapes)
                             + f" do not broadcast: dimensions {differ} differ")
        out.append(sized.pop() if sized else 1)
    return tuple(out)


def size_of(shape: Shape) -> tuple[int, Counter]:
    """The element count as (product of the int dims, multiset of symbolic dims)."""
    return prod(d for d in shape if isinstance(d, int)), Counter(d for d in shape if isinstance(d, str))


def infer_reshape(old: Shape, new: Shape) -> Shape:
    """Resolve one -1 in `new` and check that the element counts agree, symbolically."""
    n_old, sym_old = size_of(old)
    known = tuple(d for d in new if d != -1)
    n_new, sym_new = size_of(known)
    negative = next((d for d in new if isinstance(d, int) and d < -1), None)
    if negative is not None:
        raise ShapeError(f"reshape: dimension {negative} in {fmt_shape(new)} is negative (only -1, "
                         "inferred from the others, may be)")
    if list(new).count(-1) > 1:
        raise ShapeError("reshape: at most one dimension may be -1")
    if -1 in new:
        rest = sym_old - sym_new
        if sym_new - sym_old or n_new == 0 or n_old % n_new:
            raise ShapeError(f"reshape: cannot reshape {fmt_shape(old)} to {fmt_shape(new)}")
        factor = n_old // n_new
        if sum(rest.values()) == 0:
            fill: Dim = factor
        elif sum(rest.values()) == 1 and factor == 1:
            fill = next(iter(rest))
        else:
            raise ShapeError(f"reshape: cannot infer -1 in {fmt_shape(new)} from {fmt_shape(old)}")
        return tuple(fill if d == -1 else d for d in new)
    if n_old != n_new or sym_old != sym_new:
        raise ShapeError(f"reshape: cannot reshape {fmt_shape(old)} ({_count(old)} elements) to "
                         f"{fmt_shape(new)} ({_count(new)} elements)")
    return tuple(new)


def _count(shape: Shape) -> str:
    n, sym = size_of(shape)
    parts = [str(n)] if n != 1 or not sym else []
    parts += [s if c == 1 else f"{s}^{c}" for s, c in sorted(sym.items())]
    return "·".join(parts)


def normalize_axes(axes, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeError(f"axis {a} is out of range for a tensor of rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def reduced(shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def resolve(shape: Shape, bindings: dict[str, int]) -> tuple[int, ...]:
    return tuple(bindings[d] if isinstance(d, str) else d for d in shape)
