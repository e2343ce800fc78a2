"""The stable text form of the IR, one line per node, and its JSON form:

    %h1 : f32[B,16] = matmul %x, %net.0.W              # moons.grad:9:12

Values are named after the source where they can be (inputs, params, bound names; `d<name>` for
gradients); other values are numbered in print order, so the text is stable across runs.

Print order (`print_order`) reads like a program: inputs and params first, then each output's
computation depth first (every value just before its first use), the forward outputs before the
gradients, and the gradients in reverse order of the params, the order backpropagation reaches them.
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


def fmt_index(index) -> str:
    """A slice's index as written in the source: `[:, 0]`."""
    parts = []
    for item in index:
        if item[0] == "i":
            parts.append(str(item[1]))
        else:
            start, stop, step = ("" if v is None else str(v) for v in item[1:])
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
    return "[" + ", ".join(parts) + "]"


def fmt_scalar(value) -> str:
    """A number as short as it can be written and still read back to the same value of its dtype."""
    if value.dtype.kind == "f":
        return np.format_float_positional(value.dtype.type(value), trim="0")
    return str(value.item()).lower()


def fmt_const(value: np.ndarray) -> str:
    """A constant's value as an operand reads: a scalar, up to four elements in brackets, or a count."""
    if value.ndim == 0:
        return fmt_scalar(value)
    if value.size <= 4:
        return "[" + ", ".join(fmt_scalar(v) for v in value.reshape(-1)) + "]"
    return f"<{value.size} values>"


def is_inline(graph: Graph, node: int) -> bool:
    """Scalar constants are written in place ("mul %x, 2.0") rather than on lines of their own."""
    return graph.op(node) == "const" and graph.attrs(node)["value"].ndim == 0


def print_order(graph: Graph, roots=None) -> list[int]:
    """The nodes `roots` need (all nodes if None) in the order they are printed: a topological order.

    Inputs, params and state come first; then a depth-first walk from each forward output, then from each
    gradient output (`grad:*`, last param first), so every value appears just before its first use;
    then whatever no output needs, by creation order.
    """
    keep = graph.reachable(roots) if roots is not None else set(graph.nx.nodes)
    leaves = sorted(n for n in keep if graph.op(n) in ("input", "param") or graph.op(n) == "state")
    outputs = [v for k, v in graph.outputs.items() if not k.startswith("grad:")]
    outputs += [v for k, v in reversed(graph.outputs.items()) if k.startswith("grad:")]
    order, seen = [], set(leaves)
    order += leaves
    for start in outputs + sorted(keep):
        if start in seen or start not in keep:
            continue
        stack = [(start, iter(graph.operands(start)))]
        seen.add(start)
        while stack:
            node, pending = stack[-1]
            for o in pending:
                if o not in seen:
                    seen.add(o)
                    stack.append((o, iter(graph.operands(o))))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def _base_name(graph: Graph, node: int) -> str | None:
    d = graph.data(node)
    if d["op"] in ("input", "param") or d["op"] == "state":
        return d["attrs"]["name"]
    if d["op"] == "const" and d["name"] is None:
        return None
    return d["name"]


def _gradient_pairs(graph: Graph, order: list[int]) -> dict[int, int]:
    """Gradient node → the forward node it is the gradient of, where a name is bound several times.

    A loop that rebinds `h` makes forward values h, h.2, … and gradients all named dh. When the
    values named h form a chain (each computed from the one before) and there are as many gradients
    named dh, backpropagation made those gradients in the chain's reverse order: pair them so that
    dh.2 is printed as the gradient of h.2. Anything less certain is left unpaired.
    """
    forward: dict[str, list[int]] = {}
    grads: dict[str, list[int]] = {}
    for node in order:
        name = _base_name(graph, node)
        if name is None or not graph.operands(node):   # leaves: fed, trained or constant, not computed
            continue
        (grads if graph.data(node)["role"] == "grad" else forward).setdefault(name, []).append(node)
    pairs = {}
    for name, values in forward.items():
        gradients = sorted(grads.get("d" + name, []), reverse=True)
        if len(values) < 2 or len(gradients) != len(values):
            continue
        if all(a in graph.reachable([b]) for a, b in zip(values, values[1:])):
            pairs.update(zip(gradients, values))
    return pairs


