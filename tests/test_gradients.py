"""Gradient tests: every VJP rule checked against central finite differences in float64.

Graphs are built directly with `Graph.add` from float64 `input` leaves. The value differentiated is
always a scalar, `reduce_sum(y * weights)` with `weights` a random input held fixed, so every element
of `y` reaches it. Each check (`check_gradients`)

- asserts every gradient node has its leaf's shape and dtype,
- runs the verifier on the differentiated graph and on its simplification,
- checks simplification leaves the gradient values unchanged,
- compares the gradients with central differences along random directions and element by element.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from gradlang.analysis import verify
from gradlang.ir.graph import Graph
from gradlang.lowering.schedule import schedule
from gradlang.ops import all_primitives
from gradlang.ops.shapes import broadcast, resolve
from gradlang.passes import backprop, simplify
from gradlang.runtime.interpreter import Executable

EPS = 1e-6     # central-difference step
RTOL = 1e-6    # agreement asked of analytic and numeric gradients


# ---- input domains: where operands are sampled, away from kinks, poles and ties ---------------------

def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    """For log and the base of pow."""
    return rng.uniform(0.5, 2.0, shape)


def above_minus_one(rng, shape):
    """For log1p: (−0.9, 2), on both sides of 0."""
    return rng.uniform(-0.9, 2.0, shape)


def away_from_zero(rng, shape):
    """For relu and abs (kink at 0) and divisors."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)


def low_fraction(rng, shape):
    """maximum(low_fraction, high_fraction) never ties: the operands differ by at least 0.2."""
    return rng.integers(-2, 3, shape) + rng.uniform(0.1, 0.4, shape)


def high_fraction(rng, shape):
    return rng.integers(-2, 3, shape) + rng.uniform(0.6, 0.9, shape)


def distinct(rng, shape):
    """For reduce_max: all values at least 0.2 apart, so no reduction ever has tied maxima."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.3 + rng.uniform(0.0, 0.1, n) - 0.15 * n).reshape(shape)


# ---- building graphs ----------------------------------------------------------------------------------

def op(g: Graph, name: str, *operands: int, **attrs) -> int:
    return g.add(name, operands, attrs)


def input_leaf(g: Graph, name: str, shape) -> int:
    return g.add("input", (), {"name": name, "shape": tuple(shape), "dtype": "f64"})


def inner(g: Graph, a: int, b: int) -> int:
    """sum(a * b), a scalar."""
    return op(g, "reduce_sum", op(g, "mul", a, b), axes=None)


def weighted_sum(g: Graph, y: int) -> int:
    """sum(y * weights) for a new input `weights` of y's shape: every element of y reaches the result."""
    return inner(g, y, input_leaf(g, "weights", g.shape(y)))


def where_random_mask(mask_shape=None):
    """A builder of where(mask, a, b) with a fixed random mask, shaped like a and b broadcast unless given."""
    def build(g, a, b):
        shape = broadcast(g.shape(a), g.shape(b)) if mask_shape is None else mask_shape
        mask = np.random.default_rng(7).random(shape) < 0.5
        return op(g, "where", g.const(mask, "bool"), a, b)
    return build


def through_f32(g, x):
    """cast(cast(x, f32), f64): both directions of a float conversion."""
    return op(g, "cast", op(g, "cast", x, dtype="f32"), dtype="f64")


def softmax_cross_entropy_with_fixed_labels(g, logits):
    """softmax_cross_entropy(logits, labels) with fixed integer labels (they get no gradient)."""
    labels = np.random.default_rng(3).integers(0, g.shape(logits)[-1], size=g.shape(logits)[:-1])
    return op(g, "softmax_cross_entropy", logits, g.const(labels, "i64"))


def softmax_cross_entropy_grad_with_fixed_labels(g, logits):
    """softmax_cross_entropy_grad(logits, labels) with fixed integer labels, summed against fixed
    weights so that every output element's derivative counts."""
    labels = np.random.default_rng(3).integers(0, g.shape(logits)[-1], size=g.shape(logits)[:-1])
    weights = np.random.default_rng(4).normal(size=g.shape(logits))
    grad = op(g, "softmax_cross_entropy_grad", logits, g.const(labels, "i64"))
    return op(g, "mul", grad, g.const(weights, "f64"))


