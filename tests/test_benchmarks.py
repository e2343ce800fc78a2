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

from benchmarks import references_jax, references_torch  # noqa: E402
from benchmarks.__main__ import check_same, cnn_feed, main, step_rows, token_feed  # noqa: E402
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


# each peer's reference class for each case, by name (the module is imported only where it is installed)
PEER_CLASSES = {
    "pytorch": ("torch", references_torch, {"mlp": "TorchMLP", "linreg": "TorchLinReg", "cnn": "TorchCNN",
                                            "lstm": "TorchLSTM", "attention": "TorchAttention"}),
    "jax": ("jax", references_jax, {"mlp": "JaxMLP", "linreg": "JaxLinReg", "cnn": "JaxCNN",
                                    "lstm": "JaxLSTM", "attention": "JaxAttention"}),
}


@pytest.mark.parametrize("case", sorted(SMALL_CASES))
@pytest.mark.parametrize("peer", sorted(PEER_CLASSES))
def test_peer_reference_matches_gradlang(peer, case):
    library, module, classes = PEER_CLASSES[peer]
    pytest.importorskip(library, reason=f"{peer} is an optional peer in the benchmarks: pip install -e '.[bench]'")
    program, make_feed, _ = SMALL_CASES[case]
    prog = gradlang.compile(BENCH / program)
    feed = make_feed()
    reference = getattr(module, classes[case])(prog.params)
    check_same(prog, feed, reference, list(prog.params))      # what the runner checks before timing
    # tighter than the runner: float32 rounding only (relative to each gradient's largest entry)
    loss, grads = reference.loss_and_grads(feed["x"], feed["y"])
    assert loss == pytest.approx(prog.loss(feed), rel=1e-5)
    for name, ours in prog.gradients(feed).items():
        scale = float(np.abs(ours).max())
        np.testing.assert_allclose(grads[name], ours, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    # one SGD step each: the same loss before it and the same params after it
    assert prog.step(feed) == pytest.approx(reference.step(feed["x"], feed["y"]), rel=1e-4)
    after = reference.params()
    for name, value in prog.params.items():
        np.testing.assert_allclose(value, after[name], rtol=1e-4, atol=1e-6, err_msg=name)


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
    assert main(["--only", "linreg", "memory", "--rounds", "1", "--json", str(out), "--clock", "cpu"]) == 0
    results = json.loads(out.read_text())
    linreg = results["linreg"]
    assert linreg["ratio"] == pytest.approx(linreg["gradlang"]["median_s"] / linreg["numpy"]["median_s"])
    assert "skipped" in results["memory"] and "no MNIST" in results["memory"]["skipped"]
    printed = capsys.readouterr()
    assert "| linreg step" in printed.out and "| memory | skipped" in printed.out
    assert "no MNIST" in printed.err
    assert "gradlang / best peer" in printed.out
    timed = [peer for peer in ("pytorch", "jax") if peer in linreg]      # the peers installed here
    assert timed == [peer for peer, module in (("pytorch", references_torch), ("jax", references_jax))
                     if module.available()]
    if timed:
        best = min(timed, key=lambda peer: linreg[peer]["median_s"])
        assert linreg["best_peer"] == best
        assert linreg["ratio_best_peer"] == pytest.approx(linreg["gradlang"]["median_s"] / linreg[best]["median_s"])
        assert f"{linreg['ratio_best_peer']:.2f}×" in printed.out


def test_report_gives_each_peers_time_and_the_ratio_to_the_best():
    def timing(seconds):
        return {"median_s": seconds, "spread": 0.1}
    results = {"cnn": {"gradlang": timing(0.060), "numpy": timing(0.050), "pytorch": timing(0.030),
                       "jax": timing(0.040), "ratio": 1.2, "ratio_pytorch": 2.0, "ratio_jax": 1.5,
                       "best_peer": "pytorch", "ratio_best_peer": 2.0},
               "linreg": {"gradlang": timing(12e-6), "numpy": timing(10e-6), "ratio": 1.2}}
    rows = step_rows(results)
    assert "| gradlang | NumPy | PyTorch | JAX | gradlang / NumPy | gradlang / best peer |" in rows[0]
    cnn = next(row for row in rows if row.startswith("| cnn step"))
    assert "| 60.0 ms | 50.0 ms | 30.0 ms | 40.0 ms | 1.20× | 2.00× (PyTorch) |" in cnn
    linreg = next(row for row in rows if row.startswith("| linreg step"))
    assert "| 12.0 µs | 10.0 µs | — | — | 1.20× | — (no peer) |" in linreg


def test_runner_skips_missing_peers_and_runs_contended(tmp_path, monkeypatch, capsys):
    """Without PyTorch and JAX the runner says so and times gradlang against NumPy alone; --contended
    keeps a busy process on one CPU while it measures, and ends it."""
    import benchmarks.__main__ as runner
    monkeypatch.setattr(references_torch, "version", lambda: None)
    monkeypatch.setattr(references_jax, "version", lambda: None)
    busy = []
    real_stop = runner.stop_busy
    monkeypatch.setattr(runner, "stop_busy", lambda process: (busy.append(process), real_stop(process)))
    out = tmp_path / "results.json"
    assert main(["--only", "linreg", "--rounds", "1", "--contended", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["linreg"]) == {"gradlang", "numpy", "ratio"}
    assert results["machine"]["pytorch"] is None and results["machine"]["jax"] is None
    assert results["machine"]["contended"]["cpu"] in runner.allowed_cpus()
    assert len(busy) == 1 and busy[0].poll() is not None             # the busy loop is gone
    printed = capsys.readouterr()
    assert "PyTorch: not installed, skipped" in printed.err and "JAX: not installed, skipped" in printed.err
    assert "CONTENDED" in printed.out and "— (no peer)" in printed.out


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


def test_time_to_accuracy_trains_the_same_network_in_pytorch():
    """The PyTorch side of `--time-to-accuracy` computes the program's loss from the program's params."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from benchmarks.time_to_accuracy import PROGRAM, cosine_decay, torch_model
    prog = gradlang.compile(PROGRAM, dtype="float64")
    rng = np.random.default_rng(0)
    feed = {"x": rng.random((8, 1, 28, 28)), "y": rng.integers(0, 10, 8)}
    _, logits = torch_model({name: value.copy() for name, value in prog.params.items()})
    mine = F.cross_entropy(logits(torch.from_numpy(feed["x"])), torch.from_numpy(feed["y"])).item()
    assert mine == pytest.approx(prog.loss(feed), rel=1e-10)
    assert cosine_decay(0) == pytest.approx(0.002) and cosine_decay(10 ** 6) == pytest.approx(0.0001)


def test_lstm_breakdown_runs():
    from benchmarks import lstm_breakdown
    results = lstm_breakdown.main(["--quick"])
    step = results["step (helper thread off)"]
    assert step["calls"] > 2000 and 0 < step["recurrent_products_ms"] < step["products_ms"] < step["total_ms"]
    assert results["stacking over time steps"]["projections_stacked_us"] > 0
    assert 0 < results["hand-off to a second thread"]["median_us"] <= results["hand-off to a second thread"]["p90_us"]
