"""Robustness: limits refused before allocation, numerical faults located, data errors named, nothing
lost when a run is killed, and a model file that cannot do harm (docs/security.md).

Each error class has a test asserting its message and its place (file:line:col, or file:row).
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.runtime import runner
from gradlang.runtime.data import DataContext, npz
from gradlang.runtime.formats import read_csv, read_npz
from gradlang.runtime.numerics import NonFiniteError

ROOT = Path(__file__).resolve().parent.parent


def error_of(source: str, name: str = "<string>", **kw) -> GradError:
    with pytest.raises(GradError) as info:
        gradlang.compile(source, **kw)
    return info.value


def at(err: GradError) -> tuple[int, int]:
    assert err.span is not None, err.format()
    return err.span.line, err.span.col


# ---- 2. limits before allocation ----------------------------------------------------------------

def test_a_param_too_large_is_refused_before_anything_is_allocated():
    tracemalloc.start()
    err = error_of("input x : f32[B, 3]\nparam w : [100000, 100000]\nloss = mean(x @ w[:3, :])\n")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert at(err) == (2, 11)
    assert "param w of type f32[100000,100000] would need 40,000,000,000 bytes" in err.message
    assert peak < 50_000_000     # the 40 GB were never asked for


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRADLANG_MAX_BYTES", "1000")
    err = error_of("param w : [16, 16]\nloss = sum(w)\n")
    assert at(err) == (1, 11) and "1,024 bytes, more than the limit of 1,000 bytes" in err.message
    gradlang.compile("param w : [15, 16]\nloss = sum(w)\n")   # 960 bytes fit


def test_all_params_together_count(monkeypatch):
    monkeypatch.setenv("GRADLANG_MAX_BYTES", "1000")
    err = error_of("param a : [200]\nparam b : [100]\nloss = sum(a) + sum(b)\n")
    assert at(err) == (2, 1) and "the params declared so far need 1,200 bytes" in err.message


def test_an_input_too_large_per_example():
    err = error_of("input x : f32[B, 1000000, 1000000]\nloss = mean(x)\n")
    assert at(err) == (1, 11) and "input x" in err.message and "4,000,000,000,000 bytes per example" in err.message


def test_an_intermediate_value_too_large():
    err = error_of("input x : f32[B]\nh = broadcast_to(0.0, [1000000, 1000000, 2])\nloss = mean(x) + sum(h)\n")
    assert at(err) == (2, 5)
    assert "broadcast_to value of type f32[1000000,1000000,2] would need 8,000,000,000,000 bytes" in err.message


def test_an_unrolled_loop_too_large_stops_early():
    start = time.perf_counter()
    err = error_of("x = [[0 for i in range(100000)] for j in range(100000)]\nloss = 1.0\n")
    assert at(err) == (1, 18) and "unroll more than 100,000 iterations" in err.message
    err = error_of("k = 0\nfor i in range(1000) {\n  for j in range(1000) {\n    k = k + 1\n  }\n}\nloss = 1.0\n")
    assert at(err) == (3, 12) and "unroll more than" in err.message
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("source, line, col, message", [
    ("x = " + "9" * 5000 + "\nloss = 1.0\n", 1, 5, "a number written with 5,000 characters"),
    ("x = 2 ** 2 ** 2 ** 2 ** 2 ** 2\nloss = 1.0\n", 1, 10, "2 ** 65536 has more than 4096 bits"),
    ("k = 3\nfor i in range(100) {\n  k = k * k\n}\nloss = 1.0\n", 3, 7, "the result of * has"),
    ("s = [1]\nfor i in range(40) {\n  s = s + s\n}\nloss = 1.0\n", 3, 7, "joining these would make a list of"),
    ("x = range(-99999999999999999999999, 99999999999999999999999)\nloss = 1.0\n", 1, 5, "range of"),
    ("x = " + "[" * 500 + "1" + "]" * 500 + "\nloss = 1.0\n", 1, 103, "nested more than 100 levels"),
    ("if true {\n" * 200 + "k = 1\n" + "}\n" * 200 + "loss = 1.0\n", 100, 1, "nested more than 100 levels"),
], ids=["huge-literal", "huge-power", "repeated-squaring", "doubling-list", "huge-range", "deep-lists",
        "deep-blocks"])
def test_huge_literals_and_deep_nesting_are_errors(source, line, col, message):
    err = error_of(source)
    assert message in err.message and at(err) == (line, col), err.format()


def test_an_import_cycle_and_a_self_import(tmp_path):
    (tmp_path / "me.grad").write_text("import me\nloss = 1.0\n")
    err = error_of(str(tmp_path / "me.grad"))
    assert "import cycle: me → me" in err.message and at(err) == (1, 1)
    assert err.span.source.name.endswith("me.grad")


# ---- 3. numerical faults ------------------------------------------------------------------------

EXPLODES = """input x : f32[B]
param w : [] = ones
h = (w * x) ** 2
loss = sum(h)
train {
  steps = 50
  optimizer = sgd(lr: 100.0)
}
"""


def test_a_nonfinite_loss_names_the_op_the_line_and_the_step_and_keeps_the_params():
    prog = gradlang.compile(EXPLODES)
    with pytest.raises(NonFiniteError) as info:
        prog.train({"x": np.full(4, 30.0, dtype=np.float32)})
    err = info.value
    found = re.match(r"the loss became inf at step (\d+); the first non-finite value: (\w+) produced inf at step \1, "
                     r"from finite operands; the largest operand magnitude was ([\d.e+]+)", err.message)
    assert found, err.message
    # the squares overflow f32 in the pow, or in the sum when the simplifier fused sum(h ** 2)
    assert (err.op, at(err)) in (("pow", (3, 5)), ("reduce_sum", (4, 8))) and found[2] == err.op
    assert err.step == int(found[1]) == prog.steps_taken + 1 > 1
    assert np.isfinite(prog.params["w"]).all()     # the failing step's update was not applied


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the NaN is the point
def test_the_first_op_is_named_not_the_last():
    prog = gradlang.compile("input x : f32[B]\nparam w : [] = ones\nh = log(x * w - x)\nz = exp(h)\n"
                            "loss = mean(z * 0 + h)\n")
    with pytest.raises(NonFiniteError) as info:
        prog.step({"x": np.ones(3, np.float32)})
    assert info.value.op == "log" and at(info.value) == (3, 5)
    assert "log produced -inf (3 of 3 values) at step 1" in info.value.message
    assert "from finite operands" in info.value.message


def test_normal_steps_never_run_the_checked_executor(monkeypatch):
    calls = []
    real = runner.run_checked
    monkeypatch.setattr(runner, "run_checked", lambda *a, **k: calls.append(1) or real(*a, **k))
    prog = gradlang.compile(ROOT / "examples" / "moons_mlp.grad")
    prog.train(steps=20)
    assert calls == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the NaN is the point
def test_check_numerics_finds_a_nan_in_the_backward_pass_that_the_loss_does_not_show():
    source = "input x : f32[B]\nparam w : [] = zeros\nloss = mean(sqrt(w * w) + x)\n"
    prog = gradlang.compile(source)
    prog.step({"x": np.ones(2, np.float32)})           # the loss is finite; the gradient is not
    assert not np.isfinite(prog.params["w"]).all()
    prog = gradlang.compile(source)
    prog.check_numerics = True
    with pytest.raises(NonFiniteError) as info:
        prog.step({"x": np.ones(2, np.float32)})
    assert "in the backward pass" in info.value.message and "at step 1" in info.value.message
    assert at(info.value) == (3, 13) and np.isfinite(prog.params["w"]).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the NaN is the point
def test_an_input_holding_nan_is_named():
    prog = gradlang.compile("input x : f32[B]\nparam w : [] = ones\nloss = mean(w * x)\n")
    with pytest.raises(NonFiniteError) as info:
        prog.step({"x": np.array([1.0, np.nan], np.float32)})
    assert info.value.message.startswith("the loss became nan at step 1; the first non-finite value: input x holds nan")
    assert at(info.value) == (1, 1)


SKIPPY = """input x : f32[B]
param w : [] = ones
loss = mean((w * x - 1) ** 2)
train {
  batch = 2
  epochs = 3
  optimizer = sgd(lr: 0.1)
  on_nonfinite = "skip"
}
"""


def test_skip_drops_the_bad_steps_and_finishes():
    prog = gradlang.compile(SKIPPY)
    x = np.array([1.0, 1.0, np.nan, 1.0, 1.0, 1.0], np.float32)   # one bad batch of three
    result = prog.train({"x": x})
    assert result.steps == 9 and len(result.skipped) in (3,)    # the bad batch once an epoch
    assert "input x holds nan" in result.skipped[0] and result.as_dict()["skipped_steps"] == 3
    assert np.isfinite(prog.params["w"]).all()


def test_skip_gives_up_when_every_step_fails():
    prog = gradlang.compile(SKIPPY.replace("epochs = 3", "epochs = 20"))
    with pytest.raises(NonFiniteError, match="input x holds nan"):
        prog.train({"x": np.full(4, np.nan, np.float32)})
    assert prog.steps_taken == 10


def test_on_nonfinite_takes_stop_or_skip():
    err = error_of("loss = 1.0\ntrain {\n  on_nonfinite = \"ignore\"\n}\n")
    assert at(err) == (3, 18) and 'on_nonfinite must be "stop" or "skip"' in err.message


def test_check_numerics_from_the_command_line(tmp_path, capsys):
    program = tmp_path / "nan.grad"
    program.write_text("data d = line(n: 8)\ninput x : f32[B]\ninput y : f32[B]\nparam w : [] = zeros\n"
                       "loss = mean(sqrt(w * w) + (x - y) ** 2)\ntrain {\n  data = d\n  steps = 3\n}\n")
    code = main(["run", str(program), "--quiet", "--check-numerics", "--out", str(tmp_path / "p.npz")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"{program}:5:13: error: ") and "in the backward pass" in err
    assert "at step 1" in err and not (tmp_path / "p.npz").exists()


STABLE = {
    "softmax": "sum(softmax(z, axis: 1) * c)",
    "log_softmax": "sum(log_softmax(z) * c)",
    "log_sigmoid": "sum(log_sigmoid(z) * c)",
    "softplus": "sum(softplus(z) * c)",
    "sigmoid": "sum(sigmoid(z) * c)",
    "cross_entropy": "cross_entropy(z, y)",
    "binary_cross_entropy": "binary_cross_entropy(z, c)",
    "logsumexp": "sum(logsumexp(z, axis: 1))",
    "log_of_softmax": "sum(log(softmax(z, axis: 1)) * c)",
    "log_of_sigmoid": "sum(log(sigmoid(z)) * c)",
}


@pytest.mark.parametrize("expr", list(STABLE.values()), ids=list(STABLE))
def test_composites_are_finite_for_extreme_logits(expr):
    prog = gradlang.compile(f"input x : f32[B, 4]\ninput y : i64[B]\ninput c : f32[B, 4]\nparam w : [4] = ones\n"
                            f"z = x * w\nloss = {expr}\n")
    prog.check_numerics = True    # every op's value, forward and backward, must be finite
    x = np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, 1e4, 1e4, -1e4], [1e4, 1e4, 1e4, 1e4]], np.float32)
    feed = {"x": x, "y": np.array([1, 0, 3]), "c": np.array([[0, 1, 0, 1], [1, 0, 1, 0], [1, 1, 0, 0]], np.float32)}
    loss = prog.loss(feed)
    grads = prog.gradients(feed)
    assert np.isfinite(loss) and np.isfinite(grads["w"]).all()


def test_extreme_logits_give_the_exact_values():
    prog = gradlang.compile("input z : f32[B, 3]\nloss = sum(z)\noutput ls = log_softmax(z)\n"
                            "output lsig = log_sigmoid(z)\noutput sp = softplus(z)\n")
    z = np.array([[1e4, -1e4, 0.0]], np.float32)
    out = prog.predict({"z": z})
    np.testing.assert_allclose(out["ls"], [[0.0, -2e4, -1e4]], rtol=1e-6)
    np.testing.assert_allclose(out["lsig"], [[0.0, -1e4, -np.log(2)]], rtol=1e-6)
    np.testing.assert_allclose(out["sp"], [[1e4, 0.0, np.log(2)]], rtol=1e-6)


# ---- 4. data errors -----------------------------------------------------------------------------

def csv_error(tmp_path, text: bytes | str, **kw) -> str:
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(GradError) as info:
        read_csv(path, **kw)
    return info.value.message


@pytest.mark.parametrize("text, kw, message", [
    ("a,b\n1,2\n\n\n3,x\n", {}, "d.csv:5: field 'b' is not a number: 'x'"),
    ("a,b\n1,2\n3,4,5\n", {}, "d.csv:3: expected 2 fields, found 3"),
    (b"a,b\n1,2\n3,\xff\n", {}, "d.csv:3: not a UTF-8 text file (invalid start byte at byte 10)"),
    ('a,b\n1,2\n3,"4\n5\n6,x\n', {}, "d.csv:3: field 'b' is not a number: '4\\n5\\n6,x'"),
    ("a,b\n1,2\n", {"delimiter": ";;"}, "d.csv: the CSV delimiter must be one character"),
    ("a,b\n1,2\n", {"target": "c"}, "d.csv: no column named 'c'; columns: a, b"),
    ("a,b\n1,2\n", {"target": 1.5}, "d.csv: the target column must be a column name or an index, got 1.5"),
], ids=["field-after-blank-lines", "row-width", "not-utf8", "quoted-line-break", "delimiter", "target-name",
        "target-type"])
def test_malformed_csv_names_file_and_row(tmp_path, text, kw, message):
    assert message in csv_error(tmp_path, text, **kw)


def npz_file(tmp_path, kind: str) -> Path:
    good = tmp_path / "good.npz"
    np.savez(good, x=np.arange(1000.0).reshape(100, 10), y=np.arange(100))
    data = bytearray(good.read_bytes())
    path = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        data = data[:len(data) // 2]
    elif kind == "damaged":
        data[600:620] = b"\xff" * 20
    elif kind == "not-a-zip":
        data = bytearray(b"hello, world")
    elif kind == "pickle":
        np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        import zipfile
        with zipfile.ZipFile(path, "w") as z:
            z.write(tmp_path / "obj.npy", "x.npy")
        return path
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind, message", [
    ("truncated", "not a readable NPZ file"),
    ("damaged", "field 'x' is damaged"),
    ("not-a-zip", "not an NPZ file"),
    ("pickle", "field 'x' holds Python objects (pickled data), which gradlang never loads"),
])
def test_malformed_npz_names_file_and_field(tmp_path, kind, message):
    path = npz_file(tmp_path, kind)
    with pytest.raises(GradError) as info:
        read_npz(path)
    assert str(path) in info.value.message and message in info.value.message
    with pytest.raises(GradError) as info:        # as a data source: at the data declaration
        npz(DataContext(tmp_path, gradlang.errors.Span(gradlang.errors.Source("m.grad", "data d = npz(…)\n"),
                                                       1, 10, 1, 16)), path.name)
    assert message in info.value.message and at(info.value) == (1, 10)


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_damaged_params_or_inputs_file_is_an_error_naming_it(tmp_path, capsys, command):
    program = ROOT / "examples" / "xor.grad"
    damaged = npz_file(tmp_path, "damaged")
    args = [command, str(program), "--params", str(damaged)] + (["--data", "table"] if command == "predict" else [])
    code = main(args)
    assert code == 1 and f"cannot load {damaged}: field 'x' is damaged" in capsys.readouterr().err
    if command == "predict":
        main(["run", str(program), "--quiet", "--out", str(tmp_path / "p.npz")])
        capsys.readouterr()
        code = main(["predict", str(program), "--params", str(tmp_path / "p.npz"), "--input", str(damaged)])
        assert code == 1 and f"cannot load {damaged}: field 'x' is damaged" in capsys.readouterr().err


LABELS = """import nn
data d = npz(path: "labels.npz")
input x : f32[B, 3]
input y : i64[B]
net = nn.dense(3, 4)
loss = cross_entropy(net(x), y)
train {
  data = d
  steps = 2
}
"""


def test_a_label_out_of_range_names_file_field_example_and_op(tmp_path, capsys):
    np.savez(tmp_path / "labels.npz", x=np.ones((6, 3), np.float32), y=np.array([0, 1, 2, 7, 1, 0]))
    (tmp_path / "m.grad").write_text(LABELS)
    code = main(["run", str(tmp_path / "m.grad"), "--quiet", "--out", str(tmp_path / "p.npz")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"{tmp_path / 'm.grad'}:6:8: error: {tmp_path / 'labels.npz'}: field 'y', example 3 "
                          "(counting from 0): value 7 is out of range 0..3 for softmax_cross_entropy"), err
    assert f"note: the data is declared at {tmp_path / 'm.grad'}:2:10" in err


def test_an_index_out_of_range_for_an_embedding(tmp_path):
    np.savez(tmp_path / "labels.npz", x=np.ones((3, 3), np.float32), y=np.array([0, -1, 2]))
    prog = gradlang.compile(LABELS.replace("net = nn.dense(3, 4)\nloss = cross_entropy(net(x), y)",
                                           "emb = nn.embedding(3, 2)\nloss = mean(emb(y)) + mean(x)"), )
    prog.folder = tmp_path
    with pytest.raises(GradError) as info:
        prog.load_data()
    assert "field 'y', example 1 (counting from 0): value -1 is out of range 0..2 for take" in info.value.message
    assert at(info.value) == (6, 13)


def test_data_of_the_wrong_shape_names_file_field_and_declaration(tmp_path):
    np.savez(tmp_path / "labels.npz", x=np.ones((6, 4), np.float32), y=np.zeros(6, np.int64))
    prog = gradlang.compile(LABELS)
    prog.folder = tmp_path
    with pytest.raises(GradError) as info:
        prog.load_data()
    assert info.value.message == (f"input x: expected f32[B,3], but field 'x' of {tmp_path / 'labels.npz'} has shape "
                                  "[6,4] (dimension 2 is 4, not 3)")
    assert at(info.value) == (3, 1)


# ---- 5. no data lost ----------------------------------------------------------------------------

def test_checkpoints_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd):
        synced.append(stat.S_IFMT(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    from gradlang.runtime.train import save_params
    save_params({"w": np.ones(3)}, tmp_path / "p.npz")
    assert synced == [stat.S_IFREG, stat.S_IFDIR]
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]    # no temporary file left behind


KILLED = """import nn
data d = two_moons(n: 256, noise: 0.1, seed: 1)
input x : f32[B, 2]
input y : f32[B]
net = nn.mlp([2, 128, 128, 1])
scores = net(x)[:, 0]
loss = mean(relu(1 - y * scores))
train {
  data = d
  batch = 16
  epochs = EPOCHS
  optimizer = adam(lr: 0.001)
  seed = 3
}
"""


def _gradlang(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gradlang.cli", "run", "m.grad", "--quiet", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _checkpoint_loads(path: Path) -> int:
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        assert any(k.startswith("param/") for k in archive.files) and meta["steps_taken"] > 0
        for k in archive.files:
            assert archive[k].dtype.kind != "f" or np.isfinite(archive[k]).all(), k
    return meta["steps_taken"]


def _wait_for_training(proc: subprocess.Popen, checkpoint: Path, before: int | None) -> bool:
    """Wait until the process has written a checkpoint (it is training); False if it ended first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if checkpoint.exists() and checkpoint.stat().st_mtime_ns != before:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("the run wrote no checkpoint in 300 s")


