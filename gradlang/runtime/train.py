"""The training loop shared by `gradlang run` and `Program.train`."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GradError
from .data import batches, count_examples


@dataclass
class TrainResult:
    loss: float
    metrics: dict
    steps: int
    epochs: float
    seconds: float
    history: list = field(default_factory=list)   # (step, loss) after every update

    def as_dict(self) -> dict:
        return {"loss": self.loss, "metrics": self.metrics, "steps": self.steps, "epochs": self.epochs,
                "seconds": self.seconds}


def fit(program, arrays: dict, epochs: int | None, steps: int | None, batch_size: int | None,
        log=None, log_every: int | None = None) -> TrainResult:
    """Run optimizer steps over shuffled mini-batches until `steps` updates or `epochs` passes."""
    names = [n for n in program.input_names if n in arrays]
    n = count_examples(arrays, names)
    if n == 0:
        raise GradError("the training data has no examples")
    full_batch = batch_size is None or batch_size >= n
    size = n if full_batch else batch_size
    per_epoch = -(-n // size)
    total = steps if steps is not None else per_epoch * (epochs if epochs is not None else 1)
    log_every = log_every or max(1, total // 20)
    start = time.perf_counter()
    history = []
    done = 0
    while done < total:
        order = None if full_batch else program.rng
        for idx in batches(n, size, order):
            feed = arrays if full_batch else {k: arrays[k][idx] for k in names}
            loss = program.step(feed)
            done += 1
            history.append((done, loss))
            if not np.isfinite(loss):
                raise GradError(f"the loss became {loss} at step {done}; try a smaller learning rate")
            if log is not None and (done % log_every == 0 or done == total):
                log(done, total, loss, time.perf_counter() - start)
            if done >= total:
                break
    seconds = time.perf_counter() - start
    final = program.evaluate(arrays)
    return TrainResult(final.pop("loss"), final, done, done / per_epoch, seconds, history)


def save_params(params: dict, path: str | Path) -> Path:
    """Write params to an .npz file atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **params)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
