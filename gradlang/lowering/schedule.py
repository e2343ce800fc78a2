"""Scheduling: IR → a flat list of steps over numbered buffer slots.

Done once per (graph, outputs, binding of the symbolic dimensions). Every shape is concrete here, so
each kernel is specialised to its shapes; nodes that do not depend on inputs or params (constants,
`size` queries, arithmetic on them) are computed now, once, and become preloaded slots. Rewrites
that only pay off once shapes are known follow, each a function from the list of calls to a new
one: a softmax cross-entropy and its gradient share their exponentials, `sum(a * b)` becomes one
dot product, kernels write into the buffer of an operand that dies with them (what `out=` does in
careful hand-written NumPy), and for the training step large products get memory allocated once.
Liveness analysis frees each buffer after its last use. The training step then does nothing but
call kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from ..analysis.index_checks import IndexGuard, guarded
from ..errors import GradError
from ..ir.graph import Graph, check_size, memory_limit
from ..ops import helper, registry
from ..ops.nn_ops import CHUNK_ELEMENTS, Chunked, MaxPool
from ..ops.primitives import SoftmaxCrossEntropy
from ..ops.registry import CONTRACTION, VIEW, RunContext
from ..ops.shapes import DTYPES, ShapeError, broadcast, resolve
from ..passes.modes import for_mode
from .calls import Call, read_counts
from .flops import node_flops
from .sums import StackedColumnSums, StackedProducts, SumOfParts, stacked_sums


@dataclass
class Schedule:
    steps: list            # (kernel, operand slots, result slot, slots to free afterwards)
    n_slots: int
    preloaded: dict        # slot → array computed at schedule time
    input_slots: dict      # input name → slot
    param_slots: dict      # param (or state) name → slot
    output_slots: list     # slot of each requested output, in order
    nodes: list            # the node computed by each step (for error reporting and profiling)
    # per output: its memory belongs to this step alone (a kernel's fresh result, no view, constant,
    # input or param, shared with no other output), so a caller may overwrite it once it is done
    fresh_outputs: tuple = ()
    output_nodes: tuple = ()   # the node of each requested output, in order
    rewrites: dict = field(default_factory=dict)   # REWRITES name → the calls it changed (absent: not made)
    largest_product: int = 0   # multiply-adds of the step's largest single BLAS product (runtime/threads.py)
    # the steps the helper thread runs (see `_helper_lane`): each run of consecutive ones is one task,
    # queued when the step reaches the run's end (gathering runs into fewer tasks, to wake the helper
    # less often, measured slower: the helper starts later and finishes after the step)
    helper_steps: frozenset = frozenset()
    # the steps from this one on read values of the helper's: the step runs them once it has waited
    # for the helper (sums of stacked parts, lowering/sums.py); None: there are none
    join_at: int | None = None


class InPlace:
    """A kernel that takes `out=` run so that it writes its result into operand `index`'s buffer."""

    __slots__ = ("kernel", "index")

    def __init__(self, kernel, index: int):
        self.kernel, self.index = kernel, index

    def __call__(self, *args):
        return self.kernel(*args, out=args[self.index])


class WhereInto:
    """`where(cond, a, b)` written into the buffer of `a` (index 1) or `b` (index 2).

    When the other branch is +0.0 (a ReLU's backward, a mask) the kept branch's bits are ANDed with
    an all-ones-or-zeros mask made from the condition: branch-free, so several times faster than a
    masked copy on a random mask, and exactly `where` (a NaN that is masked off becomes +0.0).
    Otherwise the other branch is copied over the positions that select it; with `invert_cond`, the
    condition's dead buffer is negated in place rather than a fresh mask allocated."""

    __slots__ = ("index", "invert_cond", "bits")

    def __init__(self, index: int, invert_cond: bool, bits):
        self.index, self.invert_cond, self.bits = index, invert_cond, bits

    def __call__(self, cond, a, b):
        kept = a if self.index == 1 else b
        if self.bits is not None:
            mask = cond.astype(self.bits)                  # 1 where cond holds, else 0
            if self.index == 1:
                np.negative(mask, out=mask)                # all ones where cond holds
            else:
                np.subtract(mask, 1, out=mask)             # all ones where it does not
            view = kept.view(self.bits)
            np.bitwise_and(view, mask, out=view)
        elif self.index == 1:
            np.copyto(a, b, where=np.logical_not(cond, out=cond if self.invert_cond else None))
        else:
            np.copyto(b, a, where=cond)
        return kept