def softmax(g, x):
    return op(g, "exp", log_softmax(g, x))


def log_softmax(g, x):
    return op(g, "sub", x, op(g, "logsumexp", x, axes=(-1,), keepdims=True))


def cross_entropy(g, logits):
    """Mean cross-entropy of the rows of `logits` against fixed one-hot labels."""
    rows, classes = g.shape(logits)
    labels = np.eye(classes)[np.arange(rows) % classes]
    total = op(g, "reduce_sum", op(g, "mul", log_softmax(g, logits), g.const(labels, "f64")), axes=None)
    return op(g, "div", op(g, "neg", total), g.const(rows, "f64"))


def dense_tanh(g, x, w, b):
    return op(g, "tanh", op(g, "add", op(g, "matmul", x, w), b))


# ---- running graphs and differentiating them ---------------------------------------------------------

def evaluator(g: Graph, outputs: list[str], bindings=None) -> Callable[[dict], list]:
    """Schedule `g` once for the named outputs; return a function of {input name: array}."""
    names = list(g.inputs)
    exe = Executable(schedule(g, outputs, bindings or {}), g, names, [])
    return lambda values: exe.run([values[n] for n in names], [])


def add_gradients(g: Graph, out: int, wrt: list[str]) -> list[str]:
    """Backprop `out` to the named inputs; register the gradients as outputs and return their names."""
    leaves = [g.inputs[name] for name in wrt]
    names = []
    for name, leaf, grad in zip(wrt, leaves, backprop(g, out, leaves)):
        assert (g.shape(grad), g.dtype(grad)) == (g.shape(leaf), g.dtype(leaf)), f"gradient of {name}"
        names.append(f"grad[{out}]:{name}")
        g.outputs[names[-1]] = grad
    return names


def shifted(values: dict, direction: dict, step: float) -> dict:
    return {**values, **{name: values[name] + step * d for name, d in direction.items()}}


def central_difference(run, values: dict, direction: dict, eps: float) -> list:
    """(run(x + eps·d) − run(x − eps·d)) / 2·eps for each output of `run`."""
    plus, minus = run(shifted(values, direction, eps)), run(shifted(values, direction, -eps))
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def numeric_gradient(run, values: dict, name: str, eps: float) -> np.ndarray:
    """The gradient of run's (scalar) first output w.r.t. input `name`, one element at a time."""
    grad = np.zeros_like(values[name])
    for index in np.ndindex(grad.shape):
        basis = np.zeros_like(grad)
        basis[index] = 1.0
        grad[index] = central_difference(run, values, {name: basis}, eps)[0]
    return grad


def assert_close(actual, expected, rtol: float) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def check_gradients(g: Graph, out: int, wrt: list[str], values: dict, bindings=None,
                    eps: float = EPS, rtol: float = RTOL) -> list[np.ndarray]:
    """Differentiate scalar `out` w.r.t. the named inputs and check the result (see the module doc).
    Returns the gradients."""
    grad_names = add_gradients(g, out, wrt)
    g.outputs[f"value[{out}]"] = out
    verify(g)
    analytic = evaluator(g, grad_names, bindings)(values)
    for name, grad in zip(wrt, analytic):
        assert grad.dtype == np.float64 and grad.shape == values[name].shape, name

    simplified = verify(simplify(g))
    for after, before in zip(evaluator(simplified, grad_names, bindings)(values), analytic):
        assert_close(after, before, rtol=1e-12)

    value = evaluator(g, [f"value[{out}]"], bindings)
    rng = np.random.default_rng(1)
    for _ in range(2):
        direction = {name: rng.standard_normal(values[name].shape) for name in wrt}
        predicted = sum(np.vdot(grad, direction[name]) for name, grad in zip(wrt, analytic))
        assert_close(predicted, central_difference(value, values, direction, eps)[0], rtol)
    for name, grad in zip(wrt, analytic):
        assert_close(grad, numeric_gradient(value, values, name, eps), rtol)
    return analytic


# ---- the table: one row per differentiable primitive -------------------------------------------------

