"""conv2d's dilation and groups (and conv2d_transpose's): the three convolution primitives against
plain-loop NumPy references, their gradients against central differences in float64, a
Hessian-vector product, the batch worked through in chunks, the builtins and the `conv` layer, the
errors (located at the call), and the ordinary convolution's nodes and kernels left as they were.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_gradients import Row, build_problem, check_gradients, check_hessian_vector_product, op
from test_nn_ops import run_graph

import gradlang
from gradlang import GradError
from gradlang.ir.graph import Graph
from gradlang.ops import nn_ops

# ---- references: direct loops ----------------------------------------------------------------------

def conv_reference(x, w, stride, padding, dilation, groups):
    """y[n, o, i, j] = Σ_{c in o's group, a, b} x_pad[n, c, i·sh + a·dh, j·sw + b·dw] · w[o, c mod C/G, a, b]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    pixel = xp[:, :, i * sh + a * dh, j * sw + b * dw]                  # [N, C]
                    for g in range(groups):
                        out[:, g * og:(g + 1) * og, i, j] += (
                            pixel[:, g * cg:(g + 1) * cg] @ w[g * og:(g + 1) * og, :, a, b].T)
    return out


def transpose_reference(y, w, stride, padding, dilation, groups, size):
    """The adjoint of conv_reference in x: each y[n, o, i, j] · w[o, :, a, b] added back at the pixel
    it was read from (padding cut off)."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, o, oh, ow = y.shape
    _, cg, kh, kw = w.shape
    og = o // groups
    out = np.zeros((n, cg * groups, size[0] + 2 * ph, size[1] + 2 * pw))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    for g in range(groups):
                        out[:, g * cg:(g + 1) * cg, i * sh + a * dh, j * sw + b * dw] += (
                            y[:, g * og:(g + 1) * og, i, j] @ w[g * og:(g + 1) * og, :, a, b])
    return out[:, :, ph:ph + size[0], pw:pw + size[1]]


def filter_grad_reference(x, y, kernel, stride, padding, dilation, groups):
    """dw[o, c, a, b] = Σ_{n, i, j} y[n, o, i, j] · x_pad[n, c + group offset, i·sh + a·dh, j·sw + b·dw]."""
    (sh, sw), (ph, pw), (dh, dw), (kh, kw) = stride, padding, dilation, kernel
    n, c, h, wd = x.shape
    o, oh, ow = y.shape[1:]
    cg, og = c // groups, o // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((o, cg, kh, kw))
    for a in range(kh):
        for b in range(kw):
            taps = xp[:, :, a * dh:a * dh + sh * (oh - 1) + 1:sh, b * dw:b * dw + sw * (ow - 1) + 1:sw]
            for g in range(groups):
                out[g * og:(g + 1) * og, :, a, b] = np.einsum(
                    "noij,ncij->oc", y[:, g * og:(g + 1) * og], taps[:, g * cg:(g + 1) * cg])
    return out


# image [N, C, H, W], filters [O, C/G, KH, KW], stride, padding, dilation, groups
CASES = [
    ((2, 3, 7, 8), (4, 3, 3, 3), (1, 1), (0, 0), (2, 2), 1),       # dilation only
    ((2, 3, 9, 7), (2, 3, 3, 2), (2, 1), (2, 1), (2, 3), 1),       # unequal dilations, strides and paddings
    ((2, 4, 6, 6), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),       # two groups
    ((1, 3, 6, 5), (6, 1, 3, 3), (2, 2), (1, 1), (1, 1), 3),       # depthwise, two filters per channel
    ((2, 4, 9, 9), (4, 2, 3, 2), (2, 2), (2, 1), (2, 3), 2),       # both, with stride and padding
    ((1, 6, 5, 5), (3, 2, 1, 1), (1, 1), (0, 0), (1, 1), 3),       # pointwise groups
    ((2, 2, 7, 7), (2, 1, 3, 3), (3, 3), (0, 0), (3, 3), 2),       # the dilated window covers the image
]
IDS = ["dilation", "dilation_uneven", "groups2", "depthwise", "both", "pointwise_groups", "full_span"]


def _attrs(stride, padding, dilation, groups):
    attrs = {"stride": stride, "padding": padding}
    if dilation != (1, 1):
        attrs["dilation"] = dilation
    if groups != 1:
        attrs["groups"] = groups
    return attrs


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", CASES, ids=IDS)
def test_the_three_kernels_match_direct_loops(x_shape, w_shape, stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    attrs = _attrs(stride, padding, dilation, groups)
    y = run_graph(lambda g, a, b: op(g, "conv2d", a, b, **attrs), x, w)
    expected = conv_reference(x, w, stride, padding, dilation, groups)
    np.testing.assert_allclose(y, expected, atol=1e-12)
    g_out = rng.standard_normal(y.shape)
    dx = run_graph(lambda g, a, b: op(g, "conv2d_transpose", a, b, size=x_shape[2:], **attrs), g_out, w)
    np.testing.assert_allclose(dx, transpose_reference(g_out, w, stride, padding, dilation, groups, x_shape[2:]),
                               atol=1e-12)
    dw = run_graph(lambda g, a, b: op(g, "conv2d_filter_grad", a, b, kernel=w_shape[2:], **attrs), x, g_out)
    np.testing.assert_allclose(dw, filter_grad_reference(x, g_out, w_shape[2:], stride, padding, dilation, groups),
                               atol=1e-12)
    # and they are the adjoints: <u, T(g, w)> = <conv(u, w), g>, <v, F(x, g)> = <conv(x, v), g>
    u, v = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    np.testing.assert_allclose(np.vdot(u, dx), np.vdot(conv_reference(u, w, stride, padding, dilation, groups),
                                                       g_out), rtol=1e-10)
    np.testing.assert_allclose(np.vdot(v, dw), np.vdot(conv_reference(x, v, stride, padding, dilation, groups),
                                                       g_out), rtol=1e-10)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", CASES, ids=IDS)
def test_gradients_match_central_differences(x_shape, w_shape, stride, padding, dilation, groups):
    attrs = _attrs(stride, padding, dilation, groups)
    check_gradients(*build_problem(Row("conv2d", (x_shape, w_shape), attrs=attrs)))


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups",
                         [CASES[1], CASES[3], CASES[4]], ids=[IDS[1], IDS[3], IDS[4]])
def test_the_companions_gradients_match_central_differences(x_shape, w_shape, stride, padding, dilation, groups):
    attrs = _attrs(stride, padding, dilation, groups)
    y_shape = conv_reference(np.zeros(x_shape), np.zeros(w_shape), stride, padding, dilation, groups).shape
    check_gradients(*build_problem(Row("conv2d_transpose", (y_shape, w_shape),
                                       attrs={**attrs, "size": x_shape[2:]})))
    check_gradients(*build_problem(Row("conv2d_filter_grad", (x_shape, y_shape),
                                       attrs={**attrs, "kernel": w_shape[2:]})))


def test_hessian_vector_product_through_a_dilated_grouped_convolution():
    def net(g, x, w):
        h = op(g, "tanh", op(g, "conv2d", x, w, stride=(1, 1), padding=(2, 1), dilation=(2, 1), groups=2))
        return op(g, "mul", h, h)
    check_hessian_vector_product(*build_problem(Row("net", ((2, 4, 5, 5), (4, 2, 3, 3)), build=net)))


def test_the_kernels_work_through_large_batches_in_chunks(monkeypatch):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((7, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
    attrs = {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 2), "groups": 2}
    g_out = rng.standard_normal(conv_reference(x, w, (2, 1), (1, 2), (2, 2), 2).shape)

    def all_three():
        return [run_graph(lambda g, a, b: op(g, "conv2d", a, b, **attrs), x, w),
                run_graph(lambda g, a, b: op(g, "conv2d_transpose", a, b, size=(7, 6), **attrs), g_out, w),
                run_graph(lambda g, a, b: op(g, "conv2d_filter_grad", a, b, kernel=(3, 3), **attrs), x, g_out)]
    whole = all_three()
    monkeypatch.setattr(nn_ops, "CHUNK_ELEMENTS", 300)     # a chunk of one or two examples
    for chunked, expected in zip(all_three(), whole):
        np.testing.assert_allclose(chunked, expected, rtol=1e-12, atol=1e-12)


def test_the_defaults_keep_the_ordinary_nodes_and_kernels():
    g = Graph()
    x = g.add("input", (), {"name": "x", "shape": ("B", 3, 6, 6), "dtype": "f32"})
    w = g.add("input", (), {"name": "w", "shape": (4, 3, 3, 3), "dtype": "f32"})
    plain = op(g, "conv2d", x, w, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    assert set(g.attrs(plain)) == {"stride", "padding"}     # as before: the IR and its listings unchanged
    attrs = g.attrs(plain)
    assert isinstance(nn_ops._conv2d_kernel(attrs, [(2, 3, 6, 6), (4, 3, 3, 3)], (2, 4, 6, 6), "f32").conv,
                      nn_ops.Conv2d)
    dilated = op(g, "conv2d", x, w, stride=(1, 1), padding=(1, 1), dilation=2)
    assert g.attrs(dilated)["dilation"] == (2, 2) and g.shape(dilated) == ("B", 4, 4, 4)
    kernel = nn_ops._conv2d_kernel(g.attrs(dilated), [(2, 3, 6, 6), (4, 3, 3, 3)], (2, 4, 4, 4), "f32")
    assert kernel.__self__.__class__ is nn_ops.GroupedConv2d


# ---- the builtins and the layer ------------------------------------------------------------------

def test_builtins_and_the_conv_layer_take_dilation_and_groups():
    prog = gradlang.compile("""
        import conv
        input x : f32[B, 4, 9, 9]
        param w : [6, 2, 3, 3] = normal
        param wt : [4, 3, 3, 3] = normal
        layer1 = conv.conv2d(4, 6, 3, padding: 2, dilation: 2, groups: 2)
        output y = conv2d(x, w, padding: [2, 1], dilation: [2, 1], groups: 2)
        output z = layer1(x)
        output up = conv2d_transpose(x, wt, stride: 2, dilation: 2, groups: 2)
        loss = mean(y * y) + mean(z * z) + mean(up * up)
    """, dtype="float64")
    rng = np.random.default_rng(5)
    prog.set_params({k: rng.standard_normal(v.shape) for k, v in prog.params.items()})
    x = rng.standard_normal((2, 4, 9, 9))
    out = prog.predict({"x": x})
    p = prog.params
    assert p["layer1.W"].shape == (6, 2, 3, 3)
    np.testing.assert_allclose(out["y"], conv_reference(x, p["w"], (1, 1), (2, 1), (2, 1), 2), rtol=1e-10)
    np.testing.assert_allclose(out["z"], conv_reference(x, p["layer1.W"], (1, 1), (2, 2), (2, 2), 2)
                               + p["layer1.b"].reshape(6, 1, 1), rtol=1e-10)
    # size defaults to (H − 1)·stride + dilation·(KH − 1) + 1 − 2·padding = 8·2 + 4 + 1 = 21
    assert out["up"].shape == (2, 6, 21, 21)
    np.testing.assert_allclose(out["up"], transpose_reference(x, p["wt"], (2, 2), (0, 0), (2, 2), 2, (21, 21)),
                               rtol=1e-10)
    grads = prog.gradients({"x": x})
    assert {k: v.shape for k, v in grads.items()} == {k: v.shape for k, v in p.items()}


@pytest.mark.parametrize("source, message", [
    ("input x : f32[B, 3, 8, 8]\nparam w : [4, 1, 3, 3]\nloss = sum(conv2d(x, w, groups: 2))",
     "groups: 2 must divide both channel counts, but the input has 3 channels and the output 4"),
    ("input x : f32[B, 4, 8, 8]\nparam w : [3, 2, 3, 3]\nloss = sum(conv2d(x, w, groups: 2))",
     "the input has 4 channels and the output 3"),
    ("input x : f32[B, 4, 8, 8]\nparam w : [4, 4, 3, 3]\nloss = sum(conv2d(x, w, groups: 2))",
     "the input's 4 channels in 2 groups are 2 per group, but the filter [4,4,3,3] expects 4 per group"),
    ("input x : f32[B, 1, 6, 6]\nparam w : [2, 1, 3, 3]\nloss = sum(conv2d(x, w, dilation: 3))",
     "a 3×3 window dilated by (3, 3) (spanning 7×7) does not fit a 6×6 image"),
    ("input x : f32[B, 1, 6, 6]\nparam w : [2, 1, 3, 3]\nloss = sum(conv2d(x, w, dilation: 0))",
     "dilation must be an integer ≥ 1"),
    ("input x : f32[B, 1, 6, 6]\nparam w : [2, 1, 3, 3]\nloss = sum(conv2d(x, w, dilation: [1, 2, 3]))",
     "dilation must be an integer ≥ 1 or a list of two"),
    ("input x : f32[B, 1, 6, 6]\nparam w : [2, 1, 3, 3]\nloss = sum(conv2d(x, w, groups: 0))",
     "groups must be a positive integer, got 0"),
    ("input x : f32[B, 1, 6, 6]\nparam w : [2, 1, 3, 3]\nloss = sum(conv2d(x, w, groups: 1.5))",
     "groups must be a positive integer"),
    ("input x : f32[B, 3, 4, 4]\nparam w : [3, 2, 3, 3]\nloss = sum(conv2d_transpose(x, w, groups: 2))",
     "conv2d_transpose: groups: 2 must divide both channel counts, but the input has 3 channels and the output 4"),
    ("input x : f32[B, 2, 4, 4]\nparam w : [2, 1, 3, 3]\nloss = sum(conv2d_transpose(x, w, dilation: 2, size: [9, 9]))",
     "does not convolve back to the input's 4×4 (filter 3×3, stride (1, 1), padding (0, 0), dilation (2, 2))"),
    ("input x : f32[B, 2, H, W]\nparam w : [2, 1, 3, 3]\nloss = sum(conv2d_transpose(x, w))",
     "conv2d_transpose needs known spatial sizes"),
])
def test_mistakes_are_located_at_the_call(source, message):
    with pytest.raises(GradError) as info:
        gradlang.compile(source)
    assert message in info.value.message
    assert info.value.span is not None and info.value.span.line == source.count("\n") + 1


def test_the_layer_refuses_groups_that_do_not_divide_its_channels():
    with pytest.raises(GradError) as info:
        gradlang.compile("import conv\ninput x : f32[B, 4, 8, 8]\nc = conv.conv2d(4, 6, 3, groups: 4)\n"
                         "loss = sum(c(x))")
    assert "groups" in info.value.message and info.value.span is not None