class IntoBuffer:
    """A kernel that takes `out=` run so that it writes into memory the schedule allocated once."""

    __slots__ = ("kernel", "buffer")

    def __init__(self, kernel, buffer: np.ndarray):
        self.kernel, self.buffer = kernel, buffer

    def __call__(self, *args):
        return self.kernel(*args, out=self.buffer)


def _positive_zero(value) -> bool:
    return value is not None and np.size(value) == 1 and value.reshape(()) == 0 and not np.signbit(value).any()


def _resolved_attrs(prim, attrs: dict, bindings: dict) -> dict:
    if not prim.shape_attrs:
        return attrs
    out = dict(attrs)
    for key in prim.shape_attrs:
        out[key] = resolve(attrs[key], bindings)
    return out


def _accepts_out(kernel) -> bool:
    """Elementwise kernels that take `out=`: ufuncs (not matmul, a generalised ufunc, which would
    have to copy an operand its result overlaps) and kernels marked `accepts_out`."""
    return ((isinstance(kernel, np.ufunc) and kernel.nout == 1 and kernel.signature is None)
            or getattr(kernel, "accepts_out", False))


def _fuse_dot_products(graph: Graph, calls: list, roots: set, bindings: dict) -> list:
    """`reduce_sum(mul(a, b))` over every axis, with `a` and `b` of the product's shape and the
    product read nowhere else, becomes one `vdot(a, b)`: one BLAS call, no temporary array."""
    reads = read_counts(calls)
    producer = {call.node: call for call in calls}
    fused, dropped = {}, set()
    for call in calls:
        node = call.node
        if graph.op(node) != "reduce_sum" or graph.attrs(node)["keepdims"]:
            continue
        (product,) = call.operands
        shape = resolve(graph.shape(product), bindings)
        if (product not in producer or producer[product].kernel is not np.multiply or product in roots
                or reads.get(product) != 1 or not shape or graph.dtype(product) not in ("f32", "f64")
                or len(graph.attrs(node)["axes"]) != len(shape)):
            continue
        a, b = producer[product].operands
        if resolve(graph.shape(a), bindings) == shape == resolve(graph.shape(b), bindings):
            fused[node] = Call(node, np.vdot, (a, b))
            dropped.add(product)
    return [fused.get(call.node, call) for call in calls if call.node not in dropped]


# OpenBLAS multiplies by a transposed right operand more slowly than by a contiguous one (measured
# here: [32,512] @ [128,512]ᵀ 94 µs, by a contiguous [512,128] 57 µs; 3–39% over the shapes tried; a
# transposed left operand made no difference), while a
# transposing copy costs about two elements per microsecond more than the estimate for a plain one.
TRANSPOSED_PRODUCT_LOSS = 0.15


class TransposedCopy:
    """A transpose materialised as a contiguous copy (see `_contiguous_transposes`)."""

    __slots__ = ("perm",)

    def __init__(self, perm: tuple):
        self.perm = perm

    def __call__(self, x):
        return np.ascontiguousarray(x.transpose(self.perm))


def _contiguous_transposes(graph: Graph, calls: list, roots: set, bindings: dict) -> list:
    """A transposed matrix that many products read — an RNN's Uᵀ in the backward product of every time
    step — is copied once into contiguous memory when the products' estimated loss to the transposed
    layout exceeds the copy's estimated cost. Values are unchanged; the copy is still treated as a
    view by the rewrites that follow (it may only be read), which is safe."""
    product_us: dict[int, float] = {}
    for call in calls:
        if graph.op(call.node) == "matmul":   # the right operand: a transposed left one measured no slower
            right = call.operands[1]
            product_us[right] = product_us.get(right, 0.0) + _estimated_us(graph, call.node, bindings)
    out = []
    for call in calls:
        node = call.node
        if (graph.op(node) == "transpose" and node in product_us
                and graph.attrs(node)["perm"][-1] != len(graph.shape(node)) - 1
                and TRANSPOSED_PRODUCT_LOSS * product_us[node] > 2 * _estimated_us(graph, node, bindings, copy=True)):
            call = Call(node, TransposedCopy(graph.attrs(node)["perm"]), call.operands)
        out.append(call)
    return out


