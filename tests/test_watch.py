"""`--watch-grads` / `train(watch_grads=True)`: each update's gradient norms and update/param ratios, held to
gradients computed directly; the vanishing-gradient example's warning; the logs and the plot; and a step
left unchanged when the flag is off."""
import json
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.runtime.metrics_log import JSON_LINES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

SOURCE = """
import nn
data arms = spirals(n: 64, classes: 3, seed: 0)
input x : f32[B, 2]
input y : i64[B]
net = nn.mlp([2, 8, 8, 3], activation: tanh)
loss = cross_entropy(net(x), y)
train {
  data = arms
  epochs = 3
  optimizer = OPTIMIZER
}
"""


@pytest.mark.parametrize("optimizer", ["sgd(lr: 0.1)", "adam(lr: 0.01)", "sgd(lr: 0.1, momentum: 0.9)"])
def test_the_watch_is_the_gradients_and_updates_computed_directly(optimizer):
    prog = gradlang.compile(SOURCE.replace("OPTIMIZER", optimizer), dtype="float64")
    data = prog.load_data()
    expected_norms, expected_ratios = [], []
    reference = gradlang.compile(SOURCE.replace("OPTIMIZER", optimizer), dtype="float64")
    for _ in range(3):   # full batch: one update per epoch
        gradients = reference.gradients(data)
        before = {k: np.array(v) for k, v in reference.params.items()}
        reference.step(data)
        expected_norms.append({k: np.linalg.norm(g) for k, g in gradients.items()})
        expected_ratios.append({k: np.linalg.norm(reference.params[k] - before[k]) / np.linalg.norm(before[k])
                                if np.linalg.norm(before[k]) > 0 else np.nan for k in before})
    watch = prog.train(watch_grads=True).gradient_watch
    for name, history in watch.histories.items():
        assert history.steps == [1, 2, 3]
        np.testing.assert_allclose(history.norms, [e[name] for e in expected_norms], rtol=1e-10)
        np.testing.assert_allclose(history.ratios, [e[name] for e in expected_ratios], rtol=1e-8)


def test_the_vanishing_example_warns_and_relu_does_not(tmp_path, capsys):
    for name, warned in (("vanishing_sigmoid", True), ("vanishing_relu", False)):
        assert main(["run", str(EXAMPLES / f"{name}.grad"), "--watch-grads", "--epochs", "3", "--quiet",
                     "--out", str(tmp_path / f"{name}.npz")]) == 0
        captured = capsys.readouterr()
        assert "across layers at the end: net.layers.0.W's gradient is" in captured.out
        warning = f"warning: the gradient of net.layers.0.W ({EXAMPLES / name}.grad:13) ended"
        assert (warning in captured.err) is warned, captured.err


def test_the_watch_goes_to_the_log_and_the_json(tmp_path, capsys):
    path = tmp_path / "m.grad"
    path.write_text(SOURCE.replace("OPTIMIZER", "adam(lr: 0.01)"))
    assert main(["run", str(path), "--watch-grads", "--json", "--log-dir", str(tmp_path / "log"),
                 "--out", str(tmp_path / "p.npz")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["gradients"]) == {"net.layers.0.W", "net.layers.0.b", "net.layers.1.W", "net.layers.1.b",
                                        "net.layers.2.W", "net.layers.2.b"}
    assert result["gradients"]["net.layers.0.W"]["location"] == f"{path}:6"
    steps = [json.loads(line) for line in (tmp_path / "log" / JSON_LINES).read_text().splitlines()
             if '"grad_norm"' in line]
    assert len(steps) == 3 and set(steps[0]["update_ratio"]) == set(result["gradients"])


def test_the_plot_draws_one_line_per_layer(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="needs the plot extra: pip install 'gradlang[plot]'")
    import matplotlib.figure
    drawn = {}
    original = matplotlib.figure.Figure.savefig

    def keep(figure, *args, **kwargs):
        drawn.update({ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in figure.axes})
        return original(figure, *args, **kwargs)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    path = tmp_path / "m.grad"
    path.write_text(SOURCE.replace("OPTIMIZER", "adam(lr: 0.01)"))
    assert main(["run", str(path), "--watch-grads", "--quiet", "--plot", str(tmp_path / "c.png"),
                 "--out", str(tmp_path / "p.npz")]) == 0
    assert drawn["gradient norm per layer"] == ["net.layers.0.W", "net.layers.1.W", "net.layers.2.W"]


def test_without_the_flag_the_step_is_unchanged():
    prog = gradlang.compile(SOURCE.replace("OPTIMIZER", "sgd(lr: 0.1)"))
    assert prog.runner.watch is None
    result = prog.train()
    assert result.gradient_watch is None and prog.runner.watch is None
    watched = gradlang.compile(SOURCE.replace("OPTIMIZER", "sgd(lr: 0.1)"))
    watched.train(watch_grads=True)
    assert watched.runner.watch is None   # only while training
    for name in prog.param_names:   # watching does not change what training computes
        np.testing.assert_array_equal(prog.params[name], watched.params[name])


@pytest.mark.slow
def test_the_vanishing_gradients_page_numbers():
    numbers = {}
    for name in ("vanishing_sigmoid", "vanishing_relu"):
        result = gradlang.compile(EXAMPLES / f"{name}.grad").train(watch_grads=True)
        numbers[name] = (result.metrics["accuracy"], result.gradient_watch.totals())
    accuracy, totals = numbers["vanishing_sigmoid"]   # docs/vanishing_gradients.md
    assert accuracy == pytest.approx(1 / 3, abs=0.01)
    assert totals["net.layers.0.W"]["grad_norm_last"] == pytest.approx(1.03e-5, rel=0.02)
    assert totals["net.layers.7.W"]["grad_norm_last"] == pytest.approx(0.388, rel=0.02)
    accuracy, totals = numbers["vanishing_relu"]
    assert accuracy == pytest.approx(0.968, abs=0.005)
    assert totals["net.layers.0.W"]["grad_norm_last"] == pytest.approx(0.0641, rel=0.02)
