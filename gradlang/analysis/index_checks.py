"""Where integer indices are range-checked: an analysis of the graph, made once at compile time.

NumPy reads a negative index from the end and `one_hot` of an out-of-range label is a row of zeros:
either would be a silently wrong answer. Every operand marked as indices on its op record
(`registry.IndexOperand`: cross-entropy labels, `take` and `one_hot`) must lie in [0, bound).

Indices fed as an input, unchanged on the way (reshapes, transposes, casts between integer types),
are checked where they enter, once per batch or data set (`IndexCheck.check`), so the kernels of a
training step do no checking. Indices computed inside the program, or bounded by a symbolic
dimension, are checked by the kernel that uses them (`guarded`: the schedule wraps it in an
`IndexGuard`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GradError, Span
from ..ir.graph import Graph
from ..ops import registry
from ..ops.registry import SAME_VALUES
from ..ops.shapes import INTS


@dataclass(frozen=True)
class IndexCheck:
    """The values of input `input` index a dimension of size `bound` in op `op` at `span`."""

    input: str
    bound: int
    op: str
    noun: str
    span: Span | None

    def check(self, values: np.ndarray, origin: str | None = None, notes: tuple = ()) -> None:
        """Raise a GradError at the op's line naming the input and the first offending value (and, for
        a data set read from `origin`, the field and example) unless every value is in [0, bound)."""
        if values.size == 0 or values.dtype.kind not in "iuf":
            return
        if values.min() >= 0 and values.max() < self.bound:
            return
        position = _first_outside(values, self.bound)
        value = values.reshape(-1)[position]
        if origin is not None:
            example = position // max(1, int(np.prod(values.shape[1:], dtype=np.int64))) if values.ndim else 0
            raise GradError(f"{origin}: field {self.input!r}, example {example} (counting from 0): value "
                            f"{value:g} is out of range 0..{self.bound - 1} for {self.op} here", self.span, notes)
        kind = "negative" if value < 0 else "too large"
        raise GradError(f"input {self.input}: {self.noun} {value:g} is {kind} for {self.op}, which needs "
                        f"0 ≤ {self.noun} < {self.bound}", self.span, notes)


def _first_outside(values: np.ndarray, bound: int) -> int:
    """The flat position of the first value outside [0, bound) (there is one)."""
    flat = values.reshape(-1)
    return int(np.flatnonzero((flat < 0) | (flat >= bound))[0])


def _source_input(graph: Graph, node: int) -> str | None:
    """The input whose values `node` holds unchanged, if any."""
    while True:
        op = graph.op(node)
        if op == "input":
            return graph.attrs(node)["name"]
        if op == "cast" and graph.dtype(node) in INTS and graph.dtype(graph.operands(node)[0]) in INTS:
            node = graph.operands(node)[0]
        elif registry.has(op, SAME_VALUES):
            node = graph.operands(node)[0]
        else:
            return None


def _static_bound(graph: Graph, node: int, index: registry.IndexOperand) -> int | None:
    bound = index.bound(graph.attrs(node), [graph.shape(o) for o in graph.operands(node)])
    return bound if isinstance(bound, int) else None


def input_index_checks(graph: Graph) -> dict[str, list[IndexCheck]]:
    """Input name → the checks its values must pass, for indices fed unchanged with a known bound."""
    checks: dict[str, list[IndexCheck]] = {}
    for node in graph.nx.nodes:
        index = registry.get(graph.op(node)).index
        if index is None:
            continue
        source = _source_input(graph, graph.operands(node)[index.position])
        bound = _static_bound(graph, node, index)
        if source is not None and bound is not None:
            check = IndexCheck(source, bound, graph.op(node), index.noun, graph.location(node))
            if check not in checks.setdefault(source, []):
                checks[source].append(check)
    return checks


def guarded(graph: Graph, node: int) -> bool:
    """Whether `node`'s kernel must check its indices itself: they are not an input checked on entry."""
    index = registry.get(graph.op(node)).index
    if index is None:
        return False
    fed = _source_input(graph, graph.operands(node)[index.position]) is not None
    return not fed or _static_bound(graph, node, index) is None


class IndexGuard:
    """A kernel that first checks its index operand lies in [0, bound) (an IndexError otherwise, which
    the interpreter reports with the op's source line)."""

    def __init__(self, kernel, position: int, bound: int, noun: str):
        self.kernel, self.position, self.bound, self.noun = kernel, position, bound, noun

    def __call__(self, *operands):
        values = operands[self.position]
        if values.size and (values.min() < 0 or values.max() >= self.bound):
            value = int(values.reshape(-1)[_first_outside(values, self.bound)])
            raise IndexError(f"{self.noun} {value} is out of range: it must be ≥ 0 and < {self.bound}")
        return self.kernel(*operands)
