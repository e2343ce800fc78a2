"""Numerical-stability rewrites: forms that are equal in exact arithmetic but overflow, underflow or make
NaN gradients in floating point, replaced by stable ones — each reported where it fires.

- log(softmax(x)) → x − logsumexp(x) (log_softmax): softmax underflows to 0 for very negative logits,
  and log(0) = −inf; also log(exp(t)) → t, which catches softmax written out as exp(x − logsumexp(x)).
- log(sigmoid(x)) → −softplus(−x) and log(1 − sigmoid(x)) → −softplus(x): sigmoid saturates at 0 or 1.
- The safe where: in where(c, log(x), y) the branch not taken is still computed, and its gradient is
  0 · (1/x); where x = 0 that is 0 · ∞ = NaN, which poisons every gradient upstream. The rewrite
  guards the argument, log(where(c, x, 1)): the value is the same wherever the branch is taken, and the
  branch not taken now sees a harmless 1. The same for a divisor and for the base of a fractional or
  negative power (sqrt), on either side of the where.

A gradient taken from the unstable form keeps its NaNs, so every gradient is taken from the stable one:
`stabilize`, a pure pass Graph → (Graph, [Rewrite]), runs on the elaborated graph before the training
gradient is taken (replaced nodes are left for dead-code elimination), and `stable_form` gives `grad(...)`
in the language the stable form of the expression it differentiates, at every order. `stable_form` adds
nodes and changes none, so the elaborated graph keeps the program as written, and `stabilize` over it
reports each rewrite once, where it fires — in the model or inside an expression `grad` differentiates.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import Span
from ..ir.graph import Emit, Graph
from ..ops import registry
from ..ops.registry import ELEMENTWISE
from .simplify import filled_with


@dataclass(frozen=True)
class Rewrite:
    rule: str
    span: Span | None

    def format(self) -> str:
        return f"{self.span or '<program>'}: note: rewritten for numerical stability: {self.rule}"

    def as_dict(self) -> dict:
        return {"rule": self.rule, "location": None if self.span is None else str(self.span)}


def _emit(graph: Graph, node: int) -> Emit:
    d = graph.data(node)
    return Emit(graph, d["span"], d["role"], d["site"])


def softplus(e: Emit, z: int) -> int:
    """log(1 + e^z), emitted so that it never overflows and its derivative is sigmoid(z) everywhere:
    where(z > 0, z, 0) + log(1 + exp(−|z|)), both pieces switching on the same side of 0 (the usual
    relu(z) + log(1 + exp(−abs(z))) has derivative 0 instead of 1/2 at z = 0: relu'(0) = abs'(0) = 0)."""
    dtype = e.dtype(z)
    zero, one = e.const(0, dtype), e.const(1, dtype)
    positive = e("gt", z, zero)
    minus_abs = e("where", positive, e("neg", z), z)
    return e("add", e("where", positive, z, zero), e("log", e("add", one, e("exp", minus_abs))))


def _log_softmax(graph: Graph, node: int, kept: frozenset):
    (x,) = graph.operands(node)
    if x in kept:
        return None
    if graph.op(x) == "softmax":
        logits = graph.operands(x)[0]
        e = _emit(graph, node)
        lse = e("logsumexp", logits, axes=(graph.attrs(x)["axis"],), keepdims=True)
        return e("sub", logits, lse), "log(softmax(x)) → log_softmax(x) = x − logsumexp(x)"
    if graph.op(x) == "exp":
        inner = graph.operands(x)[0]
        written_out = graph.op(inner) == "sub" and graph.op(graph.operands(inner)[1]) == "logsumexp"
        return inner, "log(softmax(x)) → log_softmax(x) = x − logsumexp(x)" if written_out else "log(exp(x)) → x"
    return None


def _log_sigmoid(graph: Graph, node: int, kept: frozenset):
    (x,) = graph.operands(node)
    if x in kept:
        return None
    e = _emit(graph, node)
    if graph.op(x) == "sigmoid":
        return e("neg", softplus(e, e("neg", graph.operands(x)[0]))), "log(sigmoid(x)) → −softplus(−x)"
    if graph.op(x) == "sub" and filled_with(graph, graph.operands(x)[0]) == 1.0 \
            and graph.op(graph.operands(x)[1]) == "sigmoid" and graph.operands(x)[1] not in kept \
            and graph.shape(x) == graph.shape(graph.operands(x)[1]):
        logits = graph.operands(graph.operands(x)[1])[0]
        return e("neg", softplus(e, logits)), "log(1 − sigmoid(x)) → −softplus(x)"
    return None


def _risky_operand(graph: Graph, node: int) -> int | None:
    """The operand position whose bad values (0, negatives) make `node` or its derivative infinite."""
    op = graph.op(node)
    if op == "log":
        return 0
    if op == "div":
        return 1
    if op == "pow":
        exponent = filled_with(graph, graph.operands(node)[1])
        return None if exponent is not None and exponent >= 0 and exponent == int(exponent) else 0
    return None


def _branch_nodes(graph: Graph, branch: int, shape: tuple, kept: frozenset) -> list[int]:
    """The elementwise nodes of the where's shape that `branch` is computed from, operands first: each
    position of theirs reaches only the same position of the where, so a guard there is safe."""
    found, seen, stack = [], set(), [(branch, False)]
    while stack:
        n, operands_done = stack.pop()
        if operands_done:
            found.append(n)
        elif n not in seen and n not in kept and registry.has(graph.op(n), ELEMENTWISE) and graph.shape(n) == shape:
            seen.add(n)
            stack.append((n, True))
            stack += [(o, False) for o in graph.operands(n)]
    return found


def _guarded_branch(graph: Graph, where: int, side: int, kept: frozenset) -> tuple[int, list[str]]:
    """Branch `side` of a where rebuilt with the risky ops inside it guarded (see the module docstring),
    and the rules that fired. Only new nodes: the unguarded ones stay for their other users."""
    cond, *branches = graph.operands(where)
    shape = graph.shape(where)
    rebuilt, fired = {}, []
    for n in _branch_nodes(graph, branches[side], shape, kept):
        d = graph.data(n)
        operands = [rebuilt.get(o, o) for o in d["operands"]]
        e = _emit(graph, n)
        position = _risky_operand(graph, n)
        if position is not None:
            x = operands[position]
            if graph.op(x) not in ("const", "where") and graph.shape(x) == shape:   # not a constant, not guarded
                safe = e.const(1, graph.dtype(x))
                operands[position] = e("where", cond, x, safe) if side == 0 else e("where", cond, safe, x)
                fired.append(f"where(c, {d['op']}(x), …): where the branch is not taken its gradient would be "
                             f"NaN; guarded as {d['op']}(where(c, x, 1))")
        if operands != list(d["operands"]):
            rebuilt[n] = e(d["op"], *operands, **d["attrs"])
    return rebuilt.get(branches[side], branches[side]), fired


def _safe_where(graph: Graph, node: int, kept: frozenset):
    (on_true, fired_true), (on_false, fired_false) = (_guarded_branch(graph, node, side, kept) for side in (0, 1))
    fired = fired_true + fired_false
    if not fired:
        return None
    return _emit(graph, node)("where", graph.operands(node)[0], on_true, on_false), fired


def _stable_replacement(graph: Graph, node: int, kept: frozenset = frozenset()):
    """(a node computing `node`'s value stably, the rules that made it), or None when no rewrite applies.
    Only adds nodes. No rewrite looks through a node of `kept`: it must stay in the result. Gradient
    nodes stay as their VJP rules made them: the rewrites are of the program as written, whose every
    gradient is taken from the stable form."""
    if graph.data(node)["role"] == "grad":
        return None
    op = graph.op(node)
    if op == "log":
        found = _log_softmax(graph, node, kept) or _log_sigmoid(graph, node, kept)
        return None if found is None else (found[0], [found[1]])
    if op == "where":
        return _safe_where(graph, node, kept)
    return None


def stabilize(graph: Graph) -> tuple[Graph, list[Rewrite]]:
    """A copy of `graph` with the stability rewrites applied, and the list of those that fired."""
    out = graph.copy()
    rewrites = []
    for node in graph.order():
        found = _stable_replacement(out, node)
        if found is not None:
            replacement, rules = found
            out.replace_uses(node, replacement)
            rewrites += [Rewrite(rule, out.location(node)) for rule in rules]
    return out, rewrites


def stable_form(graph: Graph, output: int, wrt=()) -> int:
    """A node computing `output` from the stable form of everything it depends on, added to `graph` in
    place (what `grad(...)` differentiates). Existing nodes stay as they are: other users of a value
    still see the program as written. The nodes of `wrt` are kept, so that the gradient reaches them."""
    kept = frozenset(wrt)
    stable: dict[int, int] = {}
    for node in graph.order(roots=[output]):
        if node in kept:
            continue
        d = graph.data(node)
        operands = tuple(stable.get(o, o) for o in d["operands"])
        current = node if operands == d["operands"] else \
            graph.add(d["op"], operands, d["attrs"], d["span"], role=d["role"], site=d["site"])
        found = _stable_replacement(graph, current, kept)
        if found is not None:
            current = found[0]
        if current != node:
            stable[node] = current
    return stable.get(output, output)
