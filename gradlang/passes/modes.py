"""Training and evaluation: the graph a step of each kind runs.

An op with the BY_MODE trait (`training(a, b)`, ops/primitives.py) is one of its operands, chosen by the
kind of run: operand 0 in a training step, operand 1 when evaluating. Which it is, is known once a step is
scheduled (`lowering/schedule.py` calls `for_mode` with its RunContext), so the choice costs nothing in the
step: the chosen operand takes the op's place, and the branch not taken is not computed at all. ONNX export
takes the evaluation branch the same way.
"""
from __future__ import annotations

from ..ir.graph import Graph
from ..ops import registry
from ..ops.registry import BY_MODE

TRAINING_OPERAND, EVALUATION_OPERAND = 0, 1


def mode_switches(graph: Graph) -> list[int]:
    """The nodes whose value depends on the kind of run (ops with the BY_MODE trait)."""
    return [n for n, d in graph.nx.nodes(data=True) if registry.has(d["op"], BY_MODE)]


def for_mode(graph: Graph, training: bool) -> Graph:
    """`graph` as a step of this kind runs it: a copy (node ids kept) in which every user and output of a
    BY_MODE op reads the operand the kind chooses instead; `graph` itself when it has no such op."""
    switches = mode_switches(graph)
    if not switches:
        return graph
    out = graph.copy()
    chosen = TRAINING_OPERAND if training else EVALUATION_OPERAND
    for node in switches:   # (an operand that is itself a switch is followed: its users are moved on in turn)
        out.replace_uses(node, out.operands(node)[chosen])
    return out
