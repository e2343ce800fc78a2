"""The names every program starts with: intrinsic tensor functions (each lowers to primitives),
static helpers (range, len), initialisers, data sources and optimizers.

Composites that need no compiler support (softmax, losses, layers) are not here: they are written
in gradlang in `stdlib/`.
"""
from __future__ import annotations

import inspect
import math
import operator

from ..errors import GradError, Span
from ..ir.graph import check_size
from ..ops import nn_ops, registry
from ..ops.shapes import FLOATS, INTS, MAX_RANK, ShapeError, broadcast, fmt_type, normalize_axes, reduced
from ..passes.autodiff import backprop
from ..passes.stability import stable_form
from . import sources
from .plan import OPTIMIZER_SETTINGS, OPTIMIZERS, make_phase
from .settings import HALF_MAX, NUMBER, SCALE_SETTING, Range, Static, check_statics
from .values import Builtin, DataSpec, InitSpec, OptimizerSpec, Tensor, describe, show

BUILTINS: dict[str, Builtin] = {}


def builtin(name: str | None = None):
    def register(impl):
        BUILTINS[name or impl.__name__.rstrip("_")] = Builtin(name or impl.__name__.rstrip("_"), impl,
                                                              (impl.__doc__ or "").strip())
        return impl
    return register


def call_builtin(el, func: Builtin, args: list, kwargs: dict, span: Span):
    signature = inspect.signature(func.impl)
    try:
        signature.bind(el, span, *args, **kwargs)
    except TypeError as err:
        raise GradError(_call_mismatch(func.name, list(signature.parameters.values())[2:], args, kwargs, err),
                        span) from None
    return func.impl(el, span, *args, **kwargs)


def _call_mismatch(name: str, params: list, args: list, kwargs: dict, err: TypeError) -> str:
    """Why a builtin's arguments do not fit, worded as for user functions (not Python's TypeError text)."""
    if any(p.kind == p.VAR_KEYWORD for p in params) and not any(p.kind == p.VAR_POSITIONAL for p in params) \
            and args:
        return f"{name}() takes its settings by name, e.g. {name}(n: 100)"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        for key in kwargs:
            if key not in names:
                return f"{name}() has no parameter named {key!r}" + (
                    f"; its parameters are {', '.join(names)}" if names else "")
    if len(args) > len(positional) and not any(p.kind == p.VAR_POSITIONAL for p in params):
        n = len(positional)
        return f"{name}() takes {n} argument{'s' * (n != 1)} but {len(args)} were given"
    for p in positional[len(args):]:
        if p.default is p.empty and p.name not in kwargs:
            return f"{name}() is missing its argument {p.name!r}"
    return f"{name}(): {err}"


# ---- conversions and promotion -------------------------------------------------------------------

def _kind(dtype: str) -> int:
    return 2 if dtype in FLOATS else 1 if dtype in INTS else 0


def promote(el, a, b, span: Span, floats: bool = False, graph=None) -> tuple[Tensor, Tensor]:
    """Make two operands tensors of one dtype: bool < int < float; a Python number takes the other's type.
    Two plain numbers become constants in `graph` (the graph of the other operands of the operation)."""
    if not isinstance(a, Tensor):
        a = el.to_tensor(a, span, like=b if isinstance(b, Tensor) else None, graph=graph)
    if not isinstance(b, Tensor):
        b = el.to_tensor(b, span, like=a)
    ka, kb = _kind(a.dtype), _kind(b.dtype)
    if floats:
        target = a.dtype if ka == 2 else b.dtype if kb == 2 else el.float
    elif a.dtype == b.dtype:
        return a, b
    elif ka == kb:   # i32 vs i64, f32 vs f64: the wider
        target = max(a.dtype, b.dtype, key=lambda d: int(d[1:]))
    else:
        target = a.dtype if ka > kb else b.dtype
    return el.cast(a, target, span), el.cast(b, target, span)


def _arith_operands(el, a, b, span):
    a, b = promote(el, a, b, span)
    if a.dtype == "bool":   # true + true: count, as a float
        a, b = el.cast(a, el.float, span), el.cast(b, el.float, span)
    return a, b


_STATIC_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
               "**": operator.pow, "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}
_PRIMS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow",
          "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


# Compile-time arithmetic is exact Python arithmetic: bound it, or `2 ** 2 ** 2 ** 2 ** 2 ** 2` and a loop
# that doubles a list or string would run out of time or memory instead of failing.
MAX_STATIC_BITS = 4096        # no dtype holds more than 64; the rest is room for intermediate values
MAX_STATIC_LENGTH = 1_000_000


def _bounded(fn, op: str, a, b, span: Span):
    if op == "**" and type(a) is int and type(b) is int and b > 0 and abs(a) > 1 \
            and b * (abs(a).bit_length() - 1) > MAX_STATIC_BITS:
        raise GradError(f"{a} ** {b} has more than {MAX_STATIC_BITS} bits; no type holds it", span)
    if isinstance(a, (list, str)) and len(a) + len(b) > MAX_STATIC_LENGTH:
        raise GradError(f"joining these would make {describe(a)} of {len(a) + len(b):,} items, more than the "
                        f"limit of {MAX_STATIC_LENGTH:,}", span)
    out = fn(a, b)
    if isinstance(out, complex):   # a negative number to a fractional power
        raise GradError(f"({show(a)}) {op} {show(b)} is not a real number", span)
    if type(out) is int and out.bit_length() > MAX_STATIC_BITS:
        raise GradError(f"the result of {op} has {out.bit_length():,} bits; no type holds it", span)
    return out


def binary(el, op: str, a, b, span: Span):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        if op == "@":
            raise GradError(f"@ needs tensors, got {describe(a)} and {describe(b)}", span)
        if isinstance(a, list) and isinstance(b, list) and op == "+" \
                or type(a) in (int, float, bool) and type(b) in (int, float, bool) \
                or isinstance(a, str) and isinstance(b, str) and op in ("+", "==", "!="):
            if isinstance(a, (list, str)):   # joined or compared item by item
                el.spend_items(span, len(a) + len(b))
            try:
                return _bounded(_STATIC_OPS[op], op, a, b, span)
            except ZeroDivisionError:
                raise GradError("division by zero", span) from None
            except (OverflowError, ValueError) as err:
                raise GradError(f"cannot compute {show(a)} {op} {show(b)}: {err}", span) from None
        if not (isinstance(a, list) or isinstance(b, list)):
            raise GradError(f"cannot apply {op} to {describe(a)} and {describe(b)}", span)
    if op == "@":
        return matmul(el, span, a, b)
    if op in ("/", "**"):
        a, b = promote(el, a, b, span, floats=True)
    elif op in ("==", "!=", "<", "<=", ">", ">="):
        a, b = promote(el, a, b, span)
    else:
        a, b = _arith_operands(el, a, b, span)
    return el.emit(_PRIMS[op], [a, b], span)


