"""Floating-point operations of one IR node, as lowering/cost.py counts them and the scheduler
estimates a kernel's time from them: a matrix product or convolution counts 2 per multiply-add;
softmax and softmax cross-entropy 5 per element; a reduction 1 per element it reads; other
arithmetic 1 per element it writes; moving data (reshape, transpose, broadcast, slicing, casts,
one-hot, window gathering) 0."""
from __future__ import annotations

from math import prod

from ..ir.graph import Graph
from ..ops import registry
from ..ops.registry import MOVES_DATA, REDUCTION
from ..ops.shapes import resolve


def node_flops(graph: Graph, node: int, bindings: dict) -> int:
    """Floating-point operations of one node with its symbolic dimensions bound (see the docstring)."""
    op = graph.op(node)
    size = lambda n: prod(resolve(graph.shape(n), bindings))   # noqa: E731
    operands = graph.operands(node)
    if registry.has(op, MOVES_DATA):
        return 0
    if op == "matmul":
        return 2 * size(node) * resolve(graph.shape(operands[0]), bindings)[-1]
    if op == "conv2d":            # out [N,O,OH,OW] from filters [O,C,KH,KW]: C·KH·KW products each
        return 2 * size(node) * size(operands[1]) // graph.shape(operands[1])[0]
    if op == "conv2d_transpose":  # each input element meets O·KH·KW filter values ([C,O,KH,KW])
        return 2 * size(operands[0]) * size(operands[1]) // graph.shape(operands[1])[0]
    if op == "conv2d_filter_grad":  # each output-gradient element meets C·KH·KW inputs
        return 2 * size(operands[1]) * size(node) // graph.shape(node)[0]
    if op in ("softmax", "softmax_cross_entropy"):
        return 5 * size(operands[0])
    if registry.has(op, REDUCTION):
        return size(operands[0])
    return size(node)
