"""`einsum`, lowered at elaboration to primitives that exist: transpose, reshape, slice, matmul, mul and
reduce_sum. There is no einsum primitive, so its gradient, ONNX export and schedule are those of the ops
it becomes.

The subscripts are NumPy's: a term of letters per operand, `,` between the terms, `->` and the output's
letters (without them: the letters used once, in alphabetical order, uppercase first); `...` stands for
the leading axes a term does not name, broadcast between operands. A size-1 axis broadcasts against its
letter's size in another operand, as in NumPy.

The lowering, one step at a time, each a few primitives:

1. **Diagonals**: a letter repeated within one term (`ii`, trace and diagonal) is taken by moving the two
   axes last, flattening them, and slicing every (n + 1)-th element — a view, with no multiplication by an
   identity matrix (which would turn an infinity off the diagonal into NaN).
2. **Broadcast axes**: a size-1 axis whose letter is larger elsewhere is dropped (the operand is constant
   along it).
3. **Sums**: a letter that no other operand and not the output uses is summed out at once.
4. **Pairs**, left to right: the letters both share and that are still needed are batch axes, those shared
   and no longer needed are contracted, the rest belong to one side. The two operands become
   `[batch, rows, inner]` and `[batch, inner, columns]` and one batched `matmul` computes the pair
   (flattening each group, which needs known sizes or a group of one axis); with nothing to contract, or a
   group that cannot be flattened (two symbolic sizes), a broadcast `mul` (then `reduce_sum`).
5. **Output**: a transpose into the output's order.
"""
from __future__ import annotations

import math

from ..errors import GradError, Span
from ..ops.shapes import fmt_type
from .values import Tensor

_ELLIPSIS = "."   # a label in a term's parsed list stands for one axis of `...` when it starts with this


def lower_einsum(el, span: Span, spec: str, tensors: list[Tensor]) -> Tensor:
    terms, output = _parse(spec, tensors, span)
    sizes = _sizes(terms, tensors, span)
    operands = []
    for t, labels in zip(tensors, terms):
        t, labels = _diagonals(el, span, t, labels)
        t, labels = _drop_broadcast(el, span, t, labels, sizes)
        operands.append((t, labels))
    for i in range(len(operands)):   # sums of letters no one else needs
        others = set(output).union(*(set(lab) for j, (_, lab) in enumerate(operands) if j != i))
        operands[i] = _sum_out(el, span, *operands[i], others)
    t, labels = operands[0]
    for i in range(1, len(operands)):
        later = set(output).union(*(set(lab) for _, lab in operands[i + 1:]))
        t, labels = _pair(el, span, (t, labels), operands[i], later)
    t, labels = _sum_out(el, span, t, labels, set(output))
    perm = tuple(labels.index(label) for label in output)
    if perm != tuple(range(len(perm))):
        t = el.emit("transpose", [t], span, perm=perm)
    return t


# ---- the subscripts ----------------------------------------------------------------------------

def _parse(spec: str, tensors: list[Tensor], span: Span) -> tuple[list[list[str]], list[str]]:
    """Each operand's labels (one per axis, `...` expanded to labels of its own) and the output's."""
    text = "".join(spec.split())
    if text.count("->") > 1:
        raise GradError(f"einsum: the subscripts {spec!r} have more than one ->", span)
    inputs, arrow, out_text = text.partition("->")
    term_texts = inputs.split(",")
    if len(term_texts) != len(tensors):
        raise GradError(f"einsum: the subscripts {spec!r} name {len(term_texts)} operand"
                        f"{'s' * (len(term_texts) != 1)}, but {len(tensors)} {'were' if len(tensors) != 1 else 'was'} "
                        "given", span)
    parsed = [_term(term, span, f"operand {i + 1}") for i, term in enumerate(term_texts)]
    terms, ellipsis_rank = [], 0
    for (letters, has_ellipsis), t, i in zip(parsed, tensors, range(len(tensors))):
        rank, named = len(t.shape), len(letters) - has_ellipsis
        if rank < named or not has_ellipsis and rank != named:
            raise GradError(f"einsum: operand {i + 1}, {fmt_type(t.shape, t.dtype)}, has {rank} ax"
                            f"{'i' if rank == 1 else 'e'}s, but its subscripts {term_texts[i]!r} name {named}", span)
        ellipsis_rank = max(ellipsis_rank, rank - named if has_ellipsis else 0)
    for (letters, has_ellipsis), t in zip(parsed, tensors):
        terms.append(_expand(letters, len(t.shape) - (len(letters) - has_ellipsis), ellipsis_rank))
    broadcast = [f"{_ELLIPSIS}{k}" for k in range(ellipsis_rank)]
    if arrow:
        letters, has_ellipsis = _term(out_text, span, "the output")
        if ellipsis_rank and not has_ellipsis:
            raise GradError(f"einsum: the output {out_text!r} needs ... for the {ellipsis_rank} ax"
                            f"{'i' if ellipsis_rank == 1 else 'e'}s the operands' ... stand for", span)
        for label in letters:
            if label != "..." and not any(label in term for term in terms):
                raise GradError(f"einsum: the output's index {label!r} is not an index of any operand", span)
            if label != "..." and letters.count(label) > 1:
                raise GradError(f"einsum: the output names the index {label!r} twice", span)
        output = _expand(letters, ellipsis_rank, ellipsis_rank)
    else:
        counts: dict[str, int] = {}
        for term in terms:
            for label in term:
                counts[label] = counts.get(label, 0) + 1
        output = broadcast + sorted(label for label, n in counts.items() if n == 1 and label[0] != _ELLIPSIS)
    return terms, output


