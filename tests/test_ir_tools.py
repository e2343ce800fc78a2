"""Reading the IR: `gradlang ir` at each stage and in each format, statistics, drawings (with and
without Graphviz), `Program.draw` for Jupyter, the print order and names, and `gradlang grad` — whose
listing, compiled back, computes the same gradients on every example."""
import json
import os
import re
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.analysis import verify
from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.gradcheck import random_feed
from gradlang.ir.dot import Drawing
from gradlang.ir.printer import print_order, printed_names
from gradlang.listing import compile_listing, write_listing
from gradlang.lowering.schedule import schedule
from gradlang.runtime.interpreter import Executable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MLP = """input x : f32[B, 2]
input y : f32[B]
param W1 : [2, 3] = glorot_uniform
param b1 : [3] = zeros
param W2 : [3, 1] = glorot_uniform
h = relu(x @ W1 + b1)
scores = (h @ W2)[:, 0]
loss = mean((scores - y) ** 2)
metric mae = mean(abs(scores - y))
"""


@pytest.fixture
def mlp(tmp_path):
    path = tmp_path / "mlp.grad"
    path.write_text(MLP)
    return path


def cli(capsys, *args, code=0):
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    assert status == code, out.err
    return out.out, out.err


# ---- stages and formats ------------------------------------------------------------------------------

def test_parsed_stage_shows_the_ast_in_each_format(mlp, capsys):
    text, _ = cli(capsys, "ir", mlp, "--stage", "parsed")
    assert text.splitlines()[0].startswith("Module")
    assert any(line.strip().startswith("body[5]: Assign name=h") and line.endswith("# 6:1")
               for line in text.splitlines())
    data = json.loads(cli(capsys, "ir", mlp, "--stage", "parsed", "--format", "json")[0])
    assert data["node"] == "Module" and data["body"][5] == {**data["body"][5], "node": "Assign", "name": "h"}
    dot, _ = cli(capsys, "ir", mlp, "--stage", "parsed", "--format", "dot")
    assert dot.startswith("digraph ast {") and 'label="body[5]"' in dot


@pytest.mark.parametrize("stage, grad, has_gradient, simplified", [
    ("elaborated", False, False, False), ("grad", False, True, False),
    ("optimized", False, False, True), ("optimized", True, True, True)])
def test_graph_stages_in_text_json_and_dot(mlp, capsys, stage, grad, has_gradient, simplified):
    flags = ["--grad"] if grad else []
    text, _ = cli(capsys, "ir", mlp, "--stage", stage, *flags)
    assert ("# ---- backward (gradient) ----" in text) == has_gradient
    assert ("slice" in text) != simplified          # simplification turns the full slice into a reshape
    data = json.loads(cli(capsys, "ir", mlp, "--stage", stage, "--format", "json", *flags)[0])
    names = [n["name"] for n in data["nodes"]]
    assert len(names) == len(set(names))
    in_text = [line.split()[0][1:] for line in text.splitlines() if line.startswith("%")]
    assert [n for n in names if not n.startswith("const#")] == in_text       # the same names, in the same order
    assert all(o in names[:i] for i, n in enumerate(data["nodes"]) for o in n["operands"])   # operands first
    assert ("grad:W1" in data["outputs"]) == has_gradient and data["outputs"]["loss"] == "loss"
    dot, _ = cli(capsys, "ir", mlp, "--stage", stage, "--format", "dot", *flags)
    assert dot.startswith("digraph ir {") and ("#ffedd5" in dot) == has_gradient


def test_the_elaborated_stage_has_no_gradient(mlp, capsys):
    _, err = cli(capsys, "ir", mlp, "--stage", "elaborated", "--grad", code=1)
    assert "--stage grad" in err


def test_dot_styles_forward_gradient_leaves_and_outputs_apart(mlp):
    drawing = gradlang.compile(mlp).draw()
    lines = drawing.dot.splitlines()
    node = {line.split('"')[1].split(" :")[0]: line for line in lines if "label=" in line and "->" not in line}
    assert "ellipse" in node["%x"] and "#dcfce7" in node["%W1"]
    assert "#ffffff" in node["%h"] and "#ffedd5" in node["%dW1"]
    assert "peripheries=2" in node["%dW1"] and "→ grad:W1" in node["%dW1"]
    assert any("->" in line and "#c2410c" in line for line in lines)      # edges into gradient nodes


