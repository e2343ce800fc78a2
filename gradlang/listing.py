"""The backward pass written out as source: one gradlang assignment per value, in execution order —
the backpropagation a student would write by hand, generated from the gradient IR.

    input h_2 : f32[B, 16]            # the forward values it reads, declared as inputs
    …
    dh_2 = t40 @ transpose(net_layers_2_W)
    t48 = where(t4 > 0.0, dh_2, 0.0)
    dnet_layers_1_b = 0.0002 * net_layers_1_b + sum(t48, axis: 0)

`write_listing(graph)` makes the text from a gradient graph (outputs `grad:<param>`); the gradient of
param P is the variable `d` + P with dots as underscores (`dnet_layers_1_b`). Values are named as in
the printed IR (`%48` is `t48`; `%h.2` is `h_2`). A value used once and unnamed is written inside its
user, so each line is one step of the derivation.

`compile_listing(text, params)` reads a listing back into a graph whose inputs are those forward
values and whose outputs are `grad:<param>`: the listing is a program, and tests run it to check
that it computes the same gradients as the IR it was written from. The syntax is gradlang's (parsed
by its parser); every primitive has a spelling — the operators and functions of the language where
they exist (`a @ b`, `x[:, 0]`, `sum(x, axis: 0)`), else `op(operands…, attr: value…)` — so every
graph can be written out and read back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GradError
from .frontend.syntax import ast, parse
from .ir.graph import Graph
from .ir.printer import fmt_index, fmt_scalar, print_order, printed_names
from .ops import registry
from .ops.shapes import FLOATS

# Precedence levels of the grammar, loosest first.
_COMPARE, _SUM, _TERM, _UNARY, _POWER, _ATOM = range(1, 7)
_INFIX = {"add": ("+", _SUM), "sub": ("-", _SUM), "mul": ("*", _TERM), "div": ("/", _TERM),
          "matmul": ("@", _TERM), "pow": ("**", _POWER),
          "gt": (">", _COMPARE), "ge": (">=", _COMPARE), "lt": ("<", _COMPARE), "le": ("<=", _COMPARE),
          "eq": ("==", _COMPARE), "ne": ("!=", _COMPARE)}
_OF_SYMBOL = {symbol: op for op, (symbol, _) in _INFIX.items()}
# Reductions, written as the language's functions: sum(x, axis: 0, keepdims: true).
_REDUCTIONS = {"reduce_sum": "sum", "reduce_max": "max", "logsumexp": "logsumexp"}
_OF_REDUCTION = {name: op for op, name in _REDUCTIONS.items()}
_NON_FINITE = {"inf": np.inf, "nan": np.nan}
INLINE_LIMIT = 48   # characters: a single-use value this short is written inside its user


@dataclass
class Listing:
    text: str
    reads: dict[str, int]        # listing name of each forward value it reads → node of the graph


def listing_name(name: str) -> str:
    """A printed IR name as a gradlang identifier: net.layers.0.W → net_layers_0_W, 12 → t12."""
    return ("t" + name if name[0].isdigit() else name).replace(".", "_")


def gradient_name(param: str) -> str:
    return "d" + listing_name(param)


# ---- writing ---------------------------------------------------------------------------------------

def _literal(value: np.ndarray) -> str:
    if value.ndim == 0:
        return fmt_scalar(value)
    return "[" + ", ".join(_literal(v) for v in value) + "]"


def _const_call(graph: Graph, node: int) -> str:
    """A constant with its dtype spelled out, for where no operand tells it: const([1.0, 2.0], dtype: "f32")."""
    return f'const({_literal(graph.attrs(node)["value"])}, dtype: "{graph.dtype(node)}")'


def _attr_value(key: str, value) -> str:
    if key == "index":
        return '"' + fmt_index(value) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if key == "shape" else f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_attr_value(key, v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        return _literal(value)
    return str(value)


class _Writer:
    def __init__(self, graph: Graph, names: dict[int, str], printed: dict[int, str]):
        self.graph, self.names, self.printed = graph, names, printed
        self.inlined: dict[int, tuple[str, int]] = {}   # node → (expression, precedence level)

    def operand(self, node: int, level: int, typed: bool = False) -> str:
        """`node` as an operand that needs at least precedence `level` (else parenthesised); `typed`
        spells out a number's dtype, for where no other operand of the op tells it."""
        if typed and self.graph.op(node) == "const" and node not in self.names:
            return _const_call(self.graph, node)
        text, own = self.expression(node)
        return text if own >= level else f"({text})"

    def expression(self, node: int) -> tuple[str, int]:
        if node in self.names:
            return self.names[node], _ATOM
        if node in self.inlined:
            return self.inlined[node]
        d = self.graph.data(node)
        if d["op"] == "const":
            if d["attrs"]["value"].ndim:
                return _const_call(self.graph, node), _ATOM
            text = _literal(d["attrs"]["value"])
            return text, _UNARY if text.startswith("-") else _ATOM
        return listing_name(self.printed[node]), _ATOM   # a value the listing does not define (in a comment)

    def define(self, node: int) -> tuple[str, int]:
        """The right-hand side that computes `node` from its operands."""
        d = self.graph.data(node)
        op, ops, attrs = d["op"], d["operands"], dict(d["attrs"])
        values = ops[1:] if op == "where" else ops   # the operands a bare number takes its dtype from
        typed = op not in _INFIX and op not in ("where", "maximum") or all(self.graph.op(o) == "const" for o in values)
        if op in _INFIX:
            symbol, level = _INFIX[op]
            if level == _POWER:
                return f"{self.operand(ops[0], _ATOM, typed)} ** {self.operand(ops[1], _UNARY, typed)}", _POWER
            left = self.operand(ops[0], level + 1 if level == _COMPARE else level, typed)
            return f"{left} {symbol} {self.operand(ops[1], level + 1, typed)}", level
        if op == "neg":
            return "-" + self.operand(ops[0], _UNARY, typed), _UNARY
        if op == "slice":
            return self.operand(ops[0], _ATOM, typed) + fmt_index(attrs["index"]), _ATOM
        args = [self.operand(o, _COMPARE, typed) for o in ops]
        if op in _REDUCTIONS:
            axes = attrs["axes"]
            if tuple(axes) != tuple(range(len(self.graph.shape(ops[0])))):
                args.append("axis: " + (str(axes[0]) if len(axes) == 1 else _attr_value("axes", axes)))
            if attrs["keepdims"]:
                args.append("keepdims: true")
            return f"{_REDUCTIONS[op]}({', '.join(args)})", _ATOM
        if op == "transpose" and attrs["perm"] == tuple(reversed(range(len(attrs["perm"])))):
            return f"transpose({args[0]})", _ATOM
        if op in ("reshape", "broadcast_to"):
            return f"{op}({args[0]}, {_attr_value('shape', attrs['shape'])})", _ATOM
        args += [f"{k}: {_attr_value(k, v)}" for k, v in sorted(attrs.items()) if v is not None]
        return f"{op}({', '.join(args)})", _ATOM


