"""The ops added for issue 18 (point 11), through the language: log1p, expm1, clip, var, std, prod, cumsum,
flip, pad, argmin, squeeze, expand_dims, einsum, static index lists for take and int, and cross-entropy's
label_smoothing.

Values are compared with NumPy's; gradients (float64) with central differences of the loss, through the
public API (`gradlang.compile`, `Program.gradients`), for the builtins that are composites as much as for
the new primitives (whose VJP rules tests/test_gradients.py checks on their own). Every mistake must be a
located error.
"""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

import gradlang
from gradlang import GradError

EPS = 1e-6

# ---- helpers -----------------------------------------------------------------------------------


def numeric_gradients(prog, feed: dict, eps: float = EPS) -> dict[str, np.ndarray]:
    """Central differences of the loss in every element of every param."""
    out = {}
    for name, live in prog.params.items():
        base = np.array(live)
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            for sign in (1, -1):
                moved = base.copy()
                moved[index] += sign * eps
                prog.set_params({name: moved})
                grad[index] += sign * prog.loss(feed) / (2 * eps)
        prog.set_params({name: base})
        out[name] = grad
    return out


def assert_gradients_match(prog, feed: dict, rtol: float = 1e-6) -> dict[str, np.ndarray]:
    analytic = prog.gradients(feed)
    for name, numeric in numeric_gradients(prog, feed).items():
        scale = max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
        np.testing.assert_allclose(analytic[name], numeric, rtol=rtol, atol=rtol * scale, err_msg=name)
    return analytic


# ---- values against NumPy ------------------------------------------------------------------------

VALUE_SOURCE = """input x : f64[B, 3, 4]
param w : [4, 5]
param u : [3]
param s : [4, 4]
loss = mean(x) + mean(w) + mean(u) + mean(s)
output r = {expr}
"""


def predicted(expr: str, feed: dict) -> np.ndarray:
    """The value of `expr` with x fed and the params w, u and s set from `feed`."""
    prog = gradlang.compile(VALUE_SOURCE.format(expr=expr), dtype="float64")
    prog.set_params({name: feed[name] for name in ("w", "u", "s")})
    return prog.predict({"x": feed["x"]})["r"]


def _feed(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(2, 3, 4)), "w": rng.normal(size=(4, 5)), "u": rng.normal(size=3),
            "s": rng.normal(size=(4, 4))}


def _on_halves(f):
    """A case fed x rounded to halves, so that argmin meets ties (NumPy's is the first)."""
    f.halves = True
    return f


