"""The deep-learning primitives (gradlang/ops/nn_ops.py), their builtins and the stdlib layers built on them.

- kernels against plain-loop NumPy references (convolution, pooling, gather, concat);
- gradients against central differences in float64 at the edge cases: stride > 1, padding, windows
  that leave rows over, overlapping pooling windows, repeated indices, a symbolic batch dimension;
  Hessian-vector products through convolution and pooling;
- the builtins' errors; the stdlib layers (LSTM, GRU, RNN cells, layer norm, attention) against NumPy
  references, causal masking, and compile time of a recurrence unrolled over T = 100 steps;
- erf's kernel against math.erf, and gelu, exact and approximate, against references computed with it.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from test_gradients import (
    Row,
    build_problem,
    check_gradients,
    check_hessian_vector_product,
    distinct,
    input_leaf,
    normal,
    op,
    weighted_sum,
)

import gradlang
from gradlang import GradError
from gradlang.ir.graph import Graph
from gradlang.ops import registry

# ---- references ----------------------------------------------------------------------------------

def conv_reference(x, w, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", window, w)
    return out


def pool_reference(x, kernel, stride, padding, reduce):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    fill = -np.inf if reduce is np.max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    oh, ow = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
    out = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = reduce(xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw], axis=(2, 3))
    return out


def run_graph(build, *arrays, dtype="f64"):
    """Build a graph over inputs x0, x1, … of the arrays' shapes and run it."""
    from test_gradients import evaluator
    g = Graph()
    leaves = [g.add("input", (), {"name": f"x{i}", "shape": a.shape,
                                  "dtype": "i64" if a.dtype.kind == "i" else dtype})
              for i, a in enumerate(arrays)]
    g.outputs["out"] = build(g, *leaves)
    return evaluator(g, ["out"])({f"x{i}": a for i, a in enumerate(arrays)})[0]


CONV_CASES = [  # image [N, C, H, W], filters [O, C, KH, KW], stride, padding
    ((2, 3, 6, 7), (4, 3, 3, 2), (1, 1), (0, 0)),
    ((2, 3, 7, 6), (4, 3, 3, 3), (2, 2), (1, 1)),      # stride 2: the last padded column is left over
    ((1, 2, 8, 9), (3, 2, 3, 2), (2, 3), (2, 1)),      # unequal strides and paddings; padding > kernel/2
    ((2, 1, 5, 5), (2, 1, 5, 5), (1, 1), (0, 0)),      # the kernel covers the whole image: 1×1 output
    ((1, 3, 4, 4), (2, 3, 1, 1), (3, 3), (0, 0)),      # 1×1 kernel, stride 3
    ((2, 2, 5, 6), (3, 2, 3, 3), (1, 1), (1, 1)),      # fewer channels than output columns: image by image
    ((2, 5, 4, 4), (3, 5, 3, 3), (1, 1), (1, 1)),      # more: windows as rows, channels innermost
    ((2, 16, 6, 6), (8, 16, 5, 5), (1, 1), (2, 2)),    # 16·5·5 weights per input channel: the input
]                                                      # gradient is a convolution with flipped filters
CONV_IDS = ["plain", "stride2_pad1", "uneven", "full_window", "pointwise_stride3", "by_image_pad1", "by_rows_pad1",
            "transpose_by_convolution"]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_CASES, ids=CONV_IDS)
