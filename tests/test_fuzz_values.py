"""Fuzzing the values a run is fed: labels, indices and dtypes at their limits, NaN and infinities,
empty batches, ragged and wrongly typed Python data, through the API and the CLI.

Each case either computes — and then only if every value was valid, so nothing was wrapped around,
truncated or cast — or raises a `GradError`; never another exception. Validity is decided by an
oracle written from the documented rules (docs/python-api.md, "Errors at run time"), independently
of the checks in the code.

The default run checks a few hundred cases; `pytest -m fuzz tests/test_fuzz_values.py` runs thousands.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import FUZZ_SETTINGS, time_limit

import gradlang
from gradlang import GradError
from gradlang.cli import main

CLASSES, ROWS = 3, 5
LONG_RUN = int(os.environ.get("GRADLANG_FUZZ_VALUES", "5000"))

# each program reads a float input x [B, 3] and an integer input t [B] in its own way
PROGRAMS = {
    "labels": "input x : f32[B, 3]\ninput t : i32[B]\nparam w : [3, 3] = 0.1\n"
              "loss = mean(cross_entropy(x @ w, t))\n",
    "take": "input x : f32[B, 3]\ninput t : i64[B]\nparam E : [5, 3] = 0.5\nloss = mean(take(E, t) * x)\n",
    "one_hot": "input x : f32[B, 3]\ninput t : i32[B]\nparam w : [3] = 1\n"
               "loss = mean(one_hot(t, 3) * w * x)\n",
}
BOUNDS = {"labels": CLASSES, "take": ROWS, "one_hot": CLASSES}
DTYPE_RANGE = {"labels": (-2 ** 31, 2 ** 31 - 1), "take": (-2 ** 63, 2 ** 63 - 1), "one_hot": (-2 ** 31, 2 ** 31 - 1)}
COMPILED = {}


def program(name: str) -> gradlang.Program:
    if name not in COMPILED:
        COMPILED[name] = gradlang.compile(PROGRAMS[name])
    return COMPILED[name]


INTEGERS = st.sampled_from([0, 1, 2, 3, 4, 5, -1, -2, 2 ** 31 - 1, 2 ** 31, -2 ** 31, -2 ** 31 - 1, 2 ** 40,
                            2 ** 63 - 1, -2 ** 63]) | st.integers(-10, 10)
FLOATS = st.sampled_from([0.0, 1.0, 2.0, 0.5, -1.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e300,
                          -1e300, 5e-324, 3.0, 2.9999999]) | st.floats(-10, 10)
ODD = st.sampled_from(["a", None, 1j, b"x", [1, 2], True])


@st.composite
def label_values(draw):
    """Labels as an array of some dtype, or as a Python list that may be ragged or mistyped."""
    n = draw(st.integers(0, 4))
    kind = draw(st.sampled_from(["int64", "int32", "uint8", "int8", "float64", "float16", "bool", "list",
                                 "odd list", "complex", "object"]))
    if kind in ("float64", "float16"):
        with np.errstate(over="ignore"):   # large values become ±inf in float16: invalid labels either way
            return np.array(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype=kind)
    if kind == "bool":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "complex":
        return np.array(draw(st.lists(INTEGERS, min_size=n, max_size=n)), dtype=float) + 1j
    if kind == "list":
        return draw(st.lists(INTEGERS | FLOATS, min_size=n, max_size=n))
    if kind == "odd list":
        return draw(st.lists(INTEGERS | ODD, min_size=max(n, 1), max_size=max(n, 1)))
    values = draw(st.lists(INTEGERS, min_size=n, max_size=n))
    if kind == "object":
        return np.array(values, dtype=object)
    info = np.iinfo(kind)
    return np.array([v for v in values if info.min <= v <= info.max], dtype=kind)


@st.composite
def feature_values(draw, n: int):
    shape = draw(st.sampled_from([(n, 3), (n, 3), (n, 2), (n,), (n, 3, 1)]))
    kind = draw(st.sampled_from(["float64", "float32", "int64", "list", "complex"]))
    if kind == "list":
        return [[draw(FLOATS) for _ in range(3)] for _ in range(n)] + draw(st.sampled_from([[], [[1.0]]]))
    size = int(np.prod(shape))
    if kind == "int64":
        return np.array(draw(st.lists(st.integers(-5, 5), min_size=size, max_size=size)), np.int64).reshape(shape)
    values = np.array(draw(st.lists(FLOATS, min_size=size, max_size=size)), np.float64).reshape(shape)
    with np.errstate(over="ignore"):   # float32 features may overflow to ±inf: such values are valid
        return values + 1j if kind == "complex" else values.astype(kind)


def valid_labels(name: str, labels) -> bool:
    """The documented rule: numbers (booleans included), integral, finite, of the input's dtype's
    range, and in [0, bound) where they are used; at least one example."""
    try:
        array = np.asarray(labels)
    except ValueError:
        return False
    if array.dtype.kind not in "biuf" or array.ndim != 1 or array.size == 0:
        return False
    values = array.astype(np.float64) if array.dtype.kind in "bf" else array
    if array.dtype.kind == "f" and not (np.all(np.isfinite(values)) and np.all(values == np.floor(values))):
        return False
    low, high = DTYPE_RANGE[name]
    if array.dtype.kind in "iu" and (array.min() < low or array.max() > high):
        return False
    return bool(values.min() >= 0 and values.max() < BOUNDS[name])


def valid_features(features, n: int) -> bool:
    try:
        array = np.asarray(features)
    except ValueError:
        return False
    if array.dtype.kind not in "iuf" or array.shape != (n, 3):
        return False
    with np.errstate(over="ignore"):
        return not (array.dtype.kind == "f" and np.any(np.isfinite(array) & ~np.isfinite(array.astype(np.float32))))


def check_case(name: str, labels, features, call: str) -> None:
    prog = program(name)
    n = len(labels) if hasattr(labels, "__len__") else 1
    feed = {"x": features, "t": labels}
    valid = valid_labels(name, labels) and valid_features(features, n)
    with time_limit(20), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # NaN features make a NaN loss, as documented
        try:
            if call == "loss":
                prog.loss(feed)
            elif call == "gradients":
                prog.gradients(feed)
            else:
                prog.run(["loss"], feed, training=True)
        except GradError:
            assert not valid, f"{name}: valid values were refused: labels {labels!r}, features {features!r}"
            return
    assert valid, f"{name}: invalid values were accepted: labels {labels!r}, features {features!r}"


@st.composite
def cases(draw):
    labels = draw(label_values())
    n = len(labels)
    return (draw(st.sampled_from(sorted(PROGRAMS))), labels, draw(feature_values(n)),
            draw(st.sampled_from(["loss", "gradients", "run"])))


@settings(max_examples=300, **FUZZ_SETTINGS)
@given(cases())
def test_fed_values_compute_only_when_valid_else_a_grad_error(case):
    check_case(*case)


@pytest.mark.fuzz
@settings(max_examples=LONG_RUN, **{**FUZZ_SETTINGS, "derandomize": False})
@given(cases())
def test_long_fuzz_run_of_fed_values(case):
    check_case(*case)


def test_the_oracle_sees_both_outcomes():
    assert valid_labels("labels", np.array([0, 1, 2])) and not valid_labels("labels", np.array([0, 3]))
    assert not valid_labels("labels", [0, -1]) and not valid_labels("take", np.array([5]))
    assert valid_labels("take", np.array([4.0])) and not valid_labels("labels", [2 ** 40])
    assert valid_features(np.ones((2, 3)), 2) and not valid_features(np.full((2, 3), 1e300), 2)


# ---- the same values through the CLI's `predict` (an NPZ file) ------------------------------------

PREDICT = """input x : f32[B, 3]
input t : i32[B]
param E : [5, 3] = 0.5
output picked = take(E, t) * x
loss = mean(picked)
"""


@pytest.mark.parametrize("t, valid", [
    (np.array([0, 4], np.int64), True),
    (np.array([0, -1], np.int64), False),
    (np.array([0, 5], np.int64), False),
    (np.array([0, 2 ** 40], np.int64), False),
    (np.array([0.0, 1.5]), False),
    (np.array([0.0, np.nan]), False),
    (np.array([1 + 1j, 0]), False),
    (np.array(["a", "b"]), False),
    (np.zeros(0, np.int64), False),
])
def test_predict_from_the_command_line_refuses_bad_values_with_a_located_error(tmp_path, capsys, t, valid):
    (tmp_path / "m.grad").write_text(PREDICT)
    gradlang.compile(tmp_path / "m.grad").save(tmp_path / "p.npz")
    np.savez(tmp_path / "in.npz", x=np.ones((len(t), 3), np.float32), t=t)
    code = main(["predict", str(tmp_path / "m.grad"), "--params", str(tmp_path / "p.npz"),
                 "--input", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out.npz")])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    if valid:
        assert code == 0 and (tmp_path / "out.npz").exists(), err
    else:
        assert code == 1 and "error:" in err, err