VALUE_CASES = [
    ("log1p(abs(x) * 1e-9)", lambda d: np.log1p(np.abs(d["x"]) * 1e-9)),
    ("log1p(x * x)", lambda d: np.log1p(d["x"] ** 2)),
    ("expm1(x * 1e-9)", lambda d: np.expm1(d["x"] * 1e-9)),
    ("expm1(x)", lambda d: np.expm1(d["x"])),
    ("clip(x, -0.5, 0.7)", lambda d: np.clip(d["x"], -0.5, 0.7)),
    ("clip(x, -abs(u)[0], 0.2)", lambda d: np.clip(d["x"], -abs(d["u"][0]), 0.2)),
    ("clip(x, w[:, 0], 1)", lambda d: np.clip(d["x"], d["w"][:, 0], 1)),
    ("var(x)", lambda d: np.var(d["x"])),
    ("var(x, axis: 1)", lambda d: np.var(d["x"], axis=1)),
    ("var(x, axis: [0, 2], keepdims: true, ddof: 1)", lambda d: np.var(d["x"], axis=(0, 2), keepdims=True, ddof=1)),
    ("var(x, axis: 0, ddof: 1.5)", lambda d: np.var(d["x"], axis=0, ddof=1.5)),
    ("var(x + 1e8, axis: 2)", lambda d: np.var(d["x"] + 1e8, axis=2)),   # the mean subtracted first
    ("std(x)", lambda d: np.std(d["x"])),
    ("std(x, axis: -1, ddof: 1)", lambda d: np.std(d["x"], axis=-1, ddof=1)),
    ("std(u, keepdims: true)", lambda d: np.std(d["u"], keepdims=True)),
    ("prod(x, axis: 1)", lambda d: np.prod(d["x"], axis=1)),
    ("prod(x, axis: [1, 2], keepdims: true)", lambda d: np.prod(d["x"], axis=(1, 2), keepdims=True)),
    ("prod(w)", lambda d: np.prod(d["w"])),
    ("prod(w, axis: 0)", lambda d: np.prod(d["w"], axis=0)),
    ("prod(u)", lambda d: np.prod(d["u"])),
    ("prod(w, axis: [])", lambda d: d["w"]),
    ("prod(int(w * 3), axis: 1)", lambda d: np.prod(np.trunc(d["w"] * 3).astype(np.int64), axis=1)),
    ("prod(w > 0, axis: 1)", lambda d: np.prod(d["w"] > 0, axis=1).astype(np.float64)),
    ("cumsum(x, 1)", lambda d: np.cumsum(d["x"], axis=1)),
    ("cumsum(x, -1)", lambda d: np.cumsum(d["x"], axis=-1)),
    ("cumsum(x, 0)", lambda d: np.cumsum(d["x"], axis=0)),
    ("cumsum(int(x * 3), 2)", lambda d: np.cumsum(np.trunc(d["x"] * 3).astype(np.int64), axis=2)),
    ("flip(x, axis: 1)", lambda d: np.flip(d["x"], axis=1)),
    ("flip(x)", lambda d: np.flip(d["x"])),
    ("flip(x, axis: [0, -1])", lambda d: np.flip(d["x"], axis=(0, 2))),
    ("pad(x, [[0, 0], [1, 2], [0, 3]], value: -2)",
     lambda d: np.pad(d["x"], ((0, 0), (1, 2), (0, 3)), constant_values=-2)),
    ("pad(w, 2)", lambda d: np.pad(d["w"], 2)),
    ("pad(w, [0, 1], value: 0.5)", lambda d: np.pad(d["w"], (0, 1), constant_values=0.5)),
    ("pad(int(w * 3), [[1, 0], [0, 0]], value: 7)",
     lambda d: np.pad(np.trunc(d["w"] * 3).astype(np.int64), ((1, 0), (0, 0)), constant_values=7)),
    ("argmin(x)", _on_halves(lambda d: np.argmin(d["x"], axis=-1))),
    ("argmin(x, axis: 1)", _on_halves(lambda d: np.argmin(d["x"], axis=1))),
    ("argmin(int(x * 2), axis: 0)", lambda d: np.argmin(np.trunc(d["x"] * 2).astype(np.int64), axis=0)),
    ("argmin(x > 0, axis: 2)", lambda d: np.argmin(d["x"] > 0, axis=2)),
    ("squeeze(x[:, 0:1, :], 1)", lambda d: d["x"][:, 0, :]),
    ("squeeze(x[:, 0:1, 1:2])", lambda d: d["x"][:, 0, 1]),
    ("squeeze(x)", lambda d: d["x"]),
    ("expand_dims(x, [1, -1])", lambda d: np.expand_dims(d["x"], (1, 4))),
    ("expand_dims(u, 0)", lambda d: d["u"][None]),
    ("take(w, [0, 3, 3])", lambda d: d["w"][[0, 3, 3]]),
    ("take(w, [[1], [2]], axis: 1)", lambda d: np.take(d["w"], [[1], [2]], axis=1)),
    ("take(w, int([2.7, 0]))", lambda d: d["w"][[2, 0]]),
    ("int([[1, -2], [3, 2 ** 62]])", lambda d: np.array([[1, -2], [3, 2 ** 62]])),
    ("int([1.9, -1.9, true])", lambda d: np.array([1, -1, 1])),
]

EINSUM_CASES = [
    ("ij,jk->ik", "s, w"),        # a matrix product
    ("bij,jk->bik", "x, w"),      # over a batch, one side shared
    ("bij,bkj->bik", "x, x"),     # a batched matrix product
    ("i,j->ij", "u, u"),          # an outer product
    ("i,i", "u, u"),              # an inner product
    ("ii->", "s"),                # the trace
    ("ii->i", "s"),               # the diagonal
    ("ii", "s"),
    ("bij->j", "x"),              # sums over indices
    ("bij->", "x"),
    ("ij", "s"),
    ("ji", "s"),                  # implicit output: alphabetical, so a transpose
    ("ij->ji", "s"),
    ("...j,jk", "x, w"),          # leading axes
    ("...ij,...kj->...ik", "x, x"),
    ("bij,i->bj", "x, u"),
    ("ij,ij->", "s, s"),
    ("bij,bij->bi", "x, x"),
    ("ij,jk,kl->il", "s, s, w"),  # three operands, contracted in turn
    ("bji,ik->bjk", "x, w"),
    ("ij,ij->ij", "s[0:1, :], s"),   # a size-1 axis broadcasts
    ("bij,bik->jk", "x, x"),      # the symbolic batch contracted with another axis: a product and a sum
    ("bij,bik->ijk", "x, x"),     # the symbolic batch alone contracted: a matrix product
    ("b i j , j k -> b k", "x, w"),
    ("Ab,ab", "s, s"),            # uppercase before lowercase in the implicit output, as in NumPy
    ("jii->j", "x[:, 1:3, 0:2]"),   # a diagonal in each of a batch
]


