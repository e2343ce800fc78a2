"""The training loop: mini-batches, validation, early stopping, checkpoints and exact resuming."""
import numpy as np
import pytest

import gradlang
from gradlang import GradError

CLASSIFIER = """
data points = spirals(n: 300, classes: 3, noise: 0.2, seed: 0)
input x : f32[B, 2]
input y : i64[B]
param W1 : [2, 32] = he_normal
param b1 : [32] = zeros
param W2 : [32, 3] = glorot_uniform
param b2 : [3] = zeros
logits = relu(x @ W1 + b1) @ W2 + b2
loss = cross_entropy(logits, y)
metric accuracy = accuracy(logits, y)
train {{
  data = points
  batch = 32
  epochs = 6
  optimizer = adam(lr: 0.01)
  seed = 7
  {extra}
}}
"""


def program(extra="", **kw):
    return gradlang.compile(CLASSIFIER.format(extra=extra), **kw)


def test_epochs_of_shuffled_minibatches_and_a_log_per_epoch():
    result = program().train()
    assert result.steps == 6 * 10 and result.epochs == 6
    assert [r["epoch"] for r in result.epoch_log] == [1, 2, 3, 4, 5, 6]
    assert result.epoch_log[-1]["loss"] < result.epoch_log[0]["loss"]


def test_validation_split_is_held_out_and_reported_every_epoch():
    prog = program("validation = 0.2")
    result = prog.train()
    assert result.steps == 6 * 8   # 240 training examples in batches of 32
    assert all("val_loss" in r and "val_accuracy" in r for r in result.epoch_log)
    assert set(result.validation) == {"loss", "accuracy"}


def test_early_stopping_restores_the_best_params():
    source = CLASSIFIER.format(extra="validation = 0.3\n  early_stopping = 1")
    prog = gradlang.compile(source.replace("epochs = 6", "epochs = 200").replace("batch = 32", "batch = 8"))
    result = prog.train()
    assert result.stopped_early and result.epochs < 200
    best = min(r["val_loss"] for r in result.epoch_log)
    assert result.validation["loss"] == pytest.approx(best, rel=1e-5)


def test_early_stopping_without_validation_is_an_error():
    with pytest.raises(GradError, match="early_stopping needs a validation set"):
        program("early_stopping = 2").train()


class Interrupt(Exception):
    """Stands for a run killed in the middle."""


class StopAfterEpoch(gradlang.api.Reporter):
    """Interrupts training at the end of one epoch (after its checkpoint is written)."""

    def __init__(self, epoch: int):
        self.at = epoch

    def epoch(self, record):
        if record["epoch"] == self.at:
            raise Interrupt


def test_interrupted_and_resumed_run_ends_with_the_same_params(tmp_path):
    straight = program()
    straight.train()

    ckpt = tmp_path / "run.ckpt.npz"
    first = program()
    with pytest.raises(Interrupt):
        first.train(checkpoint=ckpt, reporter=StopAfterEpoch(3))
    resumed = program()   # a fresh process would compile afresh
    result = resumed.train(checkpoint=ckpt, resume=True)
    assert result.steps == 60 and len(result.epoch_log) == 6
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(GradError, match="nothing to resume"):
        program().train(checkpoint=tmp_path / "none.npz", resume=True)


def test_test_set_metrics_after_training():
    prog = program('test = spirals(n: 150, classes: 3, noise: 0.2, seed: 1)')
    result = prog.train()
    assert set(result.test) == {"loss", "accuracy"} and result.as_dict()["test"] == result.test


def test_nonfinite_loss_stops_with_advice():
    prog = gradlang.compile("""
        input x : f32[B]
        param w : [] = ones
        loss = sum((w * x) ** 2)
        train { steps = 50
                optimizer = sgd(lr: 100.0) }
    """)
    with pytest.raises(GradError, match="the loss became"):
        prog.train({"x": np.full(4, 30.0)})
