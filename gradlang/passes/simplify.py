"""Simplification: algebraic identities, constant folding, common subexpressions, dead code.

Each pass is a pure function Graph → Graph (`identities`, `fold_constants`, `common_subexpressions`,
`dead_code`); `simplify` runs them to a fixed point on one copy. None changes a result beyond float
rounding: a rewrite replaces a node only by one of the same shape and dtype, and constant folding uses
the same kernels the interpreter runs.

The identities are named rules (`RULES`), each a function `(graph, node) -> replacement or None` that
may add the nodes it needs; the replacement takes over every use of the node, which dead code then
drops. `simplify(..., stats=Counter())` counts how often each rule and pass fired, by name.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from math import prod

import numpy as np

from ..ir.graph import Emit, Graph
from ..ops import registry
from ..ops.registry import BY_MODE, COMMUTATIVE, ELEMENTWISE
from ..ops.shapes import ShapeError, broadcast, reduced

_FOLD_LIMIT = 4096   # elements: fold small constants only

# the op records' traits, for rules indexed by op: elementwise functions of one operand, and the
# elementwise ops of several, which broadcast their operands against each other as NumPy does
_ELEMENTWISE_UNARY = registry.ops_with(ELEMENTWISE, arity=1)
_BROADCASTING = registry.ops_with(ELEMENTWISE) - _ELEMENTWISE_UNARY


@dataclass(frozen=True)
class Rule:
    """An algebraic identity: `find(graph, node)` returns the node that `node` equals, or None."""

    name: str
    ops: frozenset
    find: Callable[[Graph, int], int | None]


RULES: list[Rule] = []


def _rule(name: str, *ops: str):
    def register(find):
        RULES.append(Rule(name, frozenset(ops), find))
        return find
    return register


# ---- helpers ---------------------------------------------------------------------------------------

def _const_value(graph: Graph, node: int):
    return graph.attrs(node)["value"] if graph.op(node) == "const" else None


def _scalar_const(graph: Graph, node: int):
    """The value of a one-element constant, as a float, or None."""
    v = _const_value(graph, node)
    return float(v.reshape(())) if v is not None and v.size == 1 else None


def _same_type(graph: Graph, x: int, node: int) -> bool:
    return graph.shape(x) == graph.shape(node) and graph.dtype(x) == graph.dtype(node)


def _both_ways(operands: tuple):
    a, b = operands
    return ((a, b), (b, a))


def _emit(graph: Graph, node: int) -> Emit:
    """An emitter for nodes that replace `node`: same span, site and role."""
    d = graph.data(node)
    return Emit(graph, d["span"], d["role"], d["site"])


def _aligned(shape: tuple, rank: int) -> tuple:
    return (1,) * (rank - len(shape)) + tuple(shape)


def _covers_everything(index: tuple, shape: tuple) -> bool:
    """Whether x[index] selects every element of a value of `shape` (so it only drops size-1 axes)."""
    for item, dim in zip(index, shape):
        if item[0] == "i":
            if dim != 1:
                return False
        elif item[1:] != (None, None, None):
            if not isinstance(dim, int) or range(*slice(*item[1:]).indices(dim)) != range(dim):
                return False
    return True


def filled_with(graph: Graph, node: int):
    """The one number every element of `node` holds, if it is a constant (seen through broadcasts and
    reshapes), else None."""
    while graph.op(node) in ("broadcast_to", "reshape"):
        node = graph.operands(node)[0]
    return _scalar_const(graph, node)


def _as_result(graph: Graph, x: int, node: int):
    """`x` standing in for `node`: itself if the types agree, else broadcast to node's shape."""
    if _same_type(graph, x, node):
        return x
    if graph.dtype(x) != graph.dtype(node) or broadcast(graph.shape(x), graph.shape(node)) != graph.shape(node):
        return None
    return _emit(graph, node)("broadcast_to", x, shape=graph.shape(node))


# ---- the identities ------------------------------------------------------------------------------

@_rule("x * 1 → x", "mul")
def _times_one(graph, node):
    for x, y in _both_ways(graph.operands(node)):
        if filled_with(graph, y) == 1.0:
            return _as_result(graph, x, node)
    return None


@_rule("x + 0 → x", "add")
def _plus_zero(graph, node):
    for x, y in _both_ways(graph.operands(node)):
        if filled_with(graph, y) == 0.0:
            return _as_result(graph, x, node)
    return None