@pytest.mark.parametrize("expr, expected", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_values_match_numpy(expr, expected):
    feed = _feed()
    if getattr(expected, "halves", False):
        feed["x"] = np.round(feed["x"] * 2) / 2
    got = predicted(expr, feed)
    want = np.asarray(expected(feed))
    assert got.shape == want.shape
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64
    else:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec, operands", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_matches_numpy(spec, operands):
    feed = _feed()
    got = predicted(f'einsum("{spec}", {operands})', feed)
    # the operands are names and slices, which read the same in Python
    arrays = [eval(o, {}, feed) for o in re.split(r",\s*(?![^\[]*\])", operands)]   # noqa: S307
    want = np.einsum(spec.replace(" ", ""), *arrays)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_log1p_and_expm1_keep_the_digits_of_small_values_in_float32():
    prog = gradlang.compile("input x : f32[B]\nloss = mean(x)\noutput l = log1p(x)\noutput e = expm1(x)\n")
    x = np.array([1e-10, -3e-8, 2e-5, 0.3, -0.7], dtype=np.float32)
    out = prog.predict({"x": x})
    assert out["l"].dtype == np.float32
    np.testing.assert_allclose(out["l"], np.log1p(x.astype(np.float64)), rtol=2e-7)
    np.testing.assert_allclose(out["e"], np.expm1(x.astype(np.float64)), rtol=2e-7)


def test_integer_lists_are_i64_constants_and_take_reads_them():
    prog = gradlang.compile("param E : [4, 2] = [[0, 1], [2, 3], [4, 5], [6, 7]]\n"
                            "idx = int([0, 2, 2])\n"
                            "metric picked = sum(take(E, idx))\n"
                            "metric listed = sum(take(E, [3, 3], axis: 0))\n"
                            "loss = mean(E)\n")
    assert prog.metrics({}) == {"picked": 0 + 1 + 2 * (4 + 5), "listed": 2 * (6 + 7)}


# ---- gradients against finite differences ------------------------------------------------------

PARAMS = {"p": "param p : [3, 4] = normal(std: 1.0)", "q": "param q : [4, 5] = normal(std: 1.0)",
          "r": "param r : [4, 4] = normal(std: 1.0)", "u": "param u : [3] = normal(std: 1.0)"}


def gradient_program(expr: str):
    """loss = sum(sin(expr)) over the params the expression names, compiled in float64."""
    used = [decl for name, decl in PARAMS.items() if re.search(rf"\b{name}\b", expr)]
    return gradlang.compile("\n".join(used) + f"\nloss = sum(sin({expr}))\n", dtype="float64")


GRADIENT_CASES = [
    "log1p(abs(p))", "expm1(p)",
    "clip(p, -0.5, 0.5)", "clip(p, q[:, 0], 0.3)", "clip(p, -1, u[0])",
    "var(p, axis: 1)", "var(p, ddof: 1)", "var(p, axis: [0, 1], keepdims: true)",
    "std(p, axis: 0, keepdims: true)", "std(p, ddof: 1)", "std(u)",
    "prod(p, axis: 1)", "prod(p)", "prod(p, axis: 0, keepdims: true)", "prod(u)",
    "cumsum(p, 0)", "cumsum(p, 1) * cumsum(p, -1)",
    "flip(p, axis: 1)", "flip(p) * p",
    "pad(p, [1, 2], value: 0.5)", "pad(p, [[0, 1], [2, 0]]) * 2",
    "squeeze(expand_dims(p, [0, 3]))",
    "take(q, [0, 3, 3])", "take(q, int([[1, 2], [2, 2]]))", "take(p, [3, 0, 3], axis: 1)",
    'einsum("ij,jk->ik", p, q)', 'einsum("i,j->ij", u, u)', 'einsum("ii->", r)', 'einsum("ii->i", r)',
    'einsum("ij->j", p)', 'einsum("ij,ij->", p, p)', 'einsum("...j,jk", p, q)', 'einsum("ij,ik->jk", p, p)',
    'einsum("ij,jk,kl->il", p, r, q)',
]


@pytest.mark.parametrize("expr", GRADIENT_CASES)
def test_gradients_match_finite_differences(expr):
    assert_gradients_match(gradient_program(expr), {})


def test_prod_gradient_with_zeros_is_the_product_of_the_others():
    prog = gradient_program("prod(p, axis: 1)")
    p = np.random.default_rng(2).normal(size=(3, 4))
    p[0, 1] = 0.0                 # one zero: its gradient is the product of the rest
    p[1, 0] = p[1, 2] = 0.0       # two zeros: every gradient in the row is 0
    prog.set_params({"p": p})
    analytic = assert_gradients_match(prog, {})["p"]
    others = np.array([[np.prod(np.delete(row, j)) for j in range(4)] for row in p])
    np.testing.assert_allclose(analytic, np.cos(np.prod(p, axis=1))[:, None] * others, rtol=1e-12)
    assert analytic[0, 1] != 0 and np.all(analytic[1] == 0)


def test_prod_second_derivatives_with_zeros():
    # the loss is a first derivative (grad), so the gradient checked is a second derivative of prod
    prog = gradlang.compile("param p : [2, 5] = normal(std: 1.0)\n"
                            "first = grad(sum(sin(prod(p, axis: 1))), p)\n"
                            "loss = sum(sin(first))\n", dtype="float64")
    p = np.random.default_rng(3).normal(size=(2, 5))
    p[0, 3] = 0.0
    p[1, 0] = p[1, 4] = 0.0
    prog.set_params({"p": p})
    assert_gradients_match(prog, {}, rtol=1e-5)


def test_clip_sends_the_gradient_to_x_on_the_boundaries():
    prog = gradlang.compile("param p : [5] = [-0.5, 0.5, 0.0, 2.0, -3.0]\nloss = sum(clip(p, -0.5, 0.5))\n",
                            dtype="float64")
    np.testing.assert_array_equal(prog.gradients({})["p"], [1, 1, 1, 0, 0])


@pytest.mark.parametrize("source", [
    "param p : [4] = normal(std: 1.0)\nloss = sum(sin(grad(sum(sin(cumsum(p, 0))), p)))\n",
    "param p : [4] = normal(std: 1.0)\nloss = sum(sin(grad(sum(sin(pad(flip(p), [1, 1]) * 3)), p)))\n",
    "param p : [3, 3] = normal(std: 1.0)\nloss = sum(sin(grad(sum(sin(einsum(\"ij,jk->ik\", p, p))), p)))\n",
    "param p : [2, 3] = normal(std: 1.0)\nloss = sum(sin(grad(std(p) + var(p, axis: 1)[0], p)))\n",
    "param p : [3] = [0.5, 1.0, 2.0]\nloss = sum(sin(grad(sum(log1p(p) * expm1(p)), p)))\n",
], ids=["cumsum", "flip-pad", "einsum", "std-var", "log1p-expm1"])
def test_gradients_of_gradients(source):
    assert_gradients_match(gradlang.compile(source, dtype="float64"), {}, rtol=1e-5)


def test_einsum_needs_no_primitive_of_its_own():
    prog = gradient_program('einsum("bij,bjk->bik", reshape(p, [1, 3, 4]), reshape(q, [1, 4, 5]))')
    ops = {data["op"] for _, data in prog.graph.nodes(data=True)}
    assert "matmul" in ops and not any("einsum" in op for op in ops)


# ---- cross-entropy with label smoothing ----------------------------------------------------------

SMOOTHED = """input x : f64[B, 5]
input y : i64[B]
param w : [5, 4] = normal(std: 0.5)
logits = x @ w
loss = cross_entropy(logits, y{smoothing})
"""


def _ce_feed():
    rng = np.random.default_rng(4)
    return {"x": rng.normal(size=(6, 5)), "y": rng.integers(0, 4, 6)}


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 0.99])
def test_label_smoothing_is_cross_entropy_against_the_smoothed_target(eps):
    prog = gradlang.compile(SMOOTHED.format(smoothing=f", label_smoothing: {eps}"), dtype="float64")
    feed = _ce_feed()
    logits = feed["x"] @ prog.params["w"]
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = (1 - eps) * np.eye(4)[feed["y"]] + eps / 4
    assert prog.loss(feed) == pytest.approx(float(np.mean(-(target * log_p).sum(1))), rel=1e-12)
    assert_gradients_match(prog, feed)