def _term(text: str, span: Span, what: str) -> tuple[list[str], bool]:
    """The letters of one term in order, `...` kept as one item; whether it has one."""
    has_ellipsis = "..." in text
    if text.count("...") > 1:
        raise GradError(f"einsum: {what}'s subscripts {text!r} have ... more than once", span)
    rest = text.replace("...", "")
    bad = next((c for c in rest if not ("a" <= c <= "z" or "A" <= c <= "Z")), None)
    if bad is not None:
        raise GradError(f"einsum: {what}'s subscripts {text!r} hold {bad!r}; an index is one letter a-z or A-Z "
                        "(and ... stands for leading axes)", span)
    before, _, after = text.partition("...")
    return list(before) + (["..."] if has_ellipsis else []) + list(after), has_ellipsis


def _expand(letters: list[str], own_rank: int, ellipsis_rank: int) -> list[str]:
    """`...` replaced by the labels of the last `own_rank` of the ellipsis's `ellipsis_rank` axes (NumPy
    aligns them from the right, as broadcasting does)."""
    out = []
    for label in letters:
        if label == "...":
            out += [f"{_ELLIPSIS}{k}" for k in range(ellipsis_rank - own_rank, ellipsis_rank)]
        else:
            out.append(label)
    return out


def _name(label: str) -> str:
    return "..." if label[0] == _ELLIPSIS else repr(label)


def _sizes(terms: list[list[str]], tensors: list[Tensor], span: Span) -> dict:
    """Each label's size: equal wherever it appears, except that a size 1 broadcasts."""
    sizes: dict = {}
    for i, (term, t) in enumerate(zip(terms, tensors)):
        for label, dim in zip(term, t.shape):
            if term.count(label) > 1 and len({d for lab, d in zip(term, t.shape) if lab == label}) > 1:
                dims = [d for lab, d in zip(term, t.shape) if lab == label]
                raise GradError(f"einsum: the index {_name(label)} repeats in operand {i + 1} "
                                f"{fmt_type(t.shape, t.dtype)} over axes of sizes {' and '.join(map(str, dims))}; "
                                "a diagonal needs equal sizes", span)
            known = sizes.get(label, 1)
            if dim != 1 and known != 1 and dim != known:
                raise GradError(f"einsum: the index {_name(label)} has size {known} in one operand and {dim} in "
                                f"operand {i + 1} {fmt_type(t.shape, t.dtype)}", span)
            if dim != 1:
                sizes[label] = dim
            sizes.setdefault(label, 1)
    return sizes


# ---- the steps ---------------------------------------------------------------------------------

def _transposed(el, span, t: Tensor, labels: list[str], order: list[str]) -> Tensor:
    perm = tuple(labels.index(label) for label in order)
    return t if perm == tuple(range(len(perm))) else el.emit("transpose", [t], span, perm=perm)


def _reshaped(el, span, t: Tensor, shape: tuple) -> Tensor:
    return t if tuple(t.shape) == tuple(shape) else el.emit("reshape", [t], span, shape=tuple(shape))


