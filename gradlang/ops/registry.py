"""The primitive registry: each op is one record holding its shape rule, kernel and VJP rule.

- `infer(shapes, dtypes, attrs) -> (shape, dtype)` checks operands and raises `ShapeError`.
- `kernel(attrs, in_shapes, out_shape, dtype) -> callable(*arrays)` is called once, at schedule
  time, with every symbolic dimension already bound; the callable is what runs in the step.
- Random primitives (dropout) get a `RunContext` as a fifth argument of the kernel factory.
- `vjp(emit, node, g) -> [cotangent node or None per operand]` builds IR with the same primitives,
  so gradients are graphs that can be differentiated again. `vjp=None` means no gradient flows
  (integer or boolean results, shape queries).
- `index = IndexOperand(position, bound)` marks an operand holding integer indices (labels, rows to
  gather): each must lie in [0, bound), never wrapping around as NumPy's negative indices do. The
  checks are made where the values enter a run (`passes/index_checks.py`), not in the kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

_REGISTRY: dict[str, "Primitive"] = {}


@dataclass(frozen=True)
class IndexOperand:
    """Operand `position` holds indices into a dimension of size `bound(attrs, operand_shapes)` (an int
    or a symbolic dimension name); `noun` names one index in messages ("label", "index")."""

    position: int
    bound: Callable
    noun: str = "index"


@dataclass(frozen=True)
class Primitive:
    name: str
    arity: int | None
    infer: Callable
    kernel: Callable
    vjp: Callable | None
    doc: str = ""
    shape_attrs: tuple[str, ...] = ()   # attrs holding shapes whose symbolic dims bind at schedule time
    random: bool = False   # draws from the run's generator: the kernel factory also gets a RunContext,
                           # and the op is never folded, merged or computed at schedule time
    index: IndexOperand | None = None


@dataclass(frozen=True)
class RunContext:
    """What random kernels see: the program's seeded generator and whether this is a training step."""

    rng: object
    training: bool


def define(name: str, arity: int | None, infer, kernel, vjp, doc: str = "", shape_attrs=(),
           random: bool = False, index: IndexOperand | None = None) -> Primitive:
    if name in _REGISTRY:
        raise ValueError(f"primitive {name!r} defined twice")
    prim = Primitive(name, arity, infer, kernel, vjp, doc, tuple(shape_attrs), random, index)
    _REGISTRY[name] = prim
    return prim


def get(name: str) -> Primitive:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no primitive named {name!r}") from None


def all_primitives() -> dict[str, Primitive]:
    return dict(_REGISTRY)