def test_no_label_smoothing_is_the_fused_cross_entropy_alone():
    plain = gradlang.compile(SMOOTHED.format(smoothing=""), dtype="float64")
    zero = gradlang.compile(SMOOTHED.format(smoothing=", label_smoothing: 0"), dtype="float64")
    assert zero.ir == plain.ir
    smoothed = gradlang.compile(SMOOTHED.format(smoothing=", label_smoothing: 0.1"), dtype="float64")
    assert "softmax_cross_entropy" in smoothed.ir and "logsumexp" in smoothed.ir


@pytest.mark.parametrize("value, shown", [("1", "1"), ("-0.1", "-0.1"), ("1.5", "1.5"), ('"a"', '"a"'),
                                          ("true", "true"), ("x", "a tensor f64[B,5]")])
def test_label_smoothing_outside_zero_to_one_is_a_located_error(value, shown):
    with pytest.raises(GradError) as caught:
        gradlang.compile(SMOOTHED.format(smoothing=f", label_smoothing: {value}"), dtype="float64")
    err = caught.value
    assert f"label_smoothing must be a number in [0, 1), got {shown}" in err.message
    assert str(err.span).startswith("<string>:5:8")   # the user's call of cross_entropy


# ---- every mistake is a located error -----------------------------------------------------------

