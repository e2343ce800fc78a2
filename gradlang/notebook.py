"""Jupyter support: programs, training results and IR graphs shown as tables and drawings, and the
`%%gradlang` cell magic (`%load_ext gradlang`), which compiles a cell into a `Program`:

    %%gradlang prog --train
    import nn
    input x : f32[B, 2]
    …

binds `prog` in the notebook, trains it per its train block and shows the result. The cell's imports
and data paths resolve relative to the notebook's working directory (and the standard library); errors
show as the compiler prints them, `<cell>:line:col`, counting from the line after `%%gradlang`.
Only the magic needs IPython (`pip install 'gradlang[notebook]'`); the displays are plain methods.
"""
from __future__ import annotations

import argparse
import html
import shlex
import sys
from pathlib import Path

from .errors import GradError, Span
from .ops.shapes import fmt_type
from .values import DataSpec, OptimizerSpec, Tensor, describe

CELL_NAME = "<cell>"
_DTYPES = {"float32": "f32", "float64": "f64"}


# ---- what a program declares, as rows ---------------------------------------------------------------

def _setting_text(prog, name: str, value) -> str:
    """A train setting as written in the source (`sgd(lr: 1.0 - 0.9 * step / 100)`), else as a value."""
    span = prog.elaborated.plan.spans.get(name) if prog.elaborated.plan else None
    if isinstance(span, Span):
        lines = span.source.text.split("\n")[span.line - 1:span.end_line]
        if len(lines) == 1:
            return lines[0][span.col - 1:span.end_col - 1]
        if lines:
            lines[0], lines[-1] = lines[0][span.col - 1:], lines[-1][:span.end_col - 1]
            return " ".join(line.strip() for line in lines)
    if isinstance(value, (int, float, str)):
        return repr(value)
    if isinstance(value, DataSpec):
        return f"{value.source}(" + ", ".join(f"{k}: {v!r}" for k, v in value.kwargs) + ")"
    if isinstance(value, OptimizerSpec):
        settings = ", ".join(f"{k}: {'a schedule' if isinstance(v, Tensor) else v!r}" for k, v in value.settings)
        return f"{value.kind}({settings})"
    return describe(value)


def _sections(prog) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, column headings, rows) for each part of a program's summary."""
    params = [[name, fmt_type(array.shape, prog.float_dtype), f"{array.size:,}"] for name, array in prog.params.items()]
    total = sum(array.size for array in prog.params.values())
    outputs = [["loss", name] for name in prog.losses] + [["metric", name] for name in prog.metric_names]
    outputs += [["output", name] for name in prog.output_names]
    sections = [
        ("inputs", ["name", "type"], [[name, repr(info)] for name, info in prog.inputs.items()]),
        (f"params ({len(params)}, {total:,} values)", ["name", "type", "values"], params),
        ("losses, metrics and outputs", ["kind", "name"], outputs),
    ]
    if prog.plan:
        sections.append(("training plan", ["setting", "value"],
                         [[name, _setting_text(prog, name, value)] for name, value in prog.plan.items()]))
    return sections


def _title(prog) -> str:
    trained = f", {prog.steps_taken} steps taken" if prog.steps_taken else ""
    return f"gradlang program {prog.name} ({prog.float_dtype}{trained})"


def program_markdown(prog) -> str:
    """A program's inputs, params with their shapes, losses, metrics, outputs and training plan."""
    out = [f"**{_md(_title(prog))}**"]
    for title, heads, rows in _sections(prog):
        if not rows:
            continue
        out.append(f"*{title}*\n\n| " + " | ".join(heads) + " |\n|" + " --- |" * len(heads))
        out[-1] += "".join("\n| " + " | ".join(f"`{_md(cell)}`" if i == 1 else _md(cell) for i, cell in enumerate(row))
                           + " |" for row in rows)
    return "\n\n".join(out)


def program_html(prog) -> str:
    """The same as `program_markdown`, as HTML, with the forward IR folded away below."""
    parts = [f"<div class='gradlang-program'><p><b>{html.escape(_title(prog))}</b></p>"]
    for title, heads, rows in _sections(prog):
        if not rows:
            continue
        parts.append(f"<p><i>{html.escape(title)}</i></p>" + _html_table(heads, rows, code_column=1))
    ir = prog.ir
    parts.append(f"<details><summary>forward IR ({ir.count(chr(10)) + 1} lines; the drawing: "
                 f"<code>prog.draw()</code>)</summary><pre>{html.escape(ir)}</pre></details></div>")
    return "".join(parts)


def _html_table(heads: list[str], rows: list[list[str]], code_column: int | None = None) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in heads)
    def cell(i: int, text: str) -> str:
        text = html.escape(text)
        return f"<td style='text-align:left'>{f'<code>{text}</code>' if i == code_column else text}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


# ---- a training run --------------------------------------------------------------------------------

