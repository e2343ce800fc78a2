"""Stacked sums: a sum of many small products — a recurrent weight's gradient Σₜ hₜᵀ dzₜ over the
time steps of an unrolled loop — made as a few large products.

The gradient graph accumulates such a sum one time step at a time: a chain of `add`s whose terms
are `xₜᵀ @ gₜ` (a weight), `reduce_sum(gₜ, axis 0)` (a bias) or anything else. The IR cannot stack
the terms itself (the batch is symbolic, so the stacked operand's size is unknown); the scheduler,
which knows every size, can: `Σᵢ lᵢ @ rᵢ` over a chunk of terms is one product of the lefts side by
side with the rights stacked, and a chunk's column sums are one reduction of the stacked columns.
What the chain added one term at a time is then a `SumOfParts` of the chunks (and of the terms that
are neither). Each chunk is computed as soon as its last term could have been, so the helper thread
can take it (lowering/schedule.py: `_helper_lane`); the chain's sum is left for the end.
"""
from __future__ import annotations

from functools import partial
from math import ceil, prod

import numpy as np

from ..ir.graph import Graph
from ..ops import registry
from ..ops.shapes import DTYPES, resolve
from .calls import Call, read_counts

# Terms per stacked product: enough to give each product a contraction of 8 batches (one [128, 32] @
# [32, 512] term of the LSTM benchmark took 55 µs alone, 45 µs per term stacked 8 deep) and the helper
# work worth a hand-off, few enough that the last chunk, which only the end of the step can compute,
# stays short. A sum of fewer terms of a kind than STACKED_MIN_TERMS is left as it is.
STACKED_TERMS = 8
STACKED_MIN_TERMS = 4


class StackedProducts:
    """Σᵢ lᵢ @ rᵢ as one product: the lefts side by side (or, when every left is a transposed xᵢ,
    the xᵢ stacked and the stack transposed), the rights stacked. `scratch_bytes`: the stacks' memory,
    which the schedule's memory check counts while the kernel runs."""

    __slots__ = ("count", "transposed", "multiply_adds", "scratch_bytes")
    contraction = True   # a product, for the helper lane

    def __init__(self, count: int, transposed: bool, multiply_adds: int, scratch_bytes: int):
        self.count, self.transposed, self.multiply_adds = count, transposed, multiply_adds
        self.scratch_bytes = scratch_bytes

    def __call__(self, *args):
        lefts, rights = args[:self.count], args[self.count:]
        left = np.concatenate(lefts, axis=0).T if self.transposed else np.concatenate(lefts, axis=1)
        return np.matmul(left, np.concatenate(rights, axis=0))


class StackedColumnSums:
    """Σᵢ reduce_sum(gᵢ, axis 0) as one reduction of the gᵢ stacked (`scratch_bytes` of them)."""

    __slots__ = ("scratch_bytes",)
    contraction = False

    def __init__(self, scratch_bytes: int):
        self.scratch_bytes = scratch_bytes

    def __call__(self, *columns):
        return np.add.reduce(np.concatenate(columns, axis=0), axis=0)


class SumOfParts:
    """The sum of a chain's parts, in order, into one fresh array."""

    __slots__ = ()

    def __call__(self, *parts):
        total = np.add(parts[0], parts[1])
        for part in parts[2:]:
            np.add(total, part, out=total)
        return total


def _transposed_source(graph: Graph, node: int):
    """x when node is transpose(x) of a matrix, else None."""
    if graph.op(node) == "transpose" and tuple(graph.attrs(node)["perm"]) == (1, 0):
        return graph.operands(node)[0]
    return None


def _term_kind(graph: Graph, call: Call | None):
    """How a term of a sum stacks: ("product", transposed left) or ("columns",); None if it does not."""
    if call is None:
        return None
    op = graph.op(call.node)
    if op == "matmul" and call.kernel is np.matmul:
        left, right = call.operands
        if len(graph.shape(left)) == 2 and len(graph.shape(right)) == 2:
            return ("product", _transposed_source(graph, left) is not None)
    elif op == "reduce_sum" and isinstance(call.kernel, partial) and call.kernel.func == np.add.reduce \
            and not graph.attrs(call.node)["keepdims"] and tuple(graph.attrs(call.node)["axes"]) == (0,) \
            and len(graph.shape(call.operands[0])) == 2:
        return ("columns",)
    return None