ERROR_SOURCE = """input x : f32[B, 3]
param p : [3, 4]
param r : [4, 4]
output o = {expr}
loss = mean(p)
"""

ERRORS = [
    ("prod(x)", "prod cannot reduce the symbolic dimension B"),
    ("prod(p, axis: 2)", "axis 2 is out of range"),
    ("prod(p, keepdims: 1)", "keepdims must be true or false"),
    ("var(p[0], ddof: 4)", "var of 4 elements with ddof 4 divides by 0"),
    ("std(p, ddof: -1)", "std: ddof must be a number ≥ 0, got -1"),
    ("var(p, axis: 3)", "axis 3 is out of range"),
    ("var(p, ddof: x)", "ddof must be a number"),
    ("clip(p, 1, 0)", "clip: low (1) is greater than high (0)"),
    ('clip(p, "a", 1)', "clip needs a number or a tensor for low"),
    ("clip(p, 0, 1e999 - 1e999)", "clip needs a number or a tensor for high"),
    ("cumsum(p)", "cumsum() is missing its argument 'axis'"),
    ("cumsum(p, 2)", "axis 2 is out of range"),
    ("cumsum(p, [0, 1])", "axis must be one integer"),
    ("cumsum(3, 0)", "cumsum needs a tensor of rank ≥ 1"),
    ("flip(p, axis: 5)", "axis 5 is out of range"),
    ("flip(p, axis: [0, 0])", "repeated axis"),
    ("pad(p, [[1, 1]])", "pad needs one [before, after] pair per axis"),
    ("pad(p, -1)", "pad needs widths ≥ 0"),
    ("pad(p, [1, 2, 3])", "pad needs widths ≥ 0"),
    ("pad(x, 1)", "cannot pad the symbolic dimension B"),
    ("pad(int(p), 1, value: 0.5)", "the value 0.5 is not an integer"),
    ("pad(p, 1, value: 1e39)", "does not fit in f32"),
    ("pad(p, 1, value: true)", "pad needs a finite number for value"),
    ("pad(p, 100000000)", "bytes, more than the limit"),
    ("squeeze(p, 0)", "squeeze: axis 0 of f32[3,4] has size 3, not 1"),
    ("squeeze(x, 0)", "has the symbolic size B, not 1"),
    ("expand_dims(p, 3)", "expand_dims: axis 3 is out of range"),
    ("expand_dims(p, [0, 0])", "repeated axis"),
    ("argmin(p, axis: [0])", "argmin needs one integer axis"),
    ("argmin(p, axis: 2)", "axis 2 is out of range"),
    ('einsum("ij,jk->ik", p)', "einsum: the subscripts 'ij,jk->ik' name 2 operands, but 1 was given"),
    ('einsum("ij->ik", p)', "the output's index 'k' is not an index of any operand"),
    ('einsum("ijk", p)', "has 2 axes, but its subscripts 'ijk' name 3"),
    ('einsum("ij,jk", p, p)', "the index 'j' has size 4 in one operand and 3 in operand 2"),
    ('einsum("i1", p)', "hold '1'"),
    ('einsum("ij->ii", p)', "names the index 'i' twice"),
    ('einsum("ij->j->i", p)', "more than one ->"),
    ('einsum("ii", p)', "a diagonal needs equal sizes"),
    ('einsum("...i->i", p)', "needs ... for the 1 axis"),
    ('einsum("i......", p)', "more than once"),
    ("einsum(3, p)", "einsum needs its subscripts first"),
    ('einsum("ij")', "einsum needs at least one tensor"),
    ('einsum("ij", "p")', "expected a tensor or a number"),
    ('einsum("bb->b", broadcast_to(reshape(x[:, 0], [x.shape[0], 1]), [x.shape[0], x.shape[0]]))',
     "cannot take the diagonal of the index 'b', whose size B"),
    ("take(p, [0, 4], axis: 1)", "take: index 4 is out of range for axis 1 of f32[3,4], which needs 0 ≤ index < 4"),
    ("take(p, [-1])", "take: index -1 is out of range"),
    ("take(p, [0.5])", "take's list of indices must hold integers only, got a number"),
    ('take(p, ["a"])', "must hold numbers"),
    ("take(p, int([0, 3]))", "take: index 3 is out of range for axis 0"),
    ("take(p, [[0], [1, 2]])", "regular (rectangular) shape"),
    ("int([1e999])", "int() of a list must hold finite numbers"),
    ("int([2 ** 70])", "does not fit in i64"),
    ("int([10 ** 400])", "does not fit in i64"),
    ("int([1e300])", "does not fit in i64"),
    ("softmax_cross_entropy(p, int([0, 1, 2]), label_smoothing: 1)", "label_smoothing must be a number in [0, 1)"),
]