class TrainSummary:
    """What `prog.train()` returned, shown as a table (the result itself is `.result`)."""

    def __init__(self, result, name: str = "prog"):
        self.result = result
        self.name = name

    def rows(self) -> list[list[str]]:
        r = self.result
        rows = [["loss", f"{r.loss:.6g}"]] + [[m, f"{v:.6g}"] for m, v in r.metrics.items()]
        for part in ("validation", "test"):
            rows += [[f"{part} {k}", f"{v:.6g}"] for k, v in getattr(r, part).items()]
        if r.history:
            rows.append(["loss during training", f"{r.history[0][1]:.4g} → {r.history[-1][1]:.4g}"])
        return rows

    def headline(self) -> str:
        r = self.result
        early = ", stopped early" if r.stopped_early else ""
        return f"{self.name}: trained {r.steps} steps ({r.epochs:g} epochs) in {r.seconds:.2f} s{early}"

    def _repr_html_(self) -> str:
        return f"<p><b>{html.escape(self.headline())}</b></p>" + _html_table(["", "value"], self.rows())

    def _repr_markdown_(self) -> str:
        return f"**{_md(self.headline())}**\n\n| | value |\n| --- | --- |" + "".join(
            f"\n| {_md(k)} | {_md(v)} |" for k, v in self.rows())

    def __repr__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join([self.headline()] + [f"  {k.ljust(width)}  {v}" for k, v in self.rows()])


# ---- the cell magic ---------------------------------------------------------------------------------

class CellError(GradError):
    """A compile error in a `%%gradlang` cell: IPython shows the compiler's message, not a traceback."""

    def _render_traceback_(self) -> list[str]:
        return self.format().split("\n")


def compile_cell(source: str, dtype: str = "float32", seed: int | None = None, folder: str | Path | None = None):
    """Compile a cell's text; imports resolve in `folder` (default: the working directory)."""
    from .api import Program
    from .elaborate import elaborate_source
    from .syntax import parse
    folder = Path(folder) if folder is not None else Path.cwd()
    elaborated = elaborate_source(parse(source, CELL_NAME), folder, _DTYPES[dtype])
    return Program(elaborated, folder, seed, CELL_NAME)


class _MagicParser(argparse.ArgumentParser):
    def error(self, message):
        raise CellError(f"{message}\n{self.format_usage().strip()}")


def _magic_parser() -> argparse.ArgumentParser:
    parser = _MagicParser(prog="%%gradlang", add_help=False,
                          description="Compile the cell into a gradlang Program bound to NAME.")
    parser.add_argument("name", nargs="?", default="prog", help="the variable to bind (default: prog)")
    parser.add_argument("--dtype", choices=tuple(_DTYPES), default="float32", help="the float precision")
    parser.add_argument("--seed", type=int, help="overrides the train block's seed")
    parser.add_argument("--train", action="store_true",
                        help="train per the train block now; the result is bound to NAME_result")
    parser.add_argument("--steps", type=int, help="with --train: optimizer steps (overrides the file)")
    parser.add_argument("--epochs", type=int, help="with --train: passes over the data (overrides the file)")
    parser.add_argument("--batch", type=int, help="with --train: mini-batch size (overrides the file)")
    parser.add_argument("--quiet", action="store_true", help="with --train: no progress lines")
    return parser


def run_cell(line: str, cell: str, namespace: dict):
    """What `%%gradlang LINE` does with `cell`: compile, bind, maybe train; the object to show."""
    args = _magic_parser().parse_args(shlex.split(line))
    if not args.name.isidentifier():
        raise CellError(f"%%gradlang binds the program to a name; {args.name!r} is not one")
    try:
        prog = compile_cell(cell, args.dtype, args.seed)
    except GradError as err:
        raise CellError(err.message, err.span, err.notes) from None
    namespace[args.name] = prog
    if not args.train:
        return prog
    from .progress import TerminalReporter
    try:
        result = prog.train(steps=args.steps, epochs=args.epochs, batch_size=args.batch,
                            reporter=None if args.quiet else TerminalReporter(sys.stdout))
    except GradError as err:
        raise CellError(err.message, err.span, err.notes) from None
    namespace[f"{args.name}_result"] = result
    return TrainSummary(result, args.name)


def _graph_svg(graph):
    """IPython's SVG formatter for IR graphs: a drawing where Graphviz is installed, else nothing."""
    from .ir.dot import Drawing
    return Drawing(graph)._repr_svg_()


def _graph_text(graph, printer, cycle):
    from .ir.printer import format_graph
    printer.text(format_graph(graph))


def load_ipython_extension(ipython) -> None:
    """`%load_ext gradlang`: registers `%%gradlang`, and shows IR graphs (`prog.forward_graph`) as drawings."""
    from .ir.graph import Graph

    def gradlang(line, cell):
        return run_cell(line, cell, ipython.user_ns)

    gradlang.__doc__ = _magic_parser().format_help()
    ipython.register_magic_function(gradlang, magic_kind="cell", magic_name="gradlang")
    formatters = ipython.display_formatter.formatters
    formatters["image/svg+xml"].for_type(Graph, _graph_svg)
    formatters["text/plain"].for_type(Graph, _graph_text)