def write_listing(graph: Graph, source: str | None = None) -> Listing:
    """The backward pass of a gradient graph as a listing (see the module's docstring)."""
    grads = {k[len("grad:"):]: v for k, v in graph.outputs.items() if k.startswith("grad:")}
    forward_roots = [v for k, v in graph.outputs.items() if not k.startswith("grad:")]
    forward = graph.reachable(forward_roots) if forward_roots else set()
    forward |= set(graph.nodes_with_op("input")) | set(graph.nodes_with_op("param"))
    order = print_order(graph, list(grads.values()))
    printed = printed_names(graph)
    backward = [n for n in order if n not in forward and graph.op(n) != "const"]
    read_by_backward = {o for b in backward for o in graph.operands(b)}
    reads = [n for n in order if n in forward and graph.op(n) != "const"
             and (n in read_by_backward or n in grads.values())]

    first_gradient = {}
    for param, node in grads.items():
        first_gradient.setdefault(node, param)
    taken = {gradient_name(param) for param in grads}

    def claim(node: int) -> str:
        """The node's printed name as an identifier, made unique (h.2 and a source name h_2 both exist)."""
        base = name = listing_name(printed[node])
        k = 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name
    names = {n: claim(n) for n in reads}
    names.update({node: gradient_name(param) for node, param in first_gradient.items() if node not in forward})
    uses = {n: sum(graph.operands(b).count(n) for b in backward) for n in backward}
    writer = _Writer(graph, names, printed)
    lines = []
    for node in backward:
        text, level = writer.define(node)
        named = node in names or graph.data(node)["name"] is not None
        if not named and uses[node] == 1 and len(text) <= INLINE_LIMIT:
            writer.inlined[node] = (text, level)
            continue
        if node not in names:
            names[node] = claim(node)
        lines.append(f"{names[node]} = {text}")
    for param, node in grads.items():
        if graph.op(node) == "const":   # a gradient known at compile time (zero: the loss ignores the param)
            lines.append(f"{gradient_name(param)} = {_const_call(graph, node)}")
        elif first_gradient[node] != param or node in forward:
            lines.append(f"{gradient_name(param)} = {writer.expression(node)[0]}")

    of = f" of {source}" if source else ""
    header = [f"# The backward pass{of}, written out from its gradient IR: one step per line,",
              "# in execution order. dP is the gradient of the loss with respect to param P; tN is the value %N of",
              "# `gradlang ir --grad`. The values of the forward pass it reads:"]
    declarations = []
    for n in reads:
        d = graph.data(n)
        declarations.append((f"input {names[n]} : {_type(d['shape'], d['dtype'])}",
                             _provenance(graph, n, writer)))
    width = max((len(decl) for decl, _ in declarations), default=0)
    header += [f"{decl:<{width}}  # {note}" if note else decl for decl, note in declarations]
    text = "\n".join(header + ["", *lines]) + "\n"
    return Listing(text, {names[n]: n for n in reads})


