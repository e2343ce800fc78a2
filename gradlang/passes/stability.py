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

`stabilize` is a pure pass Graph → (Graph, [Rewrite]) meant to run on the elaborated graph, before
differentiation (a gradient taken from the unstable form keeps its NaNs). Replaced nodes are left for
dead-code elimination.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import Span
from ..ir.graph import Emit, Graph
from .simplify import filled_with

# Elementwise ops whose operands line up with their result position by position.
_ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "pow", "maximum", "neg", "exp", "log", "tanh", "sigmoid",
                          "relu", "abs", "sin", "cos", "cast"})


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


def _log_softmax(graph: Graph, node: int):
    (x,) = graph.operands(node)
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


def _log_sigmoid(graph: Graph, node: int):
    (x,) = graph.operands(node)
    e = _emit(graph, node)
    if graph.op(x) == "sigmoid":
        return e("neg", softplus(e, e("neg", graph.operands(x)[0]))), "log(sigmoid(x)) → −softplus(−x)"
    if graph.op(x) == "sub" and filled_with(graph, graph.operands(x)[0]) == 1.0 \
            and graph.op(graph.operands(x)[1]) == "sigmoid" and graph.shape(x) == graph.shape(graph.operands(x)[1]):
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


def _guard_branches(graph: Graph, node: int) -> list[str]:
    """Guard the risky ops inside both branches of a where (see the module docstring); the rules that fired."""
    cond, *branches = graph.operands(node)
    shape = graph.shape(node)
    fired = []
    for side, branch in enumerate(branches):
        stack = [branch]
        while stack:
            n = stack.pop()
            if graph.shape(n) != shape or len(graph.users(n)) != 1 or graph.op(n) not in _ELEMENTWISE:
                continue
            stack += graph.operands(n)
            position = _risky_operand(graph, n)
            if position is None:
                continue
            x = graph.operands(n)[position]
            if graph.op(x) in ("const", "where") or graph.shape(x) != shape:
                continue   # a constant, or already guarded
            e = _emit(graph, n)
            safe = e.const(1, graph.dtype(x))
            guarded = e("where", cond, x, safe) if side == 0 else e("where", cond, safe, x)
            d = graph.data(n)
            operands = list(d["operands"])
            operands[position] = guarded
            graph.replace_uses(n, e(d["op"], *operands, **d["attrs"]))
            fired.append(f"where(c, {d['op']}(x), …): where the branch is not taken its gradient would be NaN; "
                         f"guarded as {d['op']}(where(c, x, 1))")
    return fired


def stabilize(graph: Graph) -> tuple[Graph, list[Rewrite]]:
    """A copy of `graph` with the stability rewrites applied, and the list of those that fired."""
    out = graph.copy()
    rewrites = []
    for node in graph.order():
        op = out.op(node)
        if op == "log":
            found = _log_softmax(out, node) or _log_sigmoid(out, node)
            if found is not None:
                replacement, rule = found
                out.replace_uses(node, replacement)
                rewrites.append(Rewrite(rule, out.location(node)))
        elif op == "where":
            rewrites += [Rewrite(rule, out.location(node)) for rule in _guard_branches(out, node)]
    return out, rewrites
