"""Checkpoints that are damaged or foreign are refused whole, before a resume changes anything; the
temporary files of a write that was killed do not pile up; a stalled MPI start-up ends within the
timeout; and a non-finite validation loss follows on_nonfinite as a training loss does."""
import fcntl
import itertools
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.cli import main
from gradlang.runtime.distributed import launcher_rank
from gradlang.runtime.numerics import NonFiniteError
from gradlang.runtime.train import load_checkpoint, save_params

SOURCE = """
data points = spirals(n: 120, classes: 3, noise: 0.2, seed: 0)
input x : f32[B, 2]
input y : i64[B]
param W1 : [2, 8] = he_normal
param b1 : [8] = zeros
param W2 : [8, 3] = glorot_uniform
logits = relu(x @ W1 + b1) @ W2
loss = cross_entropy(logits, y)
train {
  data = points
  batch = 30
  epochs = 4
  validation = 0.25
  early_stopping = 3
  optimizer = adam(lr: 0.01)
  seed = 7
}
"""


@pytest.fixture
def checkpoint(tmp_path):
    """A real checkpoint after 2 epochs: params, Adam's state, best params (early stopping) and metadata."""
    path = tmp_path / "run.ckpt.npz"
    gradlang.compile(SOURCE).train(epochs=2, checkpoint=path)
    return path


def state_of(program) -> tuple:
    """Everything a resume may change, copied."""
    return ({k: v.copy() for k, v in program.params.items()},
            {k: v.copy() for k, v in program.optimizer_state().items()},
            json.dumps(program.rng.bit_generator.state), program.steps_taken)


def assert_same_state(a: tuple, b: tuple) -> None:
    for one, other in ((a[0], b[0]), (a[1], b[1])):
        assert one.keys() == other.keys()
        for k in one:
            np.testing.assert_array_equal(one[k], other[k], err_msg=k)
    assert a[2:] == b[2:]


def refused(path, fragment: str) -> str:
    """Resuming a fresh program from `path` fails naming the file and `fragment`, and changes nothing."""
    program = gradlang.compile(SOURCE)
    before = state_of(program)
    with pytest.raises(GradError) as caught:
        load_checkpoint(program, path)
    message = caught.value.message
    assert str(path) in message and fragment in message and "delete it to start afresh" in message, message
    assert_same_state(state_of(program), before)
    return message


