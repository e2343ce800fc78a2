"""The graph IR: a NetworkX multigraph of primitive ops, with a text printer."""
from .graph import Emit, Graph, NodeRef
from .printer import format_graph

__all__ = ["Graph", "Emit", "NodeRef", "format_graph"]