def _share_softmax_cross_entropy(graph: Graph, calls: list, roots: set, bindings: dict) -> list:
    """A softmax cross-entropy and its gradient on the same logits and labels, the gradient computed
    later in the step, share one `SoftmaxCrossEntropy(keep=True)`: the gradient reuses the forward's
    exponentials. A product of that gradient (read nowhere else) with a per-row factor — the
    upstream cotangent, 1/B for a mean — is folded into the gradient's own scaling pass."""
    forwards = {}
    for i, call in enumerate(calls):
        if graph.op(call.node) == "softmax_cross_entropy":
            forwards.setdefault(call.operands, (i, call))
    pairs = {}
    for i, call in enumerate(calls):
        if graph.op(call.node) == "softmax_cross_entropy_grad" and call.operands in forwards \
                and forwards[call.operands][0] < i:
            logits = call.operands[0]
            pairs[call.node] = SoftmaxCrossEntropy(resolve(graph.shape(logits), bindings), keep=True)
    if not pairs:
        return calls
    reads = read_counts(calls)
    grads = {call.node: call for call in calls if call.node in pairs}
    scaled = {}
    for call in calls:
        if graph.op(call.node) != "mul":
            continue
        grad = next((o for o in call.operands if o in pairs), None)
        if grad is None or grad in roots or reads[grad] != 1 or call.operands[0] == call.operands[1]:
            continue
        factor = call.operands[1] if call.operands[0] == grad else call.operands[0]
        grad_shape, factor_shape = resolve(graph.shape(grad), bindings), resolve(graph.shape(factor), bindings)
        if factor_shape[-1:] in ((), (1,)) and broadcast(factor_shape, grad_shape) == grad_shape \
                and graph.dtype(factor) == graph.dtype(grad):
            scaled[call.node] = (grad, factor)
    folded = {grad for grad, _ in scaled.values()}
    forward_of = {forwards[grads[g].operands][1].node: pairs[g] for g in pairs}
    out = []
    for call in calls:
        if call.node in folded:
            continue
        if call.node in forward_of:
            call = Call(call.node, forward_of[call.node].forward, call.operands)
        elif call.node in pairs:
            call = Call(call.node, pairs[call.node].gradient, call.operands)
        elif call.node in scaled:
            grad, factor = scaled[call.node]
            call = Call(call.node, pairs[grad].scaled_gradient, (factor,) + grads[grad].operands)
        out.append(call)
    return out


def _share_max_pool(graph: Graph, calls: list, roots: set, bindings: dict) -> list:
    """A max_pool2d and its gradient on the same input and windows, the gradient computed later in
    the step, share one `MaxPool(keep=True)`: the forward keeps where each window's first maximum is,
    and the gradient writes g there instead of finding the maxima again."""
    forwards = {}
    for i, call in enumerate(calls):
        if graph.op(call.node) == "max_pool2d":
            forwards.setdefault((call.operands[0], _window_key(graph, call.node)), (i, call))
    shared = {}
    for i, call in enumerate(calls):
        if graph.op(call.node) != "max_pool2d_grad":
            continue
        key = (call.operands[0], _window_key(graph, call.node))
        if key in forwards and forwards[key][0] < i:
            forward = forwards[key][1].node
            if forward not in shared:
                x = call.operands[0]
                pool = MaxPool(graph.attrs(call.node), resolve(graph.shape(x), bindings), graph.dtype(x), keep=True)
                shared[forward], shared[call.node] = pool.forward, pool.gradient
    return [Call(call.node, shared[call.node], call.operands) if call.node in shared else call for call in calls]


# The estimate of a kernel's time that places work on the helper (`_helper_lane`): a fixed cost per
# call, products at PRODUCT_FLOPS_PER_US, anything else at ELEMENTS_PER_US elements written; and the
# helper's kernels as HELPER_SLOWER times slower (their operands are in the other core's cache).
CALL_US, PRODUCT_FLOPS_PER_US, ELEMENTS_PER_US, HELPER_SLOWER = 1.5, 50_000, 1_000, 1.25
# A product estimated at this many microseconds or more is "large": worth a hand-off to the helper
# (whose operands come from the other core's cache: smaller products measured several times slower
# there, and the LSTM step slower overall), and what the critical path is made of. A lane with less
# estimated work than this is not worth its hand-offs either.
HELPER_MIN_US = 100