@_rule("x - 0, x / 1, x ** 1 → x", "sub", "div", "pow")
def _right_identity(graph, node):
    x, y = graph.operands(node)
    unit = {"sub": 0.0, "div": 1.0, "pow": 1.0}[graph.op(node)]
    return _as_result(graph, x, node) if filled_with(graph, y) == unit else None


@_rule("-(-x) → x", "neg")
def _double_negation(graph, node):
    (x,) = graph.operands(node)
    return graph.operands(x)[0] if graph.op(x) == "neg" else None


@_rule("x * -1, 0 - x → -x", "mul", "sub")
def _negation(graph, node):
    pairs = _both_ways(graph.operands(node)) if graph.op(node) == "mul" else [graph.operands(node)[::-1]]
    unit = -1.0 if graph.op(node) == "mul" else 0.0
    for x, y in pairs:
        if _scalar_const(graph, y) == unit and _same_type(graph, x, node):
            return _emit(graph, node)("neg", x)
    return None


@_rule("x + x → 2 * x", "add")
def _doubling(graph, node):
    x, y = graph.operands(node)
    if x != y:
        return None
    e = _emit(graph, node)
    return e("mul", e.const(2, graph.dtype(node)), x)


@_rule("s * (c * x) → (s·c) * x", "mul")
def _scalar_products(graph, node):
    # s·c is folded now when s is a constant, else computed on scalars (at schedule time when s is
    # a size): either way one pass over x instead of two.
    for s, inner in _both_ways(graph.operands(node)):
        s_is_const = _scalar_const(graph, s) is not None
        if (not s_is_const and graph.shape(s) != ()) or graph.op(inner) != "mul" or len(graph.users(inner)) != 1:
            continue
        for c, x in _both_ways(graph.operands(inner)):
            if _scalar_const(graph, c) is None or (not s_is_const and graph.shape(c) != ()):
                continue
            e = _emit(graph, node)
            if s_is_const:
                value = _const_value(graph, s) * _const_value(graph, c)
                if broadcast(value.shape, graph.shape(x)) == graph.shape(node):
                    return e("mul", e.const(value, graph.dtype(node)), x)
            elif graph.dtype(s) == graph.dtype(node) and graph.shape(x) == graph.shape(node):
                return e("mul", e("mul", s, c), x)
    return None


@_rule("reshape, broadcast or cast to the same type → x", "reshape", "broadcast_to", "cast")
def _no_op_conversion(graph, node):
    (x,) = graph.operands(node)
    return x if _same_type(graph, x, node) else None


@_rule("reshape(reshape(x)) → reshape(x)", "reshape")
def _reshape_of_reshape(graph, node):
    (inner,) = graph.operands(node)
    if graph.op(inner) != "reshape":
        return None
    x = graph.operands(inner)[0]
    return x if _same_type(graph, x, node) else _emit(graph, node)("reshape", x, shape=graph.shape(node))


@_rule("broadcast(broadcast(x)), broadcast(reshape(x)) → broadcast(x)", "broadcast_to")
def _broadcast_of_broadcast(graph, node):
    (inner,) = graph.operands(node)
    x = graph.operands(inner)[0] if graph.op(inner) in ("broadcast_to", "reshape") else None
    if x is None or graph.op(inner) == "reshape" and \
            graph.shape(inner) != _aligned(graph.shape(x), len(graph.shape(inner))):
        return None   # a reshape that does more than add leading 1s changes how x lines up
    return _emit(graph, node)("broadcast_to", x, shape=graph.shape(node))


@_rule("reshape or transpose of broadcast(c) → broadcast(c) for a single value c", "reshape", "transpose")
def _rearranged_fill(graph, node):
    (inner,) = graph.operands(node)
    if graph.op(inner) != "broadcast_to":
        return None
    x = graph.operands(inner)[0]
    if any(d != 1 for d in graph.shape(x)):
        return None
    e = _emit(graph, node)
    if len(graph.shape(x)) > len(graph.shape(node)):
        x = e("reshape", x, shape=())
    return e("broadcast_to", x, shape=graph.shape(node))


@_rule("x ** 0 → 1, x ** 2 → x * x", "pow")
def _small_powers(graph, node):
    x, p = graph.operands(node)
    exponent = filled_with(graph, p)
    if exponent == 0.0:
        e = _emit(graph, node)
        return e("broadcast_to", e.const(1, graph.dtype(node)), shape=graph.shape(node))
    if exponent == 2.0 and _same_type(graph, x, node):
        return _emit(graph, node)("mul", x, x)
    return None