def test_conv2d_and_its_adjoints_match_the_reference(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    attrs = {"stride": stride, "padding": padding}
    y = run_graph(lambda g, a, b: op(g, "conv2d", a, b, **attrs), x, w)
    np.testing.assert_allclose(y, conv_reference(x, w, stride, padding), atol=1e-12)
    # the companions are the adjoints: <u, T(g, w)> = <conv(u, w), g> and <v, F(x, g)> = <conv(x, v), g>
    g_out, u, v = rng.standard_normal(y.shape), rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    dx = run_graph(lambda g, a, b: op(g, "conv2d_transpose", a, b, size=x_shape[2:], **attrs), g_out, w)
    dw = run_graph(lambda g, a, b: op(g, "conv2d_filter_grad", a, b, kernel=w_shape[2:], **attrs), x, g_out)
    assert dx.shape == x_shape and dw.shape == w_shape
    np.testing.assert_allclose(np.vdot(u, dx), np.vdot(conv_reference(u, w, stride, padding), g_out), rtol=1e-10)
    np.testing.assert_allclose(np.vdot(v, dw), np.vdot(conv_reference(x, v, stride, padding), g_out), rtol=1e-10)


@pytest.mark.parametrize("stride", [(2, 1), (1, 1)], ids=["by_rows", "by_image"])
def test_convolution_kernels_work_through_large_batches_in_chunks(monkeypatch, stride):
    from gradlang.ops import nn_ops
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((7, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3))
    attrs = {"stride": stride, "padding": (1, 1)}
    g_out = rng.standard_normal(conv_reference(x, w, stride, (1, 1)).shape)
    assert nn_ops.Conv2d(attrs, x.shape, (3, 3), 3).by_image == (stride == (1, 1))   # both layouts

    def all_three():
        return [run_graph(lambda g, a, b: op(g, "conv2d", a, b, **attrs), x, w),
                run_graph(lambda g, a, b: op(g, "conv2d_transpose", a, b, size=(6, 5), **attrs), g_out, w),
                run_graph(lambda g, a, b: op(g, "conv2d_filter_grad", a, b, kernel=(3, 3), **attrs), x, g_out)]
    whole = all_three()
    monkeypatch.setattr(nn_ops, "CHUNK_ELEMENTS", 200)     # a chunk of one or two examples
    assert len(nn_ops._batch_chunks(7, 2 * 9 * (6 // stride[0]) * 5)) == 7
    for chunked, expected in zip(all_three(), whole):
        np.testing.assert_allclose(chunked, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_CASES, ids=CONV_IDS)
def test_conv2d_gradients_at_strides_and_paddings(x_shape, w_shape, stride, padding):
    check = Row("conv2d", (x_shape, w_shape), attrs={"stride": stride, "padding": padding})
    check_gradients(*build_problem(check))


def test_the_input_gradient_is_a_convolution_only_where_that_was_measured_faster():
    from gradlang.ops import nn_ops

    def kernel(g_shape, w_shape, size, stride=(1, 1), padding=(2, 2)):
        attrs = {"stride": stride, "padding": padding, "size": size}
        out_shape = (g_shape[0], w_shape[1]) + size
        return type(nn_ops._plain_transpose(attrs, [g_shape, w_shape], out_shape, "f32")).__name__
    assert kernel((64, 32, 14, 14), (32, 16, 5, 5), (14, 14)) == "Conv2dTransposeByConvolution"  # MNIST CNN
    assert kernel((64, 32, 14, 14), (32, 8, 5, 5), (14, 14)) == "Conv2dTranspose"       # too few weights
    assert kernel((64, 16, 28, 28), (16, 1, 5, 5), (28, 28)) == "Conv2dTranspose"       # one channel out
    assert kernel((64, 32, 7, 7), (32, 16, 5, 5), (14, 14), stride=(2, 2)) == "Conv2dTranspose"
    assert kernel((64, 4, 14, 14), (4, 16, 5, 5), (14, 14)) == "Conv2dTranspose"        # gathered by image


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [CONV_CASES[1], CONV_CASES[2], CONV_CASES[-1]],
                         ids=[CONV_IDS[1], CONV_IDS[2], CONV_IDS[-1]])
def test_conv2d_companions_gradients_at_strides_and_paddings(x_shape, w_shape, stride, padding):
    y_shape = conv_reference(np.zeros(x_shape), np.zeros(w_shape), stride, padding).shape
    attrs = {"stride": stride, "padding": padding}
    check_gradients(*build_problem(Row("conv2d_transpose", (y_shape, w_shape),
                                       attrs={**attrs, "size": x_shape[2:]})))
    check_gradients(*build_problem(Row("conv2d_filter_grad", (x_shape, y_shape),
                                       attrs={**attrs, "kernel": w_shape[2:]})))


def test_hessian_vector_product_through_conv_relu_and_max_pool():
    def net(g, x, w):
        h = op(g, "tanh", op(g, "conv2d", x, w, stride=(1, 1), padding=(1, 1)))
        return op(g, "max_pool2d", op(g, "mul", h, h), kernel=(2, 2), stride=(2, 2), padding=(0, 0))
    row = Row("net", ((2, 2, 4, 4), (3, 2, 3, 3)), build=net)
    check_hessian_vector_product(*build_problem(row))


def test_conv2d_with_a_symbolic_batch_dimension():
    g = Graph()
    x, w = input_leaf(g, "x", ("B", 2, 5, 5)), input_leaf(g, "w", (3, 2, 3, 3))
    y = op(g, "conv2d", x, w, stride=(2, 2), padding=(1, 1))
    assert g.shape(y) == ("B", 3, 3, 3)
    out = weighted_sum(g, op(g, "max_pool2d", y, kernel=(2, 2), stride=(1, 1), padding=(0, 0)))
    rng = np.random.default_rng(3)
    values = {"x": rng.standard_normal((4, 2, 5, 5)), "w": rng.standard_normal((3, 2, 3, 3)),
              "weights": rng.standard_normal((4, 3, 2, 2))}
    check_gradients(g, out, ["x", "w"], values, bindings={"B": 4})


# ---- pooling -------------------------------------------------------------------------------------

POOL_CASES = [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)), ((3, 2), (3, 1), (0, 1))]
POOL_IDS = ["2x2", "overlapping_padded", "stride1_uneven", "stride_beyond"]


@pytest.mark.parametrize("kernel, stride, padding", POOL_CASES, ids=POOL_IDS)
def test_max_pool_matches_the_reference_and_its_gradients(kernel, stride, padding):
    x = distinct(np.random.default_rng(0), (1, 2, 7, 6))
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    y = run_graph(lambda g, a: op(g, "max_pool2d", a, **attrs), x)
    np.testing.assert_array_equal(y, pool_reference(x, kernel, stride, padding, np.max))
    pooled = y.shape
    check_gradients(*build_problem(Row("max_pool2d", (x.shape,), (distinct,), attrs=attrs)))
    check_gradients(*build_problem(Row("max_pool2d_grad", (x.shape, pooled), (distinct, normal), attrs=attrs)))
    check_gradients(*build_problem(Row("max_pool2d_select", (x.shape, x.shape), (distinct, normal), attrs=attrs)))


def test_max_pool_sends_a_tie_to_the_first_maximum_and_never_to_padding():
    x = np.array([[[[1.0, 1.0], [0.0, 1.0]]]])            # one window, three tied maxima
    g = Graph()
    leaf = input_leaf(g, "x", x.shape)
    total = op(g, "reduce_sum", op(g, "max_pool2d", leaf, kernel=(2, 2), stride=(2, 2), padding=(0, 0)), axes=None)
    from test_gradients import evaluator

    from gradlang.passes import backprop
    (grad,) = backprop(g, total, [leaf])
    g.outputs["grad"] = grad
    np.testing.assert_array_equal(evaluator(g, ["grad"])({"x": x})[0], [[[[1.0, 0.0], [0.0, 0.0]]]])
    # all-negative values with padding: the −inf padding never wins, so every window picks a real value
    neg = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y = run_graph(lambda g, a: op(g, "max_pool2d", a, kernel=(2, 2), stride=(2, 2), padding=(1, 1)), neg)
    np.testing.assert_array_equal(y, [[[[-1.0, -2.0], [-4.0, -5.0]]]])


@pytest.mark.parametrize("kernel, stride, padding", POOL_CASES + [((2, 2), (2, 2), (0, 0))],
                         ids=POOL_IDS + ["2x2_even"])
def test_a_max_pool_paired_with_its_gradient_routes_as_one_alone(kernel, stride, padding):
    """The scheduler pairs max_pool2d with its gradient (the forward keeps where each maximum is);
    with many ties (small integers), the paired gradient equals the one that finds the maxima again."""
    from gradlang.ops.nn_ops import MaxPool
    rng = np.random.default_rng(1)
    shape = (3, 2, 8, 6) if kernel == stride == (2, 2) else (3, 2, 7, 6)
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    alone = MaxPool(attrs, x.shape, "f64")
    paired = MaxPool(attrs, x.shape, "f64", keep=True)
    pooled = paired.forward(x)
    np.testing.assert_array_equal(pooled, alone.forward(x))
    g = rng.standard_normal(pooled.shape)
    expected = _first_maximum_routing(x, g, kernel, stride, padding)
    # (overlapping windows add their shares in another order than the loops: equal up to rounding)
    np.testing.assert_allclose(paired.gradient(x, g), expected, rtol=0, atol=1e-14)
    assert paired.saved is None   # consumed: the next step's forward keeps its own
    np.testing.assert_allclose(paired.gradient(x, g), expected, rtol=0, atol=1e-14)   # no forward first
    np.testing.assert_allclose(alone.gradient(x, g), expected, rtol=0, atol=1e-14)


def _first_maximum_routing(x, g, kernel, stride, padding):
    """max_pool2d's gradient by loops: each window's g goes to its first maximum in row-major order,
    padding never taking it."""
    out = np.zeros_like(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    for n, c, oy, ox in np.ndindex(*g.shape):
        cells = [(oy * sh + i - ph, ox * sw + j - pw) for i in range(kh) for j in range(kw)]
        cells = [(y, x_) for y, x_ in cells if 0 <= y < x.shape[2] and 0 <= x_ < x.shape[3]]
        best = max(x[n, c, y, x_] for y, x_ in cells)
        y, x_ = next(cell for cell in cells if x[n, c, cell[0], cell[1]] == best)
        out[n, c, y, x_] += g[n, c, oy, ox]
    return out


def test_avg_pool_builtin_counts_padding_as_zeros_and_its_gradient():
    prog = gradlang.compile("""
        input x : f32[B, 2, 5, 4]
        metric s = sum(avg_pool2d(x, 3, stride: 2, padding: 1))
        metric first = avg_pool2d(x, 3, stride: 2, padding: 1)[0, 0, 0, 0]
        loss = sum(avg_pool2d(x, [2, 1]) ** 2)
    """, dtype="float64")
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 4))
    ref = pool_reference(x, (3, 3), (2, 2), (1, 1), np.sum) / 9
    metrics = prog.metrics({"x": x})
    assert metrics["first"] == pytest.approx(ref[0, 0, 0, 0]) and metrics["s"] == pytest.approx(ref.sum())
    assert prog.loss({"x": x}) == pytest.approx((pool_reference(x, (2, 1), (2, 1), (0, 0), np.mean) ** 2).sum())
    check_gradients(*build_problem(Row("patches2d", ((1, 2, 6, 5),),
                                       attrs={"kernel": (2, 3), "stride": (1, 2), "padding": (1, 2)})))