def rewrite(path, change) -> None:
    """Apply `change(arrays, meta)` to the checkpoint's arrays and metadata and write it back."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(arrays, meta)
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


# ---- 1. damaged files ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage, fragment", [
    (lambda raw: raw[:len(raw) // 2], "cannot be read"),                 # truncated
    (lambda raw: b"", "is not an NPZ file"),                               # empty
    (lambda raw: raw[:-300], "cannot be read"),                            # the central directory cut off
    (lambda raw: b"\x93NUMPY" + raw[6:], "is not an NPZ file"),           # not a zip archive
])
def test_a_damaged_checkpoint_file_is_refused_naming_it(checkpoint, damage, fragment):
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    refused(checkpoint, fragment)


def test_every_flipped_bit_is_refused_or_changes_nothing_that_matters(checkpoint, tmp_path):
    """A sample of single-bit flips all over the file (each member's CRC, the zip headers' compression
    method and flags, the .npy headers, the metadata): each either is refused, naming the file, leaving
    the program as it was, or (a field nothing reads, such as a timestamp) resumes exactly the same."""
    raw = checkpoint.read_bytes()
    reference = gradlang.compile(SOURCE)
    load_checkpoint(reference, checkpoint)
    whole = state_of(reference)
    program = gradlang.compile(SOURCE)
    damaged, outcomes = tmp_path / "flipped.npz", {"refused": 0, "same": 0}
    for offset in sorted({6, 8, *range(0, len(raw), 23)}):   # 6, 8: the first member's flags and method
        for bit in (0x01, 0x80):
            damaged.write_bytes(raw[:offset] + bytes([raw[offset] ^ bit]) + raw[offset + 1:])
            before = state_of(program)
            try:
                load_checkpoint(program, damaged)
            except GradError as err:
                assert str(damaged) in err.message and "delete it to start afresh" in err.message, err.message
                assert_same_state(state_of(program), before)
                outcomes["refused"] += 1
            else:
                assert_same_state(state_of(program), whole)
                outcomes["same"] += 1
    assert outcomes["refused"] > outcomes["same"] > 0, outcomes


# ---- 1. whole but wrong -------------------------------------------------------------------------

def _drop(kind, name):
    return lambda arrays, meta: arrays.pop(f"{kind}/{name}")


def _meta(key, value):
    return lambda arrays, meta: meta.__setitem__(key, value)


def _array(key, value):
    return lambda arrays, meta: arrays.__setitem__(key, value(arrays[key]) if callable(value) else value)


@pytest.mark.parametrize("change, fragment", [
    (_drop("param", "W2"), "lacks param 'W2'"),
    (_array("param/W3", np.zeros(3, np.float32)), "holds param 'W3', which the program does not declare"),
    (_array("param/W1", lambda a: a[:, :4]), "holds param 'W1' of shape [2, 4], and the program's is [2, 8]"),
    (_array("param/W1", lambda a: a.astype(np.float64)),
     "holds param 'W1' in float64, and this run computes in float32"),
    (_array("param/b1", lambda a: np.full_like(a, np.nan)), "holds param 'b1' with NaN or infinite values"),
    (_array("param/W1", lambda a: a.astype(np.int32)), "holds param 'W1' in int32"),
    (_drop("optimizer", "v.1"), "lacks the optimizer's 'v.1'"),
    (_array("optimizer/m.0", lambda a: a[:1]), "holds the optimizer's 'm.0' of shape [1, 8], not [2, 8]"),
    (_array("optimizer/m.2", lambda a: np.full_like(a, np.inf)), "not finite float32 ones"),
    (_array("optimizer/t", np.array(-3)), "holds the optimizer's 't' as int64 values, not whole numbers ≥ 0"),
    (_array("optimizer/t", np.array(2.5)), "holds the optimizer's 't' as float64 values"),
    (_array("optimizer/velocity.0", np.zeros((2, 8), np.float32)),
     "'velocity.0', which the program's optimizer does not have"),
    (_drop("best", "b1"), "lacks best param 'b1'"),
    (_array("best/W2", lambda a: a.T), "holds best param 'W2' of shape [3, 8]"),
    (_meta("best", None), "a best validation loss without the params that reached it, or the reverse"),
    (_array("extra", np.zeros(1)), "holds 'extra', which no checkpoint holds"),
    (lambda arrays, meta: meta.pop("rng"), "has no 'rng' in its metadata"),
    (lambda arrays, meta: meta.pop("history"), "has no 'history' in its metadata"),
    (_meta("history", {"1": 2.0}), "'history' in its metadata that is not a list of [step, loss] pairs"),
    (_meta("history", [[1, "low"]]), "not a list of [step, loss] pairs"),
    (_meta("history", [[-1, 0.5]]), "not a list of [step, loss] pairs"),
    (_meta("epoch_log", [1, 2]), "not a list of records of numbers, one per epoch"),
    (_meta("epoch_log", [{"epoch": "one"}]), "not a list of records of numbers"),
    (_meta("steps_taken", -1), "'steps_taken' in its metadata that is not a whole number ≥ 0"),
    (_meta("steps_taken", 6.0), "'steps_taken' in its metadata that is not a whole number ≥ 0"),
    (_meta("epoch", True), "'epoch' in its metadata that is not a whole number ≥ 0"),
    (_meta("first_step", 99), "says its run began at step 99, after the 6 it took"),
    (_meta("best", "low"), "'best' in its metadata that is not null or a finite number"),
    (_meta("best", float("nan")), "'best' in its metadata that is not null or a finite number: NaN"),
    (_meta("since_best", -2), "'since_best' in its metadata that is not a whole number ≥ 0"),
    (_meta("stopped_early", 0), "'stopped_early' in its metadata that is not true or false"),
    (_meta("rng", [1, 2]), "'rng' in its metadata that is not the state of a random generator"),
    (_meta("rng", {"bit_generator": "MT19937", "state": {}}), "random generator state that PCG64 refuses"),
    (lambda arrays, meta: meta["rng"]["state"].__setitem__("state", 2 ** 200),
     "random generator state that PCG64 refuses"),
    (lambda arrays, meta: meta["rng"].__setitem__("uinteger", 1.5), "not one of PCG64's"),
    (_meta("written_by", "gradlang 9"), "has 'written_by' in its metadata, which no checkpoint has"),
])
def test_a_checkpoint_that_does_not_fit_the_program_is_refused_before_anything_changes(checkpoint, change, fragment):
    rewrite(checkpoint, change)
    refused(checkpoint, fragment)


@pytest.mark.parametrize("meta, fragment", [
    (np.array("{not json"), "holds metadata that is not JSON"),
    (np.array("[1, 2]"), "holds metadata that is not a JSON object"),
    (np.array(1.5), "holds metadata of float64 values, not JSON text"),
    (None, "has no metadata ('meta')"),
])
def test_metadata_that_is_not_a_json_object_is_refused(checkpoint, meta, fragment):
    with np.load(checkpoint, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "meta"}
    np.savez(checkpoint, **arrays, **({} if meta is None else {"meta": meta}))
    refused(checkpoint, fragment)


def test_a_checkpoint_missing_a_param_no_longer_resumes_with_exit_0(checkpoint, tmp_path, capsys):
    """The review's worst case: the param left out kept its fresh initial value, and the run said nothing."""
    (tmp_path / "m.grad").write_text(SOURCE)
    rewrite(checkpoint, _drop("param", "W2"))
    code = main(["run", str(tmp_path / "m.grad"), "--resume", "--checkpoint", str(checkpoint), "--quiet",
                 "--out", str(tmp_path / "p.npz")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"cannot resume: checkpoint {checkpoint} lacks param 'W2'" in err and "Traceback" not in err
    assert not (tmp_path / "p.npz").exists()


def test_an_empty_checkpoint_is_an_error_not_an_internal_one(checkpoint, tmp_path, capsys):
    (tmp_path / "m.grad").write_text(SOURCE)
    checkpoint.write_bytes(b"")
    code = main(["run", str(tmp_path / "m.grad"), "--resume", "--checkpoint", str(checkpoint), "--quiet",
                 "--out", str(tmp_path / "p.npz")])
    err = capsys.readouterr().err
    assert code == 1 and "internal error" not in err and str(checkpoint) in err, err


def test_a_whole_checkpoint_still_resumes_exactly(checkpoint):
    straight = gradlang.compile(SOURCE)
    straight.train()
    resumed = gradlang.compile(SOURCE)
    resumed.train(checkpoint=checkpoint, resume=True)
    assert resumed.steps_taken == straight.steps_taken
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)


def test_a_float64_run_resumes_from_its_own_checkpoint_and_refuses_a_float32_one(tmp_path):
    path = tmp_path / "c64.npz"
    gradlang.compile(SOURCE, dtype="float64").train(epochs=1, checkpoint=path)
    load_checkpoint(gradlang.compile(SOURCE, dtype="float64"), path)
    program = gradlang.compile(SOURCE)
    with pytest.raises(GradError, match=r"in float64, and this run computes in float32.*resume in the precision"):
        load_checkpoint(program, path)


# ---- 2. temporary files left by a killed write -----------------------------------------------------

def _leftover(folder, name: str) -> str:
    (folder / name).write_bytes(b"PK half a checkpoint")
    return name


def test_temporary_files_of_a_killed_write_are_removed_and_nothing_else(tmp_path):
    ckpt = tmp_path / "run.ckpt.npz"
    stale = [_leftover(tmp_path, ".run.ckpt.npz.k3x_9q0a.tmp"), _leftover(tmp_path, ".run.ckpt.npz.abcdefgh.tmp")]
    kept = [_leftover(tmp_path, name) for name in (
        ".run.ckpt.npz.abc.tmp",             # not eight characters: not a name mkstemp gives
        ".run.ckpt.npz.ABCDEFGH.tmp",        # capitals: neither
        ".run.ckpt.npz.abcdefgh.tmp.bak",    # another suffix
        "run.ckpt.npz.abcdefgh.tmp",         # no leading dot
        ".run.npz.abcdefgh.tmp",             # another target's
        ".xrun.ckpt.npz.abcdefgh.tmp",       # a name that only ends like ours
        ".run.ckpt.npz.abcd.efg.tmp",        # a dot inside
        "notes.txt",
    )]
    (tmp_path / ".run.ckpt.npz.dir12345.tmp").mkdir()                                 # a folder
    (tmp_path / "elsewhere.npz").write_bytes(b"keep me")
    (tmp_path / ".run.ckpt.npz.link1234.tmp").symlink_to(tmp_path / "elsewhere.npz")  # a link
    live = tmp_path / ".run.ckpt.npz.live1234.tmp"   # another writer's, being written: it holds the lock
    live.write_bytes(b"PK being written")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        gradlang.compile(SOURCE).train(epochs=1, checkpoint=ckpt)
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(stale), names
    assert set(kept) | {".run.ckpt.npz.dir12345.tmp", ".run.ckpt.npz.link1234.tmp", live.name,
                        "elsewhere.npz", "run.ckpt.npz"} == names
    assert (tmp_path / "elsewhere.npz").read_bytes() == b"keep me"


def test_saving_params_removes_the_temporary_files_of_that_file_only(tmp_path):
    mine, other = _leftover(tmp_path, ".p.npz.a1b2c3d4.tmp"), _leftover(tmp_path, ".q.npz.a1b2c3d4.tmp")
    save_params({"w": np.ones(3)}, tmp_path / "p.npz")
    assert {p.name for p in tmp_path.iterdir()} == {"p.npz", other}, mine


# ---- 3. MPI start-up under a deadline (the watchdog alone; tests/test_distributed.py starts ranks) --

STALLED_START = """
import re, sys
from gradlang.runtime.distributed import _start_up_deadline
with _start_up_deadline(float(sys.argv[1])):
    # stands for MPI_Init waiting for a rank that never comes: C code that keeps the GIL
    re.match(sys.argv[2], "a" * 64)
print("started")
"""


def _start(seconds: float, pattern: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PMI_RANK="1", PMI_SIZE="4")
    return subprocess.run([sys.executable, "-c", STALLED_START, str(seconds), pattern], capture_output=True,
                          text=True, timeout=60, env=environ)


def test_a_start_up_that_stalls_ends_the_rank_within_the_timeout_saying_why():
    """Neither a thread nor a signal handler of the rank can run while MPI_Init holds the GIL: the
    watchdog process ends it. (Before, the rank waited for ever: MPI_Init was outside every deadline.)"""
    result = _start(0.5, "(a*)*b")   # exponential backtracking: years
    assert result.returncode == -9, result
    assert ("error: rank 1 of 4: the other ranks did not join MPI's start-up within 0.5 s; a rank has died or hangs, "
            "so the job stops (--mpi-timeout or $GRADLANG_MPI_TIMEOUT sets the wait)") in result.stderr
    assert "started" not in result.stdout


def test_a_start_up_in_time_goes_on_and_leaves_no_watchdog():
    result = _start(30, "a+b")
    assert result.returncode == 0 and result.stdout == "started\n" and result.stderr == "", result


def test_the_rank_is_read_from_the_launcher_environment():
    assert launcher_rank({"PMI_RANK": "3"}) == 3
    assert launcher_rank({"OMPI_COMM_WORLD_RANK": "0"}) == 0
    assert launcher_rank({}) is None and launcher_rank({"PMI_RANK": "x"}) is None


# ---- 4. a non-finite validation loss ---------------------------------------------------------------

# w grows by about 0.18 a step (one step an epoch); on the validation set sqrt(w - 1.3) is NaN after
# epoch 1 (w ≈ 1.18) and finite from epoch 2 on, decreasing every epoch after
SQRT = """
data train_set = line(n: 8, low: 10.0, high: 10.0)
data held = line(n: 4, low: VALIDATION, high: VALIDATION)
input x : f32[B]
param w : [] = 1.0
loss = mean(sqrt(w + x)) - 2.0 * w
train {
  data = train_set
  validation = held
  epochs = 6
  optimizer = sgd(lr: 0.1)
  EXTRA
}
"""


def sqrt_program(validation: float = -1.3, extra: str = "") -> str:
    return SQRT.replace("VALIDATION", str(validation)).replace("EXTRA", extra)


def test_a_nan_validation_loss_stops_the_run_naming_the_set_the_epoch_the_step_and_the_op():
    program = gradlang.compile(sqrt_program())
    with pytest.raises(NonFiniteError) as caught:
        program.train()
    err = caught.value
    # sqrt is pow(·, 0.5)
    assert err.message.startswith("the loss on the validation set became nan after epoch 1 (step 1); "
                                  "the first non-finite value: pow produced nan (4 of 4 values)"), err.message
    assert err.span.line == 6 and err.op == "pow" and err.step == 1
    assert program.check_numerics is False


def test_a_nan_validation_loss_is_an_error_from_the_command_line(tmp_path, capsys):
    (tmp_path / "m.grad").write_text(sqrt_program())
    assert main(["run", str(tmp_path / "m.grad"), "--quiet", "--out", str(tmp_path / "p.npz")]) == 1
    err = capsys.readouterr().err
    assert ":6:" in err and "the loss on the validation set became nan after epoch 1 (step 1)" in err, err


def test_with_skip_a_nan_validation_loss_is_logged_and_never_an_improvement(tmp_path):
    """Before, the NaN of epoch 1 became the best loss, no later loss was below it, and the run stopped
    early at epoch 3 restoring epoch 1's params."""
    program = gradlang.compile(sqrt_program(extra='early_stopping = 2\n  on_nonfinite = "skip"'))
    result = program.train(checkpoint=tmp_path / "c.npz")
    losses = [r["val_loss"] for r in result.epoch_log]
    assert math.isnan(losses[0]) and all(b < a for a, b in itertools.pairwise(losses[1:])), losses
    assert not result.stopped_early and len(losses) == 6
    assert result.validation["loss"] == pytest.approx(losses[-1])
    load_checkpoint(gradlang.compile(sqrt_program(extra='early_stopping = 2\n  on_nonfinite = "skip"')),
                    tmp_path / "c.npz")   # a NaN in the epoch log is a record, not damage


def test_with_skip_a_validation_loss_that_stays_nan_stops_early_after_the_patience():
    result = gradlang.compile(sqrt_program(-100.0, 'early_stopping = 2\n  on_nonfinite = "skip"')).train()
    assert result.stopped_early and len(result.epoch_log) == 2
    assert all(math.isnan(r["val_loss"]) for r in result.epoch_log)


def test_with_skip_the_command_line_warns_about_the_nan_validation_loss(tmp_path, capsys):
    (tmp_path / "m.grad").write_text(sqrt_program(extra='on_nonfinite = "skip"'))
    assert main(["run", str(tmp_path / "m.grad"), "--quiet", "--out", str(tmp_path / "p.npz")]) == 0
    err = capsys.readouterr().err
    assert textwrap.dedent("""\
        warning: the loss on the validation set was not finite after 1 epoch(s), the first after epoch 1""") in err
    assert "invalid value encountered" not in err, err