def _swaps_last_two(graph: Graph, node: int) -> bool:
    perm = graph.attrs(node)["perm"] if graph.op(node) == "transpose" else None
    return perm is not None and len(perm) >= 2 and perm == tuple(range(len(perm) - 2)) + (len(perm) - 1, len(perm) - 2)


@_rule("transpose(a @ transpose(b)) → b @ transpose(a)", "transpose")
def _transposed_product(graph, node):
    """(a·b)ᵀ = bᵀ·aᵀ, when that cancels a transpose already there."""
    (product,) = graph.operands(node)
    if not _swaps_last_two(graph, node) or graph.op(product) != "matmul" or len(graph.users(product)) != 1:
        return None
    a, b = graph.operands(product)
    if not (_swaps_last_two(graph, a) or _swaps_last_two(graph, b)):
        return None
    e = _emit(graph, node)
    perm = graph.attrs(node)["perm"]
    return e("matmul", e("transpose", b, perm=perm), e("transpose", a, perm=perm))


@_rule("ones @ x → sum(x), x @ ones → sum(x)", "matmul")
def _product_with_ones(graph, node):
    """A matrix product with a matrix of ones sums the other factor over the shared axis."""
    a, b = graph.operands(node)
    if len(graph.shape(a)) != 2 or len(graph.shape(b)) != 2:
        return None
    for ones, other, axis in ((a, b, 0), (b, a, 1)):
        if filled_with(graph, ones) == 1.0:
            e = _emit(graph, node)
            total = e("reduce_sum", other, axes=(axis,), keepdims=True)
            return total if graph.shape(total) == graph.shape(node) else \
                e("broadcast_to", total, shape=graph.shape(node))
    return None


@_rule("f(broadcast(x)) → broadcast(f(x)) for elementwise f", *sorted(_ELEMENTWISE_UNARY))
def _unary_of_broadcast(graph, node):
    """Compute an elementwise function before broadcasting, on fewer elements."""
    (b,) = graph.operands(node)
    if graph.op(b) != "broadcast_to":
        return None
    d = graph.data(node)
    e = _emit(graph, node)
    return e("broadcast_to", e(d["op"], graph.operands(b)[0], **d["attrs"]), shape=d["shape"])


@_rule("transpose(transpose(x)) → transpose(x), identity transpose → x", "transpose")
def _transposes(graph, node):
    (x,) = graph.operands(node)
    perm = graph.attrs(node)["perm"]
    if perm == tuple(range(len(perm))):
        return x
    if graph.op(x) != "transpose":
        return None
    inner = graph.attrs(x)["perm"]
    composed = tuple(inner[p] for p in perm)
    source = graph.operands(x)[0]
    if composed == tuple(range(len(composed))):
        return source
    return _emit(graph, node)("transpose", source, perm=composed)


@_rule("sum or max over size-1 axes → reshape", "reduce_sum", "reduce_max")
def _trivial_reduction(graph, node):
    (x,) = graph.operands(node)
    axes = graph.attrs(node)["axes"]
    if any(graph.shape(x)[a] != 1 for a in axes):
        return None
    return x if _same_type(graph, x, node) else _emit(graph, node)("reshape", x, shape=graph.shape(node))


@_rule("sum(broadcast(x)) → count * x", "reduce_sum")
def _sum_of_broadcast(graph, node):
    """Summing copies made by broadcasting is multiplying by their count."""
    (b,) = graph.operands(node)
    if graph.op(b) != "broadcast_to":
        return None
    x, axes, keep = graph.operands(b)[0], graph.attrs(node)["axes"], graph.attrs(node)["keepdims"]
    big = graph.shape(b)
    xs = _aligned(graph.shape(x), len(big))
    if any(xs[a] != 1 for a in axes):
        return None
    e = _emit(graph, node)
    dtype = graph.dtype(node)
    counted = [big[a] for a in axes]
    if all(isinstance(d, int) for d in counted):
        count = e.const(prod(counted), dtype)
    else:
        count = e("size", b, axes=axes, dtype=dtype)
    kept = reduced(xs, axes, keep)
    if graph.shape(x) != kept:
        x = e("reshape", x, shape=kept)
    if kept != graph.shape(node):
        x = e("broadcast_to", x, shape=graph.shape(node))
    return e("mul", count, x)