# ---- gather, scatter, concat ----------------------------------------------------------------------

@pytest.mark.parametrize("x_shape, indices, axis", [
    ((5, 3), [[0, 4], [4, 2], [0, 0]], 0),
    ((2, 6, 3), [1, 5, 1], 1),
    ((2, 3, 4), [[3], [0]], -1),
    ((4,), 2, 0),                        # a scalar index drops the axis
], ids=["rows", "middle_axis", "last_axis_2d_indices", "scalar_index"])
def test_take_and_scatter_add(x_shape, indices, axis):
    rng = np.random.default_rng(0)
    x, idx = rng.standard_normal(x_shape), np.array(indices)
    y = run_graph(lambda g, a: op(g, "take", a, g.const(idx, "i64"), axis=axis), x)
    np.testing.assert_array_equal(y, np.take(x, idx, axis=axis))
    check_gradients(*build_problem(Row("take", (x_shape,),
                                       build=lambda g, a: op(g, "take", a, g.const(idx, "i64"), axis=axis))))
    # scatter_add adds repeated indices up: the adjoint of take
    u = rng.standard_normal(y.shape)
    back = run_graph(lambda g, a: op(g, "scatter_add", a, g.const(idx, "i64"), axis=axis, shape=x_shape), u)
    np.testing.assert_allclose(np.vdot(back, x), np.vdot(u, y), rtol=1e-12)
    check_gradients(*build_problem(Row("scatter_add", (y.shape,), build=lambda g, a: op(
        g, "scatter_add", a, g.const(idx, "i64"), axis=axis, shape=x_shape))))