def _tensor(el, x, span: Span) -> Tensor:
    return el.to_tensor(x, span)


def _float_tensor(el, x, span: Span) -> Tensor:
    x = el.to_tensor(x, span)
    return x if x.dtype in FLOATS else el.cast(x, el.float, span)


def _axes(axis, span: Span):
    if axis is None:
        return None
    items = axis if isinstance(axis, list) else [axis]
    for a in items:
        if isinstance(a, bool) or not isinstance(a, int):
            raise GradError(f"axis must be an integer or a list of integers, got {describe(a)}", span)
    return tuple(items)


def _flag(value, name: str, span: Span) -> bool:
    if not isinstance(value, bool):
        raise GradError(f"{name} must be true or false, got {describe(value)}", span)
    return value


# ---- elementwise ---------------------------------------------------------------------------------

def _surface_builtin(prim: registry.Primitive):
    """`name(x)` for a primitive marked `surface` in its record: the operand as a tensor of its own dtype
    (no promotion: `exp` of an integer is refused by the primitive's shape rule, `abs` keeps it), the
    primitive on it, and the record's doc."""
    name = prim.name

    def impl(el, span, x):
        return el.emit(name, [_tensor(el, x, span)], span)
    impl.__name__ = impl.__qualname__ = name
    impl.__doc__ = prim.doc
    BUILTINS[name] = Builtin(name, impl, prim.doc)


for _prim in registry.surface().values():
    _surface_builtin(_prim)


@builtin()
def sqrt(el, span, x):
    """square root (x ** 0.5)"""
    return binary(el, "**", x, 0.5, span)


@builtin()
def maximum(el, span, a, b):
    """elementwise maximum"""
    a, b = _arith_operands(el, a, b, span)
    return el.emit("maximum", [a, b], span)


@builtin()
def minimum(el, span, a, b):
    """elementwise minimum"""
    a, b = _arith_operands(el, a, b, span)
    return el.emit("neg", [el.emit("maximum", [el.emit("neg", [a], span), el.emit("neg", [b], span)], span)], span)


@builtin()
def clip(el, span, x, low, high):
    """x limited to [low, high] elementwise: minimum(maximum(x, low), high); at x = low or x = high the
    gradient goes to x"""
    for name, bound in (("low", low), ("high", high)):
        if not isinstance(bound, Tensor) and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                              or math.isnan(bound)):
            raise GradError(f"clip needs a number or a tensor for {name}, got {describe(bound)}", span)
    if not isinstance(low, Tensor) and not isinstance(high, Tensor) and low > high:
        raise GradError(f"clip: low ({show(low)}) is greater than high ({show(high)})", span)
    # maximum's tie sends the gradient to its first operand, and minimum is −maximum(−a, −b): on either
    # boundary the gradient flows to x, as inside the interval; low and high get it where x is beyond them
    return minimum(el, span, maximum(el, span, x, low), high)


@builtin()
def where(el, span, cond, a, b):
    """a where cond holds, else b"""
    cond = _tensor(el, cond, span)
    if cond.dtype != "bool":
        raise GradError(f"where needs a boolean condition (a comparison), got {fmt_type(cond.shape, cond.dtype)}",
                        span)
    a, b = promote(el, a, b, span, graph=cond.graph)
    return el.emit("where", [cond, a, b], span)


@builtin()
def dropout_mask(el, span, x, rate):
    """inverted-dropout mask for x: 0 with probability rate, else 1/(1-rate), new every training step;
    all ones in evaluation"""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise GradError(f"dropout rate must be a number in [0, 1), got {show(rate)}", span)
    el.random_keys += 1   # each mask is its own draw: never merged with another by CSE
    return el.emit("dropout_mask", [_float_tensor(el, x, span)], span, rate=float(rate), key=el.random_keys)


@builtin()
def count(el, span, x, axis=None):
    """the number of elements of x (over `axis`) as a float scalar tensor, known when the step runs: the
    batch size where it is symbolic (`mean(x)` is `sum(x) / count(x)`)"""
    x = _tensor(el, x, span)
    if x.graph is not el.graph:
        raise GradError("count(x) counts the elements of a value of the model", span)
    return el.emit("size", [x], span, axes=_axes(axis, span), dtype=el.float)


@builtin()
def training(el, span, a, b):
    """a in a training step, b when evaluating (predict, eval, validation): the branch is chosen once, when
    the step is compiled, and only it is computed; the gradient flows to it. a and b broadcast as in where"""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = el.to_tensor(a, span)
    a, b = promote(el, a, b, span, graph=a.graph if isinstance(a, Tensor) else b.graph)
    if a.graph is not el.graph or b.graph is not el.graph:
        raise GradError("training(a, b) chooses between values of the model; the train block's settings (which "
                        "depend on `step`) are the same in every kind of run", span)
    try:
        shape = broadcast(a.shape, b.shape)
    except ShapeError as err:
        raise GradError(f"training(a, b): {err}", span) from None
    a, b = (x if x.shape == shape else el.emit("broadcast_to", [x], span, shape=shape) for x in (a, b))
    return el.emit("training", [a, b], span)


_FLOAT_MAX = 1.7976931348623157e308   # the largest float64; a larger integer has no float


@builtin("float")
def float_(el, span, x):
    """convert to the program's float type"""
    if not isinstance(x, Tensor):
        if isinstance(x, float) or isinstance(x, int) and abs(x) <= _FLOAT_MAX:
            return float(x)
        raise GradError(f"float() needs a number that fits in a float, or a tensor, got {show(x)}", span)
    return el.cast(x, el.float, span)


@builtin("int")
def int_(el, span, x):
    """convert to a 64-bit integer (truncating); a static list of numbers becomes an i64 constant tensor"""
    if isinstance(x, list):
        return Tensor(el.graph, el.graph.const(_int_array(el, x, "int() of a list", span), "i64", span))
    if not isinstance(x, Tensor):
        if isinstance(x, (int, float)) and math.isfinite(x):
            return int(x)
        raise GradError(f"int() needs a finite number, a list of them or a tensor, got {show(x)}", span)
    return el.cast(x, "i64", span)


_I64 = (-2 ** 63, 2 ** 63)   # the integers an i64 holds: [low, high)


