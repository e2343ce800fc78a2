"""Scheduling: IR → a flat list of steps over numbered buffer slots.

Done once per (graph, outputs, binding of the symbolic dimensions). Every shape is concrete here, so
each kernel is specialised to its shapes; nodes that do not depend on inputs or params (constants,
`size` queries, arithmetic on them) are computed now, once, and become preloaded slots. Liveness
analysis frees each buffer after its last use. The training step then does nothing but call kernels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

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


# Ops whose kernels may return a view of (memory shared with) their first operand.
VIEW_OPS = frozenset({"reshape", "transpose", "broadcast_to", "slice", "stop_gradient"})


def _in_place(graph: Graph, compiled: list, roots: set, bindings: dict) -> list:
    """Let an elementwise ufunc write its result into its first operand's buffer when that buffer is
    dead afterwards: it was computed by this schedule (not an input, param or constant), nothing else
    reads it or any view of it later, and it has the result's shape and dtype. Saves an allocation
    and a pass of fresh memory per op, as a careful `out=` in hand-written NumPy would."""
    position = {node: i for i, (node, _) in enumerate(compiled)}
    buffer = {}                  # node → the node whose kernel allocated the memory it lives in
    for node, _ in compiled:
        ops = graph.operands(node)
        buffer[node] = buffer.get(ops[0], ops[0]) if graph.op(node) in VIEW_OPS else node
    last_read: dict[int, int] = {}
    for i, (node, _) in enumerate(compiled):
        for o in graph.operands(node):
            b = buffer.get(o)
            if b is not None:
                last_read[b] = max(last_read.get(b, -1), i)
    pinned = {buffer.get(r) for r in roots}   # outputs are handed to the caller: never overwritten
    out = []
    for i, (node, kernel) in enumerate(compiled):
        first = graph.operands(node)[0] if graph.operands(node) else None
        if (isinstance(kernel, np.ufunc) and kernel.nout == 1 and first in position
                and buffer[first] == first and first not in pinned and last_read.get(first) == i
                and graph.dtype(first) == graph.dtype(node) and graph.shape(node)
                and resolve(graph.shape(first), bindings) == resolve(graph.shape(node), bindings)):
            kernel = partial(_into_first, kernel)
            buffer[node] = first
            last_read[first] = max(last_read[first], last_read.get(node, -1))
            if node in roots:
                pinned.add(first)
        out.append((node, kernel))
    return out


def _into_first(ufunc, a, *rest):
    return ufunc(a, *rest, out=a)


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

    compiled = _in_place(graph, compiled, set(roots), bindings)
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