@pytest.mark.parametrize("shapes, axis", [(((2, 3), (2, 1), (2, 2)), 1), (((1, 3), (2, 3)), 0), (((2, 2, 3),), -1)],
                         ids=["three_on_last", "first_axis", "one_operand"])
def test_concat_gradients(shapes, axis):
    check_gradients(*build_problem(Row("concat", shapes, attrs={"axis": axis})))


def test_stack_split_concat_and_take_builtins():
    prog = gradlang.compile("""
        input x : f32[B, 6]
        input t : i64[B, 2]
        param E : [4, 3]
        parts = split(x, [1, 2, 3], axis: 1)
        halves = split(x, 2, axis: -1)
        s = stack([parts[0], parts[0] * 2], axis: 1)
        e = take(E, t)
        metric width = len(transpose(parts[2]))
        metric again = sum(concat(halves, axis: 1)) - sum(x)
        metric stacked = sum(s[:, 1]) / sum(s[:, 0])
        loss = sum(e * stack([halves[1], halves[1]], axis: 1))
    """, dtype="float64")
    feed = {"x": np.arange(12.0).reshape(2, 6) + 1, "t": np.array([[0, 3], [3, 3]])}
    m = prog.metrics(feed)
    assert m == {"width": 3.0, "again": 0.0, "stacked": 2.0}
    grads = prog.gradients(feed)["E"]
    expected = np.zeros((4, 3))
    for b in range(2):
        for k in range(2):
            expected[feed["t"][b, k]] += feed["x"][b, 3:]
    np.testing.assert_allclose(grads, expected)


