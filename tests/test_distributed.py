"""Data-parallel training over MPI: K ranks end where one process ends, only rank 0 speaks and writes,
a lost rank stops the job with a clear error, and without MPI nothing changes.

The tests that start ranks run `mpiexec -n 2` on this machine; they are skipped, saying how to install
MPI, where mpi4py or mpiexec is missing.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.runtime.distributed import DEFAULT_TIMEOUT, default_timeout, find_mpiexec, launcher_size

MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and mpiexec: pip install -e '.[mpi]'")

# 101 examples, 20 held out for validation: 81 to train on in batches of 5, so each batch splits 2 + 3
# between two ranks and the last batch of an epoch (1 example) leaves rank 0 with nothing.
MOONS = """
import nn
data points = two_moons(n: 101, noise: 0.1, seed: 1)
data held = two_moons(n: 37, noise: 0.2, seed: 2)
input x : f32[B, 2]
input y : f32[B]
net = nn.mlp([2, 16, 16, 1], activation: relu)
scores = net(x)[:, 0]
loss = mean(relu(1 - y * scores)) + 1e-4 * sum_of_squares(net.params)
metric accuracy = mean((scores > 0) == (y > 0))
train {
  data = points
  validation = 0.2
  test = held
  batch = BATCH
  epochs = 3
  optimizer = OPTIMIZER
  seed = 3
}
"""

# long enough to be interrupted: a checkpoint every epoch (10 steps), for a long time
LONG = """
import nn
data points = two_moons(n: 200, noise: 0.1, seed: 1)
input x : f32[B, 2]
input y : f32[B]
net = nn.mlp([2, 16, 16, 1], activation: relu)
loss = mean(relu(1 - y * net(x)[:, 0]))
train {
  data = points
  batch = 20
  steps = 10000000
  optimizer = sgd(lr: 0.01)
}
"""

# dropout draws inside every step: the ranks must still walk the same shuffled order of batches
DROPOUT_SCRIPT = """
import json, sys
import numpy as np
import gradlang
from gradlang.runtime.distributed import DataParallel

prog = gradlang.compile(sys.argv[1])
prog.distributed = DataParallel(timeout=60)
prog.train()
state = prog.rng.bit_generator.state["state"]["state"]
np.savez(sys.argv[2] + f".{prog.distributed.rank}.npz", rng=np.array(str(state)),
         **{k: v for k, v in prog.params.items()})