def _estimated_us(graph: Graph, node: int, bindings: dict, copy: bool = False) -> float:
    """A rough time for node's kernel, in microseconds (only ratios matter); with `copy`, for a view
    made a copy."""
    op = graph.op(node)
    if registry.has(op, VIEW) and not copy:
        return CALL_US / 3
    if registry.has(op, CONTRACTION):
        return CALL_US + node_flops(graph, node, bindings) / PRODUCT_FLOPS_PER_US
    return CALL_US + prod(resolve(graph.shape(node), bindings)) / ELEMENTS_PER_US


def _call_us(graph: Graph, call: Call, bindings: dict) -> float:
    """`_estimated_us` of a call, for a stacked sum from what it stacks."""
    kernel = call.kernel
    if isinstance(kernel, StackedProducts):
        return CALL_US + 2 * kernel.multiply_adds / PRODUCT_FLOPS_PER_US
    if isinstance(kernel, StackedColumnSums):
        return CALL_US + sum(prod(resolve(graph.shape(o), bindings)) for o in call.operands) / ELEMENTS_PER_US
    return _estimated_us(graph, call.node, bindings)


def _contraction(graph: Graph, call: Call) -> bool:
    return getattr(call.kernel, "contraction", registry.has(graph.op(call.node), CONTRACTION))


def _join_sums(calls: list, roots: set) -> set:
    """The sums of stacked parts (`SumOfParts`) that are outputs no call reads: the step can make
    them after it has waited for the helper, so the helper may compute their parts."""
    read = {o for call in calls for o in call.operands}
    return {call.node for call in calls
            if isinstance(call.kernel, SumOfParts) and call.node in roots and call.node not in read}


def _helper_lane(graph: Graph, calls: list, roots: set, bindings: dict) -> frozenset:
    """The calls the helper thread runs, beside the step. Candidates are the calls no large product
    depends on that depend on a large product no other large product depends on and that heads no
    chain of work longer than itself — the weight gradients (`xᵀ @ g`, a filter gradient) with their
    sums over time steps and uses, not the product that starts an LSTM's backward pass — and the
    cheap calls only those read (a transposed view of x); never a call that draws random numbers
    (the draws keep their order). The step never reads a value the helper computes, so it waits
    for the helper only when it returns: work the helper does after the step's last call is time
    lost. Walking back from the end, a candidate therefore goes to the helper only while the
    helper's (estimated) work from it on fits in the step's own work from it on, and only if no call
    the step keeps reads it (nor shares state with it: `_paired`). The exception is a sum of stacked
    parts that only the caller reads (`_join_sums`): the step makes it after the wait, so its parts
    may be the helper's."""
    readers: dict[int, list] = {}
    for call in calls:
        for o in set(call.operands):
            readers.setdefault(o, []).append(call.node)
    cost = {call.node: _call_us(graph, call, bindings) for call in calls}
    large = {call.node for call in calls if _contraction(graph, call) and cost[call.node] >= HELPER_MIN_US}
    joins = _join_sums(calls, roots)
    feeds_large: dict[int, bool] = {}
    after: dict[int, float] = {}   # the longest chain of estimated work that waits for the node's value
    for call in reversed(calls):
        node = call.node
        feeds_large[node] = any(r in large or feeds_large[r] for r in readers.get(node, ()))
        after[node] = max((cost[r] + after[r] for r in readers.get(node, ())), default=0.0)
    candidates: set[int] = set()
    for call in calls:
        node = call.node
        seed = node in large and after[node] <= cost[node]   # not a product at the head of a long chain
        if not feeds_large[node] and not registry.get(graph.op(node)).random and (
                seed or any(o in candidates for o in call.operands)):
            candidates.add(node)
    for call in reversed(calls):   # a value read only by candidates is a candidate
        node = call.node
        if (node not in candidates and node not in roots and readers.get(node)
                and not registry.get(graph.op(node)).random and all(r in candidates for r in readers[node])):
            candidates.add(node)
    lane: set[int] = set()
    kept: set[int] = set()
    step_after = helper_after = 0.0
    paired = _paired(calls)
    for call in reversed(calls):
        node = call.node
        if node in joins:   # made after the wait for the helper (see `_after_the_helper`)
            continue
        if (node in candidates and node not in kept and node not in paired
                and helper_after + HELPER_SLOWER * cost[node] <= step_after):
            lane.add(node)
            helper_after += HELPER_SLOWER * cost[node]
        else:
            step_after += cost[node]
            kept.update(call.operands)   # whatever the step computes, it computes from its own values
    return frozenset(lane) if helper_after >= HELPER_MIN_US else frozenset()


