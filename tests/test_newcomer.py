"""Four programs a newcomer writes from the docs alone, run the first time as the docs say they will:
logistic regression on a CSV; one MLP on MNIST compared under SGD, momentum and Adam without editing
the file; an MLP with dropout and a step-decay schedule; a custom training loop in Python fitting a sine."""
import json
from pathlib import Path

import numpy as np
import pytest
from shared_data import SHARED_DATA, needs_mnist

import gradlang
from gradlang.cli import main

ROOT = Path(__file__).resolve().parent.parent

# ---- 1. logistic regression on a CSV, by the column's name, standardized, then predict on new rows ----

LOGISTIC = """
data exams = csv(path: "train.csv", target: "passed", standardize: true)
data later = csv(path: "test.csv", target: "passed", standardize: true)

input x : f32[B, 2]
input y : f32[B]
param w : [2] = zeros
param b : [] = zeros

logit = x @ w + b
loss = binary_cross_entropy(logit, y)
metric accuracy = mean((logit > 0) == (y > 0.5))
output probability = sigmoid(logit)

train {
  data      = exams
  test      = later
  batch     = 32
  epochs    = 30
  optimizer = sgd(lr: 0.5)
}
"""


def _exam_table(rng, n):
    hours, score = rng.uniform(0, 10, n), rng.uniform(40, 100, n)
    passed = (0.8 * (hours - 5) + 0.1 * (score - 70) + rng.normal(0, 0.5, n) > 0).astype(int)
    return hours, score, passed


def test_logistic_regression_on_a_csv(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for name, n in (("train.csv", 400), ("test.csv", 100)):
        hours, score, passed = _exam_table(rng, n)
        rows = "".join(f"{h:.2f},{s:.1f},{p}\n" for h, s, p in zip(hours, score, passed))
        (tmp_path / name).write_text("hours,score,passed\n" + rows)
    (tmp_path / "new.csv").write_text("hours,score\n9.5,95\n0.5,45\n")
    (tmp_path / "exams.grad").write_text(LOGISTIC)
    assert main(["run", str(tmp_path / "exams.grad"), "--quiet", "--json", "--out", str(tmp_path / "p.npz")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["accuracy"] > 0.9 and result["test"]["accuracy"] > 0.9, result
    assert main(["predict", str(tmp_path / "exams.grad"), "--params", str(tmp_path / "p.npz"),
                 "--input", str(tmp_path / "new.csv"), "--json"]) == 0
    probability = json.loads(capsys.readouterr().out)["probability"]
    assert probability[0] > 0.9 and probability[1] < 0.1


# ---- 2. one MLP on MNIST, three optimizers from the command line and from Python ------------------------

MNIST_MLP = """
import nn

data digits = mnist(split: "train", limit: 3000)
data held_out = mnist(split: "test", limit: 1000)

input x : f32[B, 784]
input y : i64[B]
net = nn.mlp([784, 64, 10])
logits = net(x)
loss = cross_entropy(logits, y)
metric accuracy = accuracy(logits, y)

train {
  data      = digits
  test      = held_out
  batch     = 64
  epochs    = 2
  optimizer = sgd(lr: 0.1)
}
"""


@needs_mnist
def test_one_mlp_on_mnist_under_three_optimizers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    (tmp_path / "digits.grad").write_text(MNIST_MLP)
    accuracy = {}
    for optimizer in ("sgd(lr: 0.1)", "sgd(lr: 0.1, momentum: 0.9)", "adam(lr: 0.001)"):
        assert main(["run", str(tmp_path / "digits.grad"), "--quiet", "--json", "--set", f"optimizer={optimizer}",
                     "--out", str(tmp_path / "p.npz")]) == 0
        accuracy[optimizer] = json.loads(capsys.readouterr().out)["test"]["accuracy"]
    assert all(a > 0.8 for a in accuracy.values()), accuracy
    assert accuracy["sgd(lr: 0.1, momentum: 0.9)"] > accuracy["sgd(lr: 0.1)"], accuracy
    # the same comparison from Python, each from the same initial params
    from_python = {}
    for optimizer in accuracy:
        prog = gradlang.compile(tmp_path / "digits.grad")
        from_python[optimizer] = prog.train(optimizer=optimizer).test["accuracy"]
    assert from_python == pytest.approx(accuracy, abs=1e-6)


# ---- 3. an MLP with dropout and a step-decay schedule --------------------------------------------------

DROPOUT = """
import nn

data arms = spirals(n: 600, classes: 3, noise: 0.2, seed: 0)
data fresh = spirals(n: 300, classes: 3, noise: 0.2, seed: 1)

input x : f32[B, 2]
input y : i64[B]
hidden = nn.dense(2, 64, activation: relu)
out = nn.dense(64, 3)
logits = out(dropout(hidden(x), rate: 0.2))
loss = cross_entropy(logits, y)
metric accuracy = accuracy(logits, y)

train {
  data       = arms
  test       = fresh
  validation = 0.2
  batch      = 32
  epochs     = 40
  optimizer  = adam(lr: step_decay(step, 0.02, every: 300, factor: 0.5))
  seed       = 3
}
"""


def test_an_mlp_with_dropout_and_step_decay():
    prog = gradlang.compile(DROPOUT)
    result = prog.train()
    assert result.steps == 40 * 15
    assert prog.runner.learning_rate(0) == pytest.approx(0.02)
    assert prog.runner.learning_rate(600) == pytest.approx(0.005)
    assert result.test["accuracy"] > 0.9, result
    data = prog.load_data("fresh")
    assert prog.metrics(data) == prog.metrics(data)   # evaluation: dropout off, the same numbers twice


# ---- 4. a custom loop in Python fitting a sine ----------------------------------------------------------

SINE = """
import nn
input x : f32[B, 1]
input y : f32[B, 1]
net = nn.mlp([1, 32, 32, 1], activation: tanh)
pred = net(x)
loss = mse(pred, y)
output fit = pred
train {
  optimizer = adam(lr: 0.01)
}
"""


def test_a_custom_loop_fitting_a_sine():
    prog = gradlang.compile(SINE)
    rng = np.random.default_rng(0)
    grid = np.linspace(-np.pi, np.pi, 200, dtype=np.float32)[:, None]
    first = prog.loss({"x": grid, "y": np.sin(grid)})
    for _ in range(1500):
        xs = rng.uniform(-np.pi, np.pi, size=(64, 1)).astype(np.float32)
        prog.step({"x": xs, "y": np.sin(xs)})
    fitted = prog.predict({"x": grid})["fit"]
    assert prog.steps_taken == 1500
    assert np.abs(fitted - np.sin(grid)).max() < 0.1, np.abs(fitted - np.sin(grid)).max()
    assert prog.loss({"x": grid, "y": np.sin(grid)}) < first / 100