@pytest.mark.parametrize("expr, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_mistakes_are_located_errors(expr, message):
    with pytest.raises(GradError) as caught:
        gradlang.compile(ERROR_SOURCE.format(expr=expr))
    err = caught.value
    assert message in err.message, err.format()
    assert err.span is not None and str(err.span).startswith("<string>:4:"), err.format()
    assert re.match(r"<string>:4:\d+: error: ", err.format()), err.format()


# ---- ONNX ------------------------------------------------------------------------------------------

needs_onnx = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")),
                                reason="onnx and onnxruntime are not installed (pip install '.[onnx]')")

EXPORTED = """input x : f32[B, 3, 4]
param w : [4, 5] = normal(std: 1.0)
loss = mean(x)
output small = log1p(x * 1e-6) + expm1(x * 1e-7)
output clipped = clip(x, -0.5, 0.5)
output spread = var(x, axis: 2) + expand_dims(std(x, axis: [1, 2], ddof: 1), 1)
output product = prod(x, axis: [1, 2])
output running = cumsum(flip(x, axis: 1), 2)
output padded = pad(x, [[0, 0], [1, 0], [2, 2]], value: 0.25)
output lowest = argmin(x, axis: 1)
output shaped = squeeze(expand_dims(x, 1), 1)
output contracted = einsum("bij,jk->bik", x, w) + expand_dims(einsum("bij,bij->bi", x, x), -1)
output picked = take(w, [3, 0, 0])
"""


@needs_onnx
def test_the_new_ops_export_to_onnx_and_compute_what_gradlang_computes():
    import onnxruntime

    from gradlang.export.onnx import to_onnx
    prog = gradlang.compile(EXPORTED)
    model = to_onnx(prog)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    feed = {"x": rng.normal(size=(3, 3, 4)).astype(np.float32)}
    expected = prog.predict(feed)
    for name, got in zip(prog.output_names, session.run(prog.output_names, feed)):
        if got.dtype.kind in "iu":
            np.testing.assert_array_equal(got, expected[name], err_msg=name)
        else:
            np.testing.assert_allclose(got, expected[name], rtol=2e-6, atol=1e-6, err_msg=name)
