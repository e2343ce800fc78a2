"""The stable text form of the IR, one line per node:

    %h1 : f32[B,16] = matmul %x, %net.0.W              # moons.grad:9:12

Values are named after the source where they can be (inputs, params, bound names; `d<name>` for
gradients); other values are numbered in print order, so the text is stable across runs.
"""
from __future__ import annotations

import numpy as np

from ..ops.shapes import fmt_shape, fmt_type
from .graph import Graph


def _fmt_attr(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt_attr(v) for v in value) + ")"
    if value is None:
        return ""
    return str(value)


def _fmt_index(index) -> str:
    parts = []
    for item in index:
        if item[0] == "i":
            parts.append(str(item[1]))
        else:
            start, stop, step = ("" if v is None else str(v) for v in item[1:])
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
    return "[" + ", ".join(parts) + "]"


def _fmt_scalar(value) -> str:
    if value.dtype.kind == "f":
        return np.format_float_positional(value.dtype.type(value), trim="0")
    return str(value.item()).lower()


def _fmt_const(value: np.ndarray) -> str:
    if value.ndim == 0:
        return _fmt_scalar(value)
    if value.size <= 4:
        return "[" + ", ".join(_fmt_scalar(v) for v in value.reshape(-1)) + "]"
    return f"<{value.size} values>"


def _inline(graph: Graph, node: int) -> bool:
    """Scalar constants are written in place ("mul %x, 2.0") rather than on lines of their own."""
    return graph.op(node) == "const" and graph.attrs(node)["value"].ndim == 0


def _print_order(graph: Graph, roots) -> list[int]:
    # forward nodes first wherever the dependencies allow, then by creation order
    return graph.order(roots, key=lambda n: (graph.data(n)["role"] == "grad", n))


def value_names(graph: Graph, order: list[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    taken: set[str] = set()
    counter = 0
    for node in order:
        d = graph.data(node)
        base = d["attrs"]["name"] if d["op"] in ("input", "param") else d["name"]
        if base is None or d["op"] == "const" and d["name"] is None:
            counter += 1
            base = str(counter)
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}.{k}"
        taken.add(name)
        names[node] = name
    return names


def format_graph(graph: Graph, outputs: list[str] | None = None, locations: bool = True) -> str:
    """Render `graph` (only what `outputs` need, if given) as text."""
    wanted = {k: v for k, v in graph.outputs.items() if outputs is None or k in outputs}
    order = _print_order(graph, list(wanted.values()) if outputs is not None else None)
    shown_outputs = set(wanted.values())
    order = [n for n in order if not _inline(graph, n) or n in shown_outputs]
    names = value_names(graph, order)

    def operand(o: int) -> str:
        return _fmt_const(graph.attrs(o)["value"]) if o not in names else "%" + names[o]

    rows = []
    for node in order:
        d = graph.data(node)
        op = d["op"]
        attrs = dict(d["attrs"])
        if op in ("input", "param"):
            rhs = op
        elif op == "const":
            rhs = f"const {_fmt_const(attrs['value'])}"
        else:
            shown = []
            if op in ("slice", "unslice"):
                shown.append(_fmt_index(attrs.pop("index")))
            shown += [f"{k}={fmt_shape(v) if k == 'shape' else _fmt_attr(v)}" for k, v in sorted(attrs.items())]
            head = op + (f"[{', '.join(shown)}]" if shown else "")
            rhs = head + " " + ", ".join(operand(o) for o in d["operands"])
        where = f"# {graph.location(node)}" if locations and graph.location(node) is not None else ""
        rows.append((f"%{names[node]}", fmt_type(d["shape"], d["dtype"]), rhs, where, d["role"]))
    w_name = max((len(r[0]) for r in rows), default=0)
    w_type = max((len(r[1]) for r in rows), default=0)
    w_rhs = max((len(r[2]) for r in rows), default=0)
    lines, role = [], None
    for name, typ, rhs, where, r in rows:
        if r != role:
            role = r
            lines.append("# ---- backward (gradient) ----" if r == "grad" else "# ---- forward ----")
        line = f"{name:<{w_name}} : {typ:<{w_type}} = {rhs:<{w_rhs}}  {where}" if where else \
            f"{name:<{w_name}} : {typ:<{w_type}} = {rhs}"
        lines.append(line.rstrip())
    if wanted:
        lines.append("# ---- outputs ----")
        w_out = max(len(k) for k in wanted)
        lines += [f"{k:<{w_out}} = %{names[v]}" for k, v in wanted.items()]
    return "\n".join(lines) + "\n"