@pytest.mark.parametrize("source, message", [
    ("input x : f32[B, 3, 8, 8]\nparam w : [4, 2, 3, 3]\nloss = sum(conv2d(x, w))", "has 3 channels but the filter"),
    ("input x : f32[B, 64]\nparam w : [4, 1, 3, 3]\nloss = sum(conv2d(x, w))", "needs a rank-4 [N, C, H, W] tensor"),
    ("input x : f32[B, 1, 4, 4]\nparam w : [4, 1, 7, 7]\nloss = sum(conv2d(x, w, padding: 1))", "does not fit"),
    ("input x : f32[B, 1, 4, 4]\nparam w : [4, 1, 3, 3]\nloss = sum(conv2d(x, w, stride: 0))", "stride must be"),
    ("input x : f32[B, 1, 4, 4]\nloss = sum(max_pool2d(x, 2, padding: 2))", "must be smaller than the window"),
    ("input x : f32[B, 1, 4, 4]\nloss = sum(avg_pool2d(x, [2, 2, 2]))", "size must be an integer"),
    ("input x : f32[B, 3]\nparam E : [4, 2]\nloss = sum(take(E, x))", "take needs integer indices"),
    ("input x : f32[B, 3]\ninput y : f32[B, 4]\nloss = sum(concat([x, y], axis: 0))", "axis 0 must have a known size"),
    ("input x : f32[B, 3]\ninput y : f32[B, 4]\nloss = sum(stack([x, y]))", "stack needs tensors of one shape"),
    ("input x : f32[B, 5]\nloss = sum(split(x, 2, axis: 1)[0])", "5 does not split into 2 equal parts"),
    ("input x : f32[B, 5]\nloss = sum(split(x, [2, 2], axis: 1)[0])", "add up to 4, not 5"),
    ("input x : f32[B, 5]\nloss = sum(split(x, 2)[0])", "cannot split the symbolic dimension B"),
    ("loss = sum(where(causal_mask(0), 1.0, 0.0))", "causal_mask needs a positive integer size"),
])
def test_builtin_errors_point_at_the_call(source, message):
    with pytest.raises(GradError) as info:
        gradlang.compile(source)
    assert message in info.value.message
    assert info.value.span is not None and info.value.span.line == source.count("\n") + 1