def _int_array(el, values: list, what: str, span: Span, integers_only: bool = False):
    """A static (nested) list of numbers as an int64 array, floats truncated as int(x) truncates them (or
    refused, with `integers_only`)."""
    import numpy as np
    try:
        floats = el.array_of(values, what, span)   # counts the work, checks the size and the rectangular shape
    except OverflowError:   # an integer beyond float64's range, so far beyond i64's too
        raise GradError(f"{what} holds an integer that does not fit in i64", span) from None
    if not np.all(np.isfinite(floats)):
        raise GradError(f"{what} must hold finite numbers, got {show(floats[~np.isfinite(floats)][0].item())}",
                        span)
    exact = _leaves(values)
    if integers_only and any(type(v) is not int for v in exact):
        raise GradError(f"{what} must hold integers only, got {describe(next(v for v in exact if type(v) is not int))}",
                        span)
    if all(type(v) in (int, bool) for v in exact):   # integers exactly, not through float64
        outside = next((v for v in exact if not _I64[0] <= v < _I64[1]), None)
        if outside is not None:
            raise GradError(f"{what}: {show(outside)} does not fit in i64", span)
        return np.array(values, dtype=np.int64).reshape(floats.shape)
    truncated = np.trunc(floats)
    if np.any((truncated < _I64[0]) | (truncated >= _I64[1])):
        raise GradError(f"{what}: {show(float(truncated[(truncated < _I64[0]) | (truncated >= _I64[1])][0]))} "
                        "does not fit in i64", span)
    return truncated.astype(np.int64)


def _leaves(values) -> list:
    """The numbers of a nested list, in order (array_of has checked it is rectangular and bounded)."""
    if not isinstance(values, list):
        return [values]
    return [leaf for v in values for leaf in _leaves(v)]


@builtin()
def one_hot(el, span, labels, depth):
    """integer labels [..] → float rows [.., depth] with a 1 at each label"""
    labels = _tensor(el, labels, span)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth <= 0:
        raise GradError(f"one_hot depth must be a positive integer, got {describe(depth)}", span)
    return el.emit("one_hot", [labels], span, depth=depth, dtype=el.float)


# ---- linear algebra ------------------------------------------------------------------------------

@builtin()
def matmul(el, span, a, b):
    """matrix product; a 1-D operand is a row (left) or column (right) vector, as in NumPy"""
    a, b = promote(el, a, b, span, floats=True)
    if not a.shape or not b.shape:
        raise GradError(f"@ needs tensors of rank 1 or more, got {fmt_type(a.shape, a.dtype)} @ "
                        f"{fmt_type(b.shape, b.dtype)}", span)
    vec_a, vec_b = len(a.shape) == 1, len(b.shape) == 1
    inner_a, inner_b = a.shape[-1], b.shape[0] if vec_b else b.shape[-2] if len(b.shape) > 1 else b.shape[0]
    if inner_a != inner_b:
        raise GradError(f"cannot multiply {fmt_type(a.shape, a.dtype)} @ {fmt_type(b.shape, b.dtype)}: "
                        f"inner dimensions {inner_a} and {inner_b} differ", span)
    if vec_a:
        a = el.emit("reshape", [a], span, shape=(1,) + a.shape)
    if vec_b:
        b = el.emit("reshape", [b], span, shape=b.shape + (1,))
    out = el.emit("matmul", [a, b], span)
    if vec_a or vec_b:
        shape = out.shape
        keep = shape[:-2] + (() if vec_a else shape[-2:-1]) + (() if vec_b else shape[-1:])
        out = el.emit("reshape", [out], span, shape=keep)
    return out


@builtin()
def dot(el, span, a, b):
    """inner product of two vectors (matmul for higher ranks)"""
    return matmul(el, span, a, b)


@builtin()
def transpose(el, span, x, axes=None):
    """reverse the axes, or permute them by `axes`"""
    x = _tensor(el, x, span)
    perm = tuple(reversed(range(len(x.shape)))) if axes is None else _axes(axes, span)
    return el.emit("transpose", [x], span, perm=perm)


def _dimensions(shape, name: str, span: Span) -> tuple:
    """A shape given as a list: integers and symbolic dimensions (`x.shape[0]` may be `B`); the shape
    rule of the op then says which integers it takes."""
    if not isinstance(shape, list):
        raise GradError(f"{name} needs a list of dimensions, got {describe(shape)}", span)
    if len(shape) > MAX_RANK:
        raise GradError(f"{name}: a tensor has at most {MAX_RANK} dimensions (NumPy's limit), got {len(shape)}", span)
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, str)):
            raise GradError(f"{name} needs a list of dimensions (integers or symbolic sizes), got a list holding "
                            f"{describe(d)}", span)
    return tuple(shape)


@builtin()
def reshape(el, span, x, shape):
    """same elements, new shape (one entry may be -1)"""
    return el.emit("reshape", [_tensor(el, x, span)], span, shape=_dimensions(shape, "reshape", span))


@builtin()
def broadcast_to(el, span, x, shape):
    """repeat x along new or size-1 axes to `shape`"""
    return el.emit("broadcast_to", [_tensor(el, x, span)], span, shape=_dimensions(shape, "broadcast_to", span))


@builtin()
def squeeze(el, span, x, axis=None):
    """x without the axes of size 1 named by `axis` (default: every axis of size 1), as a reshape"""
    x = _tensor(el, x, span)
    if axis is None:
        axes = tuple(a for a, d in enumerate(x.shape) if d == 1)
    else:
        axes = _reduced_axes(x, axis, "squeeze", span)
        for a in axes:
            if x.shape[a] != 1:
                size = f"the symbolic size {x.shape[a]}" if isinstance(x.shape[a], str) else f"size {x.shape[a]}"
                raise GradError(f"squeeze: axis {a} of {fmt_type(x.shape, x.dtype)} has {size}, not 1", span)
    if not axes:
        return x
    return el.emit("reshape", [x], span, shape=tuple(d for a, d in enumerate(x.shape) if a not in axes))


@builtin()
def expand_dims(el, span, x, axis):
    """x with new axes of size 1 at `axis` (an integer or a list, positions in the result), as a reshape"""
    x = _tensor(el, x, span)
    new = _axes(axis, span)
    if new is None:
        raise GradError("expand_dims needs an axis: an integer or a list of them", span)
    rank = len(x.shape) + len(new)
    if rank > MAX_RANK:
        raise GradError(f"expand_dims: a tensor has at most {MAX_RANK} dimensions, got {rank}", span)
    try:
        positions = normalize_axes(new, rank)
    except ShapeError as err:
        raise GradError(f"expand_dims: {err} (the result's rank)", span) from None
    dims = iter(x.shape)
    return el.emit("reshape", [x], span, shape=tuple(1 if a in positions else next(dims) for a in range(rank)))


@builtin()
def flip(el, span, x, axis=None):
    """x with the order of its elements reversed along `axis` (default: every axis); a view"""
    x = _tensor(el, x, span)
    axes = _reduced_axes(x, axis, "flip", span)
    return el.emit("flip", [x], span, axes=axes) if axes else x