@_rule("implicit broadcast: op(broadcast(x), y) → op(x, y)", *sorted(_BROADCASTING))
def _implicit_broadcast(graph, node):
    """An operand broadcast (or given leading 1s) only to meet the others: the op broadcasts anyway."""
    d = graph.data(node)
    operands = list(d["operands"])
    changed = False
    for i, o in enumerate(operands):
        if graph.op(o) not in ("broadcast_to", "reshape"):
            continue
        x = graph.operands(o)[0]
        if graph.op(o) == "reshape" and graph.shape(o) != _aligned(graph.shape(x), len(graph.shape(o))):
            continue
        trial = [graph.shape(p) for p in operands]
        trial[i] = graph.shape(x)
        try:
            fits = broadcast(*trial) == d["shape"]
        except ShapeError:
            fits = False
        if fits:
            operands[i], changed = x, True
    if not changed:
        return None
    return _emit(graph, node)(d["op"], *operands, **d["attrs"])


def _axis_range(index: tuple, rank: int, size=None):
    """(axis, start, stop, picked) if `index` takes one static range along one axis and everything
    elsewhere; a picked position (`x[:, t]`, which drops the axis; `size`: the axis's length, to count
    a negative position from the end) is the range t:t+1 with `picked` set."""
    items = list(index) + [("s", None, None, None)] * (rank - len(index))
    ranged = [(i, item) for i, item in enumerate(items) if item != ("s", None, None, None)]
    if len(ranged) != 1:
        return None
    axis, item = ranged[0]
    if item[0] == "i":
        position = item[1] + size if item[1] < 0 and isinstance(size, int) else item[1]
        return axis, position, position + 1, True
    if item[3] not in (None, 1):
        return None
    return axis, item[1], item[2], False


@_rule("unslice(a) + unslice(b) + … tiling an axis → concat(a, b, …)", "add")
def _tiling_unslices(graph, node):
    """Gradients of the parts of a value (the gates sliced from one product) summed back into place:
    joining the parts writes each element once, instead of zero-filling a buffer per part and adding."""
    parts, stack = [], list(graph.operands(node))
    while stack:
        n = stack.pop()
        if graph.op(n) == "add" and len(graph.users(n)) == 1:
            stack += graph.operands(n)
        elif graph.op(n) == "unslice" and graph.attrs(n)["shape"] == graph.shape(node):
            parts.append(n)
        else:
            return None
    shape = graph.shape(node)
    first = [_axis_range(graph.attrs(p)["index"], len(shape)) for p in parts]
    if None in first or len({r[0] for r in first}) != 1 or not isinstance(shape[first[0][0]], int):
        return None
    axis = first[0][0]
    ranges = [_axis_range(graph.attrs(p)["index"], len(shape), shape[axis]) for p in parts]
    spans = sorted(((range(*slice(start, stop).indices(shape[axis])), picked, p)
                    for (_, start, stop, picked), p in zip(ranges, parts)), key=lambda span: span[0].start)
    covered = [r for r, _, _ in spans]
    if covered[0].start != 0 or covered[-1].stop != shape[axis] or any(
            a.stop != b.start for a, b in zip(covered, covered[1:])):
        return None
    e = _emit(graph, node)
    pieces = []
    for _, picked, p in spans:   # a picked position's part lacks the axis: given back as one of length 1
        part = graph.operands(p)[0]
        pieces.append(e("reshape", part, shape=shape[:axis] + (1,) + shape[axis + 1:]) if picked else part)
    return e("concat", *pieces, axis=axis)


@_rule("slice or unslice of every element → reshape", "slice", "unslice")
def _full_slice(graph, node):
    (x,) = graph.operands(node)
    attrs = graph.attrs(node)
    whole = graph.shape(x) if graph.op(node) == "slice" else attrs["shape"]
    if not _covers_everything(attrs["index"], whole):
        return None
    return x if _same_type(graph, x, node) else _emit(graph, node)("reshape", x, shape=graph.shape(node))


# ---- the passes ------------------------------------------------------------------------------------

