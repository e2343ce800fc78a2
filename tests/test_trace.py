"""`gradlang trace` / `Program.trace`: every forward node's value and d loss / d value, checked against
`Program.gradients` on every example, against a hand computation on linear regression, and in each of
its forms (text, JSON, the drawing, the notebook table)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.gradcheck import random_feed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.grad"))
SHARED_DATA = ROOT.parent / "shared" / "data"
NO_DOT = "drawing needs Graphviz's dot (apt install graphviz, brew install graphviz or conda install graphviz)"


def _feed(prog, batch=2):
    """The first examples of the program's data (its inputs only), else random inputs of the declared shapes."""
    if "data" in prog.plan:
        try:
            return {k: v[:batch] for k, v in prog.load_data().items() if k in prog.input_names}
        except gradlang.GradError as err:
            pytest.skip(f"the example's data is not here ({err.message}); CI puts shared/ beside the clone")
    return random_feed(prog, batch, np.random.default_rng(0))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_traced_gradients_of_the_params_are_the_programs(path, monkeypatch):
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    prog = gradlang.compile(path, dtype="float64")
    feed = _feed(prog)
    traced = prog.trace(feed)
    loss = None if traced.loss == "loss" and not prog.phases else traced.loss
    if _draws_at_random(prog):   # other draws than gradients' own: a central difference along a direction
        _check_by_differences(prog, feed, traced)
        return
    traced_params = {t.name for t in traced.nodes if t.role == "param"}
    for name, gradient in prog.gradients(feed, loss).items():
        if name not in traced_params:   # the loss does not reach it (another phase's param): no gradient
            assert not np.any(gradient), name
            continue
        np.testing.assert_allclose(traced.node(name).grad_array, gradient, rtol=1e-9, atol=1e-12, err_msg=name)
    assert traced.loss_value == pytest.approx(prog.loss(feed, loss), rel=1e-9)
    assert len({t.name for t in traced.nodes}) == len(traced.nodes)


def _draws_at_random(prog) -> bool:
    from gradlang.ops import registry
    graph = prog.model_graph
    return any(registry.get(graph.op(n)).random for n in graph.nx.nodes)


def _check_by_differences(prog, feed, traced, eps=1e-6):
    """Σ_p ⟨d loss / d p, v_p⟩ against (loss(θ + εv) − loss(θ − εv)) / 2ε: each trace draws the same noise
    (a copy of the program's generator), so the loss is a function of the params alone."""
    rng = np.random.default_rng(1)
    start = {name: np.array(value) for name, value in prog.params.items()}
    direction = {name: rng.standard_normal(value.shape) for name, value in start.items()}
    traced_params = {t.name for t in traced.nodes if t.role == "param"}
    predicted = sum(float(np.sum(traced.node(name).grad_array * direction[name])) for name in start
                    if name in traced_params)
    sides = []
    for sign in (1, -1):
        prog.set_params({name: start[name] + sign * eps * direction[name] for name in start})
        sides.append(prog.trace(feed, traced.loss).loss_value)
    prog.set_params(start)
    assert (sides[0] - sides[1]) / (2 * eps) == pytest.approx(predicted, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("training", [False, True])
def test_a_program_with_state_traces_in_either_mode(training):
    prog = gradlang.compile("""
import nn
data arms = spirals(n: 64, classes: 3, seed: 0)
input x : f32[B, 2]
input y : i64[B]
hidden = nn.dense(2, 8)
norm = nn.batch_norm(8)
out = nn.dense(8, 3)
loss = cross_entropy(out(relu(norm(hidden(x)))), y)
""", dtype="float64")
    feed = {k: v[:8] for k, v in prog.load_data("arms").items()}
    traced = prog.trace(feed, training=training)
    assert traced.node("norm.running_var").role == "state"
    for name, gradient in prog.gradients(feed, training=training).items():
        np.testing.assert_allclose(traced.node(name).grad_array, gradient, rtol=1e-9, atol=1e-12, err_msg=name)


def test_linear_regression_on_one_example_is_the_hand_computation():
    prog = gradlang.compile(ROOT / "examples" / "linear_regression.grad", dtype="float64")
    prog.set_params({"beta0": 0.5, "beta1": 2.0})
    x, y = 3.0, 10.0
    traced = prog.trace({"x": np.array([x]), "y": np.array([y])})
    y_hat = 0.5 + 2.0 * x                      # 6.5
    residual = y - y_hat                       # 3.5
    assert traced.node("y_hat").value.values == [y_hat]
    assert traced.loss_value == 0.5 * residual ** 2              # ½·3.5² = 6.125
    assert traced.node("y_hat").grad.values == [-residual]       # dL/dŷ = −(y − ŷ)
    assert traced.node("beta0").grad.values == -residual         # dL/dβ0 = −(y − ŷ) = −3.5
    assert traced.node("beta1").grad.values == -residual * x     # dL/dβ1 = −(y − ŷ)·x = −10.5
    assert traced.node("loss").grad.values == 1.0


def test_the_text_names_each_node_with_its_source_line(capsys):
    assert main(["trace", str(ROOT / "examples" / "moons_mlp.grad"), "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("moons_mlp.grad: loss loss = ")
    assert "%net.layers.0.W : f32[2,16] = param" in out
    assert "moons_mlp.grad:11  scores    = net(x)[:, 0]" in out     # library nodes at the user's call
    assert "zeros " in out and "norm " in out                        # summaries of the larger tensors


def test_json_holds_every_node():
    prog = gradlang.compile(ROOT / "examples" / "xor.grad")
    traced = prog.trace(_feed(prog, 4))
    data = json.loads(traced.json())
    assert [n["name"] for n in data["nodes"]] == [t.name for t in traced.nodes]
    param = next(n for n in data["nodes"] if n["role"] == "param")
    assert set(param["grad"]) >= {"mean", "std", "min", "max", "zeros", "norm"}


def test_cli_json_and_input_file(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", x=np.array([1.0, 2.0], np.float32), y=np.array([3.0, 5.0], np.float32))
    assert main(["trace", str(ROOT / "examples" / "linear_regression.grad"), "--input", str(tmp_path / "x.npz"),
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    x = next(n for n in data["nodes"] if n["name"] == "x")
    assert x["value"]["values"] == [1.0, 2.0]


def test_a_program_without_data_needs_an_input(capsys):
    assert main(["trace", str(ROOT / "examples" / "policy_gradient.grad")]) == 1
    assert "give --input" in capsys.readouterr().err


def test_the_notebook_shows_a_table():
    prog = gradlang.compile(ROOT / "examples" / "linear_regression.grad")
    page = prog.trace(_feed(prog, 1))._repr_html_()
    assert page.count("<tr>") == len(prog.trace(_feed(prog, 1)).nodes) + 1 and "d loss / d value" in page


@pytest.mark.skipif(shutil.which("dot") is None, reason=NO_DOT)
def test_the_drawing_holds_each_nodes_value_and_gradient(tmp_path, capsys):
    assert main(["trace", str(ROOT / "examples" / "linear_regression.grad"), "--svg", str(tmp_path / "t.svg")]) == 0
    svg = (tmp_path / "t.svg").read_text()
    assert "value" in svg and "grad" in svg and "%beta1" in svg


def test_the_drawing_text_without_graphviz():
    prog = gradlang.compile(ROOT / "examples" / "linear_regression.grad")
    dot = prog.trace(_feed(prog, 1)).dot()
    assert dot.startswith("digraph") and "value 0" in dot and "grad 1" in dot
