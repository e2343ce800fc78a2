"""AST node dataclasses. Every node carries the `Span` it was parsed from."""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import Span


@dataclass
class Node:
    span: Span = field(repr=False, compare=False)


# ---- expressions -------------------------------------------------------------------------------

@dataclass
class Number(Node):
    value: int | float


@dataclass
class String(Node):
    value: str


@dataclass
class Bool(Node):
    value: bool


@dataclass
class Name(Node):
    id: str


@dataclass
class ListExpr(Node):
    items: list


@dataclass
class ListComp(Node):
    item: Node
    var: str
    iterable: Node


@dataclass
class BinOp(Node):
    op: str          # + - * / @ ** == != < <= > >=
    left: Node
    right: Node


@dataclass
class Neg(Node):
    operand: Node


@dataclass
class Keyword(Node):
    name: str
    value: Node


@dataclass
class Call(Node):
    func: Node
    args: list
    kwargs: list     # of Keyword


@dataclass
class Slice(Node):
    start: Node | None
    stop: Node | None
    step: Node | None


@dataclass
class Index(Node):
    value: Node
    items: list      # of expressions or Slice


@dataclass
class Attribute(Node):
    value: Node
    name: str


# ---- statements --------------------------------------------------------------------------------

@dataclass
class TypeSpec(Node):
    dtype: str | None
    dims: list | None   # None: a scalar written as a bare dtype


@dataclass
class Import(Node):
    module: list     # dotted path parts
    alias: str | None


@dataclass
class FromImport(Node):
    module: list
    names: list


@dataclass
class InputDecl(Node):
    name: str
    type: TypeSpec


@dataclass
class ParamDecl(Node):
    name: str
    type: TypeSpec
    init: Node | None


@dataclass
class StateDecl(Node):
    """`state NAME : type = init`: a value the model reads like a param, which no optimizer trains; a
    training step may write it (`update NAME = …`)."""
    name: str
    type: TypeSpec
    init: Node | None


@dataclass
class Update(Node):
    """`update NAME = value`: the state NAME takes `value`, computed in each training step, after the step."""
    name: str
    value: Node


@dataclass
class DataDecl(Node):
    name: str
    value: Node


@dataclass
class Formal(Node):
    name: str
    default: Node | None


@dataclass
class FnDef(Node):
    name: str
    formals: list
    body: list | Node   # a list of statements (block) or one expression


@dataclass
class LayerDef(Node):
    name: str
    formals: list
    body: list


@dataclass
class ForwardDef(Node):
    formals: list
    body: list | Node


@dataclass
class Assign(Node):
    name: str
    value: Node


@dataclass
class LossDecl(Node):
    name: str | None
    value: Node


@dataclass
class MetricDecl(Node):
    name: str
    value: Node


@dataclass
class OutputDecl(Node):
    name: str
    value: Node


@dataclass
class TrainBlock(Node):
    body: list


@dataclass
class For(Node):
    var: str
    iterable: Node
    body: list


@dataclass
class If(Node):
    cond: Node
    then: list
    orelse: list


@dataclass
class Return(Node):
    value: Node


@dataclass
class Assert(Node):
    """`assert cond, "message"`: compilation stops with the message unless cond, known at compile time, holds."""
    cond: Node
    message: Node


@dataclass
class Module(Node):
    body: list
