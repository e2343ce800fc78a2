"""`gradlang trace` and `Program.trace(feed)`: one forward and backward pass with every value of the
forward graph and the gradient of the loss with respect to it, next to the source line that made it.

This is micrograd's picture for tensors: the graph as elaborated (before simplification and fusion,
which would merge or drop the nodes a reader recognises from the source), its values on a feed, and
the cotangent backpropagation gives each of them. Scalars and tiny tensors are shown in full, larger
ones as summaries (shape, mean, std, min, max, the fraction of zeros — dead ReLUs — and the norm).
The pass runs its own executable, built from the unsimplified graph with every schedule rewrite off, so
that each node's value is materialised as written; the gradients of the params are those
`Program.gradients` gives (the tests hold the two to each other).
"""
from __future__ import annotations

import copy
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GradError
from .ir.dot import Drawing, graph_to_dot
from .ir.graph import Graph
from .ir.printer import is_inline, node_rhs, print_order, value_names
from .lowering.schedule import REWRITES, schedule
from .ops.registry import RunContext
from .ops.shapes import FLOATS, fmt_type
from .passes.autodiff import backprop
from .runtime.feeds import bind_dimensions
from .runtime.interpreter import Executable

FULL = 8   # a tensor of at most this many elements is shown in full


@dataclass(frozen=True)
class Summary:
    """What a tensor looks like at a glance; `values` holds it whole when it is tiny."""

    shape: tuple
    mean: float
    std: float
    min: float
    max: float
    zeros: float      # the fraction of exact zeros
    norm: float
    values: list | None

    @classmethod
    def of(cls, array) -> Summary:
        array = np.asarray(array)
        data = array.astype(np.float64) if array.dtype != np.float64 else array
        finite = data[np.isfinite(data)] if data.size else data
        empty = finite.size == 0
        return cls(tuple(array.shape), float("nan") if empty else float(finite.mean()),
                   float("nan") if empty else float(finite.std()), float("nan") if empty else float(finite.min()),
                   float("nan") if empty else float(finite.max()), float(np.mean(data == 0)) if data.size else 0.0,
                   float(np.sqrt(np.sum(finite * finite))), data.tolist() if array.size <= FULL else None)

    def text(self) -> str:
        if self.values is not None:
            return _fmt_values(self.values)
        return (f"mean {_g(self.mean)}  std {_g(self.std)}  min {_g(self.min)}  max {_g(self.max)}  "
                f"zeros {self.zeros:.0%}  norm {_g(self.norm)}")

    def as_dict(self) -> dict:
        out = {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "zeros": self.zeros,
               "norm": self.norm}
        if self.values is not None:
            out["values"] = self.values
        return out


def _g(number: float) -> str:
    return f"{number + 0.0:.4g}"   # (+ 0.0: a negative zero prints as 0)


def _fmt_values(values) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_fmt_values(v) for v in values) + "]"
    return _g(values) if isinstance(values, float) else str(values + 0) if isinstance(values, int) else str(values)


@dataclass(frozen=True)
class TracedNode:
    """One node of the forward graph: how it reads in the IR, where the source makes it, its value on
    the feed and d loss / d value (None where no gradient flows: labels, masks, integer values)."""

    id: int
    name: str             # its printed name, as in `gradlang ir`
    role: str             # input, param, state or forward
    text: str             # the right-hand side, `matmul %x, %W`
    type: str             # `f32[1,16]`
    location: str         # `model.grad:12`, or "" for nodes the source does not place
    source: str           # that line of the source
    value: Summary
    grad: Summary | None
    value_array: np.ndarray | None = None   # the whole value and gradient, for a reader that wants them
    grad_array: np.ndarray | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "role": self.role, "op": self.text, "type": self.type,
                "location": self.location, "source": self.source, "value": self.value.as_dict(),
                "grad": self.grad.as_dict() if self.grad is not None else None}