def test_a_kernel_error_at_run_time_names_the_line():
    # indices computed in the program are checked by the kernel (fed ones, where they enter: test_trust.py)
    prog = gradlang.compile("input t : i64[B]\nparam E : [3, 2]\nloss = sum(take(E, t * 2))")
    with pytest.raises(GradError) as info:
        prog.loss({"t": [0, 7]})
    assert "take failed at run time" in info.value.message and info.value.span.line == 3


# ---- stdlib layers against NumPy references -----------------------------------------------------------

def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numeric_param_gradients(prog, feed, names, eps=1e-6):
    out = {}
    for name in names:
        p = prog.params[name]
        grad = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = prog.loss(feed)
            p[i] = old - eps
            down = prog.loss(feed)
            p[i] = old
            grad[i] = (up - down) / (2 * eps)
        out[name] = grad
    return out


RECURRENT = """
import rnn
input x : f32[B, 4, 3]
cell = rnn.{cell}(3, 2)
run = rnn.unroll(cell, x, cell.zero_state(x[:, 0]))
output hs = run[0]
loss = sum(run[0] * run[0]) + sum(run[1][-1])
"""


@pytest.mark.parametrize("cell", ["rnn_cell", "lstm_cell", "gru_cell"])
def test_recurrent_cells_match_numpy_and_finite_differences(cell):
    prog = gradlang.compile(RECURRENT.format(cell=cell), dtype="float64")
    rng = np.random.default_rng(0)
    prog.set_params({k: rng.standard_normal(v.shape) * 0.5 for k, v in prog.params.items()})
    p = {k.split(".")[-1]: v for k, v in prog.params.items()}
    x = rng.standard_normal((2, 4, 3))
    h, c, hs = np.zeros((2, 2)), np.zeros((2, 2)), []
    for t in range(4):
        if cell == "rnn_cell":
            h = np.tanh(x[:, t] @ p["W"] + h @ p["U"] + p["b"])
        elif cell == "lstm_cell":
            i, f, gg, o = np.split(x[:, t] @ p["W"] + h @ p["U"] + p["b"], 4, axis=1)
            c = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(gg)
            h = sigmoid(o) * np.tanh(c)
        else:
            xu, xr, xn = np.split(x[:, t] @ p["W"] + p["b"], 3, axis=1)
            hu, hr, hn = np.split(h @ p["U"], 3, axis=1)
            u, r = sigmoid(xu + hu), sigmoid(xr + hr)
            h = (1 - u) * np.tanh(xn + r * hn) + u * h
        hs.append(h)
    np.testing.assert_allclose(prog.predict({"x": x})["hs"], np.stack(hs, axis=1), rtol=1e-12)
    last = c if cell == "lstm_cell" else h
    assert prog.loss({"x": x}) == pytest.approx(np.sum(np.stack(hs) ** 2) + last.sum(), rel=1e-12)
    analytic = prog.gradients({"x": x})
    for name, grad in numeric_param_gradients(prog, {"x": x}, list(prog.params)).items():
        np.testing.assert_allclose(analytic[name], grad, rtol=1e-6, atol=1e-8)


ATTENTION = """
import nn
import attention as att
input x : f32[B, 5, 4]
mha = att.multi_head_attention(4, 2, causal: {causal})
norm = nn.layer_norm(4)
output y = mha(x)
output normed = norm(x)
loss = sum(mha(x) * x) + sum(norm(x) ** 3)
"""