def _type(shape: tuple, dtype: str) -> str:
    """A type as declarations write it: f32[B, 16], or f32 for a scalar."""
    return f"{dtype}[{', '.join(str(d) for d in shape)}]" if shape else dtype


def _provenance(graph: Graph, node: int, writer: _Writer) -> str:
    """What a forward value is, for the reader: its definition for an unnamed value, and its line."""
    d = graph.data(node)
    parts = []
    if d["op"] in ("input", "param"):
        parts.append(d["op"])
    elif d["name"] is None:
        parts.append("= " + writer.define(node)[0])
    if graph.location(node) is not None:
        parts.append(f"({graph.location(node)})")
    return " ".join(parts)


def backward_listing(graph: Graph, source: str | None = None) -> str:
    """The listing's text."""
    return write_listing(graph, source).text


# ---- reading back ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Literal:
    """A number not yet given a dtype: it takes its fellow operands' dtype."""

    value: float


class _Reader:
    def __init__(self):
        self.graph = Graph()
        self.env: dict[str, object] = {}

    def node(self, value, like=()) -> int:
        if not isinstance(value, _Literal):
            return value
        dtypes = [self.graph.dtype(o) for o in like if not isinstance(o, _Literal)]
        if not dtypes:
            raise GradError(f"cannot tell the type of the number {value.value}")
        return self.graph.const(value.value, next((t for t in dtypes if t in FLOATS), dtypes[0]))

    def nodes(self, values) -> list[int]:
        return [self.node(v, values) for v in values]

    def eval(self, e):
        if isinstance(e, ast.Number):
            return _Literal(e.value)
        if isinstance(e, ast.Bool):
            return self.graph.const(e.value, "bool")
        if isinstance(e, ast.Name):
            if e.id in _NON_FINITE:
                return _Literal(_NON_FINITE[e.id])
            if e.id not in self.env:
                raise GradError(f"unknown name {e.id}", e.span)
            return self.env[e.id]
        if isinstance(e, ast.Neg):
            inner = self.eval(e.operand)
            return _Literal(-inner.value) if isinstance(inner, _Literal) else self.graph.add("neg", (inner,))
        if isinstance(e, ast.BinOp):
            operands = [self.eval(e.left), self.eval(e.right)]
            return self.graph.add(_OF_SYMBOL[e.op], self.nodes(operands))
        if isinstance(e, ast.Index):
            return self.graph.add("slice", (self.node(self.eval(e.value)),), {"index": _index(e.items)})
        if isinstance(e, ast.Call):
            return self.call(e)
        raise GradError(f"a listing has no {type(e).__name__} expressions", e.span)

    def call(self, e: ast.Call) -> int:
        name = e.func.id
        kwargs = {k.name: k.value for k in e.kwargs}
        if name == "const":
            return self.graph.const(_static(e.args[0]), _static(kwargs["dtype"]))
        if name in _OF_REDUCTION:
            x = self.node(self.eval(e.args[0]))
            axis = _static(kwargs["axis"]) if "axis" in kwargs else None
            keep = _static(kwargs["keepdims"]) if "keepdims" in kwargs else False
            return self.graph.add(_OF_REDUCTION[name], (x,), {"axes": axis, "keepdims": keep})
        if name in ("reshape", "broadcast_to"):
            return self.graph.add(name, (self.node(self.eval(e.args[0])),), {"shape": _static(e.args[1])})
        if name == "transpose" and "perm" not in kwargs:
            x = self.node(self.eval(e.args[0]))
            return self.graph.add("transpose", (x,), {"perm": tuple(reversed(range(len(self.graph.shape(x)))))})
        if name not in registry.all_primitives():
            raise GradError(f"unknown function {name}", e.span)
        operands = self.nodes([self.eval(a) for a in e.args])
        attrs = {k: _index(parse(f"_ = _{_static(v)}\n").body[0].value.items) if k == "index" else _static(v)
                 for k, v in kwargs.items()}
        return self.graph.add(name, operands, attrs)


