"""The IR verifier: re-runs every shape rule and checks that edges agree with operand lists."""
from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph
from ..ops import registry


def verify(graph: Graph) -> Graph:
    """Raise AssertionError if `graph` is malformed; return it unchanged otherwise (so it chains)."""
    assert nx.is_directed_acyclic_graph(graph.nx), "IR has a cycle"
    for node, d in graph.nx.nodes(data=True):
        operands = d["operands"]
        edges = sorted((key, src) for src, _, key in graph.nx.in_edges(node, keys=True))
        assert edges == list(enumerate(operands)), f"node {node} ({d['op']}): edges {edges} != operands {operands}"
        prim = registry.get(d["op"])
        shape, dtype = prim.infer([graph.shape(o) for o in operands], [graph.dtype(o) for o in operands],
                                  dict(d["attrs"]))
        assert (tuple(shape), dtype) == (d["shape"], d["dtype"]), \
            f"node {node} ({d['op']}): recorded {d['dtype']}{d['shape']}, rule gives {dtype}{tuple(shape)}"
    for name, node in graph.outputs.items():
        assert node in graph, f"output {name} names a missing node {node}"
    return graph
