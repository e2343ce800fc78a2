"""ONNX export: a program's inference graph as an ONNX model, built with the `onnx` package's helpers.

What is exported is the optimized forward graph the interpreter runs when evaluating — after the
stability rewrites and simplification, so stdlib composites (softmax, layers, losses) arrive as
primitives — restricted to the values asked for, with dropout off (its masks are all ones, and the
multiplications by them are simplified away) and every `training(a, b)` its evaluation branch b (batch
norm normalises by its running statistics). Inputs keep their declared names and dtypes, symbolic
dimensions (`B`) become ONNX `dim_param`s unless a batch size is fixed, params and the program's state
become initializers named as in the program, and every requested value becomes a graph output under its
own name.

Each primitive translates through one entry of `_TRANSLATIONS` (`ONNX_OPERATORS` lists the ONNX
operators each becomes; docs/onnx.md's table is tested against it). Primitives with no translation
are reported together, each with the source lines that use it, before anything is built.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import GradError
from ..ir.graph import Graph, NodeRef
from ..ops.shapes import DTYPES, fmt_type
from ..passes import simplify
from ..passes.modes import for_mode

OPSET = 18   # ReduceMax/ReduceLogSumExp take their axes as an input from 18 on, as ReduceSum does from 13
_INT64_MIN = np.iinfo(np.int64).min

# Primitives that never reach the ONNX graph in inference, and those with no translation, with why.
REMOVED_FOR_INFERENCE = {
    "dropout_mask": "all ones when evaluating: replaced by 1 and simplified away before translation",
    "training": "training(a, b) is b when evaluating: replaced by b before translation (a is not exported)",
}
NOT_EXPORTED = {
    "random_normal": "draws fresh noise from the program's generator; ONNX's generator would draw other numbers",
    "random_uniform": "draws fresh noise from the program's generator; ONNX's generator would draw other numbers",
    "conv2d_filter_grad": "a derivative of conv2d, made by grad(…)",
    "max_pool2d_grad": "a derivative of max_pool2d, made by grad(…)",
    "max_pool2d_select": "a second derivative of max_pool2d, made by grad(…)",
    "patches2d_transpose": "a derivative of patches2d (avg_pool2d), made by grad(…)",
    "scatter_add": "a derivative of take, made by grad(…)",
    "unslice": "a derivative of slicing, made by grad(…)",
}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise GradError("ONNX export needs the onnx package: pip install 'gradlang[onnx]'") from None
    return onnx


# ---- the builder: ONNX nodes, initializers and the shape tensors symbolic dimensions need -------

class _Builder:
    """Collects ONNX nodes and initializers while the graph is translated node by node."""

    def __init__(self, onnx, graph: Graph, batch: int | None):
        self.onnx, self.helper, self.graph, self.batch = onnx, onnx.helper, graph, batch
        self.nodes: list = []
        self.initializers: list = []
        self.dim_sources: dict[str, tuple[str, int]] = {}   # symbolic dim → (input tensor, axis)
        self._dims: dict = {}      # cached one-element int64 tensors per dimension
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}#.{self._count}"

    def node(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=f"{op_type}{out}", **attrs))
        return out

    def constant(self, value, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.constant(np.asarray(values, dtype=np.int64).reshape(-1), hint)

    def resolve(self, dim):
        """A dimension as exported: an int, or a symbolic name unless the batch size is fixed."""
        return self.batch if isinstance(dim, str) and self.batch is not None else dim

    def dim(self, dim) -> str:
        """A one-element int64 tensor holding `dim`, read from an input's shape when symbolic."""
        dim = self.resolve(dim)
        if dim not in self._dims:
            if isinstance(dim, int):
                self._dims[dim] = self.ints([dim], "dim")
            else:
                if dim not in self.dim_sources:
                    raise GradError(f"cannot export to ONNX: the symbolic dimension {dim} is not a dimension of "
                                    "any exported input, so the model cannot compute it; fix it with a batch size")
                source, axis = self.dim_sources[dim]
                shape = self.node("Shape", [source], f"shape_{source}")
                self._dims[dim] = self.node("Gather", [shape, self.ints([axis])], f"dim_{dim}", axis=0)
        return self._dims[dim]

    def shape_tensor(self, shape, minus_one: bool = True) -> str:
        """An int64 tensor holding `shape`: a constant (with −1 for one symbolic dimension if `minus_one`:
        Reshape infers it, Expand does not), else a Concat of constants and dimensions read from the inputs."""
        shape = [self.resolve(d) for d in shape]
        symbolic = [d for d in shape if isinstance(d, str)]
        if not symbolic or minus_one and len(symbolic) == 1:
            return self.ints([-1 if isinstance(d, str) else d for d in shape], "shape")
        return self.node("Concat", [self.dim(d) for d in shape], "shape", axis=0)

    def elem_type(self, dtype: str) -> int:
        return self.helper.np_dtype_to_tensor_dtype(np.dtype(DTYPES[dtype]))

    def value_info(self, name: str, shape, dtype: str):
        return self.helper.make_tensor_value_info(name, self.elem_type(dtype), [self.resolve(d) for d in shape])


