"""Every example trains to its stated result, through the CLI and through the Python API."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists(),
                                 reason=f"the real MNIST files are not in {SHARED_DATA / 'mnist'} "
                                        "(CI puts shared/ beside the clone)")


def run_cli(args, capsys):
    status = main(args)
    out = capsys.readouterr()
    assert status == 0, out.err
    return out


def test_every_example_is_covered_here():
    tested = {"linear_regression", "moons_mlp", "xor", "mnist_logreg", "mnist_mlp", "overfitting", "overfitting_l2"}
    assert {p.stem for p in EXAMPLES.glob("*.grad")} <= tested


def test_linear_regression_recovers_the_generating_coefficients(tmp_path, capsys):
    out = run_cli(["run", str(EXAMPLES / "linear_regression.grad"), "--json", "--out", str(tmp_path / "p.npz")],
                  capsys)
    result = json.loads(out.out)
    assert result["steps"] == 200
    params = np.load(result["params_file"])
    # the data was generated with β0 = 3, β1 = 2
    assert abs(float(params["beta0"]) - 3.0) < 0.03
    assert abs(float(params["beta1"]) - 2.0) < 0.02


def test_linear_regression_matches_least_squares_through_the_api():
    prog = gradlang.compile(EXAMPLES / "linear_regression.grad")
    prog.train()
    data = prog.load_data()
    design = np.stack([np.ones_like(data["x"]), data["x"]], axis=1)
    exact = np.linalg.lstsq(design, data["y"], rcond=None)[0]
    np.testing.assert_allclose([float(prog.params["beta0"]), float(prog.params["beta1"])], exact, rtol=1e-4)


def test_moons_mlp_reaches_full_training_accuracy_via_a_real_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gradlang.cli", "run", str(EXAMPLES / "moons_mlp.grad"), "--json",
                           "--out", str(tmp_path / "moons.npz")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) >= {"loss", "metrics", "steps", "seconds", "params_file"}
    assert result["metrics"]["accuracy"] == 1.0
    assert result["steps"] == 100
    saved = np.load(result["params_file"])
    assert sorted(saved.files) == sorted(f"net.layers.{i}.{p}" for i in range(3) for p in "Wb")


def test_moons_mlp_through_the_api_is_deterministic():
    results = []
    for _ in range(2):
        prog = gradlang.compile(EXAMPLES / "moons_mlp.grad")
        result = prog.train()
        results.append((result.loss, {k: v.copy() for k, v in prog.params.items()}))
        assert result.metrics["accuracy"] == 1.0
    assert results[0][0] == results[1][0]
    for name in results[0][1]:
        np.testing.assert_array_equal(results[0][1][name], results[1][1][name])


def test_moons_mlp_progress_and_summary(tmp_path, capsys):
    out = run_cli(["run", str(EXAMPLES / "moons_mlp.grad"), "--out", str(tmp_path / "m.npz")], capsys)
    assert "100/100" in out.err
    assert "accuracy" in out.out and "params saved to" in out.out


def test_xor_needs_the_hidden_layer(capsys, tmp_path):
    out = run_cli(["run", str(EXAMPLES / "xor.grad"), "--json", "--out", str(tmp_path / "x.npz")], capsys)
    assert json.loads(out.out)["metrics"]["accuracy"] == 1.0
    linear = gradlang.compile("""
        data table = xor()
        input x : f32[B, 2]
        input y : f32[B]
        param w : [2] = zeros
        param b : [] = zeros
        logits = x @ w + b
        loss = binary_cross_entropy(logits, y)
        metric accuracy = mean((logits > 0) == (y > 0.5))
        train {
          data = table
          steps = 500
          optimizer = sgd(lr: 0.5, momentum: 0.9)
        }
    """)
    assert linear.train().metrics["accuracy"] <= 0.75


@pytest.mark.parametrize("name", ["linear_regression", "moons_mlp", "xor"])
def test_gradient_ir_of_each_example_prints_with_locations(name, capsys):
    out = run_cli(["ir", str(EXAMPLES / f"{name}.grad"), "--grad"], capsys)
    assert "# ---- backward (gradient) ----" in out.out
    assert f"{name}.grad:" in out.out
    for param in gradlang.compile(EXAMPLES / f"{name}.grad").params:
        assert f"grad:{param}" in out.out


@needs_mnist
@pytest.mark.parametrize("name", ["mnist_logreg", "mnist_mlp"])
def test_mnist_examples_smoke_run_on_real_data(name, tmp_path, capsys, monkeypatch):
    """A short run on the real files: the loss falls and the test set is evaluated."""
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    prog = gradlang.compile(EXAMPLES / f"{name}.grad")
    train = prog.load_data()
    subset = {k: v[:2560] for k, v in train.items()}
    first = prog.loss({k: v[:512] for k, v in subset.items()})
    result = prog.train(subset, steps=20)
    assert result.steps == 20 and result.loss < first
    assert result.metrics["accuracy"] > 0.6
    assert set(result.test) == {"loss", "accuracy"}


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("name, target", [("mnist_logreg", 0.92), ("mnist_mlp", 0.98)])
def test_mnist_examples_reach_their_test_accuracy(name, target, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    out = run_cli(["run", str(EXAMPLES / f"{name}.grad"), "--json", "--out", str(tmp_path / "p.npz")], capsys)
    result = json.loads(out.out)
    assert result["test"]["accuracy"] >= target


def test_overfitting_examples_differ_by_one_l2_term():
    plain = (EXAMPLES / "overfitting.grad").read_text().splitlines()
    cured = (EXAMPLES / "overfitting_l2.grad").read_text().splitlines()
    added = [line for line in cured if line not in plain and not line.startswith("#")]
    assert added == ["data_loss = binary_cross_entropy(logits, (y + 1) / 2)",
                     "loss      = data_loss + 0.003 * l2(net.params)"]


@pytest.mark.parametrize("name", ["overfitting", "overfitting_l2"])
def test_overfitting_examples_smoke(name):
    result = gradlang.compile(EXAMPLES / f"{name}.grad").train(epochs=20)
    assert result.steps == 20 and len(result.epoch_log) == 20
    assert "val_accuracy" in result.epoch_log[-1]


def test_l2_closes_the_gap_between_training_and_held_out_accuracy():
    gaps = {}
    for name in ("overfitting", "overfitting_l2"):
        result = gradlang.compile(EXAMPLES / f"{name}.grad").train()
        gaps[name] = (result.metrics["accuracy"], result.validation["accuracy"])
    assert gaps["overfitting"][0] == 1.0 and gaps["overfitting"][1] < 0.9
    assert gaps["overfitting_l2"][1] > gaps["overfitting"][1]
    assert gaps["overfitting_l2"][0] - gaps["overfitting_l2"][1] < gaps["overfitting"][0] - gaps["overfitting"][1]
