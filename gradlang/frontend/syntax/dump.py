"""The AST made readable: an indented tree (`format_ast`), plain JSON data (`ast_to_json`) and
Graphviz DOT (`ast_to_dot`) — what `gradlang ir FILE --stage parsed` shows.

Each AST node prints as its class name, its plain fields (`name=h`) and its line:col; fields holding
nodes or lists of nodes are its children, labelled by field name (`value:`, `body[2]:`).
"""
from __future__ import annotations

import dataclasses
import json

from . import ast


def _fields(node: ast.Node) -> tuple[list, list]:
    """(plain fields as (name, value), child nodes as (label, node)), in declaration order."""
    plain, children = [], []
    for f in dataclasses.fields(node):
        if f.name == "span":
            continue
        value = getattr(node, f.name)
        if isinstance(value, ast.Node):
            children.append((f.name, value))
        elif isinstance(value, list) and any(isinstance(v, ast.Node) for v in value):
            children += [(f"{f.name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, ast.Node)]
        elif value is not None and value != []:
            plain.append((f.name, value))
    return plain, children


def _plain(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _head(node: ast.Node) -> str:
    plain, _ = _fields(node)
    return " ".join([type(node).__name__] + [f"{k}={_plain(v)}" for k, v in plain])


def format_ast(module: ast.Node) -> str:
    """One line per AST node, children indented under their parent, each with its line:col."""
    rows = []
    stack = [(module, "", 0)]
    while stack:
        node, label, depth = stack.pop()
        rows.append(("  " * depth + (f"{label}: " if label else "") + _head(node),
                     f"{node.span.line}:{node.span.col}"))
        _, children = _fields(node)
        stack += [(child, name, depth + 1) for name, child in reversed(children)]
    width = max(len(text) for text, _ in rows)
    return "".join(f"{text:<{width}}  # {where}\n" for text, where in rows)


def ast_to_json(node):
    """The AST as JSON-ready data: {"node": class name, "span": "line:col", field: value…}."""
    if isinstance(node, list):
        return [ast_to_json(v) for v in node]
    if not isinstance(node, ast.Node):
        return node
    out = {"node": type(node).__name__, "span": f"{node.span.line}:{node.span.col}"}
    for f in dataclasses.fields(node):
        if f.name != "span":
            out[f.name] = ast_to_json(getattr(node, f.name))
    return out


def ast_to_dot(module: ast.Node) -> str:
    """The AST as a Graphviz tree, edges labelled with the field that holds the child."""
    lines = ["digraph ast {", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    ids = {id(module): "n0"}
    stack = [module]
    while stack:
        node = stack.pop()
        label = _escape(_head(node)) + "\\n" + f"{node.span.line}:{node.span.col}"
        lines.append(f'  {ids[id(node)]} [label="{label}"];')
        for name, child in _fields(node)[1]:
            ids[id(child)] = f"n{len(ids)}"
            lines.append(f'  {ids[id(node)]} -> {ids[id(child)]} [label="{name}"];')
            stack.append(child)
    return "\n".join(lines + ["}"]) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