def attention_reference(x, p, heads, causal):
    b, t, d = x.shape
    dh = d // heads

    def split(z):
        return z.reshape(b, t, heads, dh).transpose(0, 2, 1, 3)
    q, k, v = split(x @ p["Wq"]), split(x @ p["Wk"]), split(x @ p["Wv"])
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    if causal:
        scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d) @ p["Wo"]


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_and_layer_norm_match_numpy_and_finite_differences(causal):
    prog = gradlang.compile(ATTENTION.format(causal=str(causal).lower()), dtype="float64")
    rng = np.random.default_rng(1)
    prog.set_params({k: rng.standard_normal(v.shape) for k, v in prog.params.items()})
    x = rng.standard_normal((2, 5, 4))
    p = {k.split(".")[-1]: v for k, v in prog.params.items()}
    out = prog.predict({"x": x})
    np.testing.assert_allclose(out["y"], attention_reference(x, p, 2, causal), rtol=1e-10)
    centred = x - x.mean(-1, keepdims=True)
    normed = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-5) * p["gain"] + p["bias"]
    np.testing.assert_allclose(out["normed"], normed, rtol=1e-10)
    analytic = prog.gradients({"x": x})
    for name, grad in numeric_param_gradients(prog, {"x": x}, list(prog.params)).items():
        np.testing.assert_allclose(analytic[name], grad, rtol=1e-6, atol=1e-7)


def test_causal_attention_ignores_the_future_and_masked_scores_get_no_gradient():
    prog = gradlang.compile("""
        import attention as att
        input x : f32[B, 6, 4]
        block = att.transformer_block(4, 2, 8, causal: true)
        output y = block(x)
        loss = sum(block(x)[:, 2])
    """, dtype="float64")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 6, 4))
    later = x.copy()
    later[:, 3:] = rng.standard_normal((3, 3, 4))      # change positions 3, 4, 5
    y, y_later = prog.predict({"x": x})["y"], prog.predict({"x": later})["y"]
    np.testing.assert_allclose(y[:, :3], y_later[:, :3], rtol=1e-12)
    assert not np.allclose(y[:, 3:], y_later[:, 3:])
    # the loss reads position 2 only: the inputs after it get exactly zero gradient
    grad_x = prog.run(["grad"], {"x": x}, graph=_input_gradient_graph(prog))[0]
    assert np.all(grad_x[:, 3:] == 0) and np.all(np.abs(grad_x[:, :3]).sum(-1) > 0)


def _input_gradient_graph(prog):
    from gradlang.passes import backprop, simplify
    g = prog.elaborated.graph.copy()
    (grad,) = backprop(g, g.outputs["loss"], [g.inputs["x"]])
    g.outputs["grad"] = grad
    return simplify(g)


# ---- recurrence over many steps: compile time -------------------------------------------------------

def test_an_lstm_unrolled_over_100_steps_compiles_quickly_and_linearly():
    source = """
        import nn
        import rnn
        input t : i64[B, {T}]
        input y : i64[B, {T}]
        emb = nn.embedding(20, 8)
        cell = rnn.lstm_cell(8, 16)
        run = rnn.unroll(cell, emb(t), cell.zero_state(emb(t)[:, 0]))
        loss = cross_entropy(nn.dense(16, 20)(run[0]), y)
    """
    sizes = {}
    for steps in (50, 100):
        start = time.perf_counter()
        prog = gradlang.compile(source.format(T=steps))
        sizes[steps] = len(prog.gradient_graph())
        seconds = time.perf_counter() - start
    assert seconds < 30, f"compiling and differentiating 100 LSTM steps took {seconds:.1f}s"
    # the unrolled graph grows linearly: 100 steps are twice 50 plus the same fixed part
    per_step = (sizes[100] - sizes[50]) / 50
    assert sizes[100] < 2 * sizes[50] and 30 < per_step < 80


# ---- erf and gelu ------------------------------------------------------------------------------------

def erf_kernel(x: np.ndarray, dtype: str):
    return registry.get("erf").kernel({}, [x.shape], x.shape, dtype)(x)


def test_erf_is_math_erf_to_an_ulp_or_two_in_float64():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(-7, 7, 14001),                                              # both methods and the tails
        rng.choice([-1, 1], 20000) * 10 ** rng.uniform(-320, 1.5, 20000),      # tiny (subnormal too) to 30
        [1.5, np.nextafter(1.5, 0), 6.0, np.nextafter(6.0, 0), 26.0, 2.0 ** -1022, 5e-324, 1e300, -1e300],
    ])
    got = erf_kernel(x, "f64")
    expected = np.array([math.erf(v) for v in x])
    assert got.dtype == np.float64 and got.shape == x.shape
    # within 1e-15 relatively (math.erf is itself within an ulp), or a subnormal's last bit or two
    assert np.all(np.abs(got - expected) <= 1e-15 * np.abs(expected) + 1e-323), \
        x[np.argmax(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-300))]
    np.testing.assert_array_equal(erf_kernel(-x, "f64"), -got)   # odd, exactly