@builtin()
def cumsum(el, span, x, axis):
    """running sums along `axis`: element i is the sum of elements 0…i; booleans count as 0 and 1"""
    x = _tensor(el, x, span)
    if x.dtype == "bool":
        x = el.cast(x, el.float, span)
    return el.emit("cumsum", [x], span, axis=_static_axis(axis, span), reverse=False)


@builtin()
def pad(el, span, x, widths, value=0):
    """x inside a border of `value`: `widths` is [before, after] for every axis, a list of such pairs (one per
    axis), or one integer for every side"""
    x = _tensor(el, x, span)
    rank = len(x.shape)

    def width(w) -> bool:
        return isinstance(w, int) and not isinstance(w, bool) and w >= 0
    if width(widths):
        pairs = ((widths, widths),) * rank
    elif isinstance(widths, list) and len(widths) == 2 and all(width(w) for w in widths):
        pairs = (tuple(widths),) * rank
    elif isinstance(widths, list) and all(isinstance(p, list) and len(p) == 2 and all(width(w) for w in p)
                                          for p in widths):
        if len(widths) != rank:
            raise GradError(f"pad needs one [before, after] pair per axis of {fmt_type(x.shape, x.dtype)}, got "
                            f"{len(widths)}", span)
        pairs = tuple(tuple(p) for p in widths)
    else:
        raise GradError(f"pad needs widths ≥ 0: an integer, a list [before, after], or a list of such pairs, got "
                        f"{describe(widths)}", span)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GradError(f"pad needs a finite number for value, got {show(value)}", span)
    if x.dtype == "bool":
        x = el.cast(x, el.float, span)
    if x.dtype in INTS and value != int(value):
        raise GradError(f"pad: the value {show(value)} is not an integer, as the padded {fmt_type(x.shape, x.dtype)} "
                        "is; convert x with float(x) first", span)
    value = float(value) if x.dtype in FLOATS else int(value)
    import numpy as np
    limits = np.finfo(x.dtype.replace("f", "float")) if x.dtype in FLOATS else np.iinfo(x.dtype.replace("i", "int"))
    if not float(limits.min) <= value <= float(limits.max):
        raise GradError(f"pad: the value {show(value)} does not fit in {x.dtype}", span)
    if all(p == (0, 0) for p in pairs):
        return x
    return el.emit("pad", [x], span, widths=pairs, value=value)


@builtin()
def einsum(el, span, spec, *operands):
    """Einstein summation, as NumPy's: einsum("ij,jk->ik", a, b) is a @ b; computed with transpose, reshape,
    matmul, mul and sum"""
    from .einsum import lower_einsum
    if not isinstance(spec, str):
        raise GradError(f"einsum needs its subscripts first, a string such as \"ij,jk->ik\", got {describe(spec)}",
                        span)
    if not operands:
        raise GradError("einsum needs at least one tensor after its subscripts", span)
    el.spend(span, len(operands))
    tensors = [_float_tensor(el, t, span) for t in operands]
    target = tensors[0]
    for t in tensors[1:]:
        target, _ = promote(el, target, t, span, floats=True)
    return lower_einsum(el, span, spec, [el.cast(t, target.dtype, span) for t in tensors])


# ---- reductions ----------------------------------------------------------------------------------

def _fold(el, span, items: list, op: str, axis=None, keepdims=False):
    if axis is not None or keepdims:
        raise GradError("axis and keepdims apply to a tensor, not to a list; reduce the list first, e.g. "
                        "sum(sum(xs), axis: 1)", span)
    if not items:
        raise GradError(f"{'sum' if op == '+' else op} of an empty list", span)
    el.spend(span, len(items))   # a node per item: counted before they are made
    total = items[0]
    for item in items[1:]:
        total = binary(el, op, total, item, span)
    return total


@builtin("sum")
def sum_(el, span, x, axis=None, keepdims=False):
    """sum of a tensor's elements (over `axis`), or of a list's items"""
    if isinstance(x, list):
        return _fold(el, span, x, "+", axis, keepdims)
    x = _tensor(el, x, span)
    if x.dtype == "bool":
        x = el.cast(x, el.float, span)
    return el.emit("reduce_sum", [x], span, axes=_axes(axis, span), keepdims=_flag(keepdims, "keepdims", span))


@builtin()
def mean(el, span, x, axis=None, keepdims=False):
    """arithmetic mean (over `axis`); booleans count as 0 and 1"""
    if isinstance(x, list):
        return binary(el, "/", _fold(el, span, x, "+", axis, keepdims), len(x), span)
    x = _float_tensor(el, x, span)
    axes = _axes(axis, span)
    total = el.emit("reduce_sum", [x], span, axes=axes, keepdims=_flag(keepdims, "keepdims", span))
    count = el.emit("size", [x], span, axes=axes, dtype=x.dtype)
    return el.emit("div", [total, count], span)


@builtin("max")
def max_(el, span, x, axis=None, keepdims=False):
    """largest element (over `axis`), or largest item of a list"""
    _not_two_values(x, axis, "max", "maximum", span)
    if isinstance(x, list):
        _fold(el, span, x[:1], "max", axis, keepdims)   # only its checks (no axis, not empty): nothing to fold
        el.spend_items(span, len(x))
        if all(type(v) in (int, float) for v in x):
            return max(x)
        return _fold_max(el, span, x)
    x = _tensor(el, x, span)
    if x.dtype == "bool":
        x = el.cast(x, el.float, span)
    return el.emit("reduce_max", [x], span, axes=_axes(axis, span), keepdims=_flag(keepdims, "keepdims", span))


def _not_two_values(x, axis, name: str, elementwise: str, span: Span) -> None:
    """`min(1, 2)` reads 2 as an axis; a number has none, so say what was probably meant."""
    if isinstance(x, (int, float)) and axis is not None:
        raise GradError(f"{name}(x, axis) reduces one tensor or list; for the {name}imum of two values use "
                        f"{elementwise}(a, b)", span)


def _fold_max(el, span, items):
    el.spend(span, len(items))   # a node per item: counted before they are made
    total = items[0]
    for item in items[1:]:
        total = maximum(el, span, total, item)
    return total


@builtin("min")
def min_(el, span, x, axis=None, keepdims=False):
    """smallest element (over `axis`), or smallest item of a list"""
    if isinstance(x, list):
        el.spend_items(span, len(x))
    if isinstance(x, list) and all(type(v) in (int, float) for v in x):
        _fold(el, span, x[:1], "min", axis, keepdims)   # only its checks (no axis, not empty): nothing to fold
        return min(x)
    _not_two_values(x, axis, "min", "minimum", span)
    if isinstance(x, list):
        el.spend(span, len(x))   # a node per item
    negated = binary(el, "*", x, -1, span) if not isinstance(x, list) else [binary(el, "*", v, -1, span) for v in x]
    return el.emit("neg", [max_(el, span, negated, axis, keepdims)], span)


