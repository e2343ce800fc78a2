"""Symbolic reverse-mode differentiation over the IR.

`backprop` walks the nodes between the parameters and the output in reverse topological order, asks
each primitive's VJP rule for its operands' cotangents (as new IR nodes, role "grad"), and sums
cotangents where a value fans out. Only float nodes on a path from a `wrt` node to the output are
visited, so labels, masks and shape queries receive no gradient. Because the result is ordinary IR,
`backprop` can be applied to its own output: gradients of gradients.
"""
from __future__ import annotations

from ..errors import GradError
from ..ir.graph import Emit, Graph
from ..ops import registry
from ..ops.shapes import FLOATS, fmt_type


def backprop(graph: Graph, output: int, wrt: list[int], span=None, seed: float = 1) -> list[int]:
    """Add nodes computing d output / d w to `graph` (in place) for each w in `wrt`; return their ids.
    The backward pass starts from the cotangent `seed`, so the results are seed · d output / d w."""
    if graph.shape(output) != () or graph.dtype(output) not in FLOATS:
        raise GradError("can only differentiate a float scalar, got "
                        f"{fmt_type(graph.shape(output), graph.dtype(output))}; reduce it first (sum, mean)",
                        span or graph.span(output))
    upstream = graph.reachable([output])
    downstream = graph.reachable(wrt, forward=True)
    active = {n for n in upstream & downstream if graph.dtype(n) in FLOATS}

    start = Emit(graph, graph.span(output), "grad", graph.data(output)["site"]).const(seed, graph.dtype(output))
    contributions: dict[int, list[int]] = {output: [start]}
    totals: dict[int, int] = {}
    for node in reversed(graph.order(roots=[output])):
        if node not in active or node not in contributions:
            continue
        g = totals[node] = _total(graph, node, contributions.pop(node))
        ref = graph.ref(node)
        prim = registry.get(ref.op)
        if prim.vjp is None:
            continue
        rules = prim.vjp(Emit(graph, ref.span, "grad", ref.site), ref, g)
        if len(rules) != len(ref.operands):
            raise RuntimeError(f"VJP rule of {ref.op} returned {len(rules)} cotangents "
                               f"for {len(ref.operands)} operands")
        for operand, rule in zip(ref.operands, rules):
            if rule is not None and operand in active:
                contributions.setdefault(operand, []).append(rule())

    results = []
    for w in wrt:
        if w in totals:
            results.append(totals[w])
        elif w in contributions:
            results.append(_total(graph, w, contributions.pop(w)))
        else:  # the output does not depend on w: its gradient is zero
            e = Emit(graph, graph.span(w), "grad", graph.data(w)["site"])
            results.append(e("broadcast_to", e.const(0, graph.dtype(w)), shape=graph.shape(w)))
    return results


def _total(graph: Graph, node: int, parts: list[int]) -> int:
    e = Emit(graph, graph.span(node), "grad", graph.data(node)["site"])
    total = parts[0]
    for part in parts[1:]:
        total = e("add", total, part)
    data = graph.data(node)
    name = data["attrs"]["name"] if data["op"] in ("input", "param") else data["name"]
    if name and graph.data(total)["name"] is None and graph.data(total)["role"] == "grad" \
            and graph.op(total) != "const":
        graph.data(total)["name"] = "d" + name
    return total


def differentiate(graph: Graph, loss: str = "loss", seed: float = 1) -> Graph:
    """A copy of `graph` with outputs `grad:<param>` = seed · d loss / d param for every param. A seed
    other than 1 is plain SGD's learning rate: the backward pass then yields the update itself, the
    constant folded into the first scaling the loss already has (a mean's 1/B)."""
    out = graph.copy()
    params = out.params
    grads = backprop(out, out.outputs[loss], list(params.values()), seed=seed)
    for name, node in zip(params, grads):
        out.outputs[f"grad:{name}"] = node
    return out


def differentiate_phases(graph: Graph, phases: list[tuple[str, tuple]], untrained: list[str] = ()) -> Graph:
    """A copy of `graph` with outputs `grad:<param>` = d loss / d param for each (loss output, params)
    pair: only those params' gradients are built, so only the backward work they need. The `untrained`
    params (in no phase) get a zero gradient: training leaves them as they are."""
    out = graph.copy()
    for loss, params in phases:
        grads = backprop(out, out.outputs[loss], [out.params[p] for p in params])
        for name, node in zip(params, grads):
            out.outputs[f"grad:{name}"] = node
    for name in untrained:
        w = out.params[name]
        e = Emit(out, out.span(w), "grad", out.data(w)["site"])
        out.outputs[f"grad:{name}"] = e("broadcast_to", e.const(0, out.dtype(w)), shape=out.shape(w))
    return out