def kill_and_resume(tmp_path, kills: int, epochs: int, seed: int) -> None:
    """Train once without interruption and, beside it, again killing the process (SIGKILL) at random
    moments once it trains, resuming from its checkpoint each time (one is written after every epoch,
    so kills land while one is being written too): every checkpoint left behind loads, it never goes
    back, and the run that was killed ends with exactly the params of the one that was not."""
    (tmp_path / "m.grad").write_text(KILLED.replace("EPOCHS", str(epochs)))
    reference = _gradlang("--out", "ref.npz", "--checkpoint", "ref.ckpt.npz", cwd=tmp_path)
    rng = random.Random(seed)
    checkpoint, progress = tmp_path / "run.ckpt.npz", []
    args = ["--out", "run.npz", "--checkpoint", checkpoint.name, "--checkpoint-every", "0"]
    while len(progress) < kills:
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        proc = _gradlang(*args, *(["--resume"] if checkpoint.exists() else []), cwd=tmp_path)
        if not _wait_for_training(proc, checkpoint, before):
            break                          # it finished: the run is shorter than the kills asked for
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(_checkpoint_loads(checkpoint))
        assert progress == sorted(progress), progress
    assert len(progress) == kills, f"the run ended after {len(progress)} kills; give it more epochs"
    final = _gradlang(*args, "--resume", cwd=tmp_path)
    assert final.wait(timeout=600) == 0, final.stderr.read()
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    with np.load(tmp_path / "ref.npz") as ref, np.load(tmp_path / "run.npz") as run:
        assert sorted(ref.files) == sorted(run.files)
        for k in ref.files:
            np.testing.assert_array_equal(ref[k], run[k], err_msg=k)
    # a kill while a checkpoint was being written leaves its temporary file; the next write removes it
    leftovers = {p.name for p in tmp_path.iterdir()} - {"m.grad", "ref.npz", "ref.ckpt.npz", "run.npz", checkpoint.name}
    assert not leftovers, leftovers