# ---- translations: one function per primitive, ONNX operators listed beside it --------------

Translate = Callable[[_Builder, NodeRef, list], str]
_TRANSLATIONS: dict[str, tuple[tuple[str, ...], Translate]] = {}


def _translates(prim: str, *onnx_ops: str):
    def register(fn: Translate) -> Translate:
        _TRANSLATIONS[prim] = (onnx_ops, fn)
        return fn
    return register


def _hint(n: NodeRef) -> str:
    return f"{n.op}#{n.id}"


def _simple(onnx_op: str) -> Translate:
    return lambda b, n, xs: b.node(onnx_op, xs, _hint(n))


for _prim, _onnx_op in {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max",
    "neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu",
    "abs": "Abs", "sign": "Sign", "sin": "Sin", "cos": "Cos", "erf": "Erf", "floor": "Floor",
    "stop_gradient": "Identity",
    "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "eq": "Equal",
    "where": "Where", "matmul": "MatMul",
}.items():
    _TRANSLATIONS[_prim] = ((_onnx_op,), _simple(_onnx_op))


def _near_zero(b, n, x, h):
    """|x| < 0.5: where log1p and expm1 need more than ONNX's Log and Exp to keep a small x's digits."""
    half = b.constant(np.asarray(0.5, dtype=DTYPES[n.dtype]), "half")
    return b.node("Less", [b.node("Abs", [x], h), half], h)


@_translates("log1p", "Add", "Abs", "Less", "Log", "Equal", "Sub", "Div", "Mul", "Where")
def _log1p(b, n, xs):
    # ONNX has no Log1p. Near 0, Goldberg's log(u)·x/(u − 1) with u = 1 + x rounded, exact to a few ulps
    # (the rounding of u cancels out); x itself where u rounds to 1; elsewhere log(1 + x) loses nothing
    (x,), h = xs, _hint(n)
    one = b.constant(np.asarray(1, dtype=DTYPES[n.dtype]), "one")
    u = b.node("Add", [x, one], h)
    log_u = b.node("Log", [u], h)
    corrected = b.node("Mul", [log_u, b.node("Div", [x, b.node("Sub", [u, one], h)], h)], h)
    small = b.node("Where", [b.node("Equal", [u, one], h), x, corrected], h)
    return b.node("Where", [_near_zero(b, n, x, h), small, log_u], h)


@_translates("expm1", "Exp", "Sub", "Abs", "Less", "Equal", "Mul", "Log", "Div", "Where")
def _expm1(b, n, xs):
    # ONNX has no Expm1. Near 0, Kahan's (u − 1)·x/log(u) with u = eˣ rounded, exact to a few ulps; x itself
    # where u rounds to 1; elsewhere eˣ − 1 loses nothing
    (x,), h = xs, _hint(n)
    one = b.constant(np.asarray(1, dtype=DTYPES[n.dtype]), "one")
    u = b.node("Exp", [x], h)
    u_minus_one = b.node("Sub", [u, one], h)
    corrected = b.node("Div", [b.node("Mul", [u_minus_one, x], h), b.node("Log", [u], h)], h)
    small = b.node("Where", [b.node("Equal", [u, one], h), x, corrected], h)
    return b.node("Where", [_near_zero(b, n, x, h), small, u_minus_one], h)


@_translates("ne", "Equal", "Not")
def _ne(b, n, xs):
    return b.node("Not", [b.node("Equal", xs, _hint(n))], _hint(n))


@_translates("cast", "Cast")
def _cast(b, n, xs):
    return b.node("Cast", xs, _hint(n), to=b.elem_type(n.attrs["dtype"]))


def _reduction(onnx_op: str) -> Translate:
    def translate(b, n, xs):
        if not n.attrs["axes"]:   # ONNX reads no axes as "all of them"
            return b.node("Identity", xs, _hint(n))
        return b.node(onnx_op, [xs[0], b.ints(n.attrs["axes"], "axes")], _hint(n),
                      keepdims=int(n.attrs["keepdims"]))
    return translate


