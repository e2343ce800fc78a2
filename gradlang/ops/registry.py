"""The primitive registry: each op is one record holding its shape rule, kernel and VJP rule.

- `infer(shapes, dtypes, attrs) -> (shape, dtype)` checks operands and raises `ShapeError`.
- `kernel(attrs, in_shapes, out_shape, dtype) -> callable(*arrays)` is called once, at schedule
  time, with every symbolic dimension already bound; the callable is what runs in the step.
- Random primitives (dropout) get a `RunContext` as a fifth argument of the kernel factory; an op with
  the BY_MODE trait (`training(a, b)`) is resolved by the scheduler from the same context, never run.
- `vjp(emit, node, g) -> [cotangent node or None per operand]` builds IR with the same primitives,
  so gradients are graphs that can be differentiated again. `vjp=None` means no gradient flows
  (integer or boolean results, shape queries).
- `traits` say what generic passes need to know of an op (below); a pass asks the record, and never
  keeps a list of op names of its own.
- `index = IndexOperand(position, bound)` marks an operand holding integer indices (labels, rows to
  gather): each must lie in [0, bound), never wrapping around as NumPy's negative indices do. The
  checks are made where the values enter a run (`analysis/index_checks.py`), not in the kernel.
- `surface=True` makes a one-operand primitive a builtin function of the language under its own name
  (`exp(x)`, `erf(x)`): `frontend/builtins.py` makes the builtin, which emits the primitive on its
  operand as it is (the shape rule refuses a dtype it does not take), with `doc` as its documentation;
  `scripts/generate_surface.py` then lists it for the highlighters and in docs/language.md.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_REGISTRY: dict[str, Primitive] = {}

# ---- traits --------------------------------------------------------------------------------------
# Each result element depends only on the operands' elements at the same position (after broadcasting).
ELEMENTWISE = "elementwise"
# The result is the first operand's memory seen another way (reshaped, transposed, broadcast, sliced),
# not a copy: the scheduler never writes into it, and it allocates nothing.
VIEW = "view"
# The result holds only values of the first operand, rearranged or repeated: a check of the operand's
# values (indices in range) covers the result.
SAME_VALUES = "same_values"
# f(a, b) equals f(b, a) bit for bit.
COMMUTATIVE = "commutative"
# A boolean comparison of its operands.
COMPARISON = "comparison"
# Combines the values along some axes into fewer (one number per window, for pooling).
REDUCTION = "reduction"
# Moves, copies or creates values without arithmetic on them: no floating-point work.
MOVES_DATA = "moves_data"
# Passes no gradient by design (or its value depends only on its operand's shape): a param reaching the
# loss only through it is not reported as a gradient that was lost.
NO_GRADIENT_BY_DESIGN = "no_gradient_by_design"
# The result is one of its operands, chosen by the kind of run: operand 0 in a training step, operand 1 when
# evaluating. The scheduler, which knows the kind, puts the chosen operand in its place (passes/modes.py);
# nothing before it may fold the op or compute it at compile time.
BY_MODE = "by_mode"
# Sums products over shared dimensions — a matrix product, a convolution: BLAS-sized work, counted in
# multiply-adds (lowering/flops.py), that the scheduler weighs when it hands work to the helper thread.
CONTRACTION = "contraction"
TRAITS = frozenset({ELEMENTWISE, VIEW, SAME_VALUES, COMMUTATIVE, COMPARISON, REDUCTION, MOVES_DATA,
                    NO_GRADIENT_BY_DESIGN, BY_MODE, CONTRACTION})


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
    traits: frozenset = frozenset()
    surface: bool = False   # a builtin function of the language under its own name, documented by `doc`

    def has(self, trait: str) -> bool:
        return trait in self.traits


@dataclass(frozen=True)
class RunContext:
    """What random kernels see: the program's seeded generator and whether this is a training step."""

    rng: object
    training: bool


def define(name: str, arity: int | None, infer, kernel, vjp, doc: str = "", shape_attrs=(),
           random: bool = False, index: IndexOperand | None = None, traits=(), surface: bool = False) -> Primitive:
    if name in _REGISTRY:
        raise ValueError(f"primitive {name!r} defined twice")
    if set(traits) - TRAITS:
        raise ValueError(f"primitive {name!r}: unknown traits {sorted(set(traits) - TRAITS)}")
    if surface and (arity != 1 or random or shape_attrs or not doc):
        raise ValueError(f"primitive {name!r}: only a documented function of one operand, with no attributes, "
                         "can be a builtin of its own name (surface=True)")
    prim = Primitive(name, arity, infer, kernel, vjp, doc, tuple(shape_attrs), random, index, frozenset(traits),
                     surface)
    _REGISTRY[name] = prim
    return prim


def has(op: str, trait: str) -> bool:
    """Whether primitive `op` has `trait`."""
    return trait in get(op).traits


def ops_with(trait: str, arity: int | None = None) -> frozenset[str]:
    """The primitives with `trait` (and, if given, taking `arity` operands): for passes that index
    rules by op."""
    return frozenset(name for name, prim in _REGISTRY.items()
                     if trait in prim.traits and (arity is None or prim.arity == arity))


def surface() -> dict[str, Primitive]:
    """The primitives that are builtin functions of the language under their own names, in the order
    they are defined."""
    return {name: prim for name, prim in _REGISTRY.items() if prim.surface}


def get(name: str) -> Primitive:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no primitive named {name!r}") from None


def all_primitives() -> dict[str, Primitive]:
    return dict(_REGISTRY)
