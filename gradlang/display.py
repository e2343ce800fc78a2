"""How programs and training results show themselves: plain text, Markdown and HTML tables (what
`Program._repr_html_` and Jupyter use). Needs nothing but the program's public attributes, so it sits
below both the Python API and the notebook magic."""
from __future__ import annotations

import html

from .errors import Span
from .frontend.values import DataSpec, OptimizerSpec, Tensor, describe
from .ops.shapes import fmt_type

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