def test_erf_of_signed_zeros_infinities_and_nan():
    got = erf_kernel(np.array([0.0, -0.0, np.inf, -np.inf, np.nan]), "f64")
    np.testing.assert_array_equal(got, [0.0, -0.0, 1.0, -1.0, np.nan])
    assert list(np.signbit(got[:2])) == [False, True]
    assert erf_kernel(np.array(-0.5), "f64") == math.erf(-0.5)   # a scalar keeps its shape


def test_erf_in_float32_is_math_erf_rounded_once():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(20000) * 3, rng.choice([-1, 1], 5000) * 10 ** rng.uniform(-45, 1, 5000),
                        [0.0, 1.5, 6.0, 9.0, np.inf]]).astype(np.float32)
    got = erf_kernel(x, "f32")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([math.erf(v) for v in x.astype(np.float64)], np.float32))


def test_erf_is_a_builtin_refusing_integers_as_exp_does():
    assert gradlang.compile("input x : f32[B]\nloss = sum(erf(x))\n").loss({"x": np.array([0.5], np.float32)}) \
        == pytest.approx(math.erf(0.5), rel=1e-7)
    with pytest.raises(GradError, match=r"erf needs float operands, got i64\[B\]"):
        gradlang.compile("input i : i64[B]\nloss = sum(erf(i))\n")


def test_gelu_exact_and_approximate_against_math_erf():
    prog = gradlang.compile("input x : f64[B]\noutput default = gelu(x)\n"
                            "output approximate = gelu(x, approximate: true)\n"
                            "output exact = gelu(x, approximate: false)\nloss = mean(x)\n", dtype="float64")
    x = np.concatenate([np.linspace(-8, 8, 161), np.random.default_rng(2).standard_normal(100)])
    out = prog.predict({"x": x})
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    approximate = 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(out["exact"], exact, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(out["approximate"], approximate, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(out["default"], out["approximate"])
    assert 1e-4 < np.max(np.abs(out["approximate"] - out["exact"])) < 5e-4   # as docs/language.md says


def test_the_gradient_of_exact_gelu_is_phi_plus_x_times_the_density():
    prog = gradlang.compile("input c : f64[B, 12]\nparam p : [12] = zeros\n"
                            "loss = sum(gelu(p, approximate: false) * c)\n", dtype="float64")
    rng = np.random.default_rng(3)
    p = np.concatenate([[-5.0, -2.2, -0.3, 0.0, 0.4, 2.12, 2.13, 3.0], rng.standard_normal(4) * 2])
    prog.set_params({"p": p})
    feed = {"c": rng.standard_normal((1, 12))}
    analytic = prog.gradients(feed)["p"]
    expected = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                         for v in p]) * feed["c"][0]
    np.testing.assert_allclose(analytic, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(analytic, numeric_param_gradients(prog, feed, ["p"])["p"], rtol=1e-6, atol=1e-9)


def test_the_rnn_pages_compile_table_counts_the_nodes_the_compiler_makes():
    """docs/rnn.md's table comes from scripts/rnn_compile_times.py; its times drift, its node counts must not."""
    import importlib.util
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("rnn_compile_times", root / "scripts" / "rnn_compile_times.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = (root / "docs" / "rnn.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)`, T = (\d+) \|[^|]*\|[^|]*\|[^|]*\| ([\d,]+) \|", page, re.MULTILINE)
    assert [(cell, int(steps)) for cell, steps, _ in rows] == script.ROWS
    for cell, steps, nodes in rows:
        program = gradlang.compile(script.SOURCE.format(cell=cell, steps=steps))
        assert len(program.gradient_graph()) == int(nodes.replace(",", "")), (cell, steps)
