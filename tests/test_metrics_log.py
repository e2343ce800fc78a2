"""What a run writes down and draws: the training metrics of each epoch, `--log-dir` (JSON lines, and
TensorBoard event files read back with TensorBoard's own reader) and `--plot`'s panels."""
import json

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.runtime.metrics_log import JSON_LINES, MetricsLog

FULL_BATCH = """
data moons = two_moons(n: 64, noise: 0.2, seed: 1)
input x : f32[B, 2]
input y : f32[B]
param W : [2, 8] = he_normal
param v : [8] = glorot_uniform
logits = relu(x @ W) @ v
loss = binary_cross_entropy(logits, (y + 1) / 2)
metric accuracy = mean((logits > 0) == (y > 0))
train {
  data = moons
  epochs = 6
  optimizer = sgd(lr: 0.2 * 0.5 ** floor(step / 3))
}
"""


def _lines(folder):
    return [json.loads(line) for line in (folder / JSON_LINES).read_text().splitlines()]


def test_each_epoch_records_the_metrics_of_the_batches_it_trained_on():
    prog = gradlang.compile(FULL_BATCH)
    data = prog.load_data()
    reference = gradlang.compile(FULL_BATCH)
    before = []
    for _ in range(6):   # full batch: an epoch is one step, its metric the one before the update
        before.append(reference.metrics(data)["accuracy"])
        reference.step(data)
    result = prog.train()
    assert [r["accuracy"] for r in result.epoch_log] == pytest.approx(before, abs=1e-7)


def test_mini_batch_epoch_metrics_are_weighted_by_batch_size():
    prog = gradlang.compile(FULL_BATCH.replace("epochs = 6", "epochs = 1\n  batch = 24"))
    seen = []
    original = prog.runner.apply

    def spy(update, arrays, metered=False):
        loss = original(update, arrays, metered)
        seen.append((len(arrays[0]), prog.runner.batch_metrics["accuracy"]))
        return loss
    prog.runner.apply = spy
    result = prog.train()
    sizes = [size for size, _ in seen]
    assert sizes == [24, 24, 16]
    assert result.epoch_log[0]["accuracy"] == pytest.approx(sum(s * a for s, a in seen) / 64)


def test_a_plain_step_computes_no_metrics():
    prog = gradlang.compile(FULL_BATCH)
    data = prog.load_data()
    prog.step(data)
    update = prog.runner.training_update
    assert [metered for _, metered in update.executables] == [False]
    arrays = prog.runner.feed(data)
    assert len(update.executable(arrays).run(arrays, prog.runner.param_list)) == 1 + len(prog.param_names)
    assert prog.runner.batch_metrics == {}


def test_log_dir_writes_steps_epochs_and_the_final_numbers(tmp_path):
    prog = gradlang.compile(FULL_BATCH)
    result = prog.train(log_dir=tmp_path / "run")
    records = _lines(tmp_path / "run")
    steps = [r for r in records if "epoch" not in r and "final" not in r]
    epochs = [r for r in records if "epoch" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert [r["loss"] for r in steps] == pytest.approx([loss for _, loss in result.history])
    assert [r["lr"] for r in steps] == pytest.approx([0.2, 0.2, 0.2, 0.1, 0.1, 0.1])
    assert epochs == json.loads(json.dumps(result.epoch_log))
    final = records[-1]
    assert final["final"] is True and final["loss"] == pytest.approx(result.loss)
    assert final["accuracy"] == pytest.approx(result.metrics["accuracy"])


def test_tensorboard_reads_the_event_files_back(tmp_path):
    pytest.importorskip("tensorboardX", reason="needs the tensorboard extra: pip install 'gradlang[tensorboard]'")
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="needs the tensorboard extra: pip install 'gradlang[tensorboard]'")
    prog = gradlang.compile(FULL_BATCH)
    result = prog.train(log_dir=tmp_path)
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "epoch/loss", "epoch/accuracy", "final/loss", "final/accuracy"} <= set(scalars)
    read = events.Scalars("train/loss")
    assert [e.step for e in read] == list(range(1, 7))
    np.testing.assert_allclose([e.value for e in read], [loss for _, loss in result.history], rtol=1e-6)
    assert events.Scalars("final/accuracy")[0].value == pytest.approx(result.metrics["accuracy"], rel=1e-6)


def test_a_resumed_run_appends_to_its_log(tmp_path, capsys):
    path = tmp_path / "m.grad"
    path.write_text(FULL_BATCH)
    args = ["run", str(path), "--quiet", "--out", str(tmp_path / "p.npz"), "--log-dir", str(tmp_path / "log"),
            "--checkpoint", str(tmp_path / "c.npz")]
    assert main(args + ["--steps", "3"]) == 0
    assert main(args + ["--steps", "6", "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"metrics logged to {tmp_path / 'log' / JSON_LINES}" in out
    records = _lines(tmp_path / "log")
    assert [r["step"] for r in records if "epoch" not in r and "final" not in r] == [1, 2, 3, 4, 5, 6]
    assert sum(1 for r in records if r.get("final")) == 2


def test_a_log_in_a_folder_that_cannot_be_made_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(gradlang.GradError, match="cannot write the metrics log"):
        MetricsLog(tmp_path / "file" / "log")


def test_plot_draws_the_learning_rate_and_training_metrics(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="needs the plot extra: pip install 'gradlang[plot]'")
    import matplotlib.figure
    drawn = {}
    original = matplotlib.figure.Figure.savefig

    def keep(figure, *args, **kwargs):
        drawn["titles"] = [ax.get_title() for ax in figure.axes]
        drawn["labels"] = [line.get_label() for ax in figure.axes for line in ax.get_lines()]
        drawn["markers"] = [line.get_marker() for ax in figure.axes for line in ax.get_lines()]
        return original(figure, *args, **kwargs)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    path = tmp_path / "m.grad"
    path.write_text(FULL_BATCH)
    assert main(["run", str(path), "--quiet", "--out", str(tmp_path / "p.npz"), "--plot", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert drawn["titles"] == ["m.grad", "metrics", "learning rate"]
    assert "training accuracy (epoch mean)" in drawn["labels"]
    assert set(drawn["markers"]) == {"o"}   # six steps: every line has markers