def _diagonals(el, span, t: Tensor, labels: list[str]) -> tuple[Tensor, list[str]]:
    """t with each repeated label's diagonal taken (`ii` → `i`)."""
    while True:
        repeated = next((label for label in labels if labels.count(label) > 1), None)
        if repeated is None:
            return t, labels
        first = labels.index(repeated)
        second = labels.index(repeated, first + 1)
        n = t.shape[first]
        if not isinstance(n, int):
            raise GradError(f"einsum: cannot take the diagonal of the index {_name(repeated)}, whose size {n} is "
                            "known only at run time", span)
        rest = [label for k, label in enumerate(labels) if k not in (first, second)]
        perm = tuple(k for k in range(len(labels)) if k not in (first, second)) + (first, second)
        moved = t if perm == tuple(range(len(perm))) else el.emit("transpose", [t], span, perm=perm)
        lead = tuple(moved.shape[:-2])
        flat = _reshaped(el, span, moved, lead + (n * n,))
        if n > 1:
            every = (("s", None, None, None),) * len(lead) + (("s", None, None, n + 1),)
            flat = el.emit("slice", [flat], span, index=every)   # elements 0, n + 1, 2(n + 1), …
        t, labels = flat, rest + [repeated]


def _drop_broadcast(el, span, t: Tensor, labels: list[str], sizes: dict) -> tuple[Tensor, list[str]]:
    """t without the size-1 axes whose label is larger elsewhere: t is constant along them."""
    keep = [k for k, (label, dim) in enumerate(zip(labels, t.shape)) if not (dim == 1 and sizes[label] != 1)]
    if len(keep) == len(labels):
        return t, labels
    return _reshaped(el, span, t, tuple(t.shape[k] for k in keep)), [labels[k] for k in keep]


def _sum_out(el, span, t: Tensor, labels: list[str], needed: set) -> tuple[Tensor, list[str]]:
    axes = tuple(k for k, label in enumerate(labels) if label not in needed)
    if not axes:
        return t, labels
    return el.emit("reduce_sum", [t], span, axes=axes, keepdims=False), [label for label in labels if label in needed]


def _flat(dims: list):
    """The size of a group of axes flattened into one, or None if it cannot be (two symbolic sizes, or one
    with others)."""
    if len(dims) == 1:
        return dims[0]
    if all(isinstance(d, int) for d in dims):
        return math.prod(dims)
    return None


def _pair(el, span, left: tuple, right: tuple, later: set) -> tuple[Tensor, list[str]]:
    """The contraction of two operands, keeping the labels in `later` (and those only one side has)."""
    (a, la), (b, lb) = left, right
    a, la = _sum_out(el, span, a, la, later | set(lb))
    b, lb = _sum_out(el, span, b, lb, later | set(la))
    shared = [label for label in la if label in lb]
    batch = [label for label in shared if label in later]
    inner = [label for label in shared if label not in later]
    rows = [label for label in la if label not in lb]
    columns = [label for label in lb if label not in la]
    dims_a, dims_b = dict(zip(la, a.shape)), dict(zip(lb, b.shape))
    size = {**dims_b, **dims_a}
    flat = [_flat([size[label] for label in group]) if group else 1 for group in (rows, inner, columns)]
    if inner and None not in flat:
        # [batch, rows, inner] @ [batch, inner, columns]: one batched matrix product
        a2 = _reshaped(el, span, _transposed(el, span, a, la, batch + rows + inner),
                       tuple(dims_a[label] for label in batch) + (flat[0], flat[1]))
        b2 = _reshaped(el, span, _transposed(el, span, b, lb, batch + inner + columns),
                       tuple(dims_b[label] for label in batch) + (flat[1], flat[2]))
        product = el.emit("matmul", [a2, b2], span)
        out_shape = tuple(product.shape[:-2]) + tuple(size[label] for label in rows + columns)
        return _reshaped(el, span, product, out_shape), batch + rows + columns
    # a broadcast product over batch + rows + inner + columns, then the sum over inner
    order = batch + rows + inner + columns
    a2 = _reshaped(el, span, _transposed(el, span, a, la, [label for label in order if label in la]),
                   tuple(dims_a.get(label, 1) for label in order))
    b2 = _reshaped(el, span, _transposed(el, span, b, lb, [label for label in order if label in lb]),
                   tuple(dims_b.get(label, 1) for label in order))
    product = el.emit("mul", [a2, b2], span)
    if inner:
        axes = tuple(range(len(batch) + len(rows), len(batch) + len(rows) + len(inner)))
        product = el.emit("reduce_sum", [product], span, axes=axes, keepdims=False)
    return product, batch + rows + columns
