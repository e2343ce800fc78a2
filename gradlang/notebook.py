"""Jupyter support (the displays themselves are in display.py): IR graphs shown as drawings, and the
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
import shlex
import sys
from pathlib import Path

from .display import TrainSummary
from .errors import GradError

CELL_NAME = "<cell>"
_DTYPES = {"float32": "f32", "float64": "f64"}


# ---- the cell magic ---------------------------------------------------------------------------------

class CellError(GradError):
    """A compile error in a `%%gradlang` cell: IPython shows the compiler's message, not a traceback."""

    def _render_traceback_(self) -> list[str]:
        return self.format().split("\n")


def compile_cell(source: str, dtype: str = "float32", seed: int | None = None, folder: str | Path | None = None):
    """Compile a cell's text; imports resolve in `folder` (default: the working directory)."""
    from .api import Program
    from .frontend.elaborate import elaborate_source
    from .frontend.syntax import parse
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