@builtin()
def softmax(el, span, x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, computed stably (a fused primitive)"""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GradError(f"softmax needs one integer axis, got {describe(axis)}", span)
    return el.emit("softmax", [_float_tensor(el, x, span)], span, axis=axis)


@builtin()
def softmax_cross_entropy(el, span, logits, labels, label_smoothing=0):
    """−log softmax(logits)[label] for each row: logits [.., C], integer labels [..] → [..]; with
    label_smoothing ε, the cross-entropy against (1 − ε)·one_hot(label) + ε/C"""
    smoothing = label_smoothing
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise GradError(f"label_smoothing must be a number in [0, 1), got {show(smoothing)}", span)
    logits = _float_tensor(el, logits, span)
    fused = el.emit("softmax_cross_entropy", [logits, _tensor(el, labels, span)], span)
    if smoothing == 0:   # the fused primitive alone, as without smoothing
        return fused
    # −Σ_c target_c·log softmax(logits)_c = (1 − ε)·(−log softmax(logits)_label) + ε·(logsumexp(logits) − mean_c logits)
    spread = binary(el, "-", logsumexp(el, span, logits, -1), mean(el, span, logits, -1), span)
    return binary(el, "+", binary(el, "*", fused, 1 - smoothing, span), binary(el, "*", spread, smoothing, span),
                  span)


@builtin()
def argmax(el, span, x, axis=-1):
    """index of the largest element along `axis` (an i64 tensor; no gradient)"""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GradError(f"argmax needs one integer axis, got {describe(axis)}", span)
    return el.emit("argmax", [_tensor(el, x, span)], span, axis=axis)


@builtin()
def logsumexp(el, span, x, axis=None, keepdims=False):
    """log(sum(exp(x))) computed without overflow"""
    return el.emit("logsumexp", [_float_tensor(el, x, span)], span, axes=_axes(axis, span),
                   keepdims=_flag(keepdims, "keepdims", span))


@builtin()
def argmin(el, span, x, axis=-1):
    """index of the smallest element along `axis` (an i64 tensor; no gradient)"""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GradError(f"argmin needs one integer axis, got {describe(axis)}", span)
    x = _tensor(el, x, span)
    if x.dtype == "bool":
        x = el.cast(x, "i64", span)
    # the argmax of an order-reversing map, exact for every value: −x for floats, −1 − x for integers (−x
    # would overflow at the most negative one); ties and NaNs give the first index, as NumPy's argmin
    flipped = el.emit("neg", [x], span) if x.dtype in FLOATS else \
        el.emit("sub", [el.to_tensor(-1, span, like=x), x], span)
    return el.emit("argmax", [flipped], span, axis=axis)


def _reduced_axes(x: Tensor, axis, name: str, span: Span) -> tuple[int, ...]:
    """`axis` (None: all) as sorted axes of x, or a located error."""
    try:
        return normalize_axes(_axes(axis, span), len(x.shape))
    except ShapeError as err:
        raise GradError(f"{name}: {err}", span) from None


@builtin()
def prod(el, span, x, axis=None, keepdims=False):
    """product of the elements (over `axis`); booleans count as 0 and 1. Its gradient is the product of the
    other elements, also where some are zero"""
    x = _tensor(el, x, span)
    if x.dtype == "bool":
        x = el.cast(x, el.float, span)
    keep = _flag(keepdims, "keepdims", span)
    axes = _reduced_axes(x, axis, "prod", span)
    out_shape = reduced(x.shape, axes, keep)
    for a in axes:
        if isinstance(x.shape[a], str):
            raise GradError(f"prod cannot reduce the symbolic dimension {x.shape[a]} of {fmt_type(x.shape, x.dtype)}: "
                            "it multiplies a known number of elements", span)
    kept = [a for a in range(len(x.shape)) if a not in axes]
    n = math.prod(x.shape[a] for a in axes)
    if n == 0:   # the empty product
        return el.emit("broadcast_to", [el.to_tensor(1, span, like=x)], span, shape=out_shape)
    # A balanced tree of products: the reduced axes moved last and flattened, padded with ones to a power of
    # two, and the first half multiplied by the second until one element is left. Autodiff through `mul`
    # then gives each element the product of all the others (of its siblings at every level: the
    # exclusive product) without dividing by it, so zeros are no special case — one zero gets the product
    # of the rest, the others 0 — and gradients of gradients come from the same rules. It needs no new
    # primitive, does O(n) work in log₂ n multiplications, and rounds less than a running product.
    lead = [x.shape[a] for a in kept]
    t = x if kept + list(axes) == list(range(len(x.shape))) else \
        el.emit("transpose", [x], span, perm=tuple(kept) + axes)
    if len(axes) != 1:
        t = el.emit("reshape", [t], span, shape=tuple(lead) + (n,))
    width = 1 << (n - 1).bit_length()
    if width != n:
        t = el.emit("pad", [t], span, widths=((0, 0),) * len(lead) + ((0, width - n),), value=1)
    full = (("s", None, None, None),) * len(lead)
    while width > 1:
        width //= 2
        first = el.emit("slice", [t], span, index=full + (("s", None, width, None),))
        second = el.emit("slice", [t], span, index=full + (("s", width, None, None),))
        t = el.emit("mul", [first, second], span)
    return el.emit("reshape", [t], span, shape=out_shape)


def _variance(el, span, name: str, x, axis, keepdims, ddof) -> Tensor:
    """Σ (x − mean)² / (n − ddof) over `axis`: the mean is subtracted first, as NumPy does, so that a
    large offset does not cancel the digits of a small spread (E[x²] − E[x]² would)."""
    x = _float_tensor(el, x, span)
    keep = _flag(keepdims, "keepdims", span)
    if isinstance(ddof, bool) or not isinstance(ddof, (int, float)) or not 0 <= ddof < math.inf:
        raise GradError(f"{name}: ddof must be a number ≥ 0, got {show(ddof)}", span)
    axes = _reduced_axes(x, axis, name, span)
    centred = binary(el, "-", x, mean(el, span, x, list(axes), True), span)
    squares = el.emit("reduce_sum", [binary(el, "*", centred, centred, span)], span, axes=axes, keepdims=keep)
    dims = [x.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        count = math.prod(dims)
        if count - ddof <= 0:
            raise GradError(f"{name} of {count} element{'s' * (count != 1)} with ddof {show(ddof)} divides by "
                            f"{show(count - ddof)}", span)
        return binary(el, "/", squares, count - ddof, span)
    count = el.emit("size", [x], span, axes=axes, dtype=x.dtype)
    return binary(el, "/", squares, binary(el, "-", count, ddof, span) if ddof else count, span)


@builtin()
def var(el, span, x, axis=None, keepdims=False, ddof=0):
    """variance: the mean of (x − mean(x))² over `axis`, divided by n − ddof instead of n"""
    return _variance(el, span, "var", x, axis, keepdims, ddof)


@builtin()
def std(el, span, x, axis=None, keepdims=False, ddof=0):
    """standard deviation: sqrt(var(x, axis, keepdims, ddof)); it has no gradient where the elements are all
    equal (NaN there)"""
    return binary(el, "**", _variance(el, span, "std", x, axis, keepdims, ddof), 0.5, span)


# ---- gradients -----------------------------------------------------------------------------------

GRAD_STEPS_PER_NODE = 10


@builtin()
def grad(el, span, f, wrt):
    """d f / d wrt, as a tensor of wrt's shape (a list of them for a list); f must be a float scalar"""
    if not isinstance(f, Tensor) or f.graph is not el.graph:
        raise GradError(f"grad needs a tensor computed by the model, got {describe(f)}", span)
    targets = wrt if isinstance(wrt, list) else [wrt]
    for t in targets:
        if not isinstance(t, Tensor) or t.graph is not el.graph or t.dtype not in FLOATS:
            raise GradError(f"grad can differentiate with respect to float tensors only, got {describe(t)}", span)
    # a gradient is made by rewriting and differentiating every node f depends on, at several times the cost
    # of making one: counted as such against the compile-time work (elaborate.MAX_WORK), before it is done
    el.spend(span, GRAD_STEPS_PER_NODE * len(el.graph.reachable([f.node])) + len(targets))
    wrt_nodes = [t.node for t in targets]
    # differentiated in its numerically stable form, as the training gradient is (passes/stability.py)
    stable = stable_form(el.graph, f.node, wrt_nodes)
    grads = [Tensor(el.graph, n) for n in backprop(el.graph, stable, wrt_nodes, span)]
    return grads if isinstance(wrt, list) else grads[0]


# ---- static helpers ------------------------------------------------------------------------------

MAX_RANGE = 1_000_000


@builtin("range")
def range_(el, span, start, stop=None, step=1):
    """the integers start, start+step, … below stop (known at compile time)"""
    for v in (start, stop, step):
        if isinstance(v, str) and any(v in spec.shape for spec in el.inputs.values()):
            raise GradError(f"range needs a number known where the program compiles, but {v} is a symbolic "
                            f"dimension (its size comes with each feed): a loop over it, such as rnn.unroll over "
                            f"a sequence, needs the length in the input's type (`[B, 50, …]`); pad or cut "
                            f"sequences to one length", span)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise GradError(f"range needs integers, got {describe(v)}", span)
    r = range(start) if stop is None else range(start, stop, step) if step else None
    if r is None:
        raise GradError("range step must not be zero", span)
    count = (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step   # len(r) overflows past 2**63
    if count > MAX_RANGE:
        raise GradError(f"range of {count} items is larger than the limit of {MAX_RANGE}", span)
    el.spend_items(span, max(count, 0))
    return list(r)


@builtin("len")
def len_(el, span, x):
    """number of items of a list, or the first dimension of a tensor"""
    if isinstance(x, list):
        return len(x)
    if isinstance(x, Tensor) and x.shape:
        if isinstance(x.shape[0], str):
            raise GradError(f"len is the symbolic dimension {x.shape[0]}, known only at run time", span)
        return x.shape[0]
    raise GradError(f"len needs a list or a tensor of rank ≥ 1, got {describe(x)}", span)


def index(el, span, value, items: list):
    if isinstance(value, list):
        if len(items) != 1:
            raise GradError("a list takes one index", span)
        item = items[0]
        if isinstance(item, slice):
            part = value[item]
            el.spend_items(span, len(part))
            return part
        if isinstance(item, bool) or not isinstance(item, int):
            raise GradError(f"a list index must be an integer known at compile time, got {describe(item)}", span)
        if not -len(value) <= item < len(value):
            raise GradError(f"index {item} is out of range for a list of {len(value)} items", span)
        return value[item]
    if not isinstance(value, Tensor):
        raise GradError(f"{describe(value)} cannot be indexed", span)
    spec = []
    for item in items:
        if isinstance(item, slice):
            spec.append(("s", item.start, item.stop, item.step))
        elif isinstance(item, int) and not isinstance(item, bool):
            spec.append(("i", item))
        else:
            raise GradError(f"a tensor index must be an integer or a slice known at compile time, "
                            f"got {describe(item)} (use one_hot for labels)", span)
    if all(s == ("s", None, None, None) for s in spec) and len(spec) <= len(value.shape):
        return value
    return el.emit("slice", [value], span, index=tuple(spec))


# ---- initialisers --------------------------------------------------------------------------------

INITIALIZERS = ("zeros", "ones", "constant", "normal", "uniform", "glorot_uniform", "glorot_normal",
                "xavier_uniform", "xavier_normal", "he_uniform", "he_normal")


def _init(kind: str, doc: str, **rules: tuple):
    """An initialiser builtin; `rules` maps each setting, in order, to its (default, Static)."""
    names = list(rules)

    def impl(el, span, *args, **kwargs):
        if len(args) > len(names) or set(kwargs) - set(names[len(args):]):
            raise GradError(f"{kind}({', '.join(names)}): unexpected arguments", span)
        settings = {name: rules[name][0] for name in names} | dict(zip(names, args)) | kwargs
        missing = [name for name in names if settings[name] is None]
        if missing:
            raise GradError(f"{kind} needs a value for {missing[0]}", span)
        check_statics(kind, {name: rule for name, (_, rule) in rules.items()}, settings, span)
        return InitSpec(kind.replace("xavier", "glorot"), tuple(float(settings[name]) for name in names))
    impl.__doc__ = doc
    BUILTINS[kind] = Builtin(kind, impl, doc)


# the ends of a uniform draw: finite, in order, and a finite width apart (numpy refuses an infinite one)
_UNIFORM_END = Range(-HALF_MAX, HALF_MAX)
_init("zeros", "all zeros")
_init("ones", "all ones")
_init("constant", "every element `value`", value=(None, NUMBER))
_init("normal", "drawn from N(mean, std²)", mean=(0.0, NUMBER), std=(1.0, SCALE_SETTING))
_init("uniform", "drawn uniformly from [low, high)", low=(-0.05, Static("number", _UNIFORM_END)),
      high=(0.05, Static("number", Range("low", HALF_MAX))))
for _kind_name in ("glorot_uniform", "glorot_normal", "xavier_uniform", "xavier_normal"):
    _init(_kind_name, "Glorot/Xavier: variance gain·2/(fan_in + fan_out)", gain=(1.0, SCALE_SETTING))
_init("he_uniform", "He/Kaiming: variance gain·2/fan_in, for ReLU layers", gain=(1.0, SCALE_SETTING))
_init("he_normal", "He/Kaiming: variance gain·2/fan_in, for ReLU layers", gain=(1.0, SCALE_SETTING))


def default_init(shape: tuple) -> InitSpec:
    """Weights (rank ≥ 2) start Glorot-uniform, biases and scalars at zero."""
    return InitSpec("glorot_uniform", (1.0,)) if len(shape) >= 2 else InitSpec("zeros", ())


# ---- data sources and optimizers ----------------------------------------------------------------

def _data_builtin(name: str, signature: sources.SourceSignature):
    def impl(el, span, **kwargs):
        sources.check_kinds(name, kwargs, span)
        sources.check_settings(name, kwargs, span)   # ranges and output size, where the program is compiled
        return DataSpec(name, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                           for k, v in kwargs.items())), span)
    BUILTINS[name] = Builtin(name, impl, signature.doc.splitlines()[0] if signature.doc else "")


