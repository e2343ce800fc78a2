"""Every gradient is taken from the numerically stable form (issue 14): `grad(...)` in the program, at any
order and inside phases, gets the same stability rewrites as the training gradient, agrees with it, and
each rewrite is listed once, where it fires. The rewrites themselves are tested in test_reports.py."""
import json

import numpy as np
import pytest

import gradlang
from gradlang.analysis import verify
from gradlang.cli import main
from gradlang.passes.stability import stabilize, stable_form


def sigmoid(z):
    return np.exp(-np.logaddexp(0, -z))


def softmax(z):
    return np.exp(z - np.logaddexp.reduce(z))


# name → (f as written, x, and in closed form at w = 1, z = 1000·w·x: f, ∂f/∂x, ∂f/∂w, ∂/∂w Σ ∂f/∂x)
X = np.array([-1.0, 1.0])
Z = 1000 * X
CASES = {
    "log(sigmoid)": ("sum(log(sigmoid(1000 * w * x)))", X,
                     -np.logaddexp(0, -Z).sum(), 1000 * sigmoid(-Z), (1000 * X * sigmoid(-Z)).sum(),
                     (1000 * sigmoid(-Z) - 1000 * Z * sigmoid(Z) * sigmoid(-Z)).sum()),
    "log(1 - sigmoid)": ("sum(log(1 - sigmoid(1000 * w * x)))", X,
                         -np.logaddexp(0, Z).sum(), -1000 * sigmoid(Z), -(1000 * X * sigmoid(Z)).sum(),
                         (-1000 * sigmoid(Z) - 1000 * Z * sigmoid(Z) * sigmoid(-Z)).sum()),
    "log(softmax)": ("sum(log(softmax(1000 * w * x)))", X,
                     (Z - np.logaddexp.reduce(Z)).sum(), 1000 * (1 - 2 * softmax(Z)),
                     (1000 * X).sum() - 2 * (softmax(Z) * 1000 * X).sum(), 0.0),   # Σ ∂f/∂x = 0 for every w
    "safe where": ("sum(where(x > 0, log(x * w), 0))", np.array([0.0, 4.0]),
                   np.log(4.0), np.array([0.0, 0.25]), 1.0, 0.0),
}
RULES = {"log(sigmoid)": "log(sigmoid(x)) → −softplus(−x)",
         "log(1 - sigmoid)": "log(1 − sigmoid(x)) → −softplus(x)",
         "log(softmax)": "log(softmax(x)) → log_softmax(x) = x − logsumexp(x)",
         "safe where": "where(c, log(x), …): where the branch is not taken its gradient would be NaN; "
                       "guarded as log(where(c, x, 1))"}


def program(f: str, rest: str) -> str:
    return f"input x : f32[2]\nparam w : [] = 1\nf = {f}\n{rest}"