def test_a_run_killed_at_random_moments_loses_nothing(tmp_path):
    kill_and_resume(tmp_path, kills=8, epochs=400, seed=0)


@pytest.mark.slow
def test_a_run_killed_many_times_loses_nothing(tmp_path):
    kill_and_resume(tmp_path, kills=40, epochs=600, seed=1)


# ---- 6. a model file cannot do harm -------------------------------------------------------------

def test_no_eval_no_pickle_in_the_package():
    """The package never evaluates text as Python (the interpreter's generated step is built from slot
    numbers only) and never unpickles: every np.load refuses pickles."""
    offenders = []
    for path in (ROOT / "gradlang").rglob("*.py"):
        text = path.read_text()
        for pattern in (r"(?<!def )(?<![.\w])eval\(", r"\bimport pickle\b", r"\bpickle\.", r"allow_pickle\s*=\s*True",
                        r"\bmarshal\b", r"\b__import__\(", r"np\.load\((?![^)]*allow_pickle=False)"):
            for m in re.finditer(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
        for _ in re.finditer(r"\bexec\(", text):
            if path.name != "interpreter.py":
                offenders.append(f"{path.relative_to(ROOT)}: exec(")
    assert offenders == []


def test_import_paths_cannot_climb_out():
    err = error_of("import ../secret\nloss = 1.0\n")
    assert at(err) == (1, 8) and err.message.startswith("syntax error: unexpected character '.'") \
        or at(err) == (1, 8) and "syntax error" in err.message


def test_an_import_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "evil.grad").write_text("fn f(x) = x\n")
    (tmp_path / "prog").mkdir()
    (tmp_path / "prog" / "helper.grad").symlink_to(tmp_path / "outside" / "evil.grad")
    (tmp_path / "prog" / "m.grad").write_text("import helper\nloss = 1.0\n")
    err = error_of(str(tmp_path / "prog" / "m.grad"))
    assert at(err) == (1, 1) and "import helper refused" in err.message and "outside" in err.message
    (tmp_path / "prog" / "sub").mkdir()        # a real file below the folder is fine
    (tmp_path / "prog" / "sub" / "ok.grad").write_text("fn g(x) = x\n")
    (tmp_path / "prog" / "m2.grad").write_text("import sub.ok\nloss = ok.g(1.0)\n")
    gradlang.compile(tmp_path / "prog" / "m2.grad")


