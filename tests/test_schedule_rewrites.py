"""The scheduler's rewrites (lowering/schedule.py: REWRITES) change how a step runs, never what it
computes: every example's and benchmark's loss, gradients and trained params are the same, in float64,
with each rewrite left out (`compile(no_opt=…)`) as with all of them; and each is counted, listed and
refused by name."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.gradcheck import random_feed
from gradlang.lowering.schedule import REWRITES

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted(ROOT.glob("examples/*.grad")) + sorted(ROOT.glob("benchmarks/*.grad"))
# programs whose gradient graph needs more than a loss (a phased GAN trains two losses in turn)
PHASED = {"gan"}


def _step_results(path: Path, no_opt=()) -> tuple:
    """The loss and gradients on a random feed, and the params after two training steps on it."""
    prog = gradlang.compile(path, dtype="float64", seed=0, no_opt=no_opt)
    feed = random_feed(prog, 4, np.random.default_rng(0))
    gradients = prog.gradients(feed) if path.stem not in PHASED else {}
    losses = [prog.step(feed) for _ in range(2)]
    return losses, gradients, {name: value.copy() for name, value in prog.params.items()}


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_each_rewrite_left_out_gives_the_same_step(path):
    losses, gradients, params = _step_results(path)
    for name in gradlang.OPTIMIZATIONS:
        other_losses, other_gradients, other_params = _step_results(path, no_opt=(name,))
        np.testing.assert_allclose(other_losses, losses, rtol=1e-12, atol=1e-12, err_msg=name)
        for param in gradients:
            np.testing.assert_allclose(other_gradients[param], gradients[param], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name}: grad {param}")
        for param in params:
            np.testing.assert_allclose(other_params[param], params[param], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name}: {param} after two steps")


def test_the_cnn_step_pairs_its_pools_and_lists_the_kernels_chosen(capsys):
    from gradlang.cli import main
    assert main(["ir", str(ROOT / "benchmarks" / "cnn.grad"), "--stage", "scheduled", "--batch", "4"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("= MaxPool.forward") == 2 and listing.count("= MaxPool.gradient") == 2
    assert "SoftmaxCrossEntropy.scaled_gradient(" in listing and "into a reused buffer" in listing
    assert "# rewrites: shared-softmax 3, pool-argmax 4," in listing
    assert main(["ir", str(ROOT / "benchmarks" / "cnn.grad"), "--stage", "scheduled", "--batch", "4",
                 "--no-opt", "pool-argmax", "--no-opt", "reuse-buffers"]) == 0
    listing = capsys.readouterr().out
    assert "= MaxPool.forward" in listing   # the kernels are MaxPool's either way; only unpaired
    assert "pool-argmax" not in listing and "reuse-buffers" not in listing and "reused buffer" not in listing


def _same_with_and_without(program, feed: dict, rewrite: str, params=None) -> None:
    """The loss and gradients on `feed` in float64, with `rewrite` and without, agree to 1e-12."""
    results = []
    for no_opt in ((), (rewrite,)):
        prog = gradlang.compile(program, dtype="float64", seed=0, no_opt=no_opt)
        results.append((prog.loss(feed), prog.gradients(feed)))
    (loss, grads), (other_loss, other_grads) = results
    assert other_loss == pytest.approx(loss, rel=1e-12)
    for name in params or grads:
        np.testing.assert_allclose(other_grads[name], grads[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_a_transposed_matrix_many_products_read_is_copied_once(capsys):
    """The LSTM's backward pass multiplies by Uᵀ (and the readout's Wᵀ) at every one of 50 time steps:
    at batch 32 each transpose is copied once into contiguous memory, which the step's results do not
    see; at batch 4 the products are too small to pay for the copies, and a matrix read by one
    product (the MLP's) is never copied."""
    from benchmarks.__main__ import token_feed
    from gradlang.cli import main
    path = ROOT / "benchmarks" / "lstm.grad"
    assert main(["ir", str(path), "--stage", "scheduled", "--batch", "32"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("= TransposedCopy(") == 3 and "contiguous-transpose 3," in listing
    assert main(["ir", str(path), "--stage", "scheduled", "--batch", "4"]) == 0
    assert "TransposedCopy" not in capsys.readouterr().out
    assert main(["ir", str(ROOT / "benchmarks" / "mlp.grad"), "--stage", "scheduled", "--batch", "128"]) == 0
    assert "TransposedCopy" not in capsys.readouterr().out
    _same_with_and_without(path, token_feed(32, 50), "contiguous-transpose")


def test_a_recurrent_weights_gradient_is_summed_in_a_few_stacked_products(capsys):
    """The LSTM's gradients of W, U and the gate bias are sums over 50 time steps: at batch 32 each
    becomes 7 stacked chunks of 7–8 terms and a sum of the chunks, and the step's results are those of
    the sums made one term at a time."""
    from benchmarks.__main__ import token_feed
    from gradlang.cli import main
    path = ROOT / "benchmarks" / "lstm.grad"
    assert main(["ir", str(path), "--stage", "scheduled", "--batch", "32", "--no-opt", "helper-thread"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("= StackedProducts(") == 14 and listing.count("= StackedColumnSums(") == 7
    assert listing.count("= SumOfParts(") == 3
    assert main(["ir", str(path), "--stage", "scheduled", "--batch", "32", "--no-opt", "stacked-sums"]) == 0
    assert "Stacked" not in capsys.readouterr().out
    _same_with_and_without(path, token_feed(32, 50), "stacked-sums")


MIXED_SUMS = """
input x : f64[B, 6]
param W : [6, 5] = normal(0.0, 0.1)
param b : [5] = zeros
h = x @ W + b
loss = mean(h * (x * 2.0 @ W + b) + (x * 3.0 @ W + b) + (x * 4.0 @ W + b) * (x * 5.0 @ W + b)) + 0.1 * sum(W * W)
"""


def test_a_sum_of_stacked_and_other_terms_keeps_the_others(capsys, tmp_path):
    """W's gradient is five products xₖᵀ g plus the penalty's 0.2·W: the products are one stacked
    product and the penalty a part of the sum beside it; b's column sums stack likewise."""
    from gradlang.cli import main
    path = tmp_path / "mixed.grad"
    path.write_text(MIXED_SUMS)
    assert main(["ir", str(path), "--stage", "scheduled", "--batch", "7"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("= StackedProducts(") == 1 and listing.count("= StackedColumnSums(") == 1
    assert listing.count("= SumOfParts(") == 2
    _same_with_and_without(MIXED_SUMS, {"x": np.random.default_rng(0).normal(size=(7, 6))}, "stacked-sums",
                           params=("W", "b"))


def test_the_memory_limit_counts_the_stacks_a_stacked_product_makes(monkeypatch):
    """The stacked product of W's five terms concatenates 3,080 bytes of operands while it runs: under
    a limit the step's results alone fit, it is refused at that product, and fits without the rewrite."""
    feed = {"x": np.random.default_rng(0).normal(size=(7, 6))}
    monkeypatch.setenv("GRADLANG_MAX_BYTES", "4000")
    with pytest.raises(GradError, match=r"would need [0-9,]+ bytes at this matmul"):
        gradlang.compile(MIXED_SUMS, dtype="float64", seed=0).gradients(feed)
    gradlang.compile(MIXED_SUMS, dtype="float64", seed=0, no_opt=("stacked-sums",)).gradients(feed)


@pytest.mark.parametrize("terms, sizes", [(4, [4]), (8, [8]), (9, [5, 4]), (17, [6, 6, 5]), (50, [8] + [7] * 6)])
def test_stacked_chunks_are_as_equal_as_they_can_be(terms, sizes):
    from gradlang.lowering.sums import _chunks
    chunks = _chunks(list(range(terms)))
    assert [len(c) for c in chunks] == sizes and sum(chunks, []) == list(range(terms))


def test_stats_count_the_rewrites_of_the_training_step(capsys):
    from gradlang.cli import main
    assert main(["ir", str(ROOT / "benchmarks" / "cnn.grad"), "--stats", "--format", "json", "--batch", "8"]) == 0
    import json
    scheduled = json.loads(capsys.readouterr().out)["schedule"]
    assert scheduled["batch"] == 8 and scheduled["kernel_calls"] > 30
    assert scheduled["rewrites"]["pool-argmax"] == 4 and set(scheduled["rewrites"]) == set(REWRITES)


def test_an_unknown_optimisation_is_refused_naming_the_known_ones():
    with pytest.raises(GradError, match="no optimisation named 'fusion'; the optimisations are shared-softmax, "):
        gradlang.compile("input x : f32[B]\nloss = mean(x)\n", no_opt=("fusion",))
    result = subprocess.run([sys.executable, "-m", "gradlang", "run", str(ROOT / "examples" / "xor.grad"),
                             "--no-opt", "nothing"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "no optimisation named 'nothing'" in result.stderr
    assert set(gradlang.OPTIMIZATIONS) == set(REWRITES)
