"""The IR: one node per value, held in a `networkx.MultiDiGraph`.

Node attributes: `op`, `operands` (ordered tuple of node ids — `mul(x, x)` lists x twice), `attrs`,
`shape`, `dtype`, `span`, `name` (the source name it was bound to, for printing) and `role`
(`"forward"` or `"grad"`). For every operand position i there is an edge operand → node with key i,
so NetworkX's algorithms (topological sort, ancestors, DOT export) see the same graph the operand
lists describe.

Leaves: `input` (fed per batch; attrs `name`), `param` (trainable; attrs `name`), `const` (attrs
`value`, a NumPy array). `outputs` maps output names (`loss`, `metric:accuracy`, `grad:W`) to nodes.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from ..errors import GradError, Span
from ..ops import registry  # importing ..ops registers every primitive
from ..ops.shapes import DTYPES, ShapeError, normalize_axes


@dataclass(frozen=True)
class NodeRef:
    """A read-only view of one node, handed to VJP rules."""

    id: int
    op: str
    operands: tuple
    attrs: dict
    shape: tuple
    dtype: str
    span: Span | None
    site: Span | None


def memory_limit() -> int:
    """The most bytes one value may take: $GRADLANG_MAX_BYTES, else the machine's physical memory."""
    import os
    if os.environ.get("GRADLANG_MAX_BYTES", "").isdigit():
        return int(os.environ["GRADLANG_MAX_BYTES"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 40


def refuse_oversize(size: int, what: str, span: Span | None = None, at_least: bool = False, per: str = "") -> None:
    """Refuse `what`, which would need `size` bytes (or more, `at_least`: reading stopped there; `per`
    example, say), before anything more is allocated for it, when that is more than the memory limit."""
    limit = memory_limit()
    if size > limit:
        raise GradError(f"{what} would need {'at least ' * at_least}{size:,} bytes{per}, more than the limit of "
                        f"{limit:,} bytes (the machine's memory, or $GRADLANG_MAX_BYTES)", span)


def check_size(shape: tuple, dtype: str, what: str, span: Span | None) -> int:
    """Refuse, before anything is allocated, a value whose known dimensions alone (a symbolic one
    counts as 1) need more memory than the limit; returns its size in bytes."""
    count = 1
    for d in shape:
        count *= d if isinstance(d, int) and d > 0 else (0 if d == 0 else 1)
    size = count * np.dtype(DTYPES[dtype]).itemsize
    per = " per example" if any(isinstance(d, str) for d in shape) else ""
    refuse_oversize(size, f"{what} of type {dtype}[{','.join(map(str, shape))}]", span, per=per)
    return size


# leaves whose size is checked where they are declared, with a better message
_SIZE_EXEMPT = frozenset({"param", "input"})


class Graph:
    def __init__(self) -> None:
        self.nx = nx.MultiDiGraph()
        self.outputs: dict[str, int] = {}
        self._next = 0
        # Where in the user's program the nodes being added come from, while the elaborator is inside a
        # standard-library function: printed locations and errors point there, not into the library.
        self.site: Span | None = None

    # ---- building ------------------------------------------------------------------------------
    def add(self, op: str, operands=(), attrs: dict | None = None, span: Span | None = None,
            name: str | None = None, role: str = "forward", site: Span | None = None) -> int:
        """Add a node after checking it with its primitive's shape rule; return its id."""
        prim = registry.get(op)
        attrs = dict(attrs or {})
        operands = tuple(operands)
        if prim.arity is not None and len(operands) != prim.arity:
            raise GradError(f"{op} takes {prim.arity} operand(s), got {len(operands)}", span)
        try:
            shape, dtype = prim.infer([self.shape(o) for o in operands], [self.dtype(o) for o in operands], attrs)
        except ShapeError as err:
            raise GradError(str(err), site or self.site or span) from None
        if shape and op not in _SIZE_EXEMPT:
            check_size(shape, dtype, f"{op} value", site or self.site or span)
        node = self._next
        self._next += 1
        self.nx.add_node(node, op=op, operands=operands, attrs=attrs, shape=tuple(shape), dtype=dtype,
                         span=span, site=site or self.site, name=name, role=role)
        for position, operand in enumerate(operands):
            self.nx.add_edge(operand, node, key=position)
        return node

    def const(self, value, dtype: str, span: Span | None = None, role: str = "forward",
              site: Span | None = None) -> int:
        return self.add("const", (), {"value": np.asarray(value, dtype=DTYPES[dtype])}, span, role=role, site=site)

    # ---- reading -------------------------------------------------------------------------------
    def __contains__(self, node: int) -> bool:
        return node in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def data(self, node: int) -> dict[str, Any]:
        return self.nx.nodes[node]

    def op(self, node: int) -> str:
        return self.nx.nodes[node]["op"]

    def operands(self, node: int) -> tuple:
        return self.nx.nodes[node]["operands"]

    def attrs(self, node: int) -> dict:
        return self.nx.nodes[node]["attrs"]

    def shape(self, node: int) -> tuple:
        return self.nx.nodes[node]["shape"]

    def dtype(self, node: int) -> str:
        return self.nx.nodes[node]["dtype"]

    def span(self, node: int) -> Span | None:
        return self.nx.nodes[node]["span"]

    def location(self, node: int) -> Span | None:
        """Where the node comes from in the user's program (the call site for library code)."""
        d = self.nx.nodes[node]
        return d["site"] or d["span"]

    def ref(self, node: int) -> NodeRef:
        d = self.nx.nodes[node]
        return NodeRef(node, d["op"], d["operands"], d["attrs"], d["shape"], d["dtype"], d["span"], d["site"])

    def users(self, node: int) -> list[int]:
        return sorted(set(self.nx.successors(node)))

    def nodes_with_op(self, op: str) -> list[int]:
        return [n for n, d in self.nx.nodes(data=True) if d["op"] == op]

    def leaves(self, op: str) -> dict[str, int]:
        """`input` or `param` nodes by name, in creation order."""
        return {self.attrs(n)["name"]: n for n in sorted(self.nodes_with_op(op))}

    @property
    def inputs(self) -> dict[str, int]:
        return self.leaves("input")

    @property
    def params(self) -> dict[str, int]:
        return self.leaves("param")

    def find_value(self, name: str) -> int | None:
        """The node a user means by `name`: a declared output (`output:name`, `metric:name`,
        `loss:name`, or an output key itself such as `loss` or `grad:W`), else the forward value the
        program last bound to that name; None if there is none."""
        for key in (f"output:{name}", name, f"metric:{name}", f"loss:{name}"):
            if key in self.outputs:
                return self.outputs[key]
        bound = [n for n, d in self.nx.nodes(data=True) if d["name"] == name and d["role"] == "forward"]
        return max(bound) if bound else None

    def reachable(self, starts, forward: bool = False) -> set[int]:
        """`starts` and every node they depend on (or, if `forward`, that depends on them), in one
        traversal however many starts there are (nx.ancestors per start would be quadratic)."""
        step = self.nx.successors if forward else self.nx.predecessors
        seen = set(starts)
        stack = list(seen)
        while stack:
            for nxt in step(stack.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def order(self, roots=None, key=None) -> list[int]:
        """Nodes in a deterministic topological order, ties broken by `key` (default: the id, i.e. creation
        order); only `roots` and what they depend on, if given. Kahn's algorithm over the operand lists:
        a NetworkX sort over a subgraph view costs several times more, and passes sort often."""
        keep = self.reachable(roots) if roots is not None else set(self.nx.nodes)
        key = key or (lambda n: n)
        nodes = self.nx.nodes
        waiting, users = {}, {}
        for n in keep:
            operands = set(nodes[n]["operands"])
            waiting[n] = len(operands)
            for o in operands:
                users.setdefault(o, []).append(n)
        ready = [(key(n), n) for n, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            _, n = heapq.heappop(ready)
            out.append(n)
            for user in users.get(n, ()):
                waiting[user] -= 1
                if waiting[user] == 0:
                    heapq.heappush(ready, (key(user), user))
        return out

    def copy(self) -> Graph:
        new = Graph()
        new.nx = self.nx.copy()
        for _, d in new.nx.nodes(data=True):
            d["attrs"] = dict(d["attrs"])
        new.outputs = dict(self.outputs)
        new._next = self._next
        return new

    def replace_uses(self, old: int, new: int, outputs: bool = True) -> None:
        """Make every user of `old` (and every output naming it, unless not `outputs`: a pass replacing
        many nodes moves the outputs once, with `move_outputs`) use `new` instead."""
        for user in self.users(old):
            d = self.nx.nodes[user]
            d["operands"] = tuple(new if o == old else o for o in d["operands"])
            self.nx.remove_edges_from(list(self.nx.in_edges(user, keys=True)))
            for position, operand in enumerate(d["operands"]):
                self.nx.add_edge(operand, user, key=position)
        if outputs:
            self.move_outputs({old: new})
        if self.nx.nodes[new]["name"] is None:
            self.nx.nodes[new]["name"] = self.nx.nodes[old]["name"]

    def move_outputs(self, moved: dict) -> None:
        """Point every output at a node in `moved` to the node it was replaced by, following chains."""
        for name, node in self.outputs.items():
            while node in moved:
                node = moved[node]
            self.outputs[name] = node

    def remove(self, nodes) -> None:
        self.nx.remove_nodes_from(list(nodes))


class Emit:
    """Adds nodes to a graph with one span and role: the vocabulary VJP rules and the elaborator use."""

    def __init__(self, graph: Graph, span: Span | None, role: str = "forward", site: Span | None = None):
        self.graph, self.span, self.role, self.site = graph, span, role, site

    def __call__(self, op: str, *operands: int, **attrs) -> int:
        return self.graph.add(op, operands, attrs, self.span, role=self.role, site=self.site)

    def const(self, value, dtype: str) -> int:
        return self.graph.const(value, dtype, self.span, self.role, self.site)

    def shape(self, node: int) -> tuple:
        return self.graph.shape(node)

    def dtype(self, node: int) -> str:
        return self.graph.dtype(node)

    def sum_to_shape(self, x: int, shape: tuple) -> int:
        """Undo broadcasting: sum `x` over the axes that broadcasting added or stretched, to `shape`."""
        have = self.shape(x)
        if have == tuple(shape):
            return x
        lead = len(have) - len(shape)
        axes = list(range(lead)) + [i + lead for i, d in enumerate(shape) if d == 1 and have[i + lead] != 1]
        if axes:
            x = self("reduce_sum", x, axes=tuple(axes), keepdims=False)
        if self.shape(x) != tuple(shape):
            x = self("reshape", x, shape=tuple(shape))
        return x

    def expand_reduced(self, g: int, node: NodeRef) -> int:
        """Broadcast the cotangent of a reduction back over the axes it reduced."""
        x_shape = self.shape(node.operands[0])
        axes = normalize_axes(node.attrs["axes"], len(x_shape))
        if not node.attrs["keepdims"]:
            g = self("reshape", g, shape=tuple(1 if i in axes else d for i, d in enumerate(x_shape)))
        return self("broadcast_to", g, shape=x_shape)