def value_names(graph: Graph, order: list[int]) -> dict[int, str]:
    """A unique printed name for each node of `order`: its source name (made unique with .2, .3, …)
    or a number; the gradient of a value printed as h.2 is named dh.2 (see `_gradient_pairs`)."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    counter = 0
    pairs = _gradient_pairs(graph, order)
    for node in order:
        base = "d" + names[pairs[node]] if node in pairs else _base_name(graph, node)
        if base is None:
            counter += 1
            base = str(counter)
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}.{k}"
        taken.add(name)
        names[node] = name
    return names


def node_rhs(graph: Graph, node: int, operand) -> str:
    """The right-hand side of a node's line, `matmul %x, %W`; `operand(id)` writes each operand."""
    d = graph.data(node)
    op, attrs = d["op"], dict(d["attrs"])
    if op in ("input", "param") or op == "state":
        return op
    if op == "const":
        return f"const {fmt_const(attrs['value'])}"
    shown = []
    if op in ("slice", "unslice"):
        shown.append(fmt_index(attrs.pop("index")))
    shown += [f"{k}={fmt_shape(v) if k == 'shape' else _fmt_attr(v)}" for k, v in sorted(attrs.items())]
    head = op + (f"[{', '.join(shown)}]" if shown else "")
    return head + " " + ", ".join(operand(o) for o in d["operands"])


def _visible(graph: Graph, outputs: list[str] | None) -> tuple[dict, list[int], dict[int, str]]:
    """The outputs shown, the nodes printed on lines of their own, in order, and their names."""
    wanted = {k: v for k, v in graph.outputs.items() if outputs is None or k in outputs}
    order = print_order(graph, list(wanted.values()) if outputs is not None else None)
    shown_outputs = set(wanted.values())
    order = [n for n in order if not is_inline(graph, n) or n in shown_outputs]
    return wanted, order, value_names(graph, order)


def printed_names(graph: Graph) -> dict[int, str]:
    """The name each node has in `format_graph(graph)` (without the %); scalar constants have none."""
    return _visible(graph, None)[2]


def format_graph(graph: Graph, outputs: list[str] | None = None, locations: bool = True) -> str:
    """Render `graph` (only what `outputs` need, if given) as text."""
    wanted, order, names = _visible(graph, outputs)

    def operand(o: int) -> str:
        return fmt_const(graph.attrs(o)["value"]) if o not in names else "%" + names[o]

    rows = []
    for node in order:
        d = graph.data(node)
        where = f"# {graph.location(node)}" if locations and graph.location(node) is not None else ""
        rows.append((f"%{names[node]}", fmt_type(d["shape"], d["dtype"]), node_rhs(graph, node, operand), where,
                     d["role"]))
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


def _json_value(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    return value


def graph_to_json(graph: Graph, outputs: list[str] | None = None) -> dict:
    """The graph as plain JSON-ready data: `{"nodes": [...], "outputs": {...}}`, nodes in print order,
    each with its name in the text form (operands refer to these), op, attrs, shape, dtype, role and
    location. Scalar constants, inline in the text, are nodes here, named const#1, const#2, …;
    constant values are listed in full."""
    wanted, _, names = _visible(graph, outputs)
    order = print_order(graph, list(wanted.values()) if outputs is not None else None)
    inline = [n for n in order if n not in names]
    names.update({n: f"const#{i}" for i, n in enumerate(inline, 1)})   # no source name has a #
    nodes = []
    for node in order:
        d = graph.data(node)
        location = graph.location(node)
        nodes.append({"name": names[node], "op": d["op"], "operands": [names[o] for o in d["operands"]],
                      "attrs": {k: _json_value(v) for k, v in sorted(d["attrs"].items())},
                      "shape": list(d["shape"]), "dtype": d["dtype"], "role": d["role"],
                      "location": None if location is None else str(location)})
    return {"nodes": nodes, "outputs": {k: names[v] for k, v in wanted.items()}}