def _identities(graph: Graph, stats: Counter) -> None:
    """Apply every rule in RULES once to each node, in topological order."""
    by_op: dict[str, list[Rule]] = {}
    for r in RULES:
        for op in r.ops:
            by_op.setdefault(op, []).append(r)
    for node in graph.order():
        if node not in graph:
            continue
        for r in by_op.get(graph.op(node), ()):
            target = r.find(graph, node)
            if target is not None and target != node:
                graph.replace_uses(node, target)
                stats[r.name] += 1
                break
    _dead_code(graph, stats)


def _fold_constants(graph: Graph, stats: Counter) -> None:
    """Evaluate nodes whose operands are all small constants (shapes fully known) into constants.
    Nodes that would expand their operands (a broadcast of a scalar) stay symbolic: folding them
    would only turn one number into many."""
    for node in graph.order():
        d = graph.data(node)
        prim = registry.get(d["op"])
        if d["op"] == "const" or not d["operands"] or prim.random or prim.has(BY_MODE):   # (chosen when scheduled)
            continue
        values = [_const_value(graph, o) for o in d["operands"]]
        if any(v is None for v in values) or not all(isinstance(s, int) for s in d["shape"]):
            continue
        size = prod(d["shape"])
        if size > _FOLD_LIMIT or size > max(v.size for v in values):
            continue
        kernel = registry.get(d["op"]).kernel(d["attrs"], [v.shape for v in values], d["shape"], d["dtype"])
        with np.errstate(all="ignore"):
            value = np.array(kernel(*values))
        folded = graph.const(value, d["dtype"], d["span"], d["role"], d["site"])
        graph.replace_uses(node, folded)
        stats["constant folding"] += 1
    _dead_code(graph, stats)


def _key(graph: Graph, node: int):
    d = graph.data(node)
    if d["op"] in ("input", "param") or registry.get(d["op"]).random:
        return None
    if d["op"] == "const":
        v = d["attrs"]["value"]
        return ("const", d["dtype"], v.shape, v.tobytes())
    operands = tuple(sorted(d["operands"])) if registry.has(d["op"], COMMUTATIVE) else d["operands"]
    return (d["op"], operands, tuple(sorted((k, repr(v)) for k, v in d["attrs"].items())))


def _common_subexpressions(graph: Graph, stats: Counter) -> None:
    """Merge nodes with the same op, operands (in either order for + * == !=) and attributes, and
    constants with equal values. Random ops (dropout masks) are never merged."""
    seen: dict = {}
    moved: dict = {}
    for node in graph.order():
        key = _key(graph, node)
        if key is None:
            continue
        first = seen.setdefault(key, node)
        if first != node:
            graph.replace_uses(node, first, outputs=False)
            moved[node] = first
            stats["common subexpression"] += 1
    graph.move_outputs(moved)
    _dead_code(graph, stats)


def _dead_code(graph: Graph, stats: Counter) -> None:
    """Drop nodes no output depends on; inputs and params stay (they are the program's interface)."""
    live = graph.reachable(graph.outputs.values())
    live |= set(graph.nodes_with_op("input")) | set(graph.nodes_with_op("param"))
    dead = [n for n in graph.nx.nodes if n not in live]
    graph.remove(dead)
    if dead:
        stats["dead code"] += len(dead)


def _pure(rewrite):
    """The rewrite as a pass: a pure function that applies it to a copy."""
    def apply(graph: Graph) -> Graph:
        out = graph.copy()
        rewrite(out, Counter())
        return out
    apply.__name__, apply.__doc__ = rewrite.__name__.lstrip("_"), rewrite.__doc__
    apply.rewrite = rewrite
    return apply


identities = _pure(_identities)
fold_constants = _pure(_fold_constants)
common_subexpressions = _pure(_common_subexpressions)
dead_code = _pure(_dead_code)

PASSES = (identities, fold_constants, common_subexpressions, dead_code)
MAX_ROUNDS = 10


def simplify(graph: Graph, passes=PASSES, stats: Counter | None = None) -> Graph:
    """Run `passes` over one copy of `graph` until a whole round changes nothing (at most MAX_ROUNDS
    rounds). `stats`, if given, counts the rewrites by rule or pass name."""
    out = graph.copy()
    stats = Counter() if stats is None else stats
    for _ in range(MAX_ROUNDS):
        fired = sum(stats.values())
        for p in passes:
            p.rewrite(out, stats)
        if sum(stats.values()) == fired:
            break
    return out


def rule_names() -> list[str]:
    """Every name `simplify` may count under, in the order rules are tried."""
    return [r.name for r in RULES] + ["constant folding", "common subexpression", "dead code"]