def _chunks(terms: list) -> list[list]:
    """terms in consecutive chunks of at most STACKED_TERMS, as equal in size as they can be."""
    count = ceil(len(terms) / STACKED_TERMS)
    size, extra = divmod(len(terms), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        out.append(terms[start:end])
        start = end
    return out


def _bytes(graph: Graph, nodes, bindings: dict) -> int:
    return sum(prod(resolve(graph.shape(n), bindings)) * np.dtype(DTYPES[graph.dtype(n)]).itemsize for n in nodes)


def _stacked_call(graph: Graph, kind: tuple, terms: list, producer: dict, host: int, bindings: dict) -> Call:
    calls = [producer[t] for t in terms]
    if kind[0] == "columns":
        columns = tuple(c.operands[0] for c in calls)
        return Call(host, StackedColumnSums(_bytes(graph, columns, bindings)), columns)
    transposed = kind[1]
    lefts = tuple(_transposed_source(graph, c.operands[0]) if transposed else c.operands[0] for c in calls)
    rights = tuple(c.operands[1] for c in calls)
    rows, cols = resolve(graph.shape(host), bindings)
    depth = sum(resolve(graph.shape(r), bindings)[0] for r in rights)
    return Call(host, StackedProducts(len(calls), transposed, rows * depth * cols,
                                      _bytes(graph, lefts + rights, bindings)), lefts + rights)


def stacked_sums(graph: Graph, calls: list, roots: set, bindings: dict) -> list:
    """Each sum (a tree of `add`s of one shape and float dtype, read only by each other) with at
    least STACKED_MIN_TERMS terms of one stacking kind read nowhere else becomes chunks of stacked
    terms (`StackedProducts`, `StackedColumnSums`), each computed where its last term was, and one
    `SumOfParts` of the chunks and the other terms where the sum was complete."""
    reads = read_counts(calls)
    producer = {call.node: call for call in calls}
    position = {call.node: i for i, call in enumerate(calls)}

    def link(node) -> bool:
        call = producer.get(node)
        if call is None or graph.op(node) != "add" or call.kernel is not np.add \
                or graph.dtype(node) not in ("f32", "f64"):
            return False
        shape = graph.shape(node)
        return all(graph.shape(o) == shape and graph.dtype(o) == graph.dtype(node) for o in call.operands)

    links = {call.node for call in calls if link(call.node)}
    reader = {}
    for call in calls:
        for o in call.operands:
            reader[o] = call.node
    interior = {n for n in links if n not in roots and reads.get(n) == 1 and reader[n] in links}
    replaced: dict[int, Call] = {}
    dropped: set[int] = set()
    for top in (n for n in links if n not in interior):
        leaves, adds, stack = [], [], [top]
        while stack:
            node = stack.pop()
            if node == top or node in interior:
                adds.append(node)
                stack.extend(reversed(producer[node].operands))
            else:
                leaves.append(node)
        kinds = {}
        for leaf in leaves:
            if leaf not in roots and reads.get(leaf) == 1:
                kind = _term_kind(graph, producer.get(leaf))
                if kind is not None:
                    kinds.setdefault(kind, []).append(leaf)
        chunk_of: dict[int, tuple] = {}
        for kind, terms in kinds.items():
            if len(terms) >= STACKED_MIN_TERMS:
                for chunk in _chunks(terms):
                    for term in chunk:
                        chunk_of[term] = (kind, tuple(chunk))
        if not chunk_of:
            continue
        parts, seen = [], set()
        for leaf in leaves:
            if leaf not in chunk_of:
                parts.append(leaf)
            elif chunk_of[leaf] not in seen:
                seen.add(chunk_of[leaf])
                kind, chunk = chunk_of[leaf]
                host = top if len(leaves) == len(chunk) else max(chunk, key=position.__getitem__)
                replaced[host] = _stacked_call(graph, kind, list(chunk), producer, host, bindings)
                parts.append(host)
                dropped.update(t for t in chunk if t != host)
        dropped.update(adds[1:])   # the sum's adds but its last
        if top not in replaced:
            replaced[top] = Call(top, SumOfParts(), tuple(parts))
    if not replaced:
        return calls
    out = [replaced.get(call.node, call) for call in calls if call.node not in dropped]
    return _without_unread(graph, out, roots)


def _without_unread(graph: Graph, calls: list, roots: set) -> list:
    """calls less those whose value no call reads any more (a transpose only a stacked term read),
    but never a root or a random draw (the draws keep their order)."""
    while True:
        reads = read_counts(calls)
        unread = {c.node for c in calls if c.node not in roots and not reads.get(c.node)
                  and not registry.get(graph.op(c.node)).random}
        if not unread:
            return calls
        calls = [c for c in calls if c.node not in unread]