_TRANSLATIONS["reduce_sum"] = (("ReduceSum", "Identity"), _reduction("ReduceSum"))
_TRANSLATIONS["reduce_max"] = (("ReduceMax", "Identity"), _reduction("ReduceMax"))
_TRANSLATIONS["logsumexp"] = (("ReduceLogSumExp", "Identity"), _reduction("ReduceLogSumExp"))


@_translates("argmax", "ArgMax")
def _argmax(b, n, xs):
    return b.node("ArgMax", xs, _hint(n), axis=n.attrs["axis"], keepdims=0)


@_translates("size", "Shape", "Gather", "ReduceProd", "Cast")
def _size(b, n, xs):
    dims = [b.resolve(b.graph.shape(n.operands[0])[a]) for a in n.attrs["axes"]]
    if all(isinstance(d, int) for d in dims):
        return b.constant(np.asarray(np.prod(dims), dtype=DTYPES[n.dtype]), _hint(n))
    picked = b.node("Gather", [b.node("Shape", xs, _hint(n)), b.ints(n.attrs["axes"])], _hint(n), axis=0)
    count = b.node("ReduceProd", [picked], _hint(n), keepdims=0)
    return b.node("Cast", [count], _hint(n), to=b.elem_type(n.dtype))


@_translates("reshape", "Reshape")
def _reshape(b, n, xs):
    return b.node("Reshape", [xs[0], b.shape_tensor(n.attrs["shape"])], _hint(n))


@_translates("transpose", "Transpose")
def _transpose(b, n, xs):
    return b.node("Transpose", xs, _hint(n), perm=list(n.attrs["perm"]))


@_translates("broadcast_to", "Expand")
def _broadcast_to(b, n, xs):
    return b.node("Expand", [xs[0], b.shape_tensor(n.attrs["shape"], minus_one=False)], _hint(n))


@_translates("one_hot", "Unsqueeze", "Equal", "Cast")
def _one_hot(b, n, xs):
    # compared with 0..depth−1, as the kernel does: a label out of range gives a row of zeros
    classes = b.constant(np.arange(n.attrs["depth"], dtype=DTYPES[b.graph.dtype(n.operands[0])]), "classes")
    hit = b.node("Equal", [b.node("Unsqueeze", [xs[0], b.ints([-1])], _hint(n)), classes], _hint(n))
    return b.node("Cast", [hit], _hint(n), to=b.elem_type(n.dtype))


@_translates("softmax", "Softmax")
def _softmax(b, n, xs):
    return b.node("Softmax", xs, _hint(n), axis=n.attrs["axis"])


@_translates("softmax_cross_entropy", "ReduceMax", "Sub", "Exp", "ReduceSum", "Log", "Unsqueeze",
             "GatherElements", "Squeeze")
def _softmax_cross_entropy(b, n, xs):
    # the kernel's own steps: logsumexp of the shifted logits minus the label's shifted logit
    logits, labels = xs
    last = b.ints([-1])
    h = _hint(n)
    shifted = b.node("Sub", [logits, b.node("ReduceMax", [logits, last], h, keepdims=1)], h)
    lse = b.node("Log", [b.node("ReduceSum", [b.node("Exp", [shifted], h), last], h, keepdims=0)], h)
    picked = b.node("GatherElements", [shifted, b.node("Unsqueeze", [labels, last], h)], h, axis=-1)
    return b.node("Sub", [lse, b.node("Squeeze", [picked, last], h)], h)


@_translates("softmax_cross_entropy_grad", "Softmax", "Unsqueeze", "Equal", "Cast", "Sub")
def _softmax_cross_entropy_grad(b, n, xs):
    logits, labels = xs
    depth = n.shape[-1]
    if not isinstance(depth, int):
        raise GradError("cannot export to ONNX: softmax_cross_entropy_grad needs a known number of classes, "
                        f"got {depth}",
                        b.graph.location(n.id))
    classes = b.constant(np.arange(depth, dtype=DTYPES[b.graph.dtype(n.operands[1])]), "classes")
    hit = b.node("Equal", [b.node("Unsqueeze", [labels, b.ints([-1])], _hint(n)), classes], _hint(n))
    one_hot = b.node("Cast", [hit], _hint(n), to=b.elem_type(n.dtype))
    return b.node("Sub", [b.node("Softmax", [logits], _hint(n), axis=-1), one_hot], _hint(n))