def _static(e):
    """An attribute written in the listing: a number, string, boolean, list, or dimension name."""
    if isinstance(e, ast.Number | ast.String | ast.Bool):
        return e.value
    if isinstance(e, ast.Neg):
        return -_static(e.operand)
    if isinstance(e, ast.Name):
        return _NON_FINITE.get(e.id, e.id)   # a symbolic dimension such as B
    if isinstance(e, ast.ListExpr):
        return tuple(_static(v) for v in e.items)
    raise GradError(f"an attribute must be a literal, got {type(e).__name__}", e.span)


def _index(items) -> tuple:
    spec = []
    for item in items:
        if isinstance(item, ast.Slice):
            spec.append(("s",) + tuple(None if p is None else _static(p) for p in (item.start, item.stop, item.step)))
        else:
            spec.append(("i", _static(item)))
    return tuple(spec)


def compile_listing(text: str, params: list[str]) -> Graph:
    """A graph from a listing: an `input` node per declared forward value and outputs `grad:<param>`
    from the variables `d<param>`."""
    reader = _Reader()
    for stmt in parse(text, "<listing>").body:
        if isinstance(stmt, ast.InputDecl):
            dims = tuple(_static(d) for d in stmt.type.dims or ())
            reader.env[stmt.name] = reader.graph.add("input", (), {"name": stmt.name, "shape": dims,
                                                                 "dtype": stmt.type.dtype})
        elif isinstance(stmt, ast.Assign):
            reader.env[stmt.name] = reader.node(reader.eval(stmt.value))
        else:
            raise GradError(f"a listing has only input declarations and assignments, not {type(stmt).__name__}",
                            stmt.span)
    for param in params:
        reader.graph.outputs[f"grad:{param}"] = reader.env[gradient_name(param)]
    return reader.graph
