"""`gradlang gradcheck`: every example's gradients agree with central differences in float64; --json;
a non-zero exit beyond the tolerance; --per-op names the op whose VJP rule is wrong (a rule broken on
purpose in the registry) and stays quiet at kinks; stop_gradient is respected."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.gradcheck import check_op, gradcheck, random_feed
from gradlang.ops import registry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = [pytest.param(p.stem, marks=pytest.mark.slow) if p.stem == "char_lstm"   # ~30 s: a 64-step LSTM
         else p.stem for p in sorted(EXAMPLES.glob("*.grad"))]

TANH_NET = """
input x : f32[B, 3]
input y : f32[B]
param W : [3, 4] = glorot_uniform
param v : [4] = glorot_uniform
h = tanh(x @ W)
loss = mean((h @ v - y) ** 2)
"""


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", CASES)
def test_every_example_passes_gradcheck(name, capsys):
    code, out, err = cli(capsys, "gradcheck", EXAMPLES / f"{name}.grad", "--batch", 2)
    assert code == 0, out + err
    assert "agrees with central differences" in out


def test_the_report_lists_each_param_and_json_says_the_same(tmp_path, capsys):
    path = tmp_path / "net.grad"
    path.write_text(TANH_NET)
    code, out, _ = cli(capsys, "gradcheck", path)
    assert code == 0
    assert "random inputs of the declared shapes, batch 8" in out
    assert [line.split()[0] for line in out.splitlines()[2:4]] == ["W", "v"]
    code, out, _ = cli(capsys, "gradcheck", path, "--json", "--per-op")
    report = json.loads(out)
    assert code == 0 and report["ok"] and set(report["params"]) == {"W", "v"}
    assert all(p["max_relative_error"] < 1e-6 and p["compared"] >= 3 for p in report["params"].values())
    assert report["per_op"]["checked"] >= 4 and report["per_op"]["failures"] == []


def test_the_program_s_own_data_is_used_when_it_has_some(capsys):
    code, out, _ = cli(capsys, "gradcheck", EXAMPLES / "moons_mlp.grad", "--batch", 5)
    assert code == 0 and "the first 5 examples of the program's data" in out
    code, out, _ = cli(capsys, "gradcheck", EXAMPLES / "moons_mlp.grad", "--batch", 5, "--random")
    assert code == 0 and "random inputs" in out


def test_beyond_the_tolerance_the_exit_status_is_one(tmp_path, capsys):
    path = tmp_path / "net.grad"
    path.write_text(TANH_NET)
    code, out, _ = cli(capsys, "gradcheck", path, "--tolerance", "1e-30")
    assert code == 1 and "WRONG" in out and "beyond the tolerance 1e-30" in out


def _broken_tanh(e, n, g):
    """d tanh = 1 − tanh², here wrongly 1 − tanh."""
    return [lambda: e("mul", g, e("sub", e.const(1, n.dtype), n.id))]


def test_per_op_names_the_op_whose_rule_is_broken_and_its_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "net.grad"
    path.write_text(TANH_NET)
    monkeypatch.setitem(registry._REGISTRY, "tanh", dataclasses.replace(registry.get("tanh"), vjp=_broken_tanh))
    code, out, _ = cli(capsys, "gradcheck", path, "--per-op")
    assert code == 1
    assert f"first wrong gradient rule: {path}:6:5: the gradient rule of tanh is wrong for operand 0" in out
    report = gradcheck(path, per_op=True)
    assert [(f.op, f.location) for f in report.op_failures] == [("tanh", f"{path}:6:5")]


def test_per_op_finds_the_rule_even_where_the_whole_gradient_looks_right(tmp_path, monkeypatch):
    """Another term dominates W's gradient: the broken tanh path changes it too little for the
    whole-program check to notice, but the per-op check, at tanh's own values, does."""
    path = tmp_path / "dominated.grad"
    path.write_text(TANH_NET.replace("loss = mean((h @ v - y) ** 2)",
                                     "loss = 1e-6 * mean((h @ v - y) ** 2) + sum((W - 1) ** 2)"))
    monkeypatch.setitem(registry._REGISTRY, "tanh", dataclasses.replace(registry.get("tanh"), vjp=_broken_tanh))
    report = gradcheck(path, per_op=True)
    assert all(p.error <= report.tolerance for p in report.params)
    assert [f.op for f in report.op_failures] == ["tanh"] and not report.ok


def test_per_op_skips_kinks_instead_of_failing_them():
    prog = gradlang.compile("input x : f32[4]\nparam w : [4] = ones\nloss = sum(relu(x * w) + abs(x - x * w))\n",
                            dtype="float64")
    graph = prog.elaborated.graph
    x = np.array([0.0, 1.0, -1.0, 2.0])       # relu at 0, abs at 0 everywhere: kinks
    for node in graph.order():
        if graph.op(node) in ("relu", "abs"):
            values = {}
            for n in (node, *graph.operands(node)):
                graph.outputs[f"v{n}"] = n
            values = dict(zip([node, *graph.operands(node)],
                              prog.run([f"v{n}" for n in (node, *graph.operands(node))], {"x": x}, graph)))
            assert check_op(graph, node, values, np.random.default_rng(0)) == []


def test_stop_gradient_is_held_fixed_as_the_compiler_holds_it(tmp_path, capsys):
    path = tmp_path / "baseline.grad"
    path.write_text("input x : f32[B]\nparam b : [] = ones\nparam w : [] = ones\n"
                    "advantage = stop_gradient(x - b)\nloss = mean(advantage * w * x) + mean((x - b) ** 2)\n")
    code, out, _ = cli(capsys, "gradcheck", path)
    assert code == 0, out


def test_random_feed_has_the_declared_shapes_and_valid_labels():
    prog = gradlang.compile("input x : f32[B, 3]\ninput y : i64[B]\ninput m : bool[2]\nloss = mean(x)\n")
    feed = random_feed(prog, 5, np.random.default_rng(0))
    assert feed["x"].shape == (5, 3) and feed["x"].dtype == np.float32
    assert feed["y"].dtype == np.int64 and set(np.unique(feed["y"])) <= {0, 1}
    assert feed["m"].shape == (2,) and feed["m"].dtype == np.bool_
