"""The benchmark suite: each hand-written NumPy reference computes what its gradlang program computes
(loss and gradients, and the parameters after an SGD step), and the runner runs. Correctness only:
timings are the benchmark's business, not the tests'."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlang

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:        # `benchmarks` lives beside the package, not in it
    sys.path.insert(0, str(ROOT))

from benchmarks.__main__ import check_same, cnn_feed, main, token_feed  # noqa: E402
from benchmarks.references import LinRegReference, MLPReference  # noqa: E402
from benchmarks.references_dl import AttentionReference, CNNReference, LSTMReference  # noqa: E402

BENCH = ROOT / "benchmarks"

# (program, a small feed, the reference for that feed's batch)
SMALL_CASES = {
    "cnn": ("cnn.grad", lambda: cnn_feed(3, seed=1), lambda p: CNNReference(p, 3)),
    "lstm": ("lstm.grad", lambda: token_feed(2, 50, seed=1), lambda p: LSTMReference(p, 2, 50)),
    "attention": ("attention.grad", lambda: token_feed(2, 32, seed=1), lambda p: AttentionReference(p, 2, 32)),
    "mlp": ("mlp.grad", lambda: {"x": np.random.default_rng(1).random((5, 784), dtype=np.float32),
                                 "y": np.arange(5) % 10}, lambda p: MLPReference(p, 5)),
    "linreg": ("linreg.grad", lambda: {"x": np.linspace(-1, 1, 7, dtype=np.float32),
                                       "y": np.linspace(0, 3, 7, dtype=np.float32)},
               lambda p: LinRegReference(p, 7)),
}


@pytest.mark.parametrize("case", sorted(SMALL_CASES))
def test_reference_matches_gradlang(case):
    program, make_feed, make_reference = SMALL_CASES[case]
    prog = gradlang.compile(BENCH / program)
    feed = make_feed()
    reference = make_reference(prog.params)
    check_same(prog, feed, reference, list(prog.params))
    # one SGD step each: the same loss before it and the same params after it
    assert prog.step(feed) == pytest.approx(reference.step(feed["x"], feed["y"]), rel=1e-4)
    after = {"w": reference.w, "b": reference.b} if case == "linreg" else reference.p
    for name, value in prog.params.items():
        np.testing.assert_allclose(value, after[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("case", ["mlp", "linreg"])
def test_pytorch_reference_matches_gradlang(case):
    pytest.importorskip("torch", reason="PyTorch is the optional third reference: pip install -e '.[bench]'")
    from benchmarks.references_torch import TorchLinReg, TorchMLP
    program, make_feed, _ = SMALL_CASES[case]
    prog = gradlang.compile(BENCH / program)
    feed = make_feed()
    reference = (TorchMLP if case == "mlp" else TorchLinReg)(prog.params)
    check_same(prog, feed, reference, list(prog.params))
    assert prog.step(feed) == pytest.approx(reference.step(feed["x"], feed["y"]), rel=1e-4)
    for name, value in prog.params.items():
        np.testing.assert_allclose(value, reference.p[name].detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_check_same_catches_a_reference_that_differs():
    prog = gradlang.compile(BENCH / "attention.grad")
    params = dict(prog.params)
    params["block.attend.Wq"] = params["block.attend.Wq"] * np.float32(1.01)
    reference = AttentionReference(params, 2, 32)
    with pytest.raises(AssertionError):
        check_same(prog, token_feed(2, 32, seed=1), reference, list(prog.params))


def test_runner_times_a_case_and_skips_memory_without_mnist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRADLANG_DATA", str(tmp_path))           # no mnist/ here
    out = tmp_path / "results.json"
    assert main(["--only", "attention", "memory", "--rounds", "1", "--json", str(out), "--clock", "cpu"]) == 0
    results = json.loads(out.read_text())
    attention = results["attention"]
    assert attention["ratio"] == pytest.approx(attention["gradlang"]["median_s"] / attention["numpy"]["median_s"])
    assert "skipped" in results["memory"] and "no MNIST" in results["memory"]["skipped"]
    printed = capsys.readouterr()
    assert "| attention step" in printed.out and "| memory | skipped" in printed.out
    assert "no MNIST" in printed.err


def test_memory_run_reports_peak_baseline_and_bound():
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--program",
                           str(ROOT / "examples" / "moons_mlp.grad"), "--steps", "3"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    prog = gradlang.compile(ROOT / "examples" / "moons_mlp.grad")
    assert report["steps"] == 3
    assert report["bound_parts"]["params"] == sum(p.nbytes for p in prog.params.values())
    assert report["bound_parts"]["data"] == sum(a.nbytes for a in prog.load_data().values())
    assert report["bound"] == sum(report["bound_parts"].values())
    assert 0 < report["baseline_rss"] <= report["loop_peak_rss"] <= report["peak_rss"]
