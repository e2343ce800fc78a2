"""The training loop shared by `gradlang run` and `Program.train`: shuffled mini-batches, a held-out
validation set evaluated every epoch, early stopping, atomic checkpoints every epoch and resuming.

Resuming is exact: a checkpoint holds the params, the program's state (batch norm's running statistics),
the optimizer's state, the step count and the state of the program's random generator at an epoch
boundary, so an interrupted run that is resumed ends with the same params as one that was never interrupted.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GradError
from ..frontend.plan import check_setting, quote_setting
from ..frontend.values import DataSpec, describe
from .data import batches, count_examples
from .metrics_log import MetricsLog
from .numerics import NonFiniteError
from .reporting import CallbackReporter, Reporter
from .watch import GradientWatch

try:
    import fcntl  # file locks tell a live writer's temporary file from one a killed writer left (POSIX)
except ImportError:   # pragma: no cover - Windows
    fcntl = None


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
    learning_rate: float | None = None   # the rate the next update would use (None with phases)
    evaluated: int | None = None   # the final numbers are on each set's first `evaluated` examples; None: all;
                                   # 0: no final evaluation (`loss` is the last epoch's mean training loss)
    gradient_watch: GradientWatch | None = None   # with watch_grads: each param's gradient norms (watch.py)

    def __repr__(self) -> str:
        """The result's numbers, not its history (`history` and `epoch_log` hold one entry per step and
        per epoch)."""
        parts = [f"loss={self.loss:.6g}", f"metrics={self.metrics}", f"steps={self.steps}", f"epochs={self.epochs:g}",
                 f"seconds={self.seconds:.2f}"]
        parts += [f"{name}={getattr(self, name)}" for name in ("validation", "test") if getattr(self, name)]
        if self.stopped_early:
            parts.append("stopped_early=True")
        if self.skipped:
            parts.append(f"skipped={len(self.skipped)} steps")
        return f"TrainResult({', '.join(parts)}; history of {len(self.history)} steps)"

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
        if self.evaluated is not None:
            out["evaluated_examples"] = self.evaluated
        return out


def _param_locations(program) -> dict[str, str]:
    """Where the user's program makes each param (`file:line`; for a library layer, the line that calls it)."""
    graph = program.model_graph
    found = {}
    for name, node in graph.params.items():
        span = graph.location(node)
        if span is not None:
            found[name] = f"{span.source.name}:{span.line}"
    return found


def split_validation(arrays: dict, names: list[str], fraction: float, rng: np.random.Generator, span=None):
    """Hold out a random `fraction` of the examples (drawn from the program's generator); `span` is the
    setting's, for the error when the fraction leaves one side empty."""
    n = count_examples(arrays, names)
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise GradError(f"a validation fraction of {fraction} leaves no examples to train or validate on "
                        f"({n} examples)", span)
    order = rng.permutation(n)
    train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    return ({k: arrays[k][train_idx] for k in names}, {k: arrays[k][val_idx] for k in names})