class Trace:
    """The traced pass: `nodes` in the order `gradlang ir` prints them, the `loss` it differentiated
    and its value. Text (`str`), JSON (`as_dict`), a Graphviz drawing (`drawing()`: each node with its
    value and gradient) and, in Jupyter, a table."""

    def __init__(self, title: str, loss_output: str, loss_value: float, nodes: list[TracedNode], graph: Graph):
        self.title, self.loss_output, self.loss_value, self.nodes = title, loss_output, loss_value, nodes
        self.loss = loss_output.split(":", 1)[-1]   # the loss's name (`loss`, or the name of `loss NAME = …`)
        self.graph = graph

    def node(self, name: str) -> TracedNode:
        """The traced node printed as `name` (`y_hat`, `beta1`)."""
        for traced in self.nodes:
            if traced.name == name:
                return traced
        raise KeyError(f"no node printed as {name!r}; the nodes are {', '.join(t.name for t in self.nodes)}")

    def __str__(self) -> str:
        lines = [f"{self.title}: loss {self.loss} = {_g(self.loss_value)}; each node: its value, then d {self.loss} / "
                 "d value"]
        for t in self.nodes:
            head = f"%{t.name} : {t.type} = {t.text}"
            where = f"{t.location}  {t.source.strip()}" if t.location else ""
            lines.append(f"{head:<48} {where}".rstrip())
            lines.append(f"    value  {t.value.text()}")
            grad = t.grad.text() if t.grad is not None else "(none: no gradient flows)"
            lines.append(f"    grad   {grad}")
        return "\n".join(lines)

    __repr__ = __str__

    def as_dict(self) -> dict:
        return {"program": self.title, "loss": self.loss, "loss_value": self.loss_value,
                "nodes": [t.as_dict() for t in self.nodes]}

    def json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, allow_nan=True)

    def dot(self) -> str:
        """DOT text: the forward graph, each node with its value and gradient (micrograd's drawing)."""
        notes = {}
        for t in self.nodes:
            notes[t.id] = [f"value {t.value.text() if t.value.values is not None else _brief(t.value)}",
                           f"grad {(t.grad.text() if t.grad.values is not None else _brief(t.grad))}"
                           if t.grad is not None else "grad —"]
        return graph_to_dot(self.graph, [self.loss_output], title=self.title, notes=notes)

    def drawing(self) -> Drawing:
        return Drawing.from_dot(self.dot(), str(self))

    def save(self, path: str | Path) -> Path:
        """Draw into a .png, .svg or .pdf file (needs Graphviz)."""
        return self.drawing().save(path)

    def _repr_html_(self) -> str:
        rows = []
        for t in self.nodes:
            grad = html.escape(t.grad.text()) if t.grad is not None else "—"
            rows.append(f"<tr><td><code>%{html.escape(t.name)}</code></td><td><code>{html.escape(t.type)}</code></td>"
                        f"<td><code>{html.escape(t.text)}</code></td><td>{html.escape(t.value.text())}</td>"
                        f"<td>{grad}</td><td><code>{html.escape(t.source.strip())}</code></td></tr>")
        return (f"<p><b>{html.escape(self.title)}</b>: loss {html.escape(self.loss)} = {_g(self.loss_value)}</p>"
                "<table><tr><th>node</th><th>type</th><th>op</th><th>value</th><th>d loss / d value</th>"
                "<th>source</th></tr>" + "".join(rows) + "</table>")


def _brief(summary: Summary) -> str:
    return f"μ {_g(summary.mean)} σ {_g(summary.std)} ‖‖ {_g(summary.norm)}"


def trace(program, feed: dict, loss: str | None = None, training: bool = False) -> Trace:
    """One forward and backward pass of `program` on `feed` (dropout on if `training`), every forward
    node's value with d loss / d value; `loss` names the loss (default: the trained one, or with phases
    the first phase's). Random draws (noise, dropout) come from a copy of the program's generator: the
    ones its next run would make, and tracing leaves the run's own draws as they were."""
    graphs = program.graphs
    output = graphs.loss_output(loss)
    model = graphs.model_graph
    graph = model.copy()
    loss_node = graph.outputs[output]
    upstream = graph.reachable([loss_node])
    order = [n for n in print_order(model, [loss_node]) if n in upstream and not is_inline(model, n)]
    floats = [n for n in order if graph.dtype(n) in FLOATS]
    cotangents = dict(zip(floats, backprop(graph, loss_node, floats)))
    outputs = {f"trace:value:{n}": n for n in order}
    outputs.update({f"trace:grad:{n}": g for n, g in cotangents.items()})
    graph.outputs.update(outputs)
    runner = program.runner
    arrays = runner.feed(feed)
    needed = {graph.attrs(n)["name"] for n in upstream if graph.op(n) == "input"}
    missing = [name for name in needed if arrays[runner.input_names.index(name)] is None]
    if missing:
        raise GradError(f"the feed is missing input {missing[0]!r}, which the loss needs",
                        runner.inputs[missing[0]].span)
    names = list(outputs)
    sched = schedule(graph, names, bind_dimensions(runner.inputs, arrays),
                     RunContext(copy.deepcopy(runner.rng), training), False, frozenset(REWRITES))
    values = dict(zip(names, Executable(sched, graph, runner.input_names, runner.leaf_names)
                      .run(arrays, runner.leaf_list)))   # the params, then the state (batch norm's statistics)
    printed = value_names(model, order)   # as the drawing (and `gradlang ir --png`) names them

    def operand(o: int) -> str:
        return f"%{printed[o]}" if o in printed and not is_inline(model, o) else node_rhs(model, o, operand) \
            .removeprefix("const ")

    nodes = []
    for n in order:
        data = model.data(n)
        span = model.location(n)   # the user's line (for library code, the call that made it)
        location = f"{span.source.name}:{span.line}" if span is not None and span.source.name != "<prelude>" else ""
        nodes.append(TracedNode(
            n, printed[n], data["op"] if data["op"] in ("input", "param", "state") else "forward",
            node_rhs(model, n, operand), fmt_type(data["shape"], data["dtype"]), location,
            span.source.line(span.line) if location else "", Summary.of(values[f"trace:value:{n}"]),
            Summary.of(values[f"trace:grad:{n}"]) if n in cotangents else None,
            np.asarray(values[f"trace:value:{n}"]),
            np.asarray(values[f"trace:grad:{n}"]) if n in cotangents else None))
    loss_value = float(np.asarray(values[f"trace:value:{loss_node}"]))
    title = Path(program.name).name if program.name != "<string>" else "<string>"
    return Trace(title, output, loss_value, nodes, model)