for _name, _source in sources.DATA_SOURCES.items():
    _data_builtin(_name, _source)


def _optimizer_builtin(name: str, spec):
    def impl(el, span, **kwargs):
        unknown = [key for key in kwargs if key not in spec.settings]
        if unknown:   # named first: `sgd(learning_rate: 0.1)` is a misspelt lr, not a missing one
            raise GradError(f"{name}() has no setting {unknown[0]!r}; known: {', '.join(spec.settings)}", span)
        settings = {}
        for key, default in spec.settings.items():
            value = kwargs.pop(key, default)
            if value is None:
                raise GradError(f"{name}() needs {key}: …", span)
            if isinstance(value, Tensor):
                if value.shape != ():
                    raise GradError(f"{name}({key}: …) must be a scalar", span)
                if value.graph is el.graph:
                    raise GradError(f"{name}({key}: …) can depend on the step only, not on the model", span)
            settings[key] = value
        check_statics(name, OPTIMIZER_SETTINGS, {k: v for k, v in settings.items() if not isinstance(v, Tensor)}, span)
        return OptimizerSpec(name, tuple(settings.items()), span)
    BUILTINS[name] = Builtin(name, impl, spec.doc)


for _name, _spec in OPTIMIZERS.items():
    _optimizer_builtin(_name, _spec)


