"""The IR as a Graphviz drawing: DOT text, rendering it with the `dot` program, and `Drawing`, which
shows itself inline in Jupyter.

Styles: inputs are blue ellipses, params green boxes, forward ops white boxes, gradient ops orange
boxes with orange edges into them; outputs have a double border and their output names. Each node
reads like its line in the text form (`%h : f32[B,16]` / `relu %2`). Graphviz is optional: only
rendering needs it, and without it `render` raises a `GradError` saying how to get it.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import GradError
from ..ops.shapes import fmt_type
from .graph import Graph
from .printer import fmt_const, format_graph, is_inline, node_rhs, print_order, value_names

_STYLE = {
    "input": 'shape=ellipse, style=filled, fillcolor="#dbeafe", color="#1d4ed8"',
    "param": 'shape=box, style="filled,bold", fillcolor="#dcfce7", color="#15803d"',
    "forward": 'shape=box, style="filled,rounded", fillcolor="#ffffff", color="#334155"',
    "grad": 'shape=box, style="filled,rounded", fillcolor="#ffedd5", color="#c2410c"',
}
_GRAD_EDGE = 'color="#c2410c"'
FORMATS = ("png", "svg", "pdf")
NO_DOT = ("drawing the graph needs Graphviz's `dot` program, which is not installed (apt install graphviz, "
          "brew install graphviz or conda install graphviz); `--format dot` writes the DOT text without it")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graph_to_dot(graph: Graph, outputs: list[str] | None = None, title: str | None = None,
                 notes: dict[int, list[str]] | None = None) -> str:
    """DOT text for `graph` (only what `outputs` need, if given); scalar constants are written inside
    the nodes that use them, as in the text form. `notes` adds lines to nodes (a trace's values)."""
    wanted = {k: v for k, v in graph.outputs.items() if outputs is None or k in outputs}
    order = print_order(graph, list(wanted.values()) if outputs is not None else None)
    order = [n for n in order if not is_inline(graph, n) or n in wanted.values()]
    names = value_names(graph, order)
    labels: dict[int, list[str]] = {}
    for name, node in wanted.items():
        labels.setdefault(node, []).append(name)

    def operand(o: int) -> str:
        return fmt_const(graph.attrs(o)["value"]) if o not in names else "%" + names[o]

    lines = ["digraph ir {", '  graph [rankdir=TB, fontname="Helvetica"' +
             (f", label={_quote(title)}, labelloc=t" if title else "") + "];",
             '  node [fontname="Menlo,Consolas,monospace", fontsize=10];', '  edge [arrowsize=0.6];']
    for node in order:
        d = graph.data(node)
        kind = d["op"] if d["op"] in ("input", "param") else d["role"]
        text = [f"%{names[node]} : {fmt_type(d['shape'], d['dtype'])}"]
        if d["op"] not in ("input", "param"):
            text.append(node_rhs(graph, node, operand))
        extra = ""
        text += (notes or {}).get(node, [])
        if node in labels:
            text.append("→ " + ", ".join(labels[node]))
            extra = ", peripheries=2"
        lines.append(f"  n{node} [label={_quote(chr(10).join(text))}, {_STYLE[kind]}{extra}];")
    for node in order:
        style = f" [{_GRAD_EDGE}]" if graph.data(node)["role"] == "grad" else ""
        for o in graph.operands(node):
            if o in names:
                lines.append(f"  n{o} -> n{node}{style};")
    return "\n".join(lines + ["}"]) + "\n"


def render(dot_source: str, path: str | Path) -> Path:
    """Draw DOT text into `path` with Graphviz; the format (png, svg, pdf) is the file's suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise GradError(f"cannot draw into {path}: the file must end in " + ", ".join("." + f for f in FORMATS))
    _run_dot(dot_source, [f"-T{fmt}", "-o", str(path)])
    return path


def to_svg(dot_source: str) -> str:
    """The drawing as SVG text (needs Graphviz)."""
    return _run_dot(dot_source, ["-Tsvg"]).decode()


def _run_dot(dot_source: str, args: list[str]) -> bytes:
    """Run Graphviz's dot on the text with `args`; its standard output."""
    exe = shutil.which("dot")
    if exe is None:
        raise GradError(NO_DOT)
    proc = subprocess.run([exe, *args], input=dot_source.encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise GradError(f"Graphviz's dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


class Drawing:
    """A graph ready to be shown: `.dot` is the DOT text, `.text` the printed IR. In Jupyter it shows
    as an SVG drawing where Graphviz is installed and as the printed IR otherwise."""

    def __init__(self, graph: Graph, title: str | None = None):
        self.dot = graph_to_dot(graph, title=title)
        self.text = format_graph(graph)

    @classmethod
    def from_dot(cls, dot: str, text: str) -> Drawing:
        """A drawing of DOT text made elsewhere (a trace's), with `text` as its plain form."""
        drawing = cls.__new__(cls)
        drawing.dot, drawing.text = dot, text
        return drawing

    def save(self, path: str | Path) -> Path:
        """Draw into a .png, .svg or .pdf file (needs Graphviz)."""
        return render(self.dot, path)

    def _repr_svg_(self):
        if not shutil.which("dot"):
            return None   # Jupyter falls back to the text form
        try:
            return to_svg(self.dot)
        except GradError:   # a dot that fails: the text form rather than a traceback under the cell
            return None

    def __repr__(self) -> str:
        return self.text