@_translates("slice", "Slice", "Gather", "Identity")
def _slice(b, n, xs):
    shape = b.graph.shape(n.operands[0])
    starts, ends, axes, steps, picks = [], [], [], [], []
    for axis, item in enumerate(n.attrs["index"]):
        if item[0] == "i":
            picks.append((axis, item[1]))
        elif item[1:] != (None, None, None):   # a part of a known dimension (symbolic ones are only [:])
            start, stop, step = slice(*item[1:]).indices(shape[axis])
            if step < 0 and stop < 0:
                stop = _INT64_MIN   # "before the first element": −1 would count from the end
            starts.append(start), ends.append(stop), axes.append(axis), steps.append(step)
    out = xs[0]
    if axes:
        out = b.node("Slice", [out, b.ints(starts), b.ints(ends), b.ints(axes), b.ints(steps)], _hint(n))
    for axis, index in reversed(picks):   # from the last axis back, so earlier axes keep their numbers
        out = b.node("Gather", [out, b.constant(np.asarray(index, dtype=np.int64), "index")], _hint(n), axis=axis)
    return out if out != xs[0] else b.node("Identity", [out], _hint(n))


@_translates("flip", "Slice", "Identity")
def _flip(b, n, xs):
    axes = list(n.attrs["axes"])
    if not axes:
        return b.node("Identity", xs, _hint(n))
    # from the last element back to "before the first" (−1 as an end would count from the end)
    return b.node("Slice", [xs[0], b.ints([-1] * len(axes)), b.ints([_INT64_MIN] * len(axes)), b.ints(axes),
                            b.ints([-1] * len(axes))], _hint(n))


@_translates("pad", "Pad")
def _pad(b, n, xs):
    widths = n.attrs["widths"]
    pads = b.ints([before for before, _ in widths] + [after for _, after in widths])
    fill = b.constant(np.asarray(n.attrs["value"], dtype=DTYPES[n.dtype]), "pad_value")
    return b.node("Pad", [xs[0], pads, fill], _hint(n), mode="constant")


@_translates("cumsum", "CumSum")
def _cumsum(b, n, xs):
    axis = b.constant(np.asarray(n.attrs["axis"], dtype=np.int64), "axis")
    return b.node("CumSum", [xs[0], axis], _hint(n), reverse=int(n.attrs["reverse"]))


@_translates("take", "Gather")
def _take(b, n, xs):
    return b.node("Gather", xs, _hint(n), axis=n.attrs["axis"])


@_translates("concat", "Concat")
def _concat(b, n, xs):
    return b.node("Concat", xs, _hint(n), axis=n.attrs["axis"])


@_translates("causal_mask", "Squeeze", "Range", "Unsqueeze", "Sub", "Add", "LessOrEqual")
def _causal_mask(b, n, xs):
    # key j is visible to query i where j ≤ i + Tk − Tq: the two positions' Ranges, compared broadcast
    queries, keys = (b.dim(d) for d in n.attrs["shape"])
    zero, one = b.constant(np.int64(0), "zero"), b.constant(np.int64(1), "one")
    rows, cols = (b.node("Range", [zero, b.node("Squeeze", [size], _hint(n)), one], _hint(n))
                  for size in (queries, keys))
    last = b.node("Add", [b.node("Unsqueeze", [rows, b.ints([1])], _hint(n)),
                          b.node("Sub", [keys, queries], _hint(n))], _hint(n))
    return b.node("LessOrEqual", [cols, last], _hint(n))


def _window_attrs(n: NodeRef, kernel) -> dict:
    (ph, pw) = n.attrs["padding"]
    return {"kernel_shape": list(kernel), "strides": list(n.attrs["stride"]), "pads": [ph, pw, ph, pw]}


def _conv_attrs(n: NodeRef, kernel) -> dict:
    """A convolution's window attributes, with `dilations` and `group` where they are not 1 (attrs hold
    them only then); ONNX's grouped filters are gradlang's, [O, C/group, KH, KW]."""
    attrs = _window_attrs(n, kernel)
    if "dilation" in n.attrs:
        attrs["dilations"] = list(n.attrs["dilation"])
    if "groups" in n.attrs:
        attrs["group"] = n.attrs["groups"]
    return attrs


@_translates("conv2d", "Conv")
def _conv2d(b, n, xs):
    # both NCHW with filters [O, C, KH, KW], both cross-correlations with zero padding on each side
    return b.node("Conv", xs, _hint(n), **_conv_attrs(n, b.graph.shape(n.operands[1])[2:]))


