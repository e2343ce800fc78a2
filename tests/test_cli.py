"""The gradlang command beyond errors: run's progress, checkpoints and resume, plots, eval, predict, data fetch."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradlang.cli import main
from gradlang.progress import TerminalReporter, sparkline

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

CLASSIFIER = """
data points = spirals(n: 120, classes: 3, seed: 0)
data fresh = spirals(n: 60, classes: 3, seed: 1)
input x : f32[B, 2]
input y : i64[B]
param W1 : [2, 16] = he_normal
param b1 : [16] = zeros
param W2 : [16, 3] = glorot_uniform
param b2 : [3] = zeros
logits = relu(x @ W1 + b1) @ W2 + b2
loss = cross_entropy(logits, y)
metric accuracy = accuracy(logits, y)
output label = argmax(logits, axis: 1)
train {
  data = points
  test = fresh
  validation = 0.25
  batch = 16
  epochs = 4
  optimizer = adam(lr: 0.02)
}
"""


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "spiral.grad"
    path.write_text(CLASSIFIER)
    return path


def cli(capsys, *args):
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    assert status == 0, out.err
    return out


def test_run_reports_every_set_and_saves_params_and_a_checkpoint(program, tmp_path, capsys):
    out = cli(capsys, "run", program, "--out", tmp_path / "p.npz")
    assert "training set" in out.out and "validation set" in out.out and "test set" in out.out
    assert "train loss" in out.out and "val loss" in out.out   # the curves, drawn in text
    assert "epoch 4" in out.err and "val_accuracy" in out.err
    assert (tmp_path / "p.npz").exists() and (tmp_path / "p.ckpt.npz").exists()


def test_json_has_the_numbers_and_no_progress(program, tmp_path, capsys):
    out = cli(capsys, "run", program, "--json", "--out", tmp_path / "p.npz")
    result = json.loads(out.out)
    assert set(result) >= {"loss", "metrics", "steps", "seconds", "params_file", "validation", "test", "checkpoint"}
    assert out.err == ""


def test_interrupted_run_resumed_from_the_command_line_matches_an_uninterrupted_one(program, tmp_path, capsys):
    cli(capsys, "run", program, "--json", "--out", tmp_path / "straight.npz")
    cli(capsys, "run", program, "--json", "--epochs", "2", "--out", tmp_path / "part.npz",
        "--checkpoint", tmp_path / "run.ckpt.npz")
    # the same run asked for 4 epochs, continuing from the 2 already done
    cli(capsys, "run", program, "--json", "--epochs", "4", "--resume", "--out", tmp_path / "resumed.npz",
        "--checkpoint", tmp_path / "run.ckpt.npz")
    straight, resumed = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    for name in straight.files:
        np.testing.assert_array_equal(straight[name], resumed[name])


def test_plot_draws_a_png(program, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    cli(capsys, "run", program, "--quiet", "--out", tmp_path / "p.npz", "--plot", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_uses_the_test_set_or_a_named_data_set(program, tmp_path, capsys):
    cli(capsys, "run", program, "--quiet", "--out", tmp_path / "p.npz")
    out = cli(capsys, "eval", program, "--params", tmp_path / "p.npz", "--json")
    numbers = json.loads(out.out)
    assert set(numbers) == {"loss", "accuracy"}
    on_train = json.loads(cli(capsys, "eval", program, "--params", tmp_path / "p.npz", "--data", "points",
                              "--json").out)
    assert on_train != numbers


def test_predict_from_an_npz_and_to_an_npz(program, tmp_path, capsys):
    cli(capsys, "run", program, "--quiet", "--out", tmp_path / "p.npz")
    np.savez(tmp_path / "in.npz", x=np.array([[0.0, 0.0], [0.5, -0.5]], dtype=np.float32))
    out = cli(capsys, "predict", program, "--params", tmp_path / "p.npz", "--input", tmp_path / "in.npz", "--json")
    labels = json.loads(out.out)["label"]
    assert len(labels) == 2 and all(label in (0, 1, 2) for label in labels)
    cli(capsys, "predict", program, "--params", tmp_path / "p.npz", "--data", "fresh", "--out", tmp_path / "o.npz")
    assert np.load(tmp_path / "o.npz")["label"].shape == (60,)


def test_predict_with_params_of_another_program_is_an_error(program, tmp_path, capsys):
    cli(capsys, "run", EXAMPLES / "xor.grad", "--quiet", "--out", tmp_path / "xor.npz")
    status = main(["predict", str(program), "--params", str(tmp_path / "xor.npz"), "--data", "fresh"])
    assert status == 1 and "cannot load params" in capsys.readouterr().err


def test_progress_is_a_line_every_so_often_when_not_a_terminal():
    import io
    stream = io.StringIO()
    reporter = TerminalReporter(stream, plain_interval=3600)
    for step in range(1, 101):
        reporter.step(step, 100, 1.0 / step, step * 0.01)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "1/100" in lines[0] and "100/100" in lines[1]   # first and last only
    assert "steps/s" in lines[1] and "eta" in lines[1]


def test_sparkline_resamples_to_its_width():
    line = sparkline(list(range(1000)), width=20)
    assert len(line) == 20 and line[0] == "▁" and line[-1] == "█"


def test_data_fetch_through_the_command(tmp_path, monkeypatch, capsys):
    import functools
    import hashlib
    import http.server
    import threading

    from gradlang.runtime import fetch as fetch_module
    served = tmp_path / "served"
    served.mkdir()
    (served / "f.bin").write_bytes(b"payload")
    monkeypatch.setitem(fetch_module.DATASETS, "tiny", {"url": "http://unused.invalid/",
                                                        "files": {"f.bin": hashlib.sha256(b"payload").hexdigest()}})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        out = cli(capsys, "data", "fetch", "tiny", "--url", f"http://127.0.0.1:{httpd.server_address[1]}/",
                  "--data-dir", tmp_path / "data")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (tmp_path / "data" / "tiny" / "f.bin").read_bytes() == b"payload"
    assert "tiny is in" in out.out


def test_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "gradlang.cli", "--help"], capture_output=True, text=True)
    for command in ("run", "eval", "predict", "ir", "data"):
        assert command in proc.stdout


def test_the_summary_counts_one_step_and_one_epoch_in_the_singular(tmp_path, capsys):
    program = tmp_path / "m.grad"
    program.write_text("data d = line(n: 8)\ninput x : f32[B]\ninput y : f32[B]\nparam w : f32[]\n"
                       "loss = mean((x * w - y) ** 2)\ntrain {\n  data = d\n  batch = 8\n}\n")
    assert main(["run", str(program), "--steps", "1", "--quiet", "--out", str(tmp_path / "p.npz")]) == 0
    assert capsys.readouterr().out.startswith("trained 1 step (1 epoch) in ")
    assert main(["run", str(program), "--steps", "3", "--quiet", "--out", str(tmp_path / "p.npz")]) == 0
    assert capsys.readouterr().out.startswith("trained 3 steps (3 epochs) in ")


def test_a_resumed_run_says_where_it_resumed_and_counts_its_rate_from_there(program, tmp_path, capsys):
    cli(capsys, "run", program, "--json", "--epochs", "2", "--out", tmp_path / "part.npz",
        "--checkpoint", tmp_path / "run.ckpt.npz")
    out = cli(capsys, "run", program, "--epochs", "4", "--resume", "--out", tmp_path / "resumed.npz",
              "--checkpoint", tmp_path / "run.ckpt.npz")
    import re
    said = re.search(r"resumed at step ([\d,]+) of ([\d,]+) from (\S+)", out.err)
    assert said and said.group(3) == str(tmp_path / "run.ckpt.npz")
    done, total = (int(g.replace(",", "")) for g in said.groups()[:2])
    assert total == 2 * done > 0                  # two of four epochs were done
    assert out.out.startswith(f"trained {total} steps")   # the whole run, the resumed part included


def test_a_long_run_of_fast_epochs_prints_the_first_and_last_epoch_not_every_one():
    import io

    import gradlang
    prog = gradlang.compile("data d = line(n: 16)\ninput x : f32[B]\ninput y : f32[B]\nparam w : f32[]\n"
                            "loss = mean((x * w - y) ** 2)\ntrain {\n  data = d\n  validation = 0.25\n}\n")
    stream = io.StringIO()
    prog.train(epochs=300, reporter=TerminalReporter(stream))
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("epoch ")]
    assert lines[0].startswith("epoch 1 ") and lines[-1].startswith("epoch 300 ") and len(lines) <= 5


def test_eval_limit_bounds_or_skips_the_final_evaluation(program, tmp_path, capsys):
    out = cli(capsys, "run", program, "--quiet", "--eval-limit", "5", "--out", tmp_path / "p.npz")
    assert "training set (first 5 examples)" in out.out and "test set (first 5 examples)" in out.out
    out = cli(capsys, "run", program, "--json", "--eval-limit", "0", "--out", tmp_path / "p.npz")
    result = json.loads(out.out)
    assert result["evaluated_examples"] == 0 and result["metrics"] == {} and "test" not in result
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(program), "--eval-limit", "-1"])
    assert exit_.value.code == 2
    assert "--eval-limit: must be a whole number ≥ 0, got -1" in capsys.readouterr().err


def test_progress_and_summary_show_the_learning_rate_as_its_schedule_moves(tmp_path, capsys):
    import io

    import gradlang
    source = ("data d = line(n: 8)\ninput x : f32[B]\ninput y : f32[B]\nparam w : f32[]\n"
              "loss = mean((x * w - y) ** 2)\ntrain {\n  data = d\n  optimizer = sgd(lr: 0.1 * 0.5 ** step)\n}\n")
    stream = io.StringIO()
    result = gradlang.compile(source).train(steps=3, reporter=TerminalReporter(stream))
    assert result.learning_rate == pytest.approx(0.1 * 0.5 ** 3)        # the rate of the next update
    assert "lr 0.1 " in stream.getvalue() and "lr 0.025 " in stream.getvalue()   # the rate each step used
    (tmp_path / "m.grad").write_text(source)
    out = cli(capsys, "run", tmp_path / "m.grad", "--steps", "3", "--quiet", "--out", tmp_path / "p.npz")
    assert "learning rate now 0.0125" in out.out.splitlines()[0]