def train_per_plan(program, data: dict | None = None, epochs: int | None = None, steps: int | None = None,
                   batch_size: int | None = None, validation: float | dict | None = None,
                   early_stopping: int | None = None, log=None, reporter: Reporter | None = None,
                   checkpoint: str | Path | None = None, resume: bool = False, checkpoint_interval: float = 0.0,
                   on_nonfinite: str | None = None, eval_limit: int | None = None,
                   log_dir: str | Path | None = None, watch_grads: bool = False) -> TrainResult:
    """`Program.train`: every argument, else the plan's setting, checked before anything is trained
    (errors at the setting); then `fit`, and the plan's test set evaluated (its first `eval_limit`
    examples; none with 0)."""
    plan = program.runner.plan
    if eval_limit is not None and (isinstance(eval_limit, bool) or not isinstance(eval_limit, int) or eval_limit < 0):
        raise GradError(f"eval_limit must be a whole number of examples (0: no final evaluation), got "
                        f"{quote_setting(eval_limit)}")
    if on_nonfinite is not None:
        check_setting("on_nonfinite", on_nonfinite, None)   # as the train block's setting is checked
    on_nonfinite = on_nonfinite or plan.get("on_nonfinite", "stop")
    if data is None and not program.input_names and "data" not in plan:
        data = {}   # nothing to feed: each step just updates the params
    arrays = data if data is not None else program.load_data()
    _check_fields_cover_inputs(program, arrays, "the training data" if data is not None
                               else f"the data {plan.get('data').source}(…)")
    if epochs is None and steps is None:
        epochs, steps = plan.integer("epochs"), plan.integer("steps")
    for key, value in (("epochs", epochs), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise GradError(f"{key} must be a positive integer, got {quote_setting(value)}", plan.span_of(key))
    batch_size = plan.integer("batch", batch_size)
    early_stopping = plan.integer("early_stopping", early_stopping, minimum=0) or 0
    setting_span = plan.span_of("validation") if validation is None else None
    validation = plan.get("validation") if validation is None else validation
    names = [n for n in program.input_names if n in arrays]
    if isinstance(validation, DataSpec):   # checked as the training data is: shapes, labels, NaN
        validation = program.load_data(setting="validation")
    elif isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0 < validation < 1:
            raise GradError(f"validation must be a fraction between 0 and 1, got {validation}", setting_span)
        arrays, validation = split_validation(arrays, names, float(validation), program.rng, setting_span)
    elif validation is not None and not isinstance(validation, dict):
        raise GradError(f"validation must be a fraction or a data source, got {describe(validation)}",
                        plan.span_of("validation"))
    if early_stopping and validation is None:
        raise GradError("early_stopping needs a validation set (validation = 0.1, say)", plan.span_of("early_stopping"))
    if checkpoint is None:
        checkpoint = program.plan_output("checkpoint")
    if reporter is None and log is not None:
        reporter = CallbackReporter(log)
    watch = GradientWatch(program.runner, _param_locations(program)) if watch_grads else None
    metrics_log = None
    if log_dir is not None and (program.distributed is None or program.distributed.is_root):
        reporter = metrics_log = MetricsLog(log_dir, reporter, watch=watch)
    program.runner.watch = watch
    try:
        result = fit(program, arrays, epochs, steps, batch_size, validation, early_stopping, reporter,
                     Path(checkpoint) if checkpoint is not None else None, resume, checkpoint_interval,
                     on_nonfinite=on_nonfinite, eval_limit=eval_limit)
        if "test" in plan and eval_limit != 0:
            result.test = program.evaluate(first_examples(program.load_data(setting="test"), eval_limit))
    except BaseException:
        if metrics_log is not None:
            metrics_log.close()   # what was logged stays: the steps up to the error
        raise
    finally:
        program.runner.watch = None
    result.gradient_watch = watch
    if metrics_log is not None:
        metrics_log.finish(result.as_dict())
    return result


def first_examples(arrays: dict, count: int | None) -> dict:
    """The first `count` examples of every field (all of them for None)."""
    return arrays if count is None else {name: value[:count] for name, value in arrays.items()}


def _check_fields_cover_inputs(program, arrays: dict, origin: str) -> None:
    """Every input that training reads is a field of `arrays` (a named error before any step)."""
    graph = program.model_graph
    needed = graph.reachable([graph.outputs[o] for o in program.graphs.evaluated_losses()])
    for name, node in graph.inputs.items():
        if node in needed and name not in arrays:
            raise GradError(f"{origin} is missing input {name!r}: its fields are "
                            f"{', '.join(map(str, arrays)) or 'none'}, and each input is fed from the field "
                            "of its name", program.elaborated.inputs[name].span)


def step_groups(epoch_batches, per_step: int):
    """An epoch's mini-batches (index arrays) grouped `per_step` at a time, one group per training step;
    the last group of the epoch, if short, is completed with the epoch's first batches, so that a step
    never spans two epochs (and a checkpoint at an epoch's end holds the whole state). With one
    update per step the batches come as they are."""
    if per_step == 1:
        yield from epoch_batches
        return
    epoch = list(epoch_batches)
    for start in range(0, len(epoch), per_step):
        yield [epoch[(start + j) % len(epoch)] for j in range(per_step)]


def steps_per_epoch(batches_per_epoch: int, per_step: int) -> int:
    return -(-batches_per_epoch // per_step)


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
    best_state: dict | None = None     # the program's state when the best params were reached (if it has one)


# on_nonfinite = "skip" gives up after this many skipped steps in a row: the params are not recovering
MAX_SKIPS_IN_A_ROW = 10


def fit(program, arrays: dict, epochs: int | None, steps: int | None, batch_size: int | None,
        validation: dict | None = None, early_stopping: int = 0, reporter: Reporter | None = None,
        checkpoint: Path | None = None, resume: bool = False, checkpoint_interval: float = 1.0,
        on_nonfinite: str = "stop", eval_limit: int | None = None) -> TrainResult:
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
    per_step = program.updates_per_step          # mini-batches per step: one per update of the plan's phases
    per_epoch = steps_per_epoch(-(-n // size), per_step)
    total = steps if steps is not None else per_epoch * (epochs if epochs is not None else 1)
    run = _Run(first_step=program.steps_taken)
    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise GradError(f"nothing to resume: no checkpoint at {checkpoint}")
        run = load_checkpoint(program, checkpoint)
        reporter.resumed(program.steps_taken - run.first_step, total, Path(checkpoint))
    parallel = program.distributed   # data-parallel over MPI (distributed.py), or None
    if parallel is not None:         # every rank checks it runs the same job and takes rank 0's params
        parallel.start(program.runner, n, size)
    end = run.first_step + total
    # each metric on each batch as it is trained on (dropout on), from the step's own forward values
    metered = bool(program.metric_names) and per_step == 1 and not program.phases and parallel is None
    reporter.started(lambda: program.runner.learning_rate(max(program.steps_taken - 1, 0)))
    skipped_in_a_row = 0
    start = last_saved = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # a non-finite loss is reported below
        while program.steps_taken < end and not run.stopped_early:
            epoch_losses, epoch_metrics, metered_examples = [], {}, 0
            for group in step_groups(batches(n, size, None if full_batch else program.rng), per_step):
                feeds = [arrays if full_batch else {k: arrays[k][idx] for k in names}
                         for idx in (group if per_step > 1 else [group])]
                try:
                    loss = program.step(feeds if per_step > 1 else feeds[0], metered=metered)
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
                if metered:
                    size_now = len(group)
                    for name, value in program.runner.batch_metrics.items():
                        epoch_metrics[name] = epoch_metrics.get(name, 0.0) + value * size_now
                    metered_examples += size_now
                run.history.append((program.steps_taken, loss))
                if not np.isfinite(loss):
                    raise GradError(f"the loss became {loss} at step {program.steps_taken}; "
                                    "try a smaller learning rate or gradient clipping (clip_norm)")
                reporter.step(program.steps_taken - run.first_step, total, loss, time.perf_counter() - start)
                if program.steps_taken >= end:
                    break
            _end_epoch(program, run, float(np.mean(epoch_losses)) if epoch_losses else float("nan"), validation,
                       early_stopping, on_nonfinite,
                       {k: v / metered_examples for k, v in epoch_metrics.items()} if metered_examples else {})
            reporter.epoch(run.epoch_log[-1])
            finished = program.steps_taken >= end or run.stopped_early
            writer = parallel is None or parallel.is_root   # one checkpoint per job: rank 0's
            due = finished or time.perf_counter() - last_saved >= checkpoint_interval
            if checkpoint is not None and writer and due:
                save_checkpoint(program, checkpoint, run)
                last_saved = time.perf_counter()
    if run.stopped_early and run.best_params is not None:
        program.set_params(run.best_params)
        program.state.assign(run.best_state or {})
    seconds = time.perf_counter() - start
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # a non-finite result is reported, not warned
        if eval_limit == 0:   # no final evaluation: the last epoch's mean training loss
            final, val = {"loss": run.epoch_log[-1]["loss"] if run.epoch_log else float("nan")}, {}
        else:
            final = program.evaluate(first_examples(arrays, eval_limit))
            val = program.evaluate(first_examples(validation, eval_limit)) if validation is not None else {}
    done = program.steps_taken - run.first_step
    return TrainResult(final.pop("loss"), final, done, done / per_epoch, seconds,
                       run.history, run.epoch_log, val, run.stopped_early, skipped=run.skipped,
                       learning_rate=program.runner.learning_rate(), evaluated=eval_limit)


def _end_epoch(program, run: _Run, train_loss: float, validation: dict | None, patience: int,
               on_nonfinite: str, train_metrics: dict) -> None:
    """Log the epoch (with `train_metrics`: each metric's mean over the epoch's batches, as each was
    trained on), evaluate the validation set and decide early stopping. A validation loss that is
    NaN or infinite follows `on_nonfinite` as a training loss does: "stop" raises, naming the first op
    that produced a non-finite value; "skip" logs it, and it never counts as an improvement."""
    run.epoch += 1
    record = {"epoch": run.epoch, "step": program.steps_taken, "loss": train_loss, **train_metrics}
    if validation is not None:
        record.update({f"val_{k}": v for k, v in program.evaluate(validation).items()})
        val_loss = record["val_loss"]
        if not math.isfinite(val_loss) and on_nonfinite != "skip":
            raise _nonfinite_validation(program, validation, val_loss, run.epoch)
        if patience:
            if math.isfinite(val_loss) and (run.best is None or val_loss < run.best):
                run.best, run.since_best = val_loss, 0
                run.best_params = {k: v.copy() for k, v in program.params.items()}
                run.best_state = {k: v.copy() for k, v in program.state.items()}
            else:
                run.since_best += 1
                run.stopped_early = run.since_best >= patience
    run.epoch_log.append(record)


def _nonfinite_validation(program, validation: dict, loss: float, epoch: int) -> NonFiniteError:
    """The error for a validation loss that came out `loss` (NaN or ±inf): this process evaluates the
    validation set's loss again op by op (runtime/numerics.py) to locate the first non-finite value.
    Under MPI every rank sees the same reduced loss and checks the whole set alike, without a collective."""
    step = program.steps_taken
    head = f"the loss on the validation set became {loss} after epoch {epoch} (step {step})"
    names = [n for n in program.input_names if n in validation]
    n = count_examples(validation, names) if names else 1
    checking, program.check_numerics = program.check_numerics, True
    try:
        for idx in batches(n, min(n, 10_000), None):   # in batches of Program.evaluate's size
            program.run(program.graphs.evaluated_losses(), {k: validation[k][idx] for k in names})
    except NonFiniteError as found:
        return NonFiniteError(f"{head}; the first non-finite value: {found.message}", found.span, step,
                              found.op, found.node)
    finally:
        program.check_numerics = checking
    return NonFiniteError(f"{head}, but evaluating it again op by op gave finite values", None, step)


def _atomic_savez(path: Path, arrays: dict) -> Path:
    """Write an .npz atomically: a reader sees the old file or the new one, never half of one. The
    temporary files of `path` that killed writers left in its folder are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = _locked_temporary(path)
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


def _temporary_affixes(target: Path) -> tuple[str, str]:
    """What the name of a temporary file of `target` starts and ends with (tempfile.mkstemp puts eight
    random characters from [a-z0-9_] between them)."""
    return f".{target.name}.", ".tmp"


def _locked_temporary(target: Path) -> tuple[int, str]:
    """A new temporary file beside `target`, open for writing and locked until it is closed, so that
    another writer of `target` never takes it for one left behind (see _remove_stale_temporaries)."""
    prefix, suffix = _temporary_affixes(target)
    while True:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:   # a file system without locks: then no writer removes any temporary file
            return fd, tmp
        if os.fstat(fd).st_nlink:
            return fd, tmp
        os.close(fd)   # another writer removed it between its creation and the lock: take another


def _remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files of `target` that a writer killed mid-write (SIGKILL, a power cut)
    left behind: files named exactly as its temporary files are that no live writer holds locked.
    Where locks are not available (Windows, some network file systems) nothing is removed."""
    if fcntl is None:
        return
    prefix, suffix = _temporary_affixes(target)
    pattern = re.compile(re.escape(prefix) + "[a-z0-9_]{8}" + re.escape(suffix))
    try:
        found = [e.path for e in os.scandir(target.parent)
                 if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return
    for leftover in found:
        try:
            fd = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:   # removed meanwhile, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # held: a live writer's; an error: cannot tell
            os.unlink(leftover)
        except OSError:
            pass
        finally:
            os.close(fd)


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
    meta = {"first_step": run.first_step, "epoch": run.epoch, "steps_taken": program.steps_taken,
            "rng": program.rng.bit_generator.state, "history": run.history, "epoch_log": run.epoch_log,
            "best": run.best, "since_best": run.since_best, "stopped_early": run.stopped_early}
    arrays = {f"param/{k}": v for k, v in program.params.items()}
    arrays.update({f"state/{k}": v for k, v in program.state.items()})
    arrays.update({f"optimizer/{k}": v for k, v in program.optimizer_state().items()})
    if run.best_params is not None:
        arrays.update({f"best/{k}": v for k, v in run.best_params.items()})
        arrays.update({f"best_state/{k}": v for k, v in (run.best_state or {}).items()})
    arrays["meta"] = np.array(json.dumps(meta))
    try:
        return _atomic_savez(path, arrays)
    except OSError as err:
        raise GradError(f"cannot write the checkpoint {path}: {err.strerror or err}") from None


_FOREIGN = "written by another program, or before this one changed?"
_DAMAGED = "the file is damaged"
_AFRESH = "delete it to start afresh"


class _Refused(Exception):
    """What is wrong with a checkpoint, why that may be, and what to do; load_checkpoint names the file."""

    def __init__(self, problem: str, why: str = _DAMAGED, remedy: str = _AFRESH):
        super().__init__(problem)
        self.problem, self.why, self.remedy = problem, why, remedy


def load_checkpoint(program, path: Path) -> _Run:
    """The run a checkpoint saved, applied to `program` (params, state, optimizer state, random generator,
    step count) once the whole file has been checked: a damaged checkpoint, or one that another program
    wrote, is refused with an error naming the file and what is wrong, and changes nothing."""
    arrays = _read_checkpoint(path)
    try:
        meta, params, optimizer, best, state, best_state = _checked_checkpoint(arrays, program)
    except _Refused as refused:
        raise GradError(f"cannot resume: checkpoint {path} {refused.problem} ({refused.why}); "
                        f"{refused.remedy}") from None
    # every check passed: only now is anything changed
    program.set_params(params)
    program.state.assign(state)
    program.load_optimizer_state(optimizer)
    program.rng.bit_generator.state = meta["rng"]
    program.steps_taken = meta["steps_taken"]
    return _Run(meta["first_step"], meta["epoch"], [tuple(h) for h in meta["history"]], meta["epoch_log"],
                meta["best"], meta["since_best"], best or None, meta["stopped_early"],
                best_state=best_state if best else None)


def _read_checkpoint(path: Path) -> dict:
    """Every array of a checkpoint by name, read without pickles; a file that is not an NPZ archive, or
    damaged anywhere (a zip header, an array's header, its data's CRC), is a GradError naming it."""
    try:
        with open(path, "rb") as file:
            if file.read(2) != b"PK":   # np.load would read a lone .npy array, or try to unpickle the rest
                raise GradError(f"cannot resume: checkpoint {path} is not an NPZ file (a zip archive); {_AFRESH}")
            file.seek(0)
            with np.load(file, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
    except (OSError, EOFError, ValueError, SyntaxError, RuntimeError, NotImplementedError, MemoryError,
            zipfile.BadZipFile, zlib.error, tokenize.TokenError) as err:
        raise GradError(f"cannot resume: checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                        f"{_AFRESH}") from None


def _checked_checkpoint(arrays: dict, program) -> tuple[dict, dict, dict, dict, dict, dict]:
    """A checkpoint's metadata, params, optimizer state, best params (empty without), the program's state
    and its state with the best params, each checked against `program`; or _Refused."""
    parts: dict[str, dict] = {"param": {}, "optimizer": {}, "best": {}, "state": {}, "best_state": {}}
    for key, value in arrays.items():
        kind, _, name = key.partition("/")
        if key != "meta":
            if kind not in parts or not name:
                raise _Refused(f"holds {key!r}, which no checkpoint holds", _FOREIGN)
            parts[kind][name] = value
    meta = _checked_meta(arrays.get("meta"), program)
    _check_params(parts["param"], program, "param")
    _check_params(parts["state"], program, "state", program.state)
    _check_optimizer_state(parts["optimizer"], program.optimizer_state())
    if (meta["best"] is None) != (not parts["best"]):
        raise _Refused("holds a best validation loss without the params that reached it, or the reverse")
    if parts["best"]:
        _check_params(parts["best"], program, "best param")
        _check_params(parts["best_state"], program, "best state", program.state)
    elif parts["best_state"]:
        raise _Refused("holds a best state without the best params that go with it")
    return meta, parts["param"], parts["optimizer"], parts["best"], parts["state"], parts["best_state"]


def _count(value) -> bool:
    return type(value) is int and value >= 0


def _number(value) -> bool:
    return type(value) in (int, float)


# what each key of a checkpoint's metadata must hold (JSON), and how to say it
_META_KEYS = {
    "first_step": (_count, "a whole number ≥ 0"),
    "epoch": (_count, "a whole number ≥ 0"),
    "steps_taken": (_count, "a whole number ≥ 0"),
    "rng": (lambda v: isinstance(v, dict), "the state of a random generator"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(h, list) and len(h) == 2 and _count(h[0])
                                                       and _number(h[1]) for h in v), "a list of [step, loss] pairs"),
    "epoch_log": (lambda v: isinstance(v, list) and all(isinstance(r, dict) and all(map(_number, r.values()))
                                                         for r in v), "a list of records of numbers, one per epoch"),
    "best": (lambda v: v is None or _number(v) and math.isfinite(v), "null or a finite number"),
    "since_best": (_count, "a whole number ≥ 0"),
    "stopped_early": (lambda v: type(v) is bool, "true or false"),
}


def _checked_meta(stored: np.ndarray | None, program) -> dict:
    """The checkpoint's metadata (JSON text), every key present and of its type."""
    if stored is None:
        raise _Refused("has no metadata ('meta')", _FOREIGN)
    if stored.dtype.kind != "U" or stored.ndim != 0:
        raise _Refused(f"holds metadata of {stored.dtype} values, not JSON text")
    try:
        meta = json.loads(str(stored))
    except (ValueError, RecursionError) as err:
        raise _Refused(f"holds metadata that is not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise _Refused("holds metadata that is not a JSON object")
    for key, (valid, what) in _META_KEYS.items():
        if key not in meta:
            raise _Refused(f"has no {key!r} in its metadata", _FOREIGN)
        if not valid(meta[key]):
            raise _Refused(f"has a {key!r} in its metadata that is not {what}: {_excerpt(meta[key])}")
    unknown = sorted(set(meta) - set(_META_KEYS))
    if unknown:
        raise _Refused(f"has {unknown[0]!r} in its metadata, which no checkpoint has", _FOREIGN)
    if meta["first_step"] > meta["steps_taken"]:
        raise _Refused(f"says its run began at step {meta['first_step']}, after the {meta['steps_taken']} it took")
    generator = type(program.rng.bit_generator)(0)
    try:
        generator.state = meta["rng"]
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError) as err:
        raise _Refused(f"holds a random generator state that {type(generator).__name__} refuses ({err})") from None
    if generator.state != meta["rng"]:
        raise _Refused(f"holds a random generator state that is not one of {type(generator).__name__}'s")
    return meta


def _excerpt(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_params(found: dict, program, what: str, expected: dict | None = None) -> None:
    """Every param of the program (or array of `expected`: its state) is in `found`, with its exact shape
    and dtype and finite values, and nothing else is."""
    expected = program.params if expected is None else expected
    for name, live in expected.items():
        if name not in found:
            raise _Refused(f"lacks {what} {name!r}", _FOREIGN)
        value = found[name]
        if value.shape != live.shape:
            raise _Refused(f"holds {what} {name!r} of shape {list(value.shape)}, and the program's is "
                           f"{list(live.shape)}", _FOREIGN)
        if value.dtype != live.dtype:
            raise _Refused(f"holds {what} {name!r} in {value.dtype}, and this run computes in {live.dtype}",
                           "written by a run in the other precision?",
                           f"resume in the precision it began with (--float64 or not), or {_AFRESH}")
        if not np.isfinite(value).all():
            raise _Refused(f"holds {what} {name!r} with NaN or infinite values")
    unknown = sorted(set(found) - set(expected))
    if unknown:
        raise _Refused(f"holds {what} {unknown[0]!r}, which the program does not declare", _FOREIGN)


def _check_optimizer_state(found: dict, expected: dict) -> None:
    """The optimizer state has exactly the arrays of the program's optimizer (`expected`), each of its
    shape: float arrays of its dtype and finite, counters whole numbers ≥ 0."""
    for key, want in expected.items():
        if key not in found:
            raise _Refused(f"lacks the optimizer's {key!r}", _FOREIGN)
        value = found[key]
        if value.shape != want.shape:
            raise _Refused(f"holds the optimizer's {key!r} of shape {list(value.shape)}, not {list(want.shape)}",
                           _FOREIGN)
        if want.dtype.kind == "f" and (value.dtype != want.dtype or not np.isfinite(value).all()):
            raise _Refused(f"holds the optimizer's {key!r} as {value.dtype} values, not finite {want.dtype} ones")
        if want.dtype.kind in "iu" and (value.dtype.kind not in "iu" or (value < 0).any()):
            raise _Refused(f"holds the optimizer's {key!r} as {value.dtype} values, not whole numbers ≥ 0")
    unknown = sorted(set(found) - set(expected))
    if unknown:
        raise _Refused(f"holds the optimizer's {unknown[0]!r}, which the program's optimizer does not have",
                       _FOREIGN)