@_translates("conv2d_transpose", "ConvTranspose")
def _conv2d_transpose(b, n, xs):
    # ONNX reads filters [C_in, C_out/group, KH, KW]: gradlang's [O, C/G, KH, KW] with O the input's
    # channels. A stride > 1 allows several output sizes; output_padding picks the one attrs.size names.
    g_shape, w_shape = b.graph.shape(n.operands[0]), b.graph.shape(n.operands[1])
    attrs = _conv_attrs(n, w_shape[2:])
    dilation = n.attrs.get("dilation", (1, 1))
    extra = [size - ((g - 1) * s + d * (k - 1) + 1 - 2 * p) for size, g, s, k, p, d in
             zip(n.attrs["size"], g_shape[2:], n.attrs["stride"], w_shape[2:], n.attrs["padding"], dilation)]
    return b.node("ConvTranspose", xs, _hint(n), output_padding=extra, **attrs)


@_translates("max_pool2d", "MaxPool")
def _max_pool2d(b, n, xs):
    # ONNX leaves padded positions out of the maximum, as gradlang's −inf padding does
    return b.node("MaxPool", xs, _hint(n), **_window_attrs(n, n.attrs["kernel"]))


@_translates("patches2d", "Pad", "Slice", "Unsqueeze", "Concat", "Reshape")
def _patches2d(b, n, xs):
    # one strided Slice per window offset, stacked: copies only, so every value is exact
    (kh, kw), (sh, sw), (ph, pw) = n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
    batch, channels, oh, ow = n.shape[:4]
    h = _hint(n)
    x = xs[0]
    if ph or pw:
        fill = b.constant(np.asarray(n.attrs["pad_value"], dtype=DTYPES[n.dtype]), "pad_value")
        x = b.node("Pad", [x, b.ints([0, 0, ph, pw, 0, 0, ph, pw]), fill], h, mode="constant")
    last = b.ints([-1])
    offsets = [b.node("Unsqueeze", [b.node("Slice", [x, b.ints([i, j]),
                                                     b.ints([i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1]),
                                                     b.ints([2, 3]), b.ints([sh, sw])], h), last], h)
               for i in range(kh) for j in range(kw)]
    stacked = b.node("Concat", offsets, h, axis=-1) if len(offsets) > 1 else offsets[0]
    return b.node("Reshape", [stacked, b.shape_tensor((batch, channels, oh, ow, kh, kw))], h)


ONNX_OPERATORS: dict[str, tuple[str, ...]] = {prim: ops for prim, (ops, _) in sorted(_TRANSLATIONS.items())}
"""Each exportable primitive → the ONNX operators its translation uses (docs/onnx.md lists the same)."""


# ---- export -------------------------------------------------------------------------------------

def inference_graph(program) -> Graph:
    """The forward graph as evaluation runs it: every `training(a, b)` replaced by b (passes/modes.py),
    dropout masks (all ones there) by 1, and simplified."""
    graph = for_mode(program.forward_graph, training=False)
    masks = graph.nodes_with_op("dropout_mask")
    if not masks:
        return graph if graph is program.forward_graph else simplify(graph)
    graph = graph.copy()
    for mask in masks:
        d = graph.data(mask)
        one = graph.const(1, d["dtype"], d["span"], site=d["site"])
        ones = graph.add("broadcast_to", (one,), {"shape": d["shape"]}, d["span"], site=d["site"])
        graph.replace_uses(mask, ones)
        graph.remove([mask])
    return simplify(graph)


def resolve_outputs(program, graph: Graph, names=None) -> dict[str, int]:
    """ONNX output name → node: the program's `output` declarations by default; a name may also be a
    declared output, the loss, a metric, or any value the program binds to a name (its last binding)."""
    if not names:
        names = program.output_names
        if not names:
            raise GradError("cannot export to ONNX: the program declares no outputs; add one (`output probs = "
                            "softmax(logits)`) or name the values to export (`--output logits`, "
                            "`outputs=[\"logits\"]`)")
    found = {}
    for name in names:
        node = graph.find_value(name)
        if node is None:
            declared = ", ".join(program.output_names) or "none"
            raise GradError(f"cannot export to ONNX: the program has no output or named value {name!r} "
                            f"(declared outputs: {declared})")
        found[name] = node
    clash = sorted(set(found) & (set(graph.inputs) | set(graph.params) | set(graph.leaves("state"))))
    if clash:
        raise GradError(f"cannot export to ONNX: output name(s) {', '.join(clash)} are also input or param names "
                        "(or state names); ONNX needs every name once")
    return found