@builtin()
def phase(el, span, loss, params, optimizer=None, repeat=1):
    """one phase of a training step, for the train block's `phases`: `repeat` updates of `params` on the
    gradient of `loss`"""
    el.spend(span, len(el.graph))   # it looks through the graph's params
    return make_phase(el, span, loss, params, optimizer, repeat)


# ---- deep learning: convolution, pooling, gather, joining, masks ---------------------------------
# Primitives in ops/nn_ops.py; images are NCHW: [batch, channels, height, width].

def _int_pair(value, name: str, low: int, span: Span) -> tuple[int, int]:
    """A static integer, or a list of two, each ≥ low (a stride, a padding, a window size)."""
    pair = value if isinstance(value, list) else [value, value]
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in pair):
        raise GradError(f"{name} must be an integer ≥ {low} or a list of two, got {describe(value)}", span)
    return tuple(pair)


def _image_tensor(el, x, name: str, span: Span) -> Tensor:
    x = _float_tensor(el, x, span)
    if len(x.shape) != 4:
        raise GradError(f"{name} needs a rank-4 [N, C, H, W] tensor, got {fmt_type(x.shape, x.dtype)}; "
                        "reshape it, e.g. reshape(x, [x.shape[0], 1, 28, 28])", span)
    return x


def _conv_options(dilation, groups, span: Span) -> dict:
    """conv2d's dilation and groups as primitive attrs, left out when 1 (the ordinary convolution)."""
    dilation = _int_pair(dilation, "dilation", 1, span)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise GradError(f"groups must be a positive integer, got {show(groups)}", span)
    return ({"dilation": dilation} if dilation != (1, 1) else {}) | ({"groups": groups} if groups != 1 else {})


