"""Scheduling: IR → a flat list of steps over numbered buffer slots.

Done once per (graph, outputs, binding of the symbolic dimensions). Every shape is concrete here, so
each kernel is specialised to its shapes; nodes that do not depend on inputs or params (constants,
`size` queries, arithmetic on them) are computed now, once, and become preloaded slots. Liveness
analysis frees each buffer after its last use. The training step then does nothing but call kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GradError
from ..ir.graph import Graph
from ..ops import registry
from ..ops.registry import RunContext
from ..ops.shapes import resolve


@dataclass
class Schedule:
    steps: list            # (kernel, operand slots, result slot, slots to free afterwards)
    n_slots: int
    preloaded: dict        # slot → array computed at schedule time
    input_slots: dict      # input name → slot
    param_slots: dict      # param name → slot
    output_slots: list     # slot of each requested output, in order
    nodes: list            # the node computed by each step (for error reporting and profiling)


def _resolved_attrs(prim, attrs: dict, bindings: dict) -> dict:
    if not prim.shape_attrs:
        return attrs
    out = dict(attrs)
    for key in prim.shape_attrs:
        out[key] = resolve(attrs[key], bindings)
    return out


def schedule(graph: Graph, outputs: list[str], bindings: dict[str, int],
             context: RunContext | None = None) -> Schedule:
    roots = [graph.outputs[name] for name in outputs]
    order = graph.order(roots=roots)
    slot = {node: i for i, node in enumerate(order)}
    static: dict[int, np.ndarray] = {}
    input_slots, param_slots = {}, {}
    compiled = []
    for node in order:
        d = graph.data(node)
        op = d["op"]
        if op == "input":
            input_slots[d["attrs"]["name"]] = slot[node]
            continue
        if op == "param":
            param_slots[d["attrs"]["name"]] = slot[node]
            continue
        prim = registry.get(op)
        in_shapes = [resolve(graph.shape(o), bindings) for o in d["operands"]]
        out_shape = resolve(d["shape"], bindings)
        attrs = _resolved_attrs(prim, d["attrs"], bindings)
        if prim.random:
            kernel = prim.kernel(attrs, in_shapes, out_shape, d["dtype"], context or RunContext(None, False))
        else:
            kernel = prim.kernel(attrs, in_shapes, out_shape, d["dtype"])
        static_op = op == "const" or op == "size" or d["operands"] and all(o in static for o in d["operands"])
        if static_op and not prim.random:
            try:
                with np.errstate(all="ignore"):
                    static[node] = kernel(*[static.get(o) for o in d["operands"]])
            except Exception as err:  # a constant expression that cannot be computed
                raise GradError(f"cannot evaluate {op} at compile time: {err}", d["span"]) from None
            continue
        compiled.append((node, kernel))

    last_use: dict[int, int] = {}
    for i, (node, _) in enumerate(compiled):
        for o in graph.operands(node):
            last_use[o] = i
    keep = set(roots) | set(static)
    frees: list[list[int]] = [[] for _ in compiled]
    for node, i in last_use.items():
        if node not in keep and graph.op(node) not in ("input", "param"):
            frees[i].append(slot[node])
    steps = [(kernel, tuple(slot[o] for o in graph.operands(node)), slot[node], tuple(frees[i]))
             for i, (node, kernel) in enumerate(compiled)]
    return Schedule(steps, len(order), {slot[n]: v for n, v in static.items()}, input_slots, param_slots,
                    [slot[r] for r in roots], [node for node, _ in compiled])