"""

DROPOUT = """
data points = spirals(n: 90, classes: 3, seed: 0)
input x : f32[B, 2]
input y : i64[B]
param W1 : [2, 32] = he_normal
param W2 : [32, 3] = glorot_uniform
logits = dropout(relu(x @ W1), 0.3) @ W2
loss = cross_entropy(logits, y)
train {
  data = points
  batch = 9
  epochs = 4
  optimizer = sgd(lr: 0.1)
}
"""


def moons(batch: int = 5, optimizer: str = "adam(lr: 0.01)") -> str:
    return MOONS.replace("BATCH", str(batch)).replace("OPTIMIZER", optimizer)


def mpirun(ranks: int, args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [MPIEXEC, "-n", str(ranks), sys.executable, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def gradlang_args(*args) -> list[str]:
    return ["-m", "gradlang.cli", *args]


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"PATH": "/bin"}, None),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1"}, 4),        # Open MPI
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, 2),                                # MPICH (hydra), srun --mpi=pmi2
    ({"PMIX_RANK": "3"}, 0),                                                # PMIx: a launcher, size unsaid
    ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5"}, 8),                # srun
    ({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, None),                     # inside sbatch, not under srun
])
def test_the_launcher_is_recognised_by_the_environment_it_sets(environ, expected):
    assert launcher_size(environ) == expected


def test_the_collective_timeout_can_come_from_the_environment():
    assert default_timeout({}) == DEFAULT_TIMEOUT
    assert default_timeout({"GRADLANG_MPI_TIMEOUT": "2.5"}) == 2.5
    for bad in ("soon", "0", "-1"):
        with pytest.raises(GradError, match="GRADLANG_MPI_TIMEOUT must be"):
            default_timeout({"GRADLANG_MPI_TIMEOUT": bad})


@pytest.fixture
def moons_alone(tmp_path, monkeypatch):
    """MOONS, one epoch, and `gradlang run` on it in this process, with no MPI launcher in sight."""
    for name in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK", "PMIX_RANK",
                 "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    source = tmp_path / "moons.grad"
    source.write_text(moons().replace("epochs = 3", "epochs = 1"))
    return lambda *extra: main(["run", str(source), "--quiet", "--json", "--out", str(tmp_path / "p.npz"), *extra])


def test_training_alone_never_imports_mpi4py(moons_alone, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "mpi4py" or m.startswith("mpi4py.")]:
        monkeypatch.delitem(sys.modules, name)
    assert moons_alone() == 0
    assert "mpi4py" not in sys.modules
    assert "ranks" not in json.loads(capsys.readouterr().out)


def test_a_launcher_without_mpi4py_is_an_error_that_says_how_to_install_it(moons_alone, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # as if not installed: importing it fails
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    assert moons_alone() == 1
    err = capsys.readouterr().err
    assert "an MPI launcher started 2 processes, but mpi4py is not installed" in err
    assert "pip install" in err and "--no-distributed" in err
    assert moons_alone("--no-distributed") == 0   # the way out: each process trains alone
    assert moons_alone("--distributed") == 1
    assert "--distributed was given, but mpi4py is not installed" in capsys.readouterr().err


def test_mpi_timeout_must_be_positive(tmp_path, capsys):
    source = tmp_path / "moons.grad"
    source.write_text(moons())
    assert main(["run", str(source), "--quiet", "--mpi-timeout", "0"]) == 1
    assert "--mpi-timeout must be a positive number" in capsys.readouterr().err


@needs_mpi
# plain SGD, one example a batch: rank 0 computes nothing in any step, and must still read the summed
# gradients as the other rank made them (SGD's step folds the rate into them)
@pytest.mark.parametrize("batch, optimizer", [(5, "adam(lr: 0.01)"), (1, "sgd(lr: 0.05)")])
def test_two_ranks_end_with_the_params_of_one_process(tmp_path, capsys, batch, optimizer):
    """Same seed, same global batch: the same params (float64 makes the agreement tight), the same loss,
    validation and test numbers — with unequal shares and a rank left without examples."""
    source = tmp_path / "moons.grad"
    source.write_text(moons(batch, optimizer))
    assert main(["run", str(source), "--float64", "--quiet", "--json", "--out", str(tmp_path / "one.npz")]) == 0
    alone = json.loads(capsys.readouterr().out)

    result = mpirun(2, gradlang_args("run", "moons.grad", "--float64", "--json", "--out", "two.npz"), tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "only rank 0 prints"
    together = json.loads(lines[0])
    assert together["ranks"] == 2 and together["steps"] == alone["steps"] == 3 * -(-81 // batch)
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
        assert sorted(one.files) == sorted(two.files)
        for name in one.files:
            np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-12, err_msg=name)
    for part in ("validation", "test"):
        for key, value in alone[part].items():
            assert together[part][key] == pytest.approx(value, rel=1e-12, abs=1e-12), (part, key)
    assert together["loss"] == pytest.approx(alone["loss"], rel=1e-12)
    assert (tmp_path / "two.ckpt.npz").exists()


@needs_mpi
def test_ranks_that_disagree_about_the_job_stop_it_saying_where(tmp_path):
    """Two ranks told different batch sizes (as machines with different files would be) must not train."""
    (tmp_path / "moons.grad").write_text(moons())
    rank = [sys.executable, *gradlang_args("run", "moons.grad", "--quiet", "--mpi-timeout", "60", "--batch")]
    result = subprocess.run([MPIEXEC, "-n", "1", *rank, "5", ":", "-n", "1", *rank, "6"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "the ranks disagree about the job (batch size from 5 to 6)" in result.stderr
    assert not (tmp_path / "moons.npz").exists()


@needs_mpi
def test_random_ops_draw_per_rank_but_every_rank_shuffles_the_same(tmp_path):
    (tmp_path / "dropout.grad").write_text(DROPOUT)
    (tmp_path / "train.py").write_text(DROPOUT_SCRIPT)
    result = mpirun(2, ["train.py", "dropout.grad", "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out.0.npz") as rank0, np.load(tmp_path / "out.1.npz") as rank1:
        assert str(rank0["rng"]) == str(rank1["rng"]), "the common generator drifted apart"
        for name in ("W1", "W2"):
            np.testing.assert_array_equal(rank0[name], rank1[name])


def _rank_pid(launcher: subprocess.Popen, rank: int, deadline: float) -> int:
    """The process id of one rank under `launcher` (mpiexec → proxy → ranks), found by its environment."""
    marks = (f"PMI_RANK={rank}".encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode())
    while time.monotonic() < deadline:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        todo = [launcher.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                try:
                    environ = (Path("/proc") / str(child) / "environ").read_bytes().split(b"\0")
                except OSError:
                    environ = []
                if any(m in environ for m in marks):
                    return child
                todo.append(child)
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} not found under the launcher")


def _interrupt_rank_1(tmp_path: Path, how: signal.Signals, timeout: float):
    """Train LONG on two ranks until a checkpoint exists, then send rank 1 `how`; the launcher's result
    and the seconds it took to end after that."""
    (tmp_path / "long.grad").write_text(LONG)
    checkpoint = tmp_path / "long.ckpt.npz"
    launcher = subprocess.Popen(
        [MPIEXEC, "-n", "2", sys.executable, *gradlang_args("run", "long.grad", "--quiet", "--out", "long.npz",
                                                             "--mpi-timeout", str(timeout))],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not checkpoint.exists():
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
            time.sleep(0.05)
        os.kill(_rank_pid(launcher, 1, deadline), how)
        signalled = time.monotonic()
        _, stderr = launcher.communicate(timeout=timeout + 30)
        return launcher.returncode, stderr, time.monotonic() - signalled
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def _resume_alone(tmp_path: Path, capsys) -> None:
    """The checkpoint left behind is whole: one process resumes from it and trains 5 more steps."""
    with np.load(tmp_path / "long.ckpt.npz") as archive:
        taken = json.loads(str(archive["meta"]))["steps_taken"]
    code = main(["run", str(tmp_path / "long.grad"), "--resume", "--checkpoint", str(tmp_path / "long.ckpt.npz"),
                 "--steps", str(taken + 5), "--quiet", "--json", "--out", str(tmp_path / "resumed.npz")])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["steps"] == taken + 5   # counted from the run's first step


@needs_mpi
def test_a_rank_that_hangs_stops_the_job_with_a_clear_error_within_the_timeout(tmp_path, capsys):
    code, stderr, seconds = _interrupt_rank_1(tmp_path, signal.SIGSTOP, timeout=3)
    assert code != 0
    assert "rank 0 of 2: the other ranks did not join the gradient all-reduce at step" in stderr
    assert "within 3 s" in stderr and "the last checkpoint written is intact" in stderr
    assert seconds < 20, "the job outlived the timeout by far"
    _resume_alone(tmp_path, capsys)


@needs_mpi
def test_a_rank_that_dies_stops_the_job_and_leaves_the_checkpoint_whole(tmp_path, capsys):
    code, stderr, seconds = _interrupt_rank_1(tmp_path, signal.SIGKILL, timeout=3)
    assert code != 0
    assert seconds < 20, "the surviving rank waited past its timeout"
    _resume_alone(tmp_path, capsys)


@needs_mpi
def test_a_rank_stopped_during_start_up_stops_the_job_within_the_timeout(tmp_path):
    """Rank 1 stops before it joins MPI's start-up (MPI_Init, which rank 0 waits in holding the GIL, out
    of reach of the collectives' deadline): rank 0's watchdog ends it after --mpi-timeout, saying why,
    and the launcher ends the job. Before, rank 0 waited for ever."""
    (tmp_path / "long.grad").write_text(LONG)
    stopped = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSTOP)"]
    started = time.monotonic()
    launcher = subprocess.Popen(
        [MPIEXEC, "-n", "1", sys.executable, *gradlang_args("run", "long.grad", "--quiet", "--mpi-timeout", "2"),
         ":", "-n", "1", *stopped], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        _, stderr = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode != 0
    assert "error: rank 0 of 2: the other ranks did not join MPI's start-up within 2 s" in stderr, stderr
    assert time.monotonic() - started < 30, "the job outlived the timeout by far"
    assert not (tmp_path / "long.ckpt.npz").exists()


@needs_mpi
@pytest.mark.slow
def test_the_readme_claim_two_ranks_on_moons_mlp_in_float32_and_float64(tmp_path, capsys):
    """README and docs/distributed.md: on examples/moons_mlp.grad two ranks end with one process's
    params to rounding in float64 (7e-16), and up to 0.11 apart in float32, where the chaotic hinge
    loss amplifies the rounding of a sum made in another order."""
    example = Path(__file__).resolve().parents[1] / "examples" / "moons_mlp.grad"
    (tmp_path / "moons_mlp.grad").write_text(example.read_text())
    apart = {}
    for precision in ([], ["--float64"]):
        assert main(["run", str(tmp_path / "moons_mlp.grad"), "--quiet", *precision,
                     "--out", str(tmp_path / "one.npz")]) == 0
        result = mpirun(2, gradlang_args("run", "moons_mlp.grad", "--quiet", *precision, "--out", "two.npz"), tmp_path)
        assert result.returncode == 0, result.stderr
        with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
            apart[bool(precision)] = max(float(np.abs(one[k] - two[k]).max()) for k in one.files)
    print(f"float32: {apart[False]:.2g} apart, float64: {apart[True]:.2g} apart")
    assert apart[True] <= 1e-12
    assert round(apart[False], 2) == 0.11, apart[False]