def _after_the_helper(calls: list, roots: set, lane: frozenset) -> tuple[list, int | None]:
    """calls with the join sums that read a value of the helper's moved to the end, where the step
    makes them once the helper is done, and the position of the first (`Schedule.join_at`; None:
    there are none)."""
    joins = _join_sums(calls, roots)
    late = {call.node for call in calls if call.node in joins and any(o in lane for o in call.operands)}
    ordered = [c for c in calls if c.node not in late] + [c for c in calls if c.node in late]
    return ordered, (len(calls) - len(late) if late else None)


def _paired(calls: list) -> set:
    """Calls whose kernels share an object with another call's (a max pool and its gradient, a softmax
    cross-entropy and its gradient): state passes between them outside their operands, so they stay
    with the step, in its order."""
    owners: dict[int, list] = {}
    for call in calls:
        owner = getattr(call.kernel, "__self__", None)
        if owner is not None and not isinstance(owner, (type, type(np), np.ufunc)):   # not np.add.reduce's
            owners.setdefault(id(owner), []).append(call.node)
    return {node for nodes in owners.values() if len(nodes) > 1 for node in nodes}


def _shares_chunks(kernel) -> bool:
    """Whether a kernel works through the batch in parts it can share with the helper (convolutions,
    max pooling: `ops/nn_ops.py: Chunked`)."""
    return isinstance(kernel, Chunked) or isinstance(getattr(kernel, "__self__", None), Chunked)


def _spread_chunks(calls: list) -> list:
    """Kernels that work through the batch in parts share them with the helper. The kernels of a
    max-pool pair share one owner (made for this schedule alone), which then shares for both."""
    out = []
    for call in calls:
        kernel = call.kernel
        if isinstance(kernel, Chunked):
            kernel = kernel.spread()
        elif _shares_chunks(kernel):
            kernel.__self__.each = helper.shared
        out.append(Call(call.node, kernel, call.operands))
    return out


def _window_key(graph: Graph, node: int) -> tuple:
    attrs = graph.attrs(node)
    return tuple(attrs[k] for k in ("kernel", "stride", "padding"))


def _in_place(graph: Graph, calls: list, roots: set, bindings: dict, static: dict,
              lane: frozenset = frozenset()) -> list:
    """Let a kernel write its result into an operand's buffer when that buffer is dead afterwards: it
    was computed by this schedule (not an input, param or constant), nothing else reads it or any
    view of it later, and it has the result's shape and dtype. Saves an allocation and a pass of
    fresh memory per op. With a helper `lane`, a kernel the step runs itself never writes into a
    buffer the helper reads: the helper may not have read it yet."""
    position = {call.node: i for i, call in enumerate(calls)}
    buffer = {}                  # node → the node whose kernel allocated the memory it lives in
    for call in calls:
        ops = call.operands
        buffer[call.node] = buffer.get(ops[0], ops[0]) if registry.has(graph.op(call.node), VIEW) else call.node
    last_read: dict[int, int] = {}
    for i, call in enumerate(calls):
        for o in call.operands:
            b = buffer.get(o)
            if b is not None:
                last_read[b] = max(last_read.get(b, -1), i)
    pinned = {buffer.get(r) for r in roots}   # outputs are handed to the caller: never overwritten
    helper_read = {buffer.get(o) for call in calls if call.node in lane for o in call.operands}
    shapes: dict[int, tuple] = {}

    def shape(node):
        if node not in shapes:
            shapes[node] = resolve(graph.shape(node), bindings)
        return shapes[node]

    def dead_here(o, i, like) -> bool:
        """Whether `o`'s buffer may take the result of step i, a value typed like node `like`."""
        if o not in position or registry.has(graph.op(o), VIEW):
            return False
        owner = buffer[o]   # o itself, or the operand whose buffer o's kernel already wrote into
        if owner in helper_read and calls[i].node not in lane:
            return False
        return (owner not in pinned and last_read.get(owner) == i
                and graph.dtype(o) == graph.dtype(like) and shape(o) == shape(like))

    out = []
    for i, call in enumerate(calls):
        node, kernel, ops = call.node, call.kernel, call.operands
        target = None
        if graph.op(node) == "where" and shape(node):
            target = next((k for k in (1, 2) if dead_here(ops[k], i, node)), None)
            if target is not None:
                cond, other = ops[0], ops[3 - target]
                dtype = np.dtype(DTYPES[graph.dtype(node)])
                bits = (np.dtype(f"u{dtype.itemsize}") if dtype.kind == "f" and _positive_zero(static.get(other))
                        else None)
                kernel = WhereInto(target, target == 1 and cond not in ops[1:] and dead_here(cond, i, cond)
                                   and shape(cond) == shape(node), bits)
        elif _accepts_out(kernel) and shape(node):
            target = next((k for k, o in enumerate(ops) if dead_here(o, i, node)), None)
            if target is not None:
                kernel = InPlace(kernel, target)
        if target is not None:
            owner = buffer[ops[target]]
            buffer[node] = owner
            if node in helper_read:   # the helper reads the value now living in the owner's buffer
                helper_read.add(owner)
            last_read[owner] = max(last_read[owner], last_read.get(node, -1))
            if node in pinned:
                pinned.add(owner)
        out.append(Call(node, kernel, ops))
    return out


