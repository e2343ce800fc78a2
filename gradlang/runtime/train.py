"""The training loop shared by `gradlang run` and `Program.train`: shuffled mini-batches, a held-out
validation set evaluated every epoch, early stopping, atomic checkpoints every epoch and resuming.

Resuming is exact: a checkpoint holds the params, the optimizer's state, the step count and the state
of the program's random generator at an epoch boundary, so an interrupted run that is resumed ends
with the same params as one that was never interrupted.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GradError
from .data import batches, count_examples
from .numerics import NonFiniteError


@dataclass
class TrainResult:
    loss: float
    metrics: dict
    steps: int
    epochs: float
    seconds: float
    history: list = field(default_factory=list)   # (step, loss) after every update
    epoch_log: list = field(default_factory=list)  # one dict per epoch: epoch, step, loss, val_loss, val_<metric>…
    validation: dict = field(default_factory=dict)  # final loss and metrics on the validation set
    stopped_early: bool = False
    test: dict = field(default_factory=dict)        # loss and metrics on the plan's test set
    skipped: list = field(default_factory=list)     # on_nonfinite = "skip": each skipped step's error, formatted

    def as_dict(self) -> dict:
        out = {"loss": self.loss, "metrics": self.metrics, "steps": self.steps, "epochs": self.epochs,
               "seconds": self.seconds}
        if self.validation:
            out["validation"] = self.validation
        if self.test:
            out["test"] = self.test
        if self.stopped_early:
            out["stopped_early"] = True
        if self.skipped:
            out["skipped_steps"] = len(self.skipped)
        return out


class Reporter:
    """What the loop tells the outside; the default says nothing."""

    def step(self, done: int, total: int, loss: float, seconds: float) -> None:
        pass

    def epoch(self, record: dict) -> None:
        pass


def split_validation(arrays: dict, names: list[str], fraction: float, rng: np.random.Generator):
    """Hold out a random `fraction` of the examples (drawn from the program's generator)."""
    n = count_examples(arrays, names)
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise GradError(f"a validation fraction of {fraction} leaves no examples to train or validate on "
                        f"({n} examples)")
    order = rng.permutation(n)
    train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    return ({k: arrays[k][train_idx] for k in names}, {k: arrays[k][val_idx] for k in names})


@dataclass
class _Run:
    """The state of one training run: what a checkpoint saves and `resume` restores."""

    first_step: int = 0                # the program's step count when the run began
    epoch: int = 0
    history: list = field(default_factory=list)
    epoch_log: list = field(default_factory=list)
    best: float | None = None          # best validation loss so far (early stopping)
    since_best: int = 0
    best_params: dict | None = None
    stopped_early: bool = False
    skipped: list = field(default_factory=list)   # the errors of steps skipped for a non-finite loss


# on_nonfinite = "skip" gives up after this many skipped steps in a row: the params are not recovering
MAX_SKIPS_IN_A_ROW = 10


def fit(program, arrays: dict, epochs: int | None, steps: int | None, batch_size: int | None,
        validation: dict | None = None, early_stopping: int = 0, reporter: Reporter | None = None,
        checkpoint: Path | None = None, resume: bool = False, checkpoint_interval: float = 1.0,
        on_nonfinite: str = "stop") -> TrainResult:
    """Run optimizer steps over shuffled mini-batches until `steps` updates or `epochs` passes.

    The checkpoint is written at the end of an epoch, at most once every `checkpoint_interval`
    seconds (many tiny full-batch epochs would otherwise spend their time writing), and after the last.
    A step whose loss is NaN or infinite stops the run with an error naming the op that produced the
    first non-finite value (runtime/numerics.py), or with `on_nonfinite="skip"` is skipped (no update;
    the run still stops after MAX_SKIPS_IN_A_ROW such steps in a row).
    """
    reporter = reporter or Reporter()
    names = [n for n in program.input_names if n in arrays]
    arrays = {k: arrays[k] for k in names}          # fields the program does not declare are not fed
    n = count_examples(arrays, names) if names else 1   # a program without inputs: every step is one "batch"
    if n == 0:
        raise GradError("the training data has no examples")
    full_batch = batch_size is None or batch_size >= n
    size = n if full_batch else batch_size
    from .phases import step_groups, steps_per_epoch
    per_step = program.updates_per_step          # mini-batches per step: one per update of the plan's phases
    per_epoch = steps_per_epoch(-(-n // size), per_step)
    total = steps if steps is not None else per_epoch * (epochs if epochs is not None else 1)
    run = _Run(first_step=program.steps_taken)
    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise GradError(f"nothing to resume: no checkpoint at {checkpoint}")
        run = load_checkpoint(program, checkpoint)
    parallel = program.distributed   # data-parallel over MPI (distributed.py), or None
    if parallel is not None:         # every rank checks it runs the same job and takes rank 0's params
        parallel.start(program, n, size)
    end = run.first_step + total
    skipped_in_a_row = 0
    start = last_saved = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # a non-finite loss is reported below
        while program.steps_taken < end and not run.stopped_early:
            epoch_losses = []
            for group in step_groups(batches(n, size, None if full_batch else program.rng), per_step):
                feeds = [arrays if full_batch else {k: arrays[k][idx] for k in names}
                         for idx in (group if per_step > 1 else [group])]
                try:
                    loss = program.step(feeds if per_step > 1 else feeds[0])
                except NonFiniteError as err:   # raised before the update: the params are as they were
                    skipped_in_a_row += 1
                    if on_nonfinite != "skip" or skipped_in_a_row > MAX_SKIPS_IN_A_ROW:
                        raise
                    program.steps_taken += 1    # the step is spent, without an update
                    run.skipped.append(err.format())
                    if program.steps_taken >= end:
                        break
                    continue
                skipped_in_a_row = 0
                epoch_losses.append(loss)
                run.history.append((program.steps_taken, loss))
                if not np.isfinite(loss):
                    raise GradError(f"the loss became {loss} at step {program.steps_taken}; "
                                    "try a smaller learning rate or gradient clipping (clip_norm)")
                reporter.step(program.steps_taken - run.first_step, total, loss, time.perf_counter() - start)
                if program.steps_taken >= end:
                    break
            _end_epoch(program, run, float(np.mean(epoch_losses)) if epoch_losses else float("nan"), validation,
                       early_stopping)
            reporter.epoch(run.epoch_log[-1])
            finished = program.steps_taken >= end or run.stopped_early
            writer = parallel is None or parallel.is_root   # one checkpoint per job: rank 0's
            if checkpoint is not None and writer and (finished or time.perf_counter() - last_saved >= checkpoint_interval):
                save_checkpoint(program, checkpoint, run)
                last_saved = time.perf_counter()
    if run.stopped_early and run.best_params is not None:
        program.set_params(run.best_params)
    seconds = time.perf_counter() - start
    final = program.evaluate(arrays)
    val = program.evaluate(validation) if validation is not None else {}
    done = program.steps_taken - run.first_step
    return TrainResult(final.pop("loss"), final, done, done / per_epoch, seconds,
                       run.history, run.epoch_log, val, run.stopped_early, skipped=run.skipped)


def _end_epoch(program, run: _Run, train_loss: float, validation: dict | None, patience: int) -> None:
    run.epoch += 1
    record = {"epoch": run.epoch, "step": program.steps_taken, "loss": train_loss}
    if validation is not None:
        record.update({f"val_{k}": v for k, v in program.evaluate(validation).items()})
        if patience:
            if run.best is None or record["val_loss"] < run.best:
                run.best, run.since_best = record["val_loss"], 0
                run.best_params = {k: v.copy() for k, v in program.params.items()}
            else:
                run.since_best += 1
                run.stopped_early = run.since_best >= patience
    run.epoch_log.append(record)


def _atomic_savez(path: Path, arrays: dict) -> Path:
    """Write an .npz atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable: after a power cut the folder names the new file, not the old one
    or none (POSIX; where a folder cannot be opened, as on Windows, the rename is left to the OS)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_params(params: dict, path: str | Path) -> Path:
    return _atomic_savez(Path(path), params)


def save_checkpoint(program, path: Path, run: _Run) -> Path:
    meta = {"first_step": run.first_step, "epoch": run.epoch, "steps_taken": program.steps_taken, "rng": program.rng.bit_generator.state,
            "history": run.history, "epoch_log": run.epoch_log, "best": run.best, "since_best": run.since_best,
            "stopped_early": run.stopped_early}
    arrays = {f"param/{k}": v for k, v in program.params.items()}
    arrays.update({f"optimizer/{k}": v for k, v in program.optimizer_state().items()})
    if run.best_params is not None:
        arrays.update({f"best/{k}": v for k, v in run.best_params.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    try:
        return _atomic_savez(path, arrays)
    except OSError as err:
        raise GradError(f"cannot write the checkpoint {path}: {err.strerror or err}") from None


def load_checkpoint(program, path: Path) -> _Run:
    def part(archive, prefix):
        return {k[len(prefix):]: archive[k] for k in archive.files if k.startswith(prefix)}
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            program.set_params(part(archive, "param/"))
            program.load_optimizer_state(part(archive, "optimizer/"))
            best_params = part(archive, "best/") or None
    except (OSError, ValueError, KeyError) as err:
        raise GradError(f"cannot resume from {path}: {err}") from None
    program.rng.bit_generator.state = meta["rng"]
    program.steps_taken = meta["steps_taken"]
    return _Run(meta["first_step"], meta["epoch"], [tuple(h) for h in meta["history"]], meta["epoch_log"], meta["best"],
                meta["since_best"], best_params, meta["stopped_early"])