def _check_supported(graph: Graph, nodes: list[int]) -> None:
    """Raise one error naming every primitive without a translation and each place that uses it."""
    missing: dict[str, list] = {}
    for node in nodes:
        op = graph.op(node)
        if op not in _TRANSLATIONS and op not in ("input", "param", "const", "state"):
            missing.setdefault(op, []).append(graph.location(node))
    if not missing:
        return
    notes = []
    for op, places in missing.items():
        where = ", ".join(sorted({str(p) for p in places if p is not None})) or "no source location"
        reason = NOT_EXPORTED.get(op, "no ONNX translation")
        notes.append(f"{op} ({reason}) at {where}")
    located = [p for places in missing.values() for p in places if p is not None]
    raise GradError(f"cannot export to ONNX: no ONNX translation for {', '.join(missing)} (each op and where "
                    "the program uses it below)", located[0] if located else None, tuple(notes))


def to_onnx(program, outputs=None, batch: int | None = None):
    """The program's inference graph for `outputs` (default: its `output` declarations) as an
    `onnx.ModelProto`, checked with `onnx.checker`. `batch` fixes every symbolic dimension to that size;
    by default they stay symbolic (ONNX dim_params), so the model takes any batch size."""
    onnx = _onnx()
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise GradError(f"the batch size must be a positive integer, got {batch!r}")
    graph = inference_graph(program)
    wanted = resolve_outputs(program, graph, outputs)
    nodes = graph.order(list(wanted.values()))
    _check_supported(graph, nodes)

    b = _Builder(onnx, graph, batch)
    names: dict[int, str] = {}
    graph_inputs = []
    for node in nodes:
        d = graph.data(node)
        if d["op"] == "input":
            name = names[node] = d["attrs"]["name"]
            graph_inputs.append(b.value_info(name, d["shape"], d["dtype"]))
            for axis, dim in enumerate(d["shape"]):
                if isinstance(dim, str):
                    b.dim_sources.setdefault(dim, (name, axis))
    for node in nodes:
        d = graph.data(node)
        if d["op"] == "input":
            continue
        if d["op"] == "param" or d["op"] == "state":   # the state as it is now (batch norm's running statistics)
            name = names[node] = d["attrs"]["name"]
            live = program.params[name] if d["op"] == "param" else program.state[name]
            b.initializers.append(onnx.numpy_helper.from_array(np.asarray(live, dtype=DTYPES[d["dtype"]]), name))
        elif d["op"] == "const":
            names[node] = b.constant(d["attrs"]["value"], f"const#{node}")
        else:
            ref = graph.ref(node)
            names[node] = _TRANSLATIONS[d["op"]][1](b, ref, [names[o] for o in d["operands"]])
    graph_outputs = []
    for out_name, node in wanted.items():
        b.nodes.append(onnx.helper.make_node("Identity", [names[node]], [out_name], name=f"output {out_name}"))
        graph_outputs.append(b.value_info(out_name, graph.shape(node), graph.dtype(node)))

    onnx_graph = onnx.helper.make_graph(b.nodes, Path(program.name).stem, graph_inputs, graph_outputs,
                                        b.initializers)
    opset = onnx.helper.make_opsetid("", OPSET)
    model = onnx.helper.make_model(onnx_graph, opset_imports=[opset], producer_name="gradlang",
                                   ir_version=onnx.helper.find_min_ir_version_for([opset]),
                                   doc_string=f"exported by gradlang from {program.name}")
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(program, path, outputs=None, batch: int | None = None) -> Path:
    """Write the program's inference graph (see `to_onnx`) to `path`; return the path."""
    return save_model(to_onnx(program, outputs, batch), path)


def save_model(model, path) -> Path:
    """Write an ONNX model to `path` (its folder made if need be), as a GradError if that fails."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.SerializeToString())
    except OSError as err:
        raise GradError(f"cannot write the ONNX model to {path}: {err.strerror or err}") from None
    return path


def describe_signature(model) -> str:
    """One line per graph input and output of an exported model: name and type (for the CLI's report)."""
    onnx = _onnx()
    lines = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim)
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
            code = next(k for k, np_type in DTYPES.items() if np.dtype(np_type) == dtype)
            lines.append(f"  {kind:<6} {v.name}: {fmt_type(dims, code)}")
    return "\n".join(lines)