# Results at least this large get memory allocated once, when buffers are reused: below it malloc
# hands back recently freed heap memory; above it a fresh array is new pages, faulted in every step.
REUSE_MIN_BYTES = 64 * 1024


def _memory_owner(graph: Graph, call: Call, owner: dict) -> int:
    """The node whose kernel allocated the memory `call`'s result lives in."""
    kernel, ops = call.kernel, call.operands
    if registry.has(graph.op(call.node), VIEW) and not isinstance(kernel, TransposedCopy):
        return owner.get(ops[0], ops[0])
    if isinstance(kernel, (InPlace, WhereInto)):
        return owner.get(ops[kernel.index], ops[kernel.index])
    return call.node


def _reuse_buffers(graph: Graph, calls: list, roots: set, bindings: dict, lane: frozenset = frozenset()) -> list:
    """Give every large float matrix product a buffer made once, at schedule time, and shared with
    other products whose lifetimes do not overlap (a buffer returns to the pool after the last read
    of anything living in it). The schedule's outputs keep theirs to the end of the step, so each
    run overwrites the previous run's outputs: only for a caller that consumes them first, as the
    training step does. Products only: their result is row-major whatever their operands' layout,
    while an elementwise ufunc keeps a transposed operand's layout, which a row-major buffer would
    change (and with it the order of later sums). A buffer the helper thread reads is not reused: the
    step may be ahead of the helper."""
    owner: dict[int, int] = {}
    last_read: dict[int, int] = {}
    for i, call in enumerate(calls):
        for o in call.operands:
            if o in owner:
                last_read[owner[o]] = i
        owner[call.node] = _memory_owner(graph, call, owner)
    for call in calls:
        if call.node in lane:
            for o in call.operands:
                if o in owner:
                    last_read[owner[o]] = len(calls)
    for r in roots:
        if r in owner:
            last_read[owner[r]] = len(calls)
    released: dict[int, list] = {}
    for node, i in last_read.items():
        released.setdefault(i, []).append(node)
    pool: dict[tuple, list] = {}
    held: dict[int, tuple] = {}
    out = []
    for i, call in enumerate(calls):
        node, kernel = call.node, call.kernel
        if kernel is np.matmul and graph.dtype(node) in ("f32", "f64"):
            key = (resolve(graph.shape(node), bindings), np.dtype(DTYPES[graph.dtype(node)]))
            if int(np.prod(key[0], dtype=np.int64)) * key[1].itemsize >= REUSE_MIN_BYTES:
                free = pool.get(key)
                buffer = free.pop() if free else np.empty(*key)
                held[node] = (key, buffer)
                kernel = IntoBuffer(kernel, buffer)
        out.append(Call(node, kernel, call.operands))
        for dead in released.get(i, ()):
            if dead in held:
                key, buffer = held.pop(dead)
                pool.setdefault(key, []).append(buffer)
    return out


# The rewrites the scheduler makes once shapes are known, in the order it makes them. Each can be
# turned off by name (`disabled`; `gradlang … --no-opt NAME`, `compile(no_opt=…)`), for debugging and
# for measuring what it gains; none changes a result beyond float rounding (tests/test_schedule_rewrites.py).
REWRITES = {
    "shared-softmax": "a softmax cross-entropy and its gradient on the same logits share the exponentials",
    "pool-argmax": "max_pool2d keeps where each window's maximum is, for its gradient",
    "dot-products": "sum(a * b) over every axis is one dot product",
    "contiguous-transpose": "a transposed matrix read by many products is copied once into contiguous memory",
    "stacked-sums": "a sum of many small products (a recurrent weight's gradient over time steps) is a few "
                    "large ones",
    "in-place": "a kernel writes its result into the buffer of an operand that dies with it",
    "reuse-buffers": "the training step's large matrix products get memory allocated once",
    "helper-thread": "a second thread computes the weight gradients beside the step, and half of each "
                     "convolution's batch (with two CPUs; not when BLAS threads the products)",
}


