"""Every primitive op, each defined once: shape rule, kernel factory, VJP rule, side by side.

VJP rules return one entry per operand: a thunk that builds the cotangent (called only for operands
that need a gradient, so no dead nodes are emitted) or None when no gradient flows there.
Non-differentiable points: relu'(0) = 0, abs'(0) = 0, maximum's tie sends the gradient to its first
operand, max-reductions split it evenly between tied maxima. Integer and boolean values get no gradient.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import partial

import numpy as np

from .registry import (
    BY_MODE,
    COMMUTATIVE,
    COMPARISON,
    CONTRACTION,
    ELEMENTWISE,
    MOVES_DATA,
    NO_GRADIENT_BY_DESIGN,
    REDUCTION,
    SAME_VALUES,
    VIEW,
    IndexOperand,
    define,
)
from .shapes import (
    DTYPES,
    FLOATS,
    INTS,
    ShapeError,
    broadcast,
    fmt_shape,
    fmt_type,
    infer_reshape,
    normalize_axes,
    reduced,
)

# ---- checks ------------------------------------------------------------------------------------

def _need_float(op: str, shapes, dtypes) -> None:
    for shape, dt in zip(shapes, dtypes):
        if dt not in FLOATS:
            raise ShapeError(f"{op} needs float operands, got {fmt_type(shape, dt)}")


def _need_numeric(op: str, shapes, dtypes) -> None:
    for shape, dt in zip(shapes, dtypes):
        if dt == "bool":
            raise ShapeError(f"{op} needs numeric operands, got {fmt_type(shape, dt)}")


def _same_dtype(op: str, shapes, dtypes) -> str:
    if len(set(dtypes)) > 1:
        raise ShapeError(f"{op}: operand types differ: " + ", ".join(fmt_type(s, d) for s, d in zip(shapes, dtypes)))
    return dtypes[0]


def _fixed(f):
    """A kernel factory for a kernel that needs no attributes."""
    return lambda attrs, in_shapes, out_shape, dtype: f


def _swap_last(e, x):
    rank = len(e.shape(x))
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    return e("transpose", x, perm=perm)


# ---- leaves --------------------------------------------------------------------------------------

def _leaf_infer(shapes, dtypes, attrs):
    return tuple(attrs["shape"]), attrs["dtype"]


def _leaf_kernel(attrs, in_shapes, out_shape, dtype):
    raise RuntimeError("inputs and params are bound to slots, never computed")


define("input", 0, _leaf_infer, _leaf_kernel, None, "A value fed per batch (attrs: name, shape, dtype).",
       traits=(MOVES_DATA,))
define("param", 0, _leaf_infer, _leaf_kernel, None, "A trainable value (attrs: name, shape, dtype).",
       traits=(MOVES_DATA,))
define("state", 0, _leaf_infer, _leaf_kernel, None,
       "A value kept between steps, read like a param but never trained: a training step may write it "
       "(`update`), evaluation only reads it (attrs: name, shape, dtype).", traits=(MOVES_DATA,))


def _const_infer(shapes, dtypes, attrs):
    value = attrs["value"]
    return value.shape, next(k for k, v in DTYPES.items() if v == value.dtype)


define("const", 0, _const_infer, lambda attrs, *_: (lambda v=attrs["value"]: v), None, "A literal.",
       traits=(MOVES_DATA,))


# ---- elementwise unary ---------------------------------------------------------------------------

def _unary(name, kernel, vjp, doc, floats_only=True, factory=None, traits=(ELEMENTWISE,), surface=False):
    """An elementwise op: `kernel` itself, or what `factory` makes of the concrete shapes. With `surface`,
    also the builtin `name(x)` of the language, documented by `doc` (see registry.py)."""
    def infer(shapes, dtypes, attrs):
        (_need_float if floats_only else _need_numeric)(name, shapes, dtypes)
        return shapes[0], dtypes[0]
    define(name, 1, infer, factory or _fixed(kernel), vjp, doc, traits=traits, surface=surface)


def _one(e, n):
    return e.const(1, n.dtype)


def _zero(e, n):
    return e.const(0, n.dtype)


def sigmoid(x, out=None):
    # tanh form: never overflows, unlike 1 / (1 + exp(-x)) for large negative x. Every pass writes
    # one buffer (`out`, or the first pass's result): no temporaries, and the scheduler may let it
    # overwrite its dead operand, as a ufunc.
    out = np.multiply(x, 0.5, out=out)
    if not isinstance(out, np.ndarray):   # a scalar
        return np.tanh(out) * 0.5 + 0.5
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    return np.add(out, 0.5, out=out)


sigmoid.accepts_out = True


_unary("neg", np.negative, lambda e, n, g: [lambda: e("neg", g)], "-x", floats_only=False)
_unary("exp", np.exp, lambda e, n, g: [lambda: e("mul", g, n.id)], "eˣ (float only)", surface=True)
_unary("log", np.log, lambda e, n, g: [lambda: e("div", g, n.operands[0])], "natural logarithm (float only)",
       surface=True)
# log(1 + x) and eˣ − 1 written out lose the digits of a small x to the rounding of 1 + x or eˣ (log(1 + 1e-10)
# in float32 is 0): NumPy's kernels keep them, so these two are primitives rather than composites
_unary("log1p", np.log1p, lambda e, n, g: [lambda: e("div", g, e("add", _one(e, n), n.operands[0]))],
       "log(1 + x), accurate for x near 0 (float only)", surface=True)
_unary("expm1", np.expm1, lambda e, n, g: [lambda: e("mul", g, e("add", n.id, _one(e, n)))],
       "eˣ − 1, accurate for x near 0 (float only)", surface=True)
_unary("tanh", np.tanh, lambda e, n, g: [lambda: e("mul", g, e("sub", _one(e, n), e("mul", n.id, n.id)))],
       "hyperbolic tangent (float only)", surface=True)
_unary("sigmoid", sigmoid, lambda e, n, g: [lambda: e("mul", g, e("mul", n.id, e("sub", _one(e, n), n.id)))],
       "1 / (1 + e⁻ˣ), computed without overflow (float only)", surface=True)


def _relu_kernel(attrs, in_shapes, out_shape, dtype):
    # NumPy's maximum against a scalar is not vectorised: 5–8× slower than against an array of the
    # same shape. So each relu compares with zeros made once, at schedule time; np.zeros maps a large
    # array to the shared zero page, which reading never copies, so it costs no memory.
    zeros = np.zeros(out_shape, DTYPES[dtype])

    def relu(x, out=None):
        return np.maximum(x, zeros, out=out)
    relu.accepts_out = True   # the scheduler may let it overwrite its dead operand, as a ufunc
    return relu


# The mask is read off the output (y > 0 exactly where x > 0), so the pre-activation dies at the relu
# and the relu can be computed in its buffer.
_unary("relu", None, lambda e, n, g: [lambda: e("where", e("gt", n.id, _zero(e, n)), g, _zero(e, n))],
       "max(x, 0); its gradient at 0 is 0", floats_only=False, factory=_relu_kernel, surface=True)
_unary("abs", np.abs, lambda e, n, g: [lambda: e("mul", g, e("sign", n.operands[0]))],
       "absolute value; its gradient at 0 is 0", floats_only=False, surface=True)
_unary("sin", np.sin, lambda e, n, g: [lambda: e("mul", g, e("cos", n.operands[0]))], "sine (float only)",
       surface=True)
_unary("cos", np.cos, lambda e, n, g: [lambda: e("neg", e("mul", g, e("sin", n.operands[0])))],
       "cosine (float only)", surface=True)


# erf: NumPy has none. For |x| < 1.5, its Maclaurin series x·P(x²); from 1.5 to 6, 1 − erfc(x) with erfc
# from its continued fraction; beyond 6, ±1 (erfc(6) < 2.2e-17, under half an ulp of 1). Within 2 ulps of
# the exact value over the normal float64 range, 3 (4e-16 relatively) just below 1.5, where the series
# cancels most; float32 is computed in float64 and rounded once.
_TWO_OVER_SQRT_PI = 1.1283791670955126     # 2/√π, the nearest float64
# erf(x) = 2/√π · Σₙ (−1)ⁿ x²ⁿ⁺¹ / (n! (2n + 1)): the coefficients of P, each rounded once; 26 terms
# bring the last below 1e-17 of the sum at x = 1.5
_ERF_SERIES = tuple(float(Fraction(_TWO_OVER_SQRT_PI) * Fraction((-1) ** n, math.factorial(n) * (2 * n + 1)))
                    for n in range(26))
_ERF_SERIES_BELOW = 1.5
_ERF_IS_ONE_FROM = 6.0
# erfc(x) = 2x/√π · e^(−x²) / (2x² + 1 − 1·2 / (2x² + 5 − 3·4 / (2x² + 9 − …))), cut after this many
# levels: full precision from x = 1.5 on (it converges slowest there)
_ERFC_LEVELS = 40
_HIGH_HALF = np.uint64(0xFFFFFFFFF8000000)   # a float64's sign, exponent and top 26 bits of its mantissa


def _exp_minus_square(a):
    """e^(−a²) without the rounding of a²: a = h + l with h of 26 bits, so h² is exact and
    e^(−a²) = e^(−h²)·e^(−(a − h)(a + h))."""
    h = (a.view(np.uint64) & _HIGH_HALF).view(np.float64)
    return np.exp(-h * h) * np.exp((h - a) * (h + a))


def _erf64(x):
    a = np.abs(x)
    out = np.array(x, dtype=np.float64)   # NaN stays NaN: it is in no range below
    series = a < _ERF_SERIES_BELOW
    s = a[series]
    z = s * s
    acc = np.full_like(z, _ERF_SERIES[-1])
    for c in _ERF_SERIES[-2::-1]:
        acc *= z
        acc += c
    out[series] = s * acc
    fraction = (a >= _ERF_SERIES_BELOW) & (a < _ERF_IS_ONE_FROM)
    f = a[fraction]
    t = 2 * f * f
    acc = t + (4 * _ERFC_LEVELS + 1)
    for k in range(_ERFC_LEVELS, 0, -1):
        acc = t + (4 * k - 3) - (2 * k - 1) * (2 * k) / acc
    out[fraction] = 1 - _TWO_OVER_SQRT_PI * f * _exp_minus_square(f) / acc
    out[a >= _ERF_IS_ONE_FROM] = 1.0
    return np.copysign(out, x)   # erf is odd: erf(−0) = −0


def _erf_kernel(attrs, in_shapes, out_shape, dtype):
    target = DTYPES[dtype]
    if target == np.float64:
        return lambda x: _erf64(np.asarray(x, np.float64))
    return lambda x: _erf64(np.asarray(x, np.float64)).astype(target)


def _vjp_erf(e, n, g):
    x = n.operands[0]
    return [lambda: e("mul", g, e("mul", e.const(_TWO_OVER_SQRT_PI, n.dtype), e("exp", e("neg", e("mul", x, x)))))]


_unary("erf", None, _vjp_erf, "the error function 2/√π ∫₀ˣ e^(−t²) dt (float only)", factory=_erf_kernel,
       surface=True)
_unary("sign", np.sign, None, "−1, 0 or 1 (no gradient)", floats_only=False, surface=True)
_unary("floor", np.floor, None, "largest integer ≤ x, as a float (no gradient: it is flat almost everywhere); "
       "e.g. a step schedule `0.1 * 0.5 ** floor(step / 1000)`", surface=True)
_unary("stop_gradient", lambda x: x, None, "`x`, but no gradient flows through it", floats_only=False,
       traits=(VIEW, SAME_VALUES, MOVES_DATA, NO_GRADIENT_BY_DESIGN), surface=True)


# ---- elementwise binary --------------------------------------------------------------------------

def _binary(name, kernel, vjp, doc, floats_only=False, traits=(ELEMENTWISE,)):
    def infer(shapes, dtypes, attrs):
        (_need_float if floats_only else _need_numeric)(name, shapes, dtypes)
        dtype = _same_dtype(name, shapes, dtypes)
        return broadcast(*shapes), dtype
    define(name, 2, infer, _fixed(kernel), vjp, doc, traits=traits)


def _vjp_add(e, n, g):
    a, b = n.operands
    return [lambda: e.sum_to_shape(g, e.shape(a)), lambda: e.sum_to_shape(g, e.shape(b))]


def _vjp_sub(e, n, g):
    a, b = n.operands
    return [lambda: e.sum_to_shape(g, e.shape(a)), lambda: e.sum_to_shape(e("neg", g), e.shape(b))]


def _vjp_mul(e, n, g):
    a, b = n.operands
    return [lambda: e.sum_to_shape(e("mul", g, b), e.shape(a)),
            lambda: e.sum_to_shape(e("mul", g, a), e.shape(b))]


def _vjp_div(e, n, g):
    a, b = n.operands
    return [lambda: e.sum_to_shape(e("div", g, b), e.shape(a)),
            lambda: e.sum_to_shape(e("neg", e("div", e("mul", g, n.id), b)), e.shape(b))]


def _vjp_pow(e, n, g):
    a, b = n.operands
    return [lambda: e.sum_to_shape(e("mul", g, e("mul", b, e("pow", a, e("sub", b, _one(e, n))))), e.shape(a)),
            lambda: e.sum_to_shape(e("mul", g, e("mul", e("log", a), n.id)), e.shape(b))]


def _vjp_maximum(e, n, g):
    a, b = n.operands
    first = e("ge", a, b)
    return [lambda: e.sum_to_shape(e("where", first, g, _zero(e, n)), e.shape(a)),
            lambda: e.sum_to_shape(e("where", first, _zero(e, n), g), e.shape(b))]


_binary("add", np.add, _vjp_add, "a + b", traits=(ELEMENTWISE, COMMUTATIVE))
_binary("sub", np.subtract, _vjp_sub, "a - b")
_binary("mul", np.multiply, _vjp_mul, "a * b", traits=(ELEMENTWISE, COMMUTATIVE))
_binary("div", np.divide, _vjp_div, "a / b", floats_only=True)
_binary("pow", np.power, _vjp_pow, "a ** b", floats_only=True)
_binary("maximum", np.maximum, _vjp_maximum, "elementwise max; ties send the gradient to a")


def _compare(name, kernel, symbol, traits=(ELEMENTWISE, COMPARISON)):
    def infer(shapes, dtypes, attrs):
        _same_dtype(name, shapes, dtypes)
        return broadcast(*shapes), "bool"
    define(name, 2, infer, _fixed(kernel), None, f"a {symbol} b (boolean; no gradient)", traits=traits)


_compare("lt", np.less, "<")
_compare("le", np.less_equal, "<=")
_compare("gt", np.greater, ">")
_compare("ge", np.greater_equal, ">=")
_compare("eq", np.equal, "==", traits=(ELEMENTWISE, COMPARISON, COMMUTATIVE))
_compare("ne", np.not_equal, "!=", traits=(ELEMENTWISE, COMPARISON, COMMUTATIVE))


def _where_infer(shapes, dtypes, attrs):
    if dtypes[0] != "bool":
        raise ShapeError(f"where needs a boolean condition, got {fmt_type(shapes[0], dtypes[0])}")
    dtype = _same_dtype("where", shapes[1:], dtypes[1:])
    return broadcast(*shapes), dtype


def _vjp_where(e, n, g):
    c, a, b = n.operands
    return [None,
            lambda: e.sum_to_shape(e("where", c, g, _zero(e, n)), e.shape(a)),
            lambda: e.sum_to_shape(e("where", c, _zero(e, n), g), e.shape(b))]


define("where", 3, _where_infer, _fixed(np.where), _vjp_where, "where(c, a, b): a where c holds, else b",
       traits=(ELEMENTWISE,))


def _cast_infer(shapes, dtypes, attrs):
    if attrs["dtype"] not in DTYPES:
        raise ShapeError(f"cast: unknown dtype {attrs['dtype']}")
    return shapes[0], attrs["dtype"]


def _cast_kernel(attrs, in_shapes, out_shape, dtype):
    target = DTYPES[dtype]
    return lambda x: x.astype(target)


def _vjp_cast(e, n, g):
    src = e.dtype(n.operands[0])
    return [(lambda: e("cast", g, dtype=src)) if src in FLOATS and n.dtype in FLOATS else None]


define("cast", 1, _cast_infer, _cast_kernel, _vjp_cast, "convert to attrs.dtype; gradient only float → float",
       traits=(ELEMENTWISE, MOVES_DATA))


# ---- linear algebra ------------------------------------------------------------------------------

def _matmul_infer(shapes, dtypes, attrs):
    a, b = shapes
    if len(a) < 2 or len(b) < 2:
        raise ShapeError(f"matmul needs operands of rank 2 or more, got {fmt_shape(a)} and {fmt_shape(b)}")
    _need_float("matmul", shapes, dtypes)
    dtype = _same_dtype("matmul", shapes, dtypes)
    if a[-1] != b[-2]:
        raise ShapeError(f"cannot multiply {fmt_type(a, dtypes[0])} @ {fmt_type(b, dtypes[1])}: "
                         f"inner dimensions {a[-1]} and {b[-2]} differ")
    batch = broadcast(a[:-2], b[:-2])
    return batch + (a[-2], b[-1]), dtype


def _vjp_matmul(e, n, g):
    a, b = n.operands
    return [lambda: e.sum_to_shape(e("matmul", g, _swap_last(e, b)), e.shape(a)),
            lambda: e.sum_to_shape(e("matmul", _swap_last(e, a), g), e.shape(b))]


define("matmul", 2, _matmul_infer, _fixed(np.matmul), _vjp_matmul, "matrix product over the last two axes, batched",
       traits=(CONTRACTION,))


# ---- reductions ----------------------------------------------------------------------------------

def _reduction_infer(name, floats_only=False):
    def infer(shapes, dtypes, attrs):
        (_need_float if floats_only else _need_numeric)(name, shapes, dtypes)
        axes = normalize_axes(attrs.get("axes"), len(shapes[0]))
        attrs["axes"] = axes
        attrs["keepdims"] = bool(attrs.get("keepdims", False))
        return reduced(shapes[0], axes, attrs["keepdims"]), dtypes[0]
    return infer


def _sum_kernel(attrs, in_shapes, out_shape, dtype):
    # the ufunc's reduce, bound with partial: np.sum's Python wrapper (and a lambda) cost microseconds
    return partial(np.add.reduce, axis=attrs["axes"], keepdims=attrs["keepdims"])


def _max_kernel(attrs, in_shapes, out_shape, dtype):
    return partial(np.maximum.reduce, axis=attrs["axes"], keepdims=attrs["keepdims"])


def _logsumexp_kernel(attrs, in_shapes, out_shape, dtype):
    axes, keep = attrs["axes"], attrs["keepdims"]

    def logsumexp(x):
        m = np.max(x, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)   # all -inf: the sum is 0, its log -inf, no NaN
        out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
        return out if keep else np.reshape(out, out_shape)
    return logsumexp


def _vjp_max(e, n, g):
    x = n.operands[0]
    hit = e("cast", e("eq", x, e.expand_reduced(n.id, n)), dtype=n.dtype)
    share = e("div", hit, e("reduce_sum", hit, axes=n.attrs["axes"], keepdims=True))
    return [lambda: e("mul", e.expand_reduced(g, n), share)]


def _vjp_logsumexp(e, n, g):
    x = n.operands[0]
    return [lambda: e("mul", e.expand_reduced(g, n), e("exp", e("sub", x, e.expand_reduced(n.id, n))))]


define("reduce_sum", 1, _reduction_infer("reduce_sum"), _sum_kernel,
       lambda e, n, g: [lambda: e.expand_reduced(g, n)], "sum over attrs.axes", traits=(REDUCTION,))
define("reduce_max", 1, _reduction_infer("reduce_max"), _max_kernel, _vjp_max,
       "max over attrs.axes; tied maxima share the gradient", traits=(REDUCTION,))
define("logsumexp", 1, _reduction_infer("logsumexp", floats_only=True), _logsumexp_kernel, _vjp_logsumexp,
       "log(sum(exp(x))) over attrs.axes, computed stably", traits=(REDUCTION,))


def _argmax_infer(shapes, dtypes, attrs):
    _need_numeric("argmax", shapes, dtypes)
    attrs["axis"] = normalize_axes(attrs["axis"], len(shapes[0]))[0]
    return reduced(shapes[0], (attrs["axis"],), False), "i64"


def _argmax_kernel(attrs, in_shapes, out_shape, dtype):
    axis = attrs["axis"]
    return lambda x: np.argmax(x, axis=axis)


define("argmax", 1, _argmax_infer, _argmax_kernel, None, "index of the largest element along attrs.axis (i64)")


def _size_infer(shapes, dtypes, attrs):
    attrs["axes"] = normalize_axes(attrs.get("axes"), len(shapes[0]))
    return (), attrs["dtype"]


def _size_kernel(attrs, in_shapes, out_shape, dtype):
    count = np.asarray(np.prod([in_shapes[0][a] for a in attrs["axes"]]), dtype=DTYPES[dtype])
    return lambda x: count


define("size", 1, _size_infer, _size_kernel, None, "number of elements over attrs.axes (known once B is bound)",
       traits=(MOVES_DATA, NO_GRADIENT_BY_DESIGN))


# ---- shape manipulation --------------------------------------------------------------------------

def _reshape_infer(shapes, dtypes, attrs):
    attrs["shape"] = infer_reshape(shapes[0], tuple(attrs["shape"]))
    return attrs["shape"], dtypes[0]


def _reshape_kernel(attrs, in_shapes, out_shape, dtype):
    return lambda x: x.reshape(out_shape)


define("reshape", 1, _reshape_infer, _reshape_kernel,
       lambda e, n, g: [lambda: e("reshape", g, shape=e.shape(n.operands[0]))], "same elements, new shape",
       shape_attrs=("shape",), traits=(VIEW, SAME_VALUES, MOVES_DATA,))


def _transpose_infer(shapes, dtypes, attrs):
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(len(shapes[0]))):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {fmt_shape(shapes[0])}")
    attrs["perm"] = perm
    return tuple(shapes[0][p] for p in perm), dtypes[0]


def _transpose_kernel(attrs, in_shapes, out_shape, dtype):
    perm = attrs["perm"]
    return lambda x: x.transpose(perm)


define("transpose", 1, _transpose_infer, _transpose_kernel,
       lambda e, n, g: [lambda: e("transpose", g, perm=tuple(np.argsort(n.attrs["perm"]).tolist()))],
       "permute axes", traits=(VIEW, SAME_VALUES, MOVES_DATA,))


def _broadcast_infer(shapes, dtypes, attrs):
    target = tuple(attrs["shape"])
    if any(isinstance(d, int) and d < 0 for d in target):
        raise ShapeError(f"cannot broadcast to {fmt_shape(target)}: a dimension is negative")
    if broadcast(shapes[0], target) != target:
        raise ShapeError(f"cannot broadcast {fmt_shape(shapes[0])} to {fmt_shape(target)}")
    attrs["shape"] = target
    return target, dtypes[0]


def _broadcast_kernel(attrs, in_shapes, out_shape, dtype):
    return lambda x: np.broadcast_to(x, out_shape)


define("broadcast_to", 1, _broadcast_infer, _broadcast_kernel,
       lambda e, n, g: [lambda: e.sum_to_shape(g, e.shape(n.operands[0]))], "repeat along broadcast axes",
       shape_attrs=("shape",), traits=(VIEW, SAME_VALUES, MOVES_DATA,))


def _one_hot_infer(shapes, dtypes, attrs):
    if dtypes[0] not in INTS:
        raise ShapeError(f"one_hot needs integer labels, got {fmt_type(shapes[0], dtypes[0])}")
    return shapes[0] + (int(attrs["depth"]),), attrs["dtype"]


def _one_hot_kernel(attrs, in_shapes, out_shape, dtype):
    classes = np.arange(attrs["depth"])
    target = DTYPES[dtype]
    return lambda x: (x[..., None] == classes).astype(target)


define("one_hot", 1, _one_hot_infer, _one_hot_kernel, None, "integer labels → one-hot rows (no gradient)",
       index=IndexOperand(0, lambda attrs, shapes: int(attrs["depth"]), "label"), traits=(MOVES_DATA,))


# ---- fused for speed and stability ---------------------------------------------------------------
# softmax and softmax cross-entropy could be written with exp and logsumexp (stdlib did); as primitives
# they cost one kernel each instead of five, and their gradients are the textbook short forms.

def _softmax_infer(shapes, dtypes, attrs):
    _need_float("softmax", shapes, dtypes)
    attrs["axis"] = normalize_axes(attrs.get("axis", -1), len(shapes[0]))[0]
    return shapes[0], dtypes[0]


def _softmax_kernel(attrs, in_shapes, out_shape, dtype):
    axis = attrs["axis"]

    def softmax(x):
        e = np.exp(x - np.maximum.reduce(x, axis=axis, keepdims=True))
        e /= np.add.reduce(e, axis=axis, keepdims=True)
        return e
    return softmax


def _softmax_jacobian_times(e, y, axis, g):
    """y·(g − Σ g·y): the Jacobian of softmax (whose value is y) applied to g, in primitives."""
    dot = e("reduce_sum", e("mul", g, y), axes=(axis,), keepdims=True)
    return e("mul", y, e("sub", g, dot))


def _vjp_softmax(e, n, g):
    return [lambda: _softmax_jacobian_times(e, n.id, n.attrs["axis"], g)]


define("softmax", 1, _softmax_infer, _softmax_kernel, _vjp_softmax, "exp(x) / sum(exp(x)) along attrs.axis, stably")


def _softmax_ce_infer(shapes, dtypes, attrs):
    logits, labels = shapes
    _need_float("softmax_cross_entropy", shapes[:1], dtypes[:1])
    if dtypes[1] not in INTS:
        raise ShapeError(f"cross-entropy needs integer labels, got {fmt_type(labels, dtypes[1])}")
    if len(logits) < 1 or logits[:-1] != labels:
        raise ShapeError(f"cross-entropy of logits {fmt_type(logits, dtypes[0])} needs labels of shape "
                         f"{fmt_shape(logits[:-1])}, got {fmt_type(labels, dtypes[1])}")
    return labels, dtypes[0]


def _softmax_ce_kernel(attrs, in_shapes, out_shape, dtype):
    return SoftmaxCrossEntropy(tuple(in_shapes[0])).forward


def _vjp_softmax_ce(e, n, g):
    # d/dlogits = g·(softmax(logits) − one_hot(labels)); labels get none
    logits, labels = n.operands
    shape = e.shape(logits)
    return [lambda: e("mul", e("reshape", g, shape=shape[:-1] + (1,)), e("softmax_cross_entropy_grad", logits, labels)),
            None]


_LABELS = IndexOperand(1, lambda attrs, shapes: shapes[0][-1], "label")   # one of the logits' C classes
define("softmax_cross_entropy", 2, _softmax_ce_infer, _softmax_ce_kernel, _vjp_softmax_ce,
       "−log softmax(logits)[label] per row: logits [.., C], integer labels [..] → [..]; labels out of "
       "range are an error at run time", index=_LABELS)


def _softmax_ce_grad_infer(shapes, dtypes, attrs):
    _softmax_ce_infer(shapes, dtypes, attrs)
    return shapes[0], dtypes[0]


class SoftmaxCrossEntropy:
    """The kernels of softmax_cross_entropy and of its gradient for logits of one shape. When one
    step computes both on the same logits and labels, the scheduler runs them as a pair (`keep`):
    the forward keeps exp(logits − max) and its sums, and the gradient only scales them instead of
    computing the softmax again, taking the upstream per-row cotangent (`scale`: the 1/B of a mean)
    into that same pass and the forward's buffer as its result. The forward must run first in each
    step, as it does in a schedule; should it not have, the gradient computes it.

    NumPy reduces along short rows slowly (10 µs for the maxima of 128 rows of 10), so with few
    classes the work is done on a class-major copy [C, rows], where every reduction runs down the
    columns, vectorised across the rows; the gradient is returned as a view of it in the logits'
    shape."""

    def __init__(self, logits_shape: tuple, keep: bool = False):
        *lead, classes = logits_shape
        self.lead, self.classes = tuple(lead), classes
        self.rows = int(np.prod(lead, dtype=np.int64))
        self.index = np.arange(self.rows)
        self.class_major = classes <= 32
        self.keep = keep
        self.saved = None

    def _exponentials(self, logits, labels):
        """exp(logits − row max) (class-major or row-major), its sums, and each row's label entry
        of logits − row max."""
        z = logits.reshape(self.rows, self.classes)
        labels = labels.reshape(self.rows)
        if self.class_major:
            shifted = z.T.copy()
            shifted -= np.maximum.reduce(shifted, axis=0)
            picked = shifted[labels, self.index]
            np.exp(shifted, out=shifted)
            return shifted, np.add.reduce(shifted, axis=0), picked
        shifted = np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True))
        picked = shifted[self.index, labels]
        np.exp(shifted, out=shifted)
        return shifted, np.add.reduce(shifted, axis=1), picked

    def forward(self, logits, labels):
        exps, sums, picked = self._exponentials(logits, labels)
        loss = np.log(sums)
        loss -= picked
        if self.keep:
            self.saved = exps, sums
        return loss.reshape(self.lead)

    def gradient(self, logits, labels, scale=None):
        """scale · (softmax(logits) − one_hot(labels)), scale broadcast over the rows (None: 1)."""
        if self.saved is None:
            exps, sums, _ = self._exponentials(logits, labels)
        else:
            (exps, sums), self.saved = self.saved, None
        labels = labels.reshape(self.rows)
        if scale is None:
            picked = 1
        elif scale.size == 1:
            picked = scale.reshape(())
        elif scale.shape == self.lead + (1,):
            picked = scale.reshape(self.rows)
        else:
            picked = np.broadcast_to(scale, self.lead + (1,)).reshape(self.rows)
        np.divide(picked, sums, out=sums)
        if self.class_major:
            exps *= sums
            exps[labels, self.index] -= picked
            if len(self.lead) == 1:
                return exps.T
            return np.moveaxis(exps.reshape((self.classes,) + self.lead), 0, -1)
        exps *= sums[:, None]
        exps[self.index, labels] -= picked
        return exps.reshape(self.lead + (self.classes,))

    def scaled_gradient(self, scale, logits, labels):
        return self.gradient(logits, labels, scale)


def _softmax_ce_grad_kernel(attrs, in_shapes, out_shape, dtype):
    return SoftmaxCrossEntropy(tuple(out_shape)).gradient


def _vjp_softmax_ce_grad(e, n, g):
    # the one-hot term is constant: what remains is softmax's Jacobian applied to g
    logits, _ = n.operands
    axis = len(e.shape(logits)) - 1
    return [lambda: _softmax_jacobian_times(e, e("softmax", logits, axis=axis), axis, g), None]


define("softmax_cross_entropy_grad", 2, _softmax_ce_grad_infer, _softmax_ce_grad_kernel, _vjp_softmax_ce_grad,
       "softmax(logits) − one_hot(labels): the gradient of softmax_cross_entropy with respect to its logits, "
       "in one pass", index=_LABELS)


def _index_tuple(index):
    return tuple(slice(*item[1:]) if item[0] == "s" else item[1] for item in index)


def _slice_infer(shapes, dtypes, attrs):
    shape, index = shapes[0], tuple(attrs["index"])
    if len(index) > len(shape):
        raise ShapeError(f"too many indices ({len(index)}) for a tensor of shape {fmt_shape(shape)}")
    out = []
    for item, dim in zip(index, shape):
        if item[0] == "i":
            if isinstance(dim, int) and not -dim <= item[1] < dim:
                raise ShapeError(f"index {item[1]} is out of range for a dimension of size {dim}")
        elif isinstance(dim, int):
            size = len(range(*slice(*item[1:]).indices(dim)))
            if size == 0 and dim > 0:
                text = ":".join("" if v is None else str(v) for v in item[1:3]) + \
                    ("" if item[3] is None else f":{item[3]}")
                raise ShapeError(f"the slice {text} of a dimension of size {dim} is empty")
            out.append(size)
        elif item[1:] == (None, None, None):
            out.append(dim)
        else:
            raise ShapeError(f"cannot take a part of the symbolic dimension {dim}; only [:] slices it")
    attrs["index"] = index
    return tuple(out) + tuple(shape[len(index):]), dtypes[0]


def _slice_kernel(attrs, in_shapes, out_shape, dtype):
    index = _index_tuple(attrs["index"])
    return lambda x: x[index]


def _unslice_infer(shapes, dtypes, attrs):
    attrs["shape"] = tuple(attrs["shape"])
    attrs["index"] = tuple(attrs["index"])
    return attrs["shape"], dtypes[0]


def _unslice_kernel(attrs, in_shapes, out_shape, dtype):
    index, target = _index_tuple(attrs["index"]), DTYPES[dtype]

    def unslice(g):
        out = np.zeros(out_shape, dtype=target)
        out[index] = g
        return out
    return unslice


define("slice", 1, _slice_infer, _slice_kernel,
       lambda e, n, g: [lambda: e("unslice", g, index=n.attrs["index"], shape=e.shape(n.operands[0]))],
       "x[index] with static ints and slices", traits=(VIEW, MOVES_DATA,))
define("unslice", 1, _unslice_infer, _unslice_kernel,
       lambda e, n, g: [lambda: e("slice", g, index=n.attrs["index"])],
       "zeros of attrs.shape with g written at attrs.index (the transpose of slice)", shape_attrs=("shape",),
       traits=(MOVES_DATA,))


def _flip_infer(shapes, dtypes, attrs):
    attrs["axes"] = normalize_axes(attrs.get("axes"), len(shapes[0]))
    return shapes[0], dtypes[0]


def _flip_kernel(attrs, in_shapes, out_shape, dtype):
    index = tuple(slice(None, None, -1) if i in attrs["axes"] else slice(None) for i in range(len(out_shape)))
    return lambda x: x[index]


define("flip", 1, _flip_infer, _flip_kernel, lambda e, n, g: [lambda: e("flip", g, axes=n.attrs["axes"])],
       "x with the order of its elements reversed along attrs.axes (a view)", traits=(VIEW, SAME_VALUES, MOVES_DATA))


def _pad_infer(shapes, dtypes, attrs):
    _need_numeric("pad", shapes, dtypes)
    shape = shapes[0]
    widths = tuple(tuple(w) for w in attrs["widths"])
    if len(widths) != len(shape) or any(len(w) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                                            for v in w) for w in widths):
        raise ShapeError(f"pad needs two widths ≥ 0 (before, after) per axis of {fmt_shape(shape)}, got {widths}")
    out = []
    for (before, after), dim in zip(widths, shape):
        if isinstance(dim, str) and (before or after):
            raise ShapeError(f"pad: cannot pad the symbolic dimension {dim}, whose size is known only at run time")
        out.append(dim if isinstance(dim, str) else dim + before + after)
    attrs["widths"] = widths
    return tuple(out), dtypes[0]


def _pad_kernel(attrs, in_shapes, out_shape, dtype):
    # one allocation filled with the value and one copy: np.pad does the same behind a slower Python front
    target, fill = DTYPES[dtype], attrs["value"]
    index = tuple(slice(before, before + dim) for (before, _), dim in zip(attrs["widths"], in_shapes[0]))

    def pad(x):
        out = np.full(out_shape, fill, dtype=target)
        out[index] = x
        return out
    return pad


def _vjp_pad(e, n, g):
    shape = e.shape(n.operands[0])
    if 0 in shape:   # nothing was copied: the gradient is empty (a slice of nothing would be refused)
        return [lambda: e("broadcast_to", _zero(e, n), shape=shape)]
    index = tuple(("s", before, before + dim, None) if before or after else ("s", None, None, None)
                  for (before, after), dim in zip(n.attrs["widths"], shape))
    return [lambda: e("slice", g, index=index)]


# A primitive rather than a concatenation with constant blocks: one copy, whatever the number of padded axes,
# and ONNX's Pad. Its VJP is a slice, whose own VJP (unslice) is a zero padding again.
define("pad", 1, _pad_infer, _pad_kernel, _vjp_pad,
       "x inside a border of attrs.value: attrs.widths holds (before, after) per axis (static; 0 on symbolic "
       "dimensions)", traits=(MOVES_DATA,))


def _cumsum_infer(shapes, dtypes, attrs):
    _need_numeric("cumsum", shapes, dtypes)
    if not shapes[0]:
        raise ShapeError(f"cumsum needs a tensor of rank ≥ 1, got {fmt_type(shapes[0], dtypes[0])}")
    attrs["axis"] = normalize_axes(attrs["axis"], len(shapes[0]))[0]
    attrs["reverse"] = bool(attrs.get("reverse", False))
    return shapes[0], dtypes[0]


def _cumsum_kernel(attrs, in_shapes, out_shape, dtype):
    # the ufunc's accumulate keeps the dtype (np.cumsum widens i32 to i64)
    axis = attrs["axis"]
    if not attrs["reverse"]:
        return partial(np.add.accumulate, axis=axis)
    backwards = (slice(None),) * axis + (slice(None, None, -1),)
    return lambda x: np.add.accumulate(x[backwards], axis=axis)[backwards]


# the VJP of a running sum is the running sum of the cotangent taken from the other end
define("cumsum", 1, _cumsum_infer, _cumsum_kernel,
       lambda e, n, g: [lambda: e("cumsum", g, axis=n.attrs["axis"], reverse=not n.attrs["reverse"])],
       "running sums along attrs.axis: element i is x[0] + … + x[i] (with attrs.reverse, x[i] + … + x[-1])")


# ---- randomness ----------------------------------------------------------------------------------

def _dropout_infer(shapes, dtypes, attrs):
    _need_float("dropout_mask", shapes, dtypes)
    if not 0.0 <= attrs["rate"] < 1.0:
        raise ShapeError(f"dropout rate must be in [0, 1), got {attrs['rate']}")
    return shapes[0], dtypes[0]


def _dropout_kernel(attrs, in_shapes, out_shape, dtype, context):
    if not context.training or attrs["rate"] == 0.0:
        # a fresh array, not a broadcast view of one 1: the schedule may let a later kernel write
        # its result into this buffer, and a broadcast view is read-only
        target = DTYPES[dtype]
        return lambda x: np.ones(out_shape, dtype=target)
    keep, rng, target = 1.0 - attrs["rate"], context.rng, DTYPES[dtype]
    scale = target(1.0 / keep)

    def mask(x):
        return (rng.random(out_shape, dtype=np.float32) < keep).astype(target) * scale
    return mask


define("dropout_mask", 1, _dropout_infer, _dropout_kernel, None,
       "inverted-dropout mask of x's shape: 0 with probability attrs.rate, else 1/(1 − rate), drawn anew "
       "each training step from the run's generator; all ones when evaluating (attrs.key keeps masks apart)",
       random=True, traits=(NO_GRADIENT_BY_DESIGN,))


# ---- training and evaluation ----------------------------------------------------------------------

def _training_infer(shapes, dtypes, attrs):
    if tuple(shapes[0]) != tuple(shapes[1]) or dtypes[0] != dtypes[1]:
        raise ShapeError(f"training: both branches must have one type, got {fmt_type(shapes[0], dtypes[0])} and "
                         f"{fmt_type(shapes[1], dtypes[1])}")
    return shapes[0], dtypes[0]


def _training_kernel(attrs, in_shapes, out_shape, dtype):
    # never part of a schedule: the scheduler puts the chosen operand in the op's place (passes/modes.py)
    raise RuntimeError("training(a, b) is resolved when a step is scheduled, never computed")


def _vjp_training(e, n, g):
    """The cotangent goes to the branch the step uses: training(g, 0) to a, training(0, g) to b, so the
    gradient (and its own gradient) is chosen with the branch."""
    def zeros():
        zero = _zero(e, n)
        return e("broadcast_to", zero, shape=n.shape) if n.shape else zero
    return [lambda: e("training", g, zeros()), lambda: e("training", zeros(), g)]


define("training", 2, _training_infer, _training_kernel, _vjp_training,
       "operand 0 in a training step, operand 1 when evaluating (two values of one type), chosen once when "
       "the step is scheduled", traits=(BY_MODE,))
