"""The values the elaborator computes with.

Everything that is known at compile time (numbers, strings, lists, functions, layers, initialisers,
data sources, optimizers) is an ordinary Python value; everything that depends on data is a `Tensor`,
a reference to a node of an IR graph. Elaboration is a staged interpreter: static values are computed,
tensor operations become IR nodes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Span
from ..ir.graph import Graph
from .syntax import ast


@dataclass(frozen=True, eq=False)
class Tensor:
    graph: Graph
    node: int

    @property
    def shape(self) -> tuple:
        return self.graph.shape(self.node)

    @property
    def dtype(self) -> str:
        return self.graph.dtype(self.node)


class Scope:
    def __init__(self, parent: Scope | None = None, vars: dict | None = None):
        self.parent = parent
        self.vars: dict[str, Any] = dict(vars or {})

    def lookup(self, name: str):
        scope = self
        while scope is not None:
            if name in scope.vars:
                return scope.vars[name]
            scope = scope.parent
        raise KeyError(name)

    def defines(self, name: str) -> bool:
        """Whether `name` is bound here or in an enclosing scope (without building all of `names()`)."""
        try:
            self.lookup(name)
        except KeyError:
            return False
        return True

    def names(self) -> set[str]:
        out, scope = set(), self
        while scope is not None:
            out |= set(scope.vars)
            scope = scope.parent
        return out


@dataclass(eq=False)
class Function:
    """A user function: its definition and the scope it closes over."""

    name: str
    formals: list
    body: Any
    closure: Scope
    span: Span


@dataclass(eq=False)
class Builtin:
    """A function implemented by the compiler: `impl(elaborator, span, *args, **kwargs)`."""

    name: str
    impl: Callable
    doc: str = ""


@dataclass(eq=False)
class LayerDef:
    node: ast.LayerDef
    closure: Scope


@dataclass(eq=False)
class UnboundLayer:
    """`dense(2, 16)`: a layer with its arguments, whose params are created when it is given a name."""

    layer: LayerDef
    args: list
    kwargs: dict
    span: Span


@dataclass(eq=False)
class LayerInstance:
    name: str
    scope: Scope
    forward: Function | None
    params: list = field(default_factory=list)   # Tensors, own and sub-layers', in declaration order


@dataclass(eq=False)
class ModuleValue:
    name: str
    scope: Scope


@dataclass(frozen=True)
class InitSpec:
    """How a param is initialised: kind in zeros, ones, constant, normal, uniform, glorot_*, he_*."""

    kind: str
    args: tuple = ()


@dataclass(frozen=True)
class DataSpec:
    source: str
    kwargs: tuple      # sorted (name, value) pairs
    span: Span


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str
    settings: tuple    # (name, value) pairs; a value is a float or a Tensor of the plan graph
    span: Span


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of a training step (`phase(loss: …, params: …)` in `phases`): `repeat` updates of
    `params` on the gradient of one loss, by an optimizer of the phase's own."""

    loss: str          # the loss's output: "loss" or "loss:<name>"
    params: tuple      # qualified param names, in declaration order
    optimizer: OptimizerSpec
    repeat: int
    span: Span


def show(value) -> str:
    """A static value as the program would write it (a long number shortened), else its description."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):   # control characters (a NUL) escaped, so the message prints as it reads
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
        return f'"{text}"' if len(text) <= 40 else f'"{text[:37]}…" ({len(value):,} characters)'
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 24 else f"{text[:12]}… ({len(text)} digits)"
    return describe(value)


def describe(value) -> str:
    """A short human description of a value's kind, for error messages."""
    from ..ops.shapes import fmt_type
    if isinstance(value, Tensor):
        return f"a tensor {fmt_type(value.shape, value.dtype)}"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (Function, Builtin)):
        return f"the function {value.name}"
    if isinstance(value, LayerDef):
        return f"the layer {value.node.name}"
    if isinstance(value, (UnboundLayer, LayerInstance)):
        return "a layer"
    if isinstance(value, ModuleValue):
        return f"the module {value.name}"
    if isinstance(value, InitSpec):
        return "an initialiser"
    if isinstance(value, DataSpec):
        return "a data source"
    if isinstance(value, OptimizerSpec):
        return "an optimizer"
    if isinstance(value, PhaseSpec):
        return "a training phase"
    return type(value).__name__