@pytest.mark.parametrize("name", CASES)
def test_a_gradient_in_the_program_is_taken_from_the_stable_form(name):
    f, x, value, d_x, d_w, d_w_of_sum_d_x = CASES[name]
    prog = gradlang.compile(program(f, "output d_x = grad(f, x)\noutput d_w = grad(f, w)\n"
                                       "loss = f + 0.5 * sum(grad(f, x))\n"))
    feed = {"x": x.astype(np.float32)}
    outputs = prog.predict(feed)
    loss, trained = prog.loss(feed), prog.gradients(feed)["w"]
    assert np.all(np.isfinite(outputs["d_x"])) and np.isfinite(outputs["d_w"])
    assert np.isfinite(loss) and np.isfinite(trained)
    np.testing.assert_allclose(outputs["d_x"], d_x, rtol=1e-5)
    assert float(outputs["d_w"]) == pytest.approx(d_w, rel=1e-5)
    assert loss == pytest.approx(value + 0.5 * d_x.sum(), rel=1e-5)
    assert float(trained) == pytest.approx(d_w + 0.5 * d_w_of_sum_d_x, rel=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_the_gradient_in_the_program_agrees_with_the_training_gradient(name):
    f, x, *_ = CASES[name]
    prog = gradlang.compile(program(f, "output d_w = grad(f, w)\nloss = f\n"))
    feed = {"x": x.astype(np.float32)}
    in_program, trained = float(prog.predict(feed)["d_w"]), float(prog.gradients(feed)["w"])
    assert np.isfinite(in_program) and in_program == pytest.approx(trained, rel=1e-6)


def test_a_gradient_of_a_gradient_is_taken_from_the_stable_form():
    prog = gradlang.compile(program("sum(log(sigmoid(1000 * w * x)))",
                                    "g = grad(f, w)\noutput h = grad(g, w)\nloss = f + g\n"))
    x = np.array([-1.0, 0.001], dtype=np.float32)
    z = 1000 * x.astype(np.float64)
    g = (1000 * x * sigmoid(-z)).sum()
    h = -((1000 * x) ** 2 * sigmoid(z) * sigmoid(-z)).sum()   # ≈ −σ'(1): the saturated term vanishes
    assert float(prog.predict({"x": x})["h"]) == pytest.approx(h, rel=1e-4)
    assert prog.loss({"x": x}) == pytest.approx(-np.logaddexp(0, -z).sum() + g, rel=1e-5)
    assert float(prog.gradients({"x": x})["w"]) == pytest.approx(g + h, rel=1e-4)


def test_a_phase_trains_on_the_stable_gradient():
    prog = gradlang.compile(program("sum(log(sigmoid(1000 * w * x)))", """param v : [] = 0
loss a = f + 0.5 * sum(grad(f, x))
loss b = (v - 1) ** 2
train {
  phases = [phase(loss: a, params: [w], optimizer: sgd(lr: 0.001)),
            phase(loss: b, params: [v], optimizer: sgd(lr: 0.25))]
}
"""))
    prog.step({"x": X.astype(np.float32)})
    assert float(prog.params["w"]) == pytest.approx(1 - 0.001 * -500, rel=1e-5)   # ∂a/∂w = −500 (see CASES)
    assert float(prog.params["v"]) == pytest.approx(0.5)


@pytest.mark.parametrize("name", CASES)
def test_each_rewrite_is_listed_once_where_it_fires(name, tmp_path, capsys):
    source = program(CASES[name][0], "g = grad(f, w)\noutput h = grad(g, w)\nloss = f + 0.5 * sum(grad(f, x))\n")
    prog = gradlang.compile(source)
    assert [(r.rule, str(r.span)) for r in prog.rewrites] == [(RULES[name], "<string>:3:9")]
    path = tmp_path / "model.grad"
    path.write_text(source)
    assert main(["check", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["stability_rewrites"]
    assert listed == [{"rule": RULES[name], "location": f"{path}:3:9"}]


def test_stable_form_adds_nodes_and_keeps_the_program_as_written():
    prog = gradlang.compile(program("sum(log(sigmoid(1000 * w * x)))", "loss = f\n"))
    graph = prog.elaborated.graph.copy()
    before = {n: dict(d) for n, d in graph.nx.nodes(data=True)}
    stable = stable_form(graph, graph.outputs["loss"], [graph.params["w"]])
    verify(graph)
    assert stable not in before and all(graph.data(n) == d for n, d in before.items())
    assert [graph.op(n) for n in graph.order(roots=[stable])].count("sigmoid") == 0
    assert len(stabilize(graph)[1]) == 1            # the log(sigmoid) as written is still there to report


@pytest.mark.parametrize("h, f, want", [("sigmoid(w * x)", "sum(log(h))", "1 / h"),
                                       ("log(x * w)", "sum(where(x > 0, h, 0))", "where(x > 0, 1.0, 0.0)")])
def test_a_gradient_with_respect_to_a_value_a_rewrite_would_bypass_still_reaches_it(h, f, want):
    # rewritten, log(sigmoid(…)) would no longer read the sigmoid, nor the guarded where its branch h
    prog = gradlang.compile(f"input x : f32[2]\nparam w : [] = 1\nh = {h}\noutput d_h = grad({f}, h)\n"
                            f"output want = {want}\nloss = sum(w * x)\n")
    outputs = prog.predict({"x": np.array([0.0, 4.0], dtype=np.float32)})
    np.testing.assert_allclose(outputs["d_h"], outputs["want"], rtol=1e-6)