@pytest.mark.parametrize("setting", ['save = "../x.npz"', 'checkpoint = "/tmp/x.npz"', 'save = "a/../../x.npz"',
                                     'save = "~/x.npz"'])
def test_files_written_by_a_program_stay_in_its_folder(setting):
    err = error_of(f"loss = 1.0\ntrain {{\n  {setting}\n}}\n")
    col = setting.index('"') + 3
    assert at(err) == (3, col) and "would write outside the program's folder" in err.message


PLAN_WITH_OUTPUT = ("input x : f32[B, 1]\ninput y : f32[B, 1]\nparam w : [1, 1] = 0.5\nloss = mean((x @ w - y) ** 2)\n"
                    "train {{\n  data = line(n: 8)\n  optimizer = sgd(lr: 0.1)\n  steps = 2\n  {setting}\n}}\n")


@pytest.mark.parametrize("setting", ['save = "escape/owned.npz"', 'checkpoint = "escape/run.ckpt.npz"',
                                     'save = "link.npz"'])
def test_a_link_beside_the_program_does_not_let_it_write_outside(tmp_path, capsys, setting):
    """A folder or file shipped as a symbolic link out of the program's folder is followed, and refused."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "prog").mkdir()
    (tmp_path / "prog" / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "prog" / "link.npz").symlink_to(tmp_path / "outside" / "victim.npz")
    (tmp_path / "prog" / "m.grad").write_text(PLAN_WITH_OUTPUT.format(setting=setting))
    for command in (["run"], ["run", "--dry-run"], ["check"]):
        code = main([*command, str(tmp_path / "prog" / "m.grad")])
        err = capsys.readouterr().err
        assert code == 1 and ":9:" in err and "outside the program's folder" in err and str(tmp_path / "outside") in err
    assert list((tmp_path / "outside").iterdir()) == []


@pytest.mark.parametrize("value", [".", "sub", "sub/"])
def test_a_program_output_naming_a_folder_is_refused(tmp_path, capsys, value):
    """`save = "."` once wrote `<folder>.ckpt.npz` into the folder above."""
    (tmp_path / "prog" / "sub").mkdir(parents=True)
    (tmp_path / "prog" / "m.grad").write_text(PLAN_WITH_OUTPUT.format(setting=f'save = "{value}"'))
    code = main(["run", str(tmp_path / "prog" / "m.grad")])
    assert code == 1 and "names the folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prog"]


def test_dry_run_says_why_each_file_is_written_where_it_is(tmp_path, capsys, monkeypatch):
    (tmp_path / "m.grad").write_text(PLAN_WITH_OUTPUT.format(setting='save = "out/p.npz"'))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "m.grad", "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["writes"]["params"] == str(tmp_path / "out" / "p.npz")
    assert out["write_reasons"]["params"].startswith("save = 'out/p.npz' at line 9: inside the program's folder")
    assert out["write_reasons"]["checkpoint"] == "the default: beside the params"
    assert main(["run", "m.grad", "--dry-run", "--json", "--out", str(tmp_path / "elsewhere.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["write_reasons"]["params"] == "--out on the command line"


def test_dry_run_reports_data_paths_and_outputs_without_reading_or_writing(tmp_path, capsys, monkeypatch):
    (tmp_path / "m.grad").write_text('data d = csv(path: "missing.csv")\ndata t = npz(path: "/nowhere/test.npz")\n'
                                     "input x : f32[B, 2]\ninput y : f32[B]\nloss = mean(x) + mean(y)\n"
                                     "train {\n  data = d\n  test = t\n  checkpoint = \"ck/run.npz\"\n}\n")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "m.grad", "--dry-run", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["reads"] == [
        {"data": "d", "source": "csv", "files": [str(tmp_path / "missing.csv")], "used_as": ["data"]},
        {"data": "t", "source": "npz", "files": ["/nowhere/test.npz"], "used_as": ["test"]}]
    assert out["writes"] == {"params": str(tmp_path / "m.npz"), "checkpoint": str(tmp_path / "ck" / "run.npz")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.grad"]    # nothing read (it is missing), nothing written
    code = main(["run", "m.grad", "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0 and "nothing was read or trained" in text and str(tmp_path / "missing.csv") in text


def test_a_batch_too_big_for_memory_is_refused_at_the_op_before_allocating(tmp_path, capsys):
    """`x @ transpose(x)` on 100,000 examples once died in the buffer planner with a MemoryError
    (37 GiB) that named no op; now the op and its line are named, before anything is allocated."""
    (tmp_path / "m.grad").write_text(
        "data d = two_moons(n: 100000)\ninput x : f32[B, 2]\nparam w : [2, 2] = 0.5\n"
        "loss = mean(x @ transpose(x)) + mean(x @ w)\n"
        "train {\n  data = d\n  optimizer = sgd(lr: 0.1)\n  steps = 1\n}\n")
    assert main(["run", str(tmp_path / "m.grad"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "m.grad:4:13: error: the result of matmul of type f32[100000,100000] would need 40,000,000,000 bytes" in err


def test_intermediates_that_together_exceed_the_limit_are_refused(monkeypatch):
    """Each value fits alone (4 MB), the two alive together at once do not (the limit is 6 MB)."""
    program = gradlang.compile("input x : f32[B, 1000]\nloss = mean(exp(x) * sin(x) + cos(x) * tanh(x))\n")
    feed = {"x": np.ones((1000, 1000), np.float32)}
    monkeypatch.setenv("GRADLANG_MAX_BYTES", str(6 * 10 ** 6))
    with pytest.raises(GradError, match=r"the intermediate values of one step would need 8,000,000 bytes at this "):
        program.loss(feed)
    monkeypatch.setenv("GRADLANG_MAX_BYTES", str(10 ** 8))
    assert program.loss(feed) == pytest.approx(np.mean(np.exp(1) * np.sin(1) + np.cos(1) * np.tanh(1)), rel=1e-6)


def test_an_overflow_reports_the_operand_as_it_was_before_an_in_place_kernel_overwrote_it():
    program = gradlang.compile("param w : [3] = 10.0\nloss = sum(exp(w * w))\n")
    with pytest.raises(GradError, match=r"exp produced inf \(3 of 3 values\) at step 1, from finite operands; "
                                        r"the largest operand magnitude was 100;"):
        program.step({})


@pytest.mark.parametrize("program, command, expected", [
    # a validation fraction that leaves no example on one side, at the setting
    ("data d = two_moons(n: 8)\ninput x : f32[B, 2]\nparam w : [2] = 0.5\nloss = mean(x @ w)\n"
     "train {\n  data = d\n  validation = 1e-300\n  steps = 1\n}\n", ["run"], ":7:16: error: a validation fraction"),
    # a file name the system cannot hold
    ("loss = 1.0\ntrain {\n  checkpoint = \"" + "a" * 300 + ".npz\"\n}\n", ["check"],
     ":3:16: error: checkpoint = 'aaa"),
    # a loss computed at compile time that is not finite: the loss's line, not a guess about random draws
    ("r = log(0)\nloss = mean(r)\ntrain {\n  steps = 1\n}\n", ["run"],
     ":2:8: error: the loss is -inf: it depends on no input or param"),
    # a param without values is left out of the gradient check
    ("param p : [0] = 1.0\nparam q : [2] = 1.0\nloss = sum(p) + sum(q * q)\n", ["gradcheck", "--random"], None),
])
def test_hostile_cases_end_in_a_located_error(tmp_path, capsys, program, command, expected):
    (tmp_path / "m.grad").write_text(program)
    code = main([*command, str(tmp_path / "m.grad"), *(["--quiet"] if command == ["run"] else [])])
    err = capsys.readouterr().err
    if expected is None:
        assert code == 0, err
    else:
        assert code == 1 and expected in err and "internal error" not in err, err


def test_predict_inputs_are_checked_as_data_naming_the_file(tmp_path, capsys):
    (tmp_path / "m.grad").write_text("input x : f32[B, 2]\nparam w : [2] = 0.5\noutput y = x @ w\nloss = mean(y)\n")
    np.savez(tmp_path / "p.npz", w=np.full(2, 0.5, np.float32))
    for field in (np.float32(1.0), np.array([[1.0, np.nan]], np.float32)):
        np.savez(tmp_path / "in.npz", x=field)
        code = main(["predict", str(tmp_path / "m.grad"), "--params", str(tmp_path / "p.npz"),
                     "--input", str(tmp_path / "in.npz")])
        err = capsys.readouterr().err
        assert code == 1 and str(tmp_path / "in.npz") in err and "internal error" not in err, err


def test_a_phase_repeated_without_end_and_a_negative_seed_option_are_refused(tmp_path, capsys):
    with pytest.raises(GradError, match=r"phase\(repeat: 1000000000000\) is more than 10,000 updates per step"):
        gradlang.compile("param a : [1] = 1.0\nloss = sum(a * a)\n"
                         "train {\n  phases = [phase(loss: loss, params: [a], repeat: 10**12)]\n}\n")
    (tmp_path / "m.grad").write_text("param a : [1] = 1.0\nloss = sum(a * a)\n")
    assert main(["run", str(tmp_path / "m.grad"), "--seed", "-1"]) == 1
    assert "--seed must be a non-negative integer, got -1" in capsys.readouterr().err


def test_broadcast_to_a_negative_dimension_is_a_shape_error():
    """Found by the hostile fuzz suite (seed 7, case 5675): NumPy's ValueError at run time before."""
    with pytest.raises(GradError, match=r"cannot broadcast to \[2, ?-1\]: a dimension is negative"):
        gradlang.compile("r = broadcast_to(-0.0, [2, -1])\nloss = mean(r[0])\n")


def test_a_size_that_no_input_gives_is_a_located_error():
    """Found by the hostile fuzz suite (seed 11, case 3853): a KeyError in the scheduler before."""
    program = gradlang.compile('input x : f32[B, 2]\nloss = mean(broadcast_to(1.0, ["a", 2])) + mean(x)\n')
    with pytest.raises(GradError, match=r"broadcast_to: the size 'a' is given by no input of the feed"):
        program.loss({"x": np.ones((3, 2), np.float32)})