@builtin()
def conv2d(el, span, x, w, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) of x [N, C, H, W] with filters w [O, C/groups, KH, KW], taps
    `dilation` apart"""
    x, w = _image_tensor(el, x, "conv2d", span), _image_tensor(el, w, "conv2d (filters)", span)
    return el.emit("conv2d", [x, w], span, stride=_int_pair(stride, "stride", 1, span),
                   padding=_int_pair(padding, "padding", 0, span), **_conv_options(dilation, groups, span))


@builtin()
def conv2d_transpose(el, span, x, w, stride=1, padding=0, size=None, dilation=1, groups=1):
    """transposed convolution of x [N, C, H, W] with filters w [C, O/groups, KH, KW] (the adjoint of conv2d)"""
    x, w = _image_tensor(el, x, "conv2d_transpose", span), _image_tensor(el, w, "conv2d_transpose (filters)", span)
    stride, padding = _int_pair(stride, "stride", 1, span), _int_pair(padding, "padding", 0, span)
    options = _conv_options(dilation, groups, span)
    if size is None:
        if not all(isinstance(d, int) for d in x.shape[2:] + w.shape[2:]):
            raise GradError(f"conv2d_transpose needs known spatial sizes, got {fmt_type(x.shape, x.dtype)} and "
                            f"filters {fmt_type(w.shape, w.dtype)}", span)
        spacing = options.get("dilation", (1, 1))
        size = [(x.shape[2 + i] - 1) * stride[i] + spacing[i] * (w.shape[2 + i] - 1) + 1 - 2 * padding[i]
                for i in range(2)]
    return el.emit("conv2d_transpose", [x, w], span, stride=stride, padding=padding,
                   size=_int_pair(size, "size", 1, span), **options)


def _pool_settings(el, span, name: str, x, size, stride, padding) -> tuple:
    x = _image_tensor(el, x, name, span)
    kernel = _int_pair(size, "size", 1, span)
    stride = kernel if stride is None else _int_pair(stride, "stride", 1, span)
    padding = _int_pair(padding, "padding", 0, span)
    if any(p >= k for p, k in zip(padding, kernel)):
        raise GradError(f"{name}: padding {list(padding)} must be smaller than the window {list(kernel)}", span)
    return x, {"kernel": kernel, "stride": stride, "padding": padding}


@builtin()
def max_pool2d(el, span, x, size, stride=None, padding=0):
    """the largest value of each size×size window of x [N, C, H, W] (stride: the size)"""
    x, settings = _pool_settings(el, span, "max_pool2d", x, size, stride, padding)
    return el.emit("max_pool2d", [x], span, **settings)


@builtin()
def avg_pool2d(el, span, x, size, stride=None, padding=0):
    """the mean of each size×size window of x [N, C, H, W] (stride: the size; padding counts as zeros)"""
    x, settings = _pool_settings(el, span, "avg_pool2d", x, size, stride, padding)
    windows = el.emit("patches2d", [x], span, pad_value=0.0, **settings)
    total = el.emit("reduce_sum", [windows], span, axes=(4, 5), keepdims=False)
    kernel = settings["kernel"]
    return binary(el, "/", total, kernel[0] * kernel[1], span)


@builtin()
def take(el, span, x, indices, axis=0):
    """the slices of x at integer `indices` along `axis` (an embedding lookup: take(table, tokens)); indices
    may be a static list of integers"""
    x = _tensor(el, x, span)
    if isinstance(indices, list):
        array = _int_array(el, indices, "take's list of indices", span, integers_only=True)
        indices = Tensor(el.graph, el.graph.const(array, "i64", span))
    indices = _tensor(el, indices, span)
    if indices.dtype not in INTS:
        raise GradError(f"take needs integer indices, got {fmt_type(indices.shape, indices.dtype)}", span)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GradError(f"take needs one integer axis, got {describe(axis)}", span)
    if x.shape and -len(x.shape) <= axis < len(x.shape) and isinstance(x.shape[axis], int) \
            and indices.graph.op(indices.node) == "const":
        # indices known now are checked now, where the program names them
        values, size = indices.graph.attrs(indices.node)["value"], x.shape[axis]
        wrong = values[(values < 0) | (values >= size)]
        if wrong.size:
            raise GradError(f"take: index {wrong.reshape(-1)[0]} is out of range for axis {axis} of "
                            f"{fmt_type(x.shape, x.dtype)}, which needs 0 ≤ index < {size}", span)
    return el.emit("take", [x, indices], span, axis=axis)


def _tensor_list(el, xs, name: str, span: Span) -> list[Tensor]:
    if not isinstance(xs, list) or not xs:
        raise GradError(f"{name} needs a non-empty list of tensors, got {describe(xs)}", span)
    el.spend(span, len(xs))
    tensors = [_tensor(el, x, span) for x in xs]
    target = tensors[0]
    for t in tensors[1:]:
        target, _ = promote(el, target, t, span)
    return [el.cast(t, target.dtype, span) for t in tensors]


def _static_axis(axis, span: Span) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GradError(f"axis must be one integer, got {describe(axis)}", span)
    return axis


@builtin()
def concat(el, span, xs, axis=0):
    """the tensors of the list xs joined along `axis` (their other dimensions agree)"""
    return el.emit("concat", _tensor_list(el, xs, "concat", span), span, axis=_static_axis(axis, span))


@builtin()
def stack(el, span, xs, axis=0):
    """the tensors of the list xs (one shape) stacked along a new axis at `axis`"""
    tensors = _tensor_list(el, xs, "stack", span)
    rank = len(tensors[0].shape)
    axis = _static_axis(axis, span)
    if not -rank - 1 <= axis <= rank:
        raise GradError(f"stack: axis {axis} is out of range for tensors of rank {rank}", span)
    axis %= rank + 1
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise GradError(f"stack needs tensors of one shape, got {fmt_type(tensors[0].shape, tensors[0].dtype)} "
                            f"and {fmt_type(t.shape, t.dtype)}", span)
    grown = [el.emit("reshape", [t], span, shape=t.shape[:axis] + (1,) + t.shape[axis:]) for t in tensors]
    return el.emit("concat", grown, span, axis=axis)


@builtin()
def split(el, span, x, sections, axis=0):
    """x cut along `axis` into a list: `sections` equal parts, or parts of the listed sizes"""
    x = _tensor(el, x, span)
    axis = _static_axis(axis, span)
    if not -len(x.shape) <= axis < len(x.shape):
        raise GradError(f"split: axis {axis} is out of range for {fmt_type(x.shape, x.dtype)}", span)
    axis %= len(x.shape)
    total = x.shape[axis]
    if not isinstance(total, int):
        raise GradError(f"split: cannot split the symbolic dimension {total}", span)
    if isinstance(sections, int) and not isinstance(sections, bool):
        if sections < 1 or total % sections:
            raise GradError(f"split: {total} does not split into {sections} equal parts", span)
        sizes = [total // sections] * sections
    elif isinstance(sections, list) and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                            for s in sections):
        sizes = sections
        if sum(sizes) != total:
            raise GradError(f"split: the sizes {sizes} add up to {sum(sizes)}, not {total}", span)
    else:
        raise GradError(f"split needs a number of parts or a list of positive sizes, got {describe(sections)}", span)
    el.spend(span, len(sizes))
    parts, start = [], 0
    for size in sizes:
        index = (("s", None, None, None),) * axis + (("s", start, start + size, None),)
        parts.append(el.emit("slice", [x], span, index=index) if size != total else x)
        start += size
    return parts


@builtin()
def causal_mask(el, span, n, keys=None):
    """a boolean [n, keys] matrix (keys: n), true where column ≤ row + keys − n: what each of n queries
    may attend to, the queries being the last n positions of the keys' sequence"""
    keys = n if keys is None else keys
    for size in (n, keys):   # a symbolic size (`x.shape[1]`) is bound at run time
        if isinstance(size, bool) or not isinstance(size, (int, str)) or isinstance(size, int) and size < 1:
            raise GradError(f"causal_mask needs a positive integer size, got {show(size)}", span)
    if isinstance(n, str) or isinstance(keys, str):   # a primitive, checked (n ≤ keys) once the sizes are bound
        return el.emit("causal_mask", [], span, shape=(n, keys))
    if n > keys:
        raise GradError(nn_ops.more_queries(n, keys), span)
    check_size((n, keys), "bool", "causal_mask", span)   # before the bytes are allocated
    return Tensor(el.graph, el.graph.const(nn_ops.causal_mask_array(n, keys), "bool", span))


@builtin()
def random_normal(el, span, shape):
    """standard normal noise of `shape` (symbolic dimensions allowed), drawn anew at every run"""
    shape = _dimensions(shape, "random_normal", span)
    el.random_keys += 1   # each call is its own draw: never merged with another by CSE
    return el.emit("random_normal", [], span, shape=shape, dtype=el.float, key=el.random_keys)


@builtin()
def random_uniform(el, span, shape):
    """uniform noise in [0, 1) of `shape` (symbolic dimensions allowed), drawn anew at every run"""
    shape = _dimensions(shape, "random_uniform", span)
    el.random_keys += 1   # each call is its own draw: never merged with another by CSE
    return el.emit("random_uniform", [], span, shape=shape, dtype=el.float, key=el.random_keys)
