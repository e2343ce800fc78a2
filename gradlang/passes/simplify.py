"""Simplification: algebraic identities, constant folding, common subexpressions, dead code.

Each rewrite is a pure function Graph → Graph; `simplify` runs them to a fixed point. None changes a
result beyond float rounding: identities only fire when the shapes and dtypes already agree, and
constant folding uses the same kernels the interpreter runs.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..ir.graph import Graph
from ..ops import registry

_FOLD_LIMIT = 4096   # elements: fold small constants only, never materialise big broadcasts


def _const_value(graph: Graph, node: int):
    return graph.attrs(node)["value"] if graph.op(node) == "const" else None


def _is_scalar_const(graph: Graph, node: int, value: float) -> bool:
    v = _const_value(graph, node)
    return v is not None and v.size == 1 and float(v.reshape(())) == value


def _identity_target(graph: Graph, node: int) -> int | None:
    """The node `node` equals by an algebraic identity, or None."""
    d = graph.data(node)
    op, ops, attrs = d["op"], d["operands"], d["attrs"]
    same = lambda x: graph.shape(x) == d["shape"] and graph.dtype(x) == d["dtype"]  # noqa: E731
    if op in ("mul",):
        for x, y in (ops, ops[::-1]):
            if _is_scalar_const(graph, y, 1.0) and same(x):
                return x
    if op in ("add",):
        for x, y in (ops, ops[::-1]):
            if _is_scalar_const(graph, y, 0.0) and same(x):
                return x
    if op in ("sub", "div") and _is_scalar_const(graph, ops[1], 0.0 if op == "sub" else 1.0) and same(ops[0]):
        return ops[0]
    if op == "pow" and _is_scalar_const(graph, ops[1], 1.0) and same(ops[0]):
        return ops[0]
    if op == "neg" and graph.op(ops[0]) == "neg":
        return graph.operands(ops[0])[0]
    if op in ("reshape", "broadcast_to") and same(ops[0]):
        return ops[0]
    if op == "reshape" and graph.op(ops[0]) == "reshape" and same(graph.operands(ops[0])[0]):
        return graph.operands(ops[0])[0]
    if op == "transpose" and attrs["perm"] == tuple(range(len(attrs["perm"]))):
        return ops[0]
    if op == "transpose" and graph.op(ops[0]) == "transpose":
        inner = graph.attrs(ops[0])["perm"]
        if tuple(inner[p] for p in attrs["perm"]) == tuple(range(len(inner))):
            return graph.operands(ops[0])[0]
    if op == "cast" and same(ops[0]):
        return ops[0]
    if op == "reduce_sum" and not attrs["axes"]:
        return ops[0]
    return None


def _rewrite(graph: Graph, pick) -> None:
    for node in graph.order():
        if node not in graph:
            continue
        target = pick(graph, node)
        if target is not None and target != node:
            graph.replace_uses(node, target)


def _identities(graph: Graph) -> None:
    """x*1 → x, x+0 → x, x-0, x/1, x**1, −(−x), reshape/broadcast/cast to the same type, transpose∘transpose."""
    _rewrite(graph, _identity_target)


def _fold_constants(graph: Graph) -> None:
    """Evaluate nodes whose operands are all small constants (shapes fully known) into constants."""
    for node in graph.order():
        d = graph.data(node)
        if d["op"] == "const" or not d["operands"] or registry.get(d["op"]).random:
            continue
        values = [_const_value(graph, o) for o in d["operands"]]
        if any(v is None for v in values) or not all(isinstance(s, int) for s in d["shape"]):
            continue
        if int(np.prod(d["shape"], dtype=np.int64)) > _FOLD_LIMIT:
            continue
        kernel = registry.get(d["op"]).kernel(d["attrs"], [v.shape for v in values], d["shape"], d["dtype"])
        folded = graph.const(np.array(kernel(*values)), d["dtype"], d["span"], d["role"], d["site"])
        graph.replace_uses(node, folded)
    _dead_code(graph)


def _key(graph: Graph, node: int):
    d = graph.data(node)
    if d["op"] in ("input", "param"):
        return None
    if d["op"] == "const":
        v = d["attrs"]["value"]
        return ("const", d["dtype"], v.shape, v.tobytes())
    return (d["op"], d["operands"], tuple(sorted((k, repr(v)) for k, v in d["attrs"].items())))


def _common_subexpressions(graph: Graph) -> None:
    """Merge nodes with the same op, operands and attributes (and constants with equal values)."""
    seen: dict = {}

    def pick(g: Graph, node: int):
        key = _key(g, node)
        if key is None:
            return None
        return seen.setdefault(key, node)
    _rewrite(graph, pick)
    _dead_code(graph)


def _dead_code(graph: Graph) -> None:
    """Drop nodes no output depends on; inputs and params stay (they are the program's interface)."""
    live = graph.reachable(graph.outputs.values())
    live |= set(graph.nodes_with_op("input")) | set(graph.nodes_with_op("param"))
    graph.remove([n for n in graph.nx.nodes if n not in live])


def _pure(rewrite):
    """The rewrite as a pass: a pure function that applies it to a copy."""
    def apply(graph: Graph) -> Graph:
        out = graph.copy()
        rewrite(out)
        return out
    apply.__name__, apply.__doc__ = rewrite.__name__.lstrip("_"), rewrite.__doc__
    apply.rewrite = rewrite
    return apply


identities = _pure(_identities)
fold_constants = _pure(_fold_constants)
common_subexpressions = _pure(_common_subexpressions)
dead_code = _pure(_dead_code)

PASSES = (identities, fold_constants, common_subexpressions, dead_code)


def simplify(graph: Graph, passes=PASSES, stats: Counter | None = None) -> Graph:
    """Run `passes` to a fixed point (no pass changes the node count), at most 10 rounds, on one copy."""
    out = graph.copy()
    for _ in range(10):
        before = len(out)
        for p in passes:
            size = len(out)
            p.rewrite(out)
            if stats is not None:
                stats[p.__name__] += size - len(out)
        if len(out) == before:
            break
    return out