def schedule(graph: Graph, outputs: list[str], bindings: dict[str, int],
             context: RunContext | None = None, reuse_buffers: bool = False,
             disabled: frozenset = frozenset()) -> Schedule:
    """The schedule of `outputs`. With `reuse_buffers`, large matrix products live in memory allocated
    once (see `_reuse_buffers`): each run then overwrites the outputs of the one before. The rewrites
    named in `disabled` (REWRITES) are not made; the schedule counts the calls each one changed. A value
    that depends on the kind of run (`training(a, b)`) is the branch `context` chooses (evaluation without
    one): the other branch is not computed."""
    graph = for_mode(graph, context is not None and context.training)
    roots = [graph.outputs[name] for name in outputs]
    order = graph.order(roots=roots)
    slot = {node: i for i, node in enumerate(order)}
    static: dict[int, np.ndarray] = {}
    guards: dict[int, tuple] = {}   # node → its IndexGuard's settings (indices not checked on entry)
    input_slots, param_slots = {}, {}
    calls = []
    for node in order:
        d = graph.data(node)
        op = d["op"]
        if op == "input":
            input_slots[d["attrs"]["name"]] = slot[node]
            continue
        if op == "param" or op == "state":   # a state is read as a param is (its name is no param's)
            param_slots[d["attrs"]["name"]] = slot[node]
            continue
        prim = registry.get(op)
        try:
            in_shapes = [resolve(graph.shape(o), bindings) for o in d["operands"]]
            out_shape = resolve(d["shape"], bindings)
            attrs = _resolved_attrs(prim, d["attrs"], bindings)
        except KeyError as unbound:   # a symbolic size that only a shape list names, never an input
            raise GradError(f"{op}: the size {unbound.args[0]!r} is given by no input of the feed, so it has no "
                            "value", d.get("site") or d["span"]) from None
        if not registry.has(op, VIEW):   # refused before a kernel allocates it, naming the op and its line
            check_size(out_shape, d["dtype"], f"the result of {op}", d.get("site") or d["span"])
        try:
            if prim.random:
                kernel = prim.kernel(attrs, in_shapes, out_shape, d["dtype"], context or RunContext(None, False))
            else:
                kernel = prim.kernel(attrs, in_shapes, out_shape, d["dtype"])
        except ShapeError as err:   # what only the bound sizes show (a causal mask's queries outnumbering keys)
            raise GradError(str(err), d.get("site") or d["span"]) from None
        if guarded(graph, node):
            guards[node] = (prim.index.position, prim.index.bound(attrs, in_shapes), prim.index.noun)
            kernel = IndexGuard(kernel, *guards[node])
        static_op = op == "const" or op == "size" or d["operands"] and all(o in static for o in d["operands"])
        if static_op and not prim.random:
            try:
                with np.errstate(all="ignore"):
                    static[node] = kernel(*[static.get(o) for o in d["operands"]])
            except Exception as err:  # a constant expression that cannot be computed
                raise GradError(f"cannot evaluate {op} at compile time: {err}", d["span"]) from None
            continue
        calls.append(Call(node, kernel, tuple(d["operands"])))

    made: dict[str, int] = {}

    def rewrite(name: str, apply, *args) -> list:
        if name in disabled:
            return calls
        before = {call.node: call.kernel for call in calls}
        after = apply(graph, calls, set(roots), bindings, *args)
        kept = {call.node: call.kernel for call in after}
        made[name] = sum(node not in kept or kept[node] is not kernel for node, kernel in before.items())
        return after

    calls = rewrite("shared-softmax", _share_softmax_cross_entropy)
    calls = rewrite("pool-argmax", _share_max_pool)
    calls = rewrite("dot-products", _fuse_dot_products)
    calls = rewrite("contiguous-transpose", _contiguous_transposes)
    calls = rewrite("stacked-sums", stacked_sums)
    calls = [Call(c.node, IndexGuard(c.kernel, *guards[c.node]), c.operands)   # a fused kernel checks too
             if c.node in guards and not isinstance(c.kernel, IndexGuard) else c for c in calls]
    largest_product = max((getattr(c.kernel, "multiply_adds", None) or _product_size(graph, c.node, bindings)
                           for c in calls), default=0)
    lane, join_at = frozenset(), None
    if "helper-thread" not in disabled and helper.usable(largest_product):
        lane = _helper_lane(graph, calls, set(roots), bindings)
        made["helper-thread"] = len(lane) + sum(_shares_chunks(c.kernel) for c in calls)
        calls, join_at = _after_the_helper(calls, set(roots), lane)
        calls = _spread_chunks(calls)
    calls = rewrite("in-place", _in_place, static, lane)
    if reuse_buffers:
        calls = rewrite("reuse-buffers", _reuse_buffers, lane)
    last_use: dict[int, int] = {}
    for i, call in enumerate(calls):
        for o in call.operands:
            last_use[o] = i
    keep = set(roots) | set(static)
    frees: list[list[int]] = [[] for _ in calls]
    for node, i in last_use.items():
        if node not in keep and graph.op(node) not in ("input", "param", "state"):
            frees[i].append(slot[node])
    _check_peak_memory(graph, calls, frees, slot, bindings)
    steps = [(call.kernel, tuple(slot[o] for o in call.operands), slot[call.node], tuple(frees[i]))
             for i, call in enumerate(calls)]
    return Schedule(steps, len(order), {slot[n]: v for n, v in static.items()}, input_slots, param_slots,
                    [slot[r] for r in roots], [call.node for call in calls], _fresh(graph, calls, roots),
                    tuple(roots), made, largest_product,
                    frozenset(i for i, call in enumerate(calls) if call.node in lane),
                    join_at)


