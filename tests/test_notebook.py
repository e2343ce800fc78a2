"""Notebooks: programs, training results and IR graphs display richly, and `%%gradlang` compiles a cell
(and trains it) in IPython."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import gradlang
from gradlang.display import TrainSummary, program_html, program_markdown
from gradlang.ir.dot import graph_to_dot
from gradlang.notebook import CellError, compile_cell

ROOT = Path(__file__).resolve().parent.parent
MOONS = (ROOT / "examples" / "moons_mlp.grad").read_text()


@pytest.fixture
def shell():
    pytest.importorskip("IPython", reason="the cell magic needs IPython (pip install -e '.[notebook]')")
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext gradlang", store_history=False)
    yield ip
    ip.user_ns.pop("prog", None)
    ip.user_ns.pop("prog_result", None)


def run(shell, code: str):
    from IPython.utils.capture import capture_output
    with capture_output() as captured:
        result = shell.run_cell(code, store_history=False)
    return result, captured.stdout + captured.stderr


# ---- the cell magic -------------------------------------------------------------------------------------

def test_a_cell_compiles_and_trains_a_model(shell):
    result, printed = run(shell, "%%gradlang prog --train --quiet\n" + MOONS)
    assert result.success, printed
    prog = shell.user_ns["prog"]
    assert isinstance(prog, gradlang.Program) and prog.steps_taken == 100
    trained = shell.user_ns["prog_result"]
    assert trained.metrics["accuracy"] == 1.0
    summary = result.result
    assert isinstance(summary, TrainSummary) and summary.result is trained
    assert "prog: trained 100 steps" in summary._repr_markdown_()
    assert f"| accuracy | {trained.metrics['accuracy']:.6g} |" in summary._repr_markdown_()
    assert "<td>loss</td>" in summary._repr_html_().replace(" style='text-align:left'", "")
    # the program keeps training from where the cell left it
    before = prog.loss(prog.load_data())
    shell.run_cell("prog.train(steps=5)", store_history=False)
    assert prog.steps_taken == 105 and prog.loss(prog.load_data()) <= before * 1.5


def test_a_cell_without_train_binds_the_program_and_shows_it(shell):
    result, printed = run(shell, "%%gradlang model --dtype float64 --seed 3\n" + MOONS)
    assert result.success, printed
    model = shell.user_ns.pop("model")
    assert result.result is model and model.steps_taken == 0
    assert model.float_dtype == "f64" and model.seed == 3 and model.params["net.layers.0.W"].dtype == "float64"


def test_training_progress_is_printed_unless_quiet(shell):
    result, printed = run(shell, "%%gradlang prog --train --steps 7\n" + MOONS)
    assert result.success and shell.user_ns["prog"].steps_taken == 7
    assert "7/7" in printed


def test_a_compile_error_shows_as_the_compiler_prints_it(shell):
    result, printed = run(shell, "%%gradlang broken\ninput x : f32[B]\nloss = mean(x @ x @ 2)\n")
    assert not result.success and isinstance(result.error_in_exec, CellError)
    assert "<cell>:2:13: error: @ needs tensors of rank 1 or more" in printed
    assert "^^^^^^^^^" in printed and "Traceback" not in printed
    assert "broken" not in shell.user_ns


def test_bad_options_show_the_usage(shell):
    result, printed = run(shell, "%%gradlang prog --nope\nloss = 1\n")
    assert isinstance(result.error_in_exec, CellError)
    assert "unrecognized arguments: --nope" in printed and "usage: %%gradlang" in printed
    result, printed = run(shell, "%%gradlang 2prog\nloss = 1\n")
    assert isinstance(result.error_in_exec, CellError) and "'2prog' is not one" in printed


def test_imports_in_a_cell_resolve_in_the_working_directory(shell, tmp_path, monkeypatch):
    (tmp_path / "mylayers.grad").write_text("layer scale(n) {\n  param s : [n] = ones\n  forward(x) = x * s\n}\n")
    monkeypatch.chdir(tmp_path)
    cell = "import mylayers\nimport nn\ninput x : f32[B, 3]\nnet = mylayers.scale(3)\nloss = mean(net(x))\n"
    result, printed = run(shell, "%%gradlang prog\n" + cell)
    assert result.success, printed
    assert list(shell.user_ns["prog"].params) == ["net.s"]


# ---- displays ---------------------------------------------------------------------------------------------

def test_a_programs_display_lists_what_it_declares():
    prog = gradlang.compile(ROOT / "examples" / "moons_mlp.grad")
    for text in (prog._repr_markdown_(), prog._repr_html_()):
        for expected in ("f32[B,2]", "net.layers.0.W", "f32[2,16]", "net.layers.2.b", "337", "accuracy",
                         "sgd(lr: 1.0 - 0.9 * step / 100)", "moons"):
            assert expected in text, expected
    assert "| x | `f32[B,2]` |" in prog._repr_markdown_()
    assert "<details><summary>forward IR" in prog._repr_html_() and "%net.layers.0.W" in prog._repr_html_()
    assert program_html(prog) == prog._repr_html_() and program_markdown(prog) == prog._repr_markdown_()


def test_the_display_escapes_html():
    prog = compile_cell("input x : f32[B]\nloss = mean(x)\n")
    assert "&lt;cell&gt;" in prog._repr_html_() and "<cell>" not in prog._repr_html_()


def _fake_dot(folder: Path, script: str) -> str:
    dot = folder / "dot"
    dot.write_text("#!/bin/sh\n" + script)
    dot.chmod(dot.stat().st_mode | stat.S_IEXEC)
    return os.pathsep.join([str(folder), os.environ.get("PATH", "")])   # ahead of any real Graphviz


def test_graphs_show_as_svg_where_graphviz_exists(shell, tmp_path, monkeypatch):
    prog = gradlang.compile(ROOT / "examples" / "moons_mlp.grad")
    # a stand-in for Graphviz that reports how many lines of DOT it was given
    monkeypatch.setenv("PATH", _fake_dot(tmp_path, 'echo "<svg>$(wc -l) lines</svg>"\n'))
    shown, _ = shell.display_formatter.format(prog.forward_graph)
    lines = graph_to_dot(prog.forward_graph).count("\n")
    assert shown["image/svg+xml"].strip() == f"<svg>{lines} lines</svg>"
    assert "%net.layers.0.W" in shown["text/plain"]
    assert prog.draw()._repr_svg_().startswith("<svg>")


def test_graphs_show_as_text_without_graphviz(shell, tmp_path, monkeypatch):
    prog = gradlang.compile(ROOT / "examples" / "moons_mlp.grad")
    monkeypatch.setenv("PATH", str(tmp_path))   # no dot on it
    shown, _ = shell.display_formatter.format(prog.forward_graph)
    assert "image/svg+xml" not in shown and shown["text/plain"] == prog.ir
    monkeypatch.setenv("PATH", _fake_dot(tmp_path, "echo broken >&2; exit 1\n"))
    drawing = prog.draw()
    assert drawing._repr_svg_() is None and repr(drawing) == drawing.text


# ---- docs/notebooks.md ------------------------------------------------------------------------------------

def test_the_cells_of_the_notebooks_page_run_in_order(shell, monkeypatch):
    import re
    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "notebooks.md").read_text()
    cells = re.findall(r"```ipython\n(.*?)```", page, re.S)
    assert len(cells) >= 5
    for cell in cells:
        result, printed = run(shell, cell)
        assert result.success, f"{cell}\n{printed}"
    assert shell.user_ns.pop("moons").steps_taken == 120
    # the error the page shows is the one such a cell gives
    shown = re.search(r"```\n(<cell>:.*?)```", page, re.S).group(1)
    result, printed = run(shell, "%%gradlang broken\ninput x : f32[B]\nloss = mean(x @ x @ 2)\n")
    assert shown.strip() in printed
