"""Feeds: the values a caller gives for a program's inputs, checked against their declarations.

A feed is converted once, before it runs, so the compiled step never converts or checks anything:
`convert` makes a value an array of its input's dtype without changing any number, and
`bind_dimensions` gives each symbolic dimension its size from the arrays (the key of an executable).
"""
from __future__ import annotations

import numpy as np

from ..errors import GradError
from ..ops.shapes import fmt_shape, fmt_type


def convert(value, dtype, name: str, spec) -> np.ndarray:
    """`value` as an array of the input's dtype, or a GradError: nothing is cast that changes a value
    (fractions to integers, integers out of the dtype's range, finite floats that overflow, complex
    numbers to real ones), and only numbers are accepted."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:   # a ragged nested list, say
        raise GradError(f"input {name}: cannot make an array of the value fed ({err})", spec.span) from None
    kind = array.dtype.kind
    if kind not in "biuf":
        what = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}.get(kind, str(array.dtype))
        raise GradError(f"input {name}: expected {spec.dtype} numbers, got {what}", spec.span)
    if dtype == np.bool_:
        if kind != "b":
            raise GradError(f"input {name}: expected booleans, got {array.dtype}", spec.span)
        return array
    if np.issubdtype(dtype, np.integer) and kind in "iuf":
        if kind == "f" and not np.all(np.isfinite(array)):
            raise GradError(f"input {name}: expected integers ({spec.dtype}), got NaN or infinity", spec.span)
        if kind == "f" and not np.all(np.equal(np.mod(array, 1), 0)):
            raise GradError(f"input {name}: expected integers ({spec.dtype}), got fractional values", spec.span)
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            bad = array.max() if array.max() > info.max else array.min()
            shown = int(bad) if kind in "iu" else f"{bad:.16g}"
            raise GradError(f"input {name}: {shown} does not fit in {spec.dtype} "
                            f"({info.min} to {info.max})", spec.span)
    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    if kind == "f" and np.issubdtype(dtype, np.floating):
        overflow = np.isfinite(array) & ~np.isfinite(converted)
        if overflow.any():
            raise GradError(f"input {name}: {float(array[overflow].flat[0]):g} does not fit in {spec.dtype}",
                            spec.span)
    return converted


def bind_dimensions(specs: dict, arrays: list) -> dict:
    """Each symbolic dimension's size in `arrays` (one per input of `specs`, name → InputSpec, in order;
    None where not fed), after checking every array's rank and fixed dimensions, and that a symbolic
    dimension has one size, not 0."""
    bindings: dict = {}
    for (name, spec), value in zip(specs.items(), arrays):
        if value is None:
            continue
        expected = fmt_type(spec.shape, spec.dtype)
        if len(value.shape) != len(spec.shape):
            raise GradError(f"input {name}: expected {expected}, got an array of shape {fmt_shape(value.shape)}",
                            spec.span)
        for dim, actual in zip(spec.shape, value.shape):
            if isinstance(dim, str) and actual == 0:
                raise GradError(f"input {name}: dimension {dim} is 0 (an empty batch, shape "
                                f"{fmt_shape(value.shape)}); feed at least one example", spec.span)
            if isinstance(dim, str):
                if bindings.setdefault(dim, actual) != actual:
                    raise GradError(f"input {name}: dimension {dim} is {bindings[dim]} in another input but "
                                    f"{actual} here (shape {fmt_shape(value.shape)})", spec.span)
            elif dim != actual:
                raise GradError(f"input {name}: expected {expected}, got an array of shape "
                                f"{fmt_shape(value.shape)}", spec.span)
    return bindings