def _product_size(graph: Graph, node: int, bindings: dict) -> int:
    """Multiply-adds of the largest single BLAS product `node`'s kernel makes: a matrix product's own
    (per matrix of a batch); for a convolution, a bound on any chunk's (nn_ops.CHUNK_ELEMENTS window
    values, each meeting at most the larger channel count); 0 for an op that makes none."""
    op = graph.op(node)
    if op == "matmul":
        a, b = (resolve(graph.shape(o), bindings) for o in graph.operands(node))
        return a[-2] * a[-1] * b[-1]
    if op in ("conv2d", "conv2d_transpose", "conv2d_filter_grad"):
        return CHUNK_ELEMENTS * max(resolve(graph.shape(o), bindings)[1] for o in (*graph.operands(node), node))
    return 0


def _check_peak_memory(graph: Graph, calls: list, frees: list, slot: dict, bindings: dict) -> None:
    """Refuse a schedule whose live results would together need more than the memory limit, naming the
    op at which they would: every value may fit alone while a batch's intermediates do not. Counts the
    memory each kernel allocates (not views, nor results written into an operand), freed after last use,
    and while it runs the scratch memory a kernel says it takes (`scratch_bytes`: stacked sums)."""
    limit, live, owner = memory_limit(), 0, {}
    size: dict[int, int] = {}
    for i, call in enumerate(calls):
        owner[call.node] = _memory_owner(graph, call, owner)
        if owner[call.node] == call.node:
            shape = resolve(graph.shape(call.node), bindings)
            itemsize = np.dtype(DTYPES[graph.dtype(call.node)]).itemsize
            size[slot[call.node]] = int(np.prod(shape, dtype=np.int64)) * itemsize
            live += size[slot[call.node]]
        scratch = getattr(call.kernel, "scratch_bytes", 0)
        if live + scratch > limit:
            d = graph.data(call.node)
            raise GradError(f"the intermediate values of one step would need {live + scratch:,} bytes at this "
                            f"{d['op']}, more than the limit of {limit:,} bytes (the machine's memory, or "
                            f"$GRADLANG_MAX_BYTES); use a smaller batch", d.get("site") or d["span"])
        live -= sum(size.pop(freed, 0) for freed in frees[i])


def _fresh(graph: Graph, calls: list, roots: list) -> tuple:
    """For each root: whether its memory is the step's own and shared with no other root."""
    owner: dict[int, int] = {}
    for call in calls:
        owner[call.node] = _memory_owner(graph, call, owner)
    memory = [owner.get(r) for r in roots]
    return tuple(m is not None and not registry.has(graph.op(r), VIEW) and memory.count(m) == 1
                 for r, m in zip(roots, memory))