@dataclass(frozen=True)
class Row:
    """How to build one primitive from float64 input leaves x0, x1, … and where to sample them."""

    op: str
    shapes: tuple                       # operand shapes
    domains: tuple = (normal,)          # a sampler per operand, or one for all of them
    attrs: dict = field(default_factory=dict)
    build: Callable | None = None       # (graph, *leaves) -> node; by default the op on the leaves
    eps: float = EPS
    rtol: float = RTOL

    def apply(self, g: Graph, leaves: list[int]) -> int:
        return self.build(g, *leaves) if self.build else g.add(self.op, leaves, self.attrs)

    def sample(self, rng, position: int, shape) -> np.ndarray:
        domain = self.domains[position] if len(self.domains) > 1 else self.domains[0]
        return np.asarray(domain(rng, shape), dtype=np.float64)


M = (3, 4)
T = (2, 3, 4)
IMAGE = (2, 3, 5, 5)                      # [N, C, H, W]
INDICES = [[0, 4], [4, 2], [0, 0]]        # repeated indices: their cotangents must add up
POOL = {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)}   # overlapping windows
ROWS = [
    Row("neg", (M,)),
    Row("exp", (M,)),
    Row("log", (M,), (positive,)),
    Row("log1p", (M,), (above_minus_one,)),
    Row("expm1", (M,)),
    Row("tanh", (M,)),
    Row("sigmoid", (M,)),
    Row("relu", (M,), (away_from_zero,)),
    Row("abs", (M,), (away_from_zero,)),
    Row("sin", (M,)),
    Row("cos", (M,)),
    Row("erf", (M,)),
    Row("add", (M, M)),
    Row("sub", (M, M)),
    Row("mul", (M, M)),
    Row("div", (M, M), (normal, away_from_zero)),
    Row("pow", (M, M), (positive, normal)),
    Row("maximum", (M, M), (low_fraction, high_fraction)),
    Row("where", (M, M), build=where_random_mask()),
    # scheduled without a training context, as evaluation is: the gradient goes to x1 (test_batch_norm.py
    # checks a training step's, to x0)
    Row("training", (M, M)),
    # f32 rounding makes small steps useless: the function is linear, so a big step loses nothing
    Row("cast", (M,), build=through_f32, eps=1e-2, rtol=1e-3),
    Row("matmul", ((3, 4), (4, 5))),
    Row("reduce_sum", (T,), attrs={"axes": (1,)}),
    Row("reduce_max", (T,), (distinct,), attrs={"axes": (0, 2), "keepdims": True}),
    Row("logsumexp", (T,), attrs={"axes": (-1,)}),
    Row("softmax", (T,), attrs={"axis": 1}),
    Row("softmax_cross_entropy", (T,), build=softmax_cross_entropy_with_fixed_labels),
    Row("softmax_cross_entropy_grad", (T,), build=softmax_cross_entropy_grad_with_fixed_labels),
    Row("reshape", (T,), attrs={"shape": (4, -1)}),
    Row("transpose", (T,), attrs={"perm": (2, 0, 1)}),
    Row("broadcast_to", ((3, 1),), attrs={"shape": T}),
    Row("slice", ((4, 5),), attrs={"index": (("s", 1, None, 2), ("i", -2))}),
    Row("unslice", ((2,),), attrs={"index": (("s", 1, None, 2), ("i", -2)), "shape": (4, 5)}),
    Row("flip", (T,), attrs={"axes": (0, 2)}),
    Row("pad", (M,), attrs={"widths": ((1, 0), (2, 3)), "value": 0.5}),
    Row("cumsum", (T,), attrs={"axis": 1}),
    # deep-learning primitives (gradlang/ops/nn_ops.py): stride 2 and padding 1 on a 5×5 image, so the last
    # padded row and column are cut off; tests/test_nn_ops.py checks more strides, paddings and shapes
    Row("conv2d", (IMAGE, (4, 3, 3, 3)), attrs={"stride": (2, 2), "padding": (1, 1)}),
    Row("conv2d_transpose", ((2, 4, 3, 3), (4, 3, 3, 3)), attrs={"stride": (2, 2), "padding": (1, 1), "size": (5, 5)}),
    Row("conv2d_filter_grad", (IMAGE, (2, 4, 3, 3)), attrs={"stride": (2, 2), "padding": (1, 1), "kernel": (3, 3)}),
    Row("patches2d", (IMAGE,), attrs={"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)}),
    Row("patches2d_transpose", ((2, 3, 3, 3, 3, 3),),
        attrs={"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "size": (5, 5)}),
    Row("max_pool2d", (IMAGE,), (distinct,), attrs=POOL),
    Row("max_pool2d_grad", (IMAGE, (2, 3, 3, 3)), (distinct, normal), attrs=POOL),
    Row("max_pool2d_select", (IMAGE, IMAGE), (distinct, normal), attrs=POOL),
    Row("take", ((5, 3),), build=lambda g, x: op(g, "take", x, g.const(INDICES, "i64"), axis=0)),
    Row("scatter_add", ((3, 2, 3),),
        build=lambda g, u: op(g, "scatter_add", u, g.const(INDICES, "i64"), axis=0, shape=(5, 3))),
    Row("concat", ((2, 3), (2, 1), (2, 2)), attrs={"axis": 1}),
]
ROW = {row.op: row for row in ROWS}

# Primitives without a VJP rule. A new primitive must get a row above or be listed here.
NOT_DIFFERENTIABLE = {"input", "param", "state", "const", "sign", "stop_gradient", "lt", "le", "gt", "ge", "eq", "ne",
                      "size", "one_hot", "floor", "dropout_mask", "argmax", "random_normal",
                      "random_uniform", "causal_mask"}


def build_problem(row: Row, shapes=None, seed: int = 0):
    """A graph computing sum(row(x0, x1, …) * weights); the names x0, x1, …; values for every input."""
    shapes = row.shapes if shapes is None else shapes
    rng = np.random.default_rng(seed)
    g = Graph()
    wrt = [f"x{i}" for i in range(len(shapes))]
    y = row.apply(g, [input_leaf(g, name, shape) for name, shape in zip(wrt, shapes)])
    out = weighted_sum(g, y)
    values = {name: row.sample(rng, i, shape) for i, (name, shape) in enumerate(zip(wrt, shapes))}
    values["weights"] = normal(rng, g.shape(y))
    return g, out, wrt, values


def check_row(row: Row, shapes=None) -> None:
    g, out, wrt, values = build_problem(row, shapes)
    check_gradients(g, out, wrt, values, eps=row.eps, rtol=row.rtol)


def shape_ids(value) -> str:
    """A test id for a shape: 3x4, or scalar."""
    return "x".join(map(str, value)) if value else "scalar"


def test_every_primitive_has_a_row_or_is_declared_not_differentiable():
    primitives = all_primitives()
    differentiable = {name for name, prim in primitives.items() if prim.vjp is not None}
    row_ops = [row.op for row in ROWS]
    assert len(row_ops) == len(set(row_ops)), "a primitive has two rows"
    assert differentiable - set(row_ops) == set(), "differentiable primitives without a row in ROWS"
    assert set(row_ops) - differentiable == set(), "rows for primitives without a VJP rule"
    assert set(primitives) - differentiable == NOT_DIFFERENTIABLE, \
        "primitives without a VJP rule must be listed in NOT_DIFFERENTIABLE"


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.op)
def test_vjp_matches_finite_differences(row):
    check_row(row)


# ---- broadcasting, batched matmul, reductions --------------------------------------------------------

BROADCAST_PAIRS = [((), M), ((4,), M), ((3, 1), M), (T, M), ((1, 4), (3, 1))]
BROADCAST_CASES = [p for pair in BROADCAST_PAIRS for p in (pair, pair[::-1])]


@pytest.mark.parametrize("shapes", BROADCAST_CASES, ids=lambda s: " with ".join(map(shape_ids, s)))
@pytest.mark.parametrize("op_name", ["add", "sub", "mul", "div", "pow", "maximum", "where"])
def test_binary_broadcasting(op_name, shapes):
    check_row(ROW[op_name], shapes)


@pytest.mark.parametrize("mask_shape, a_shape, b_shape", [
    ((3, 1), (4,), M),     # the mask broadcasts too
    ((4,), (3, 1), ()),
    (T, (3, 1), (4,)),     # the mask alone has the full shape
    ((), M, M),            # one branch takes everything
], ids=shape_ids)
def test_where_broadcasts_its_mask(mask_shape, a_shape, b_shape):
    row = dataclasses.replace(ROW["where"], build=where_random_mask(mask_shape))
    check_row(row, (a_shape, b_shape))


@pytest.mark.parametrize("shapes", [
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((1, 3, 4), (2, 4, 5)),
    ((5, 1, 3, 4), (2, 4, 6)),
    ((2, 3, 4), (5, 1, 4, 2)),
], ids=lambda s: " @ ".join(map(shape_ids, s)))
def test_batched_matmul_broadcasts_batch_dims(shapes):
    check_row(ROW["matmul"], shapes)


REDUCTION_CASES = [(T, axes) for axes in (None, (), (0,), (-1,), (0, 2), (-1, -3), (1, 2))] \
    + [((), None), ((5,), (0,))]


@pytest.mark.parametrize("shape, axes", [pytest.param(shape, axes, id=f"{shape_ids(shape)} axes={axes}")
                                         for shape, axes in REDUCTION_CASES])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("op_name", ["reduce_sum", "reduce_max", "logsumexp"])
def test_reductions(op_name, shape, axes, keepdims):
    check_row(dataclasses.replace(ROW[op_name], attrs={"axes": axes, "keepdims": keepdims}), (shape,))


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumsum_along_each_axis_and_from_either_end(axis, reverse):
    check_row(dataclasses.replace(ROW["cumsum"], attrs={"axis": axis, "reverse": reverse}))


@pytest.mark.parametrize("shape, attrs", [
    ((5,), {"widths": ((0, 3),), "value": -1.0}),
    (T, {"widths": ((0, 0), (2, 2), (0, 1)), "value": 0.0}),
    ((), {"widths": (), "value": 2.0}),
    (T, {"axes": ()}),
    ((5,), {"axes": (0,)}),
], ids=lambda v: shape_ids(v) if isinstance(v, tuple) else str(v))
def test_pad_and_flip_in_other_shapes(shape, attrs):
    check_row(dataclasses.replace(ROW["flip" if "axes" in attrs else "pad"], attrs=attrs), (shape,))


# ---- symbolic dimensions -----------------------------------------------------------------------------

def batch_model(g: Graph) -> int:
    """A scalar of inputs x [B,3], w [3,4], b [4], weights [B]: matmul, broadcast_to, reshape, slice and
    reductions over the symbolic batch dimension B."""
    x, w, b = input_leaf(g, "x", ("B", 3)), input_leaf(g, "w", (3, 4)), input_leaf(g, "b", (4,))
    h = dense_tanh(g, x, w, op(g, "broadcast_to", b, shape=("B", 4)))                  # [B,4]
    pairs = op(g, "logsumexp", op(g, "reshape", h, shape=(-1, 2, 2)), axes=(-1,))      # [B,2]
    tail = op(g, "slice", x, index=(("s", None, None, None), ("s", 1, None, None)))   # [B,2]
    gated = op(g, "mul", pairs, op(g, "sigmoid", tail))
    batch_mean = op(g, "div", op(g, "reduce_sum", gated, axes=(0,), keepdims=True),
                    op(g, "size", x, axes=(0,), dtype="f64"))                          # [1,2]
    per_example = op(g, "reduce_max", op(g, "sub", gated, batch_mean), axes=(1,))      # [B]
    assert g.shape(per_example) == ("B",)
    return op(g, "add", weighted_sum(g, per_example), inner(g, b, b))


def sample_inputs(g: Graph, bindings: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: normal(rng, resolve(g.shape(node), bindings)) for name, node in g.inputs.items()}


@pytest.mark.parametrize("batch", [1, 5])
def test_symbolic_batch_dim_bound_at_schedule_time(batch):
    g = Graph()
    out = batch_model(g)
    bindings = {"B": batch}
    check_gradients(g, out, ["x", "w", "b"], sample_inputs(g, bindings), bindings)


# ---- gradients of gradients ---------------------------------------------------------------------------

SECOND_ORDER_ROWS = ROWS + [
    Row("softmax", ((3, 4),), build=softmax),
    Row("cross_entropy", ((3, 4),), build=cross_entropy),
    Row("dense_tanh", ((2, 3), (3, 4), (4,)), build=dense_tanh),
    Row("pow_of_input", ((3,), ()), (positive, normal), build=lambda g, a, b: op(g, "pow", a, op(g, "mul", b, a))),
    Row("mul_shared_operand", (M,), build=lambda g, x: op(g, "mul", x, op(g, "mul", x, x))),
]


def check_hessian_vector_product(g: Graph, out: int, wrt: list[str], values: dict, bindings=None,
                                 eps: float = EPS, rtol: float = RTOL) -> None:
    """d/dx sum(grad f(x) · v) = H v, checked against central differences of the first gradient along v
    (and, inside check_gradients, element by element)."""
    first = add_gradients(g, out, wrt)
    rng = np.random.default_rng(2)
    directions = {name: normal(rng, values[name].shape) for name in wrt}
    terms = [inner(g, g.outputs[grad], input_leaf(g, f"v:{name}", g.shape(g.inputs[name])))
             for name, grad in zip(wrt, first)]
    hv = terms[0]
    for term in terms[1:]:
        hv = op(g, "add", hv, term)
    values = {**values, **{f"v:{name}": d for name, d in directions.items()}}

    hessian_v = check_gradients(g, hv, wrt, values, bindings, eps, rtol)
    numeric = central_difference(evaluator(g, first, bindings), values, directions, eps)
    for analytic, expected in zip(hessian_v, numeric):
        assert_close(analytic, expected, rtol)


@pytest.mark.parametrize("row", SECOND_ORDER_ROWS, ids=lambda row: row.op)
def test_hessian_vector_products(row):
    check_hessian_vector_product(*build_problem(row), eps=row.eps, rtol=row.rtol)


@pytest.mark.parametrize("shapes", BROADCAST_CASES, ids=lambda s: " with ".join(map(shape_ids, s)))
@pytest.mark.parametrize("op_name", ["mul", "div", "pow"])
def test_hessian_vector_products_under_broadcasting(op_name, shapes):
    check_hessian_vector_product(*build_problem(ROW[op_name], shapes))


def test_hessian_vector_product_with_symbolic_batch_dim():
    g = Graph()
    out = batch_model(g)
    bindings = {"B": 3}
    check_hessian_vector_product(g, out, ["x", "w", "b"], sample_inputs(g, bindings), bindings)


@pytest.mark.parametrize("fn, derivatives", [
    ("exp", [np.exp] * 4),
    ("tanh", [lambda x: 1 - np.tanh(x) ** 2,
              lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2),
              lambda x: (1 - np.tanh(x) ** 2) * (6 * np.tanh(x) ** 2 - 2)]),
    ("log", [lambda x: 1 / x, lambda x: -1 / x ** 2, lambda x: 2 / x ** 3, lambda x: -6 / x ** 4]),
])
def test_repeated_backprop_gives_higher_derivatives(fn, derivatives):
    """For elementwise f, d/dx sum(f^(k)(x)) = f^(k+1)(x): backprop its own output again and again."""
    g = Graph()
    x = input_leaf(g, "x", (5,))
    total = op(g, "reduce_sum", op(g, fn, x), axes=None)
    values = {"x": np.linspace(0.3, 1.7, 5)}
    for order, derivative in enumerate(derivatives, start=1):
        (grad,) = backprop(g, total, [x])
        g.outputs[f"order {order}"] = grad
        verify(g)
        assert_close(evaluator(g, [f"order {order}"])(values)[0], derivative(values["x"]), 1e-12)
        total = op(g, "reduce_sum", grad, axes=None)


# ---- conventions where no derivative exists ----------------------------------------------------------

@pytest.mark.parametrize("build, x, expected", [
    (lambda g, x: op(g, "relu", x), [-1.0, 0.0, 2.0], [0.0, 0.0, 1.0]),                # relu'(0) = 0
    (lambda g, x: op(g, "abs", x), [-1.0, 0.0, 2.0], [-1.0, 0.0, 1.0]),                # abs'(0) = 0
    (lambda g, x: op(g, "maximum", g.const([0.0, 1.0, 1.0], "f64"), x), [0.0, 1.0, 2.0],
     [0.0, 0.0, 1.0]),                                                                 # ties go to a
    (lambda g, x: op(g, "reduce_max", x, axes=None), [1.0, 3.0, 3.0], [0.0, 0.5, 0.5]),  # ties share
    (lambda g, x: op(g, "sign", x), [-1.0, 0.0, 2.0], [0.0, 0.0, 0.0]),
    (lambda g, x: op(g, "stop_gradient", x), [-1.0, 0.0, 2.0], [0.0, 0.0, 0.0]),
    (lambda g, x: op(g, "cast", op(g, "cast", x, dtype="i32"), dtype="f64"), [-1.0, 0.0, 2.0], [0.0, 0.0, 0.0]),
], ids=["relu", "abs", "maximum", "reduce_max", "sign", "stop_gradient", "cast_through_int"])
def test_gradient_conventions_at_non_differentiable_points(build, x, expected):
    g = Graph()
    leaf = input_leaf(g, "x", (3,))
    (grad,) = backprop(g, op(g, "reduce_sum", build(g, leaf), axes=None), [leaf])
    g.outputs["grad"] = grad
    verify(g)
    assert_close(evaluator(g, ["grad"])({"x": np.array(x)})[0], expected, 1e-15)


def test_inputs_the_output_ignores_get_zero_gradients():
    g = Graph()
    x, unused = input_leaf(g, "x", (2,)), input_leaf(g, "unused", (3,))
    labels = g.add("input", (), {"name": "labels", "shape": (2,), "dtype": "i32"})
    out = inner(g, x, op(g, "cast", labels, dtype="f64"))
    grads = backprop(g, out, [x, unused, labels])
    assert [(g.shape(n), g.dtype(n)) for n in grads] == [((2,), "f64"), ((3,), "f64"), ((2,), "i32")]
    g.outputs.update({f"grad:{i}": n for i, n in enumerate(grads)})
    values = {"x": np.ones(2), "unused": np.ones(3), "labels": np.array([3, 4], np.int32)}
    got = evaluator(verify(g), ["grad:0", "grad:1", "grad:2"])(values)
    for actual, expected in zip(got, [[3.0, 4.0], [0.0, 0.0, 0.0], [0, 0]]):
        np.testing.assert_array_equal(actual, expected)


# ---- property test: random shapes through elementwise chains -----------------------------------------

UNARY = {
    "tanh": lambda g, x: op(g, "tanh", x),
    "sigmoid": lambda g, x: op(g, "sigmoid", x),
    "neg": lambda g, x: op(g, "neg", x),
    "square": lambda g, x: op(g, "mul", x, x),
    "log_sigmoid": lambda g, x: op(g, "log", op(g, "sigmoid", x)),
}
BINARY = {  # each kept smooth and finite for any real operands
    "add": lambda g, a, b: op(g, "add", a, b),
    "sub": lambda g, a, b: op(g, "sub", a, b),
    "mul": lambda g, a, b: op(g, "mul", a, b),
    "div": lambda g, a, b: op(g, "div", a, op(g, "exp", op(g, "tanh", b))),
    "pow": lambda g, a, b: op(g, "pow", op(g, "sigmoid", a), op(g, "tanh", b)),
}


@settings(max_examples=50, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       before=st.lists(st.sampled_from(sorted(UNARY)), max_size=2),
       combine=st.sampled_from(sorted(BINARY)),
       after=st.lists(st.sampled_from(sorted(UNARY)), max_size=2),
       seed=st.integers(0, 2 ** 16))
def test_random_elementwise_chains(shapes, before, combine, after, seed):
    def chain(g, names, x):
        for name in names:
            x = UNARY[name](g, x)
        return x

    row = Row("chain", shapes.input_shapes,
              build=lambda g, a, b: chain(g, after, BINARY[combine](g, chain(g, before, a), b)))
    g, out, wrt, values = build_problem(row, seed=seed)
    check_gradients(g, out, wrt, values)