def test_stats_count_nodes_per_stage_and_the_rules_that_fired(mlp, capsys):
    text, _ = cli(capsys, "ir", mlp, "--stats")
    assert text.splitlines()[0].split() == ["nodes", "elaborated", "optimized", "forward", "grad", "optimized"]
    assert "simplification rules fired on the gradient graph" in text and "dead code" in text
    stats = json.loads(cli(capsys, "ir", mlp, "--stats", "--format", "json")[0])
    prog = gradlang.compile(mlp)
    assert stats["nodes"]["elaborated"]["total"] == len(prog.elaborated.graph)
    assert stats["nodes"]["grad"]["total"] == len(prog.raw_gradient_graph())
    assert stats["nodes"]["optimized"]["total"] == len(prog.gradient_graph())
    assert stats["nodes"]["optimized"]["total"] < stats["nodes"]["grad"]["total"]
    assert stats["rules"]["gradient"]["slice or unslice of every element → reshape"] >= 1


# ---- drawing ------------------------------------------------------------------------------------------

@pytest.fixture
def no_dot(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


@pytest.fixture
def fake_dot(monkeypatch, tmp_path):
    """A `dot` that records its arguments and writes a tiny SVG (Graphviz is not needed for the tests)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "dot"
    script.write_text(f"#!{sys.executable}\nimport sys\nsource = sys.stdin.read()\n"
                      "open(sys.argv[0] + '.args', 'w').write(' '.join(sys.argv[1:]))\n"
                      "svg = '<svg>' + str(source.count('->')) + '</svg>'\n"
                      "if '-o' in sys.argv:\n    open(sys.argv[sys.argv.index('-o') + 1], 'w').write(svg)\n"
                      "else:\n    sys.stdout.write(svg)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(folder) + os.pathsep + os.environ["PATH"])
    return script


def test_png_without_graphviz_is_a_clear_error(mlp, capsys, no_dot, tmp_path):
    _, err = cli(capsys, "ir", mlp, "--png", tmp_path / "g.png", code=1)
    assert "Graphviz's `dot` program, which is not installed" in err and "--format dot" in err
    assert not (tmp_path / "g.png").exists()


def test_svg_and_png_are_drawn_by_dot(mlp, capsys, fake_dot, tmp_path):
    out, _ = cli(capsys, "ir", mlp, "--grad", "--svg", tmp_path / "g.svg")
    assert out == f"drawn in {tmp_path / 'g.svg'}\n" and (tmp_path / "g.svg").read_text().startswith("<svg>")
    assert Path(str(fake_dot) + ".args").read_text() == f"-Tsvg -o {tmp_path / 'g.svg'}"
    cli(capsys, "ir", mlp, "--png", tmp_path / "g.png")
    assert Path(str(fake_dot) + ".args").read_text().startswith("-Tpng")
    _, err = cli(capsys, "ir", mlp, "--svg", tmp_path / "g.txt", code=1)
    assert "must end in .png, .svg, .pdf" in err


def test_program_draw_shows_inline_in_jupyter(mlp, fake_dot, tmp_path):
    drawing = gradlang.compile(mlp).draw(stage="grad")
    assert isinstance(drawing, Drawing)
    assert drawing._repr_svg_().startswith("<svg>")
    assert repr(drawing) == drawing.text and "# ---- backward (gradient) ----" in drawing.text
    assert drawing.save(tmp_path / "ir.svg").read_text().startswith("<svg>")


def test_program_draw_without_graphviz_falls_back_to_text(mlp, no_dot):
    drawing = gradlang.compile(mlp).draw(stage="elaborated")
    assert drawing._repr_svg_() is None and repr(drawing).startswith("# ---- forward ----")
    with pytest.raises(GradError, match="not installed"):
        drawing.save("ir.png")


# ---- print order and names ------------------------------------------------------------------------------

def test_print_order_puts_leaves_first_and_each_value_before_its_first_use(mlp):
    graph = gradlang.compile(mlp).gradient_graph()
    order = print_order(graph)
    assert [graph.op(n) for n in order[:5]] == ["input", "input", "param", "param", "param"]
    position = {n: i for i, n in enumerate(order)}
    assert all(position[o] < position[n] for n in order for o in graph.operands(n))
    grads = [printed_names(graph)[graph.outputs[f"grad:{p}"]] for p in ("W2", "b1", "W1")]
    assert sorted(grads, key=lambda g: position[graph.outputs[f"grad:{g[1:]}"]]) == ["dW2", "db1", "dW1"]


def test_a_gradient_is_named_after_the_value_it_is_the_gradient_of():
    """nn.mlp rebinds h in a loop: h (16 wide) and h.2 (8 wide); dh.2 must be the 8-wide one."""
    prog = gradlang.compile("import nn\ninput x : f32[B, 2]\nnet = nn.mlp([2, 16, 8, 1])\nloss = mean(net(x))\n")
    graph = prog.gradient_graph()
    shapes = {name: graph.shape(node) for node, name in printed_names(graph).items()}
    assert shapes["h"] == shapes["dh"] == ("B", 16)
    assert shapes["h.2"] == shapes["dh.2"] == ("B", 8)


# ---- the backward pass as source ---------------------------------------------------------------------------

def run_listing(prog, graph, feed):
    """Compile the listing of `graph` back and feed it the forward values it reads; return its gradients
    and the graph's, from the same run (so that random draws agree)."""
    listing = write_listing(graph)
    back = verify(compile_listing(listing.text, prog.param_names))
    probe = graph.copy()
    for name, node in listing.reads.items():
        probe.outputs[f"value:{name}"] = node
    grads = [f"grad:{p}" for p in prog.param_names]
    values = prog.run([f"value:{n}" for n in listing.reads] + grads, feed, probe)
    reads = dict(zip(listing.reads, values))
    want = dict(zip(prog.param_names, values[len(reads):]))
    names = list(back.inputs)
    bindings = {d: np.shape(reads[n])[i] for n in names for i, d in enumerate(back.shape(back.inputs[n]))
                if isinstance(d, str)}
    exe = Executable(schedule(back, grads, bindings), back, names, [])
    return dict(zip(prog.param_names, exe.run([np.asarray(reads[n]) for n in names], []))), want


@pytest.mark.parametrize("name", [pytest.param(p.stem, marks=pytest.mark.slow) if p.stem == "char_lstm" else p.stem
                                  for p in sorted(EXAMPLES.glob("*.grad"))])
def test_the_listing_compiled_back_gives_the_same_gradients(name):
    prog = gradlang.compile(EXAMPLES / f"{name}.grad", dtype="float64")
    feed = random_feed(prog, 3, np.random.default_rng(1))
    got, want = run_listing(prog, prog.gradient_graph(), feed)
    for param in prog.param_names:
        np.testing.assert_allclose(got[param], want[param], rtol=1e-12, atol=1e-14, err_msg=param)


def test_gradlang_grad_reads_like_backpropagation_by_hand(capsys):
    out, _ = cli(capsys, "grad", EXAMPLES / "moons_mlp.grad")
    lines = out.splitlines()
    assert lines[0].startswith("# The backward pass of") and "input h_2 : f32[B, 16]" in out
    body = [line for line in lines if line and not line.startswith(("#", "input"))]
    assert re.fullmatch(r"dscores = -where\(t\d+ > 0\.0, 1\.0 / t\d+, 0\.0\) \* y", body[0])
    assert [line.split(" = ")[0] for line in body if not line.startswith("t")] == [
        "dscores", "dnet_layers_2_b", "dnet_layers_2_W", "dh_2", "dnet_layers_1_b", "dnet_layers_1_W", "dh",
        "dnet_layers_0_b", "dnet_layers_0_W"]
    assert any(re.fullmatch(r"dh_2 = t\d+ @ transpose\(net_layers_2_W\)", line) for line in body)
    assert any(re.fullmatch(r"dnet_layers_0_W = 0\.0002 \* net_layers_0_W \+ transpose\(x\) @ t\d+", line)
               for line in body)


def test_listing_spells_out_unusual_gradients(tmp_path):
    """A param the loss ignores (a constant zero), two params sharing one gradient, a gradient that is a
    forward value, a non-scalar constant and an op without an operator of its own."""
    source = ("input x : f32[B, 2]\nparam a : [2] = ones\nparam b : [2] = ones\nparam unused : [] = ones\n"
              "param w : [2] = ones\n"
              "loss = sum(x @ (a + b)) + sum(w * [1.5, -2.0]) + sum(maximum(x, 0.5) * w)\n")
    prog = gradlang.compile(source, dtype="float64")
    text = write_listing(prog.gradient_graph()).text
    assert "dunused = const(0.0, dtype: \"f64\")" in text and "db = da" in text and "maximum(x, 0.5)" in text
    feed = {"x": np.array([[1.0, 2.0], [0.25, -1.0]])}
    got, want = run_listing(prog, prog.gradient_graph(), feed)
    for param, value in want.items():
        np.testing.assert_allclose(got[param], value, rtol=1e-12)


def test_compile_listing_rejects_what_is_not_a_listing():
    with pytest.raises(GradError, match="only input declarations and assignments"):
        compile_listing("loss = 1.0\n", [])
    with pytest.raises(GradError, match="unknown name q"):
        compile_listing("input x : f32[2]\nt = x * q\n", [])
    with pytest.raises(GradError, match="unknown function frobnicate"):
        compile_listing("input x : f32[2]\nt = frobnicate(x)\n", [])


# ---- docs/ir.md shows what the compiler prints ------------------------------------------------------------

DOC = ROOT / "docs" / "ir.md"


def _doc_commands():
    """(command, expected lines, the last ```grad program before it) for every ```text block that
    follows a `<!-- command: … -->` comment in docs/ir.md."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    found, program, i = [], None, 0
    while i < len(lines):
        if lines[i] == "```grad":
            end = lines.index("```", i + 1)
            program, i = "\n".join(lines[i + 1:end]) + "\n", end
        elif lines[i].startswith("<!-- command: "):
            command = lines[i][len("<!-- command: "):-len(" -->")]
            start = lines.index("```text", i) + 1
            end = lines.index("```", start)
            found.append((command, lines[start:end], program))
            i = end
        i += 1
    return found


@pytest.mark.parametrize("command, expected, program", _doc_commands(), ids=lambda v: v if isinstance(v, str)
                         and v.startswith("gradlang") else "")
def test_docs_show_what_the_compiler_prints(command, expected, program, tmp_path, capsys, monkeypatch):
    args = command.split()[1:]
    if "model.grad" in args:
        (tmp_path / "model.grad").write_text(program)
        monkeypatch.chdir(tmp_path)
    else:
        monkeypatch.chdir(ROOT)
    main(args)
    captured = capsys.readouterr()
    printed = [line.rstrip() for line in (captured.out + captured.err).splitlines()]
    position = 0
    for line in expected:
        assert line.rstrip() in printed[position:], f"docs/ir.md shows a line `{command}` does not print:\n{line}"
        position = printed.index(line.rstrip(), position) + 1


def test_docs_table_of_gradient_graph_sizes_is_current():
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index("<!-- table: gradient graph sizes -->") + 3
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        name, *numbers = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows[name] = numbers
    assert set(rows) == {p.stem for p in EXAMPLES.glob("*.grad")}
    for name, numbers in rows.items():
        prog = gradlang.compile(EXAMPLES / f"{name}.grad")
        raw = prog.raw_gradient_graph()
        after = len(prog.gradient_graph())
        assert numbers == [str(len(prog.elaborated.graph)), str(len(raw)), str(after),
                           f"{100 * (len(raw) - after) / len(raw):.0f}%"], name
