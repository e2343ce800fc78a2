"""A run's numbers written down as they come: `gradlang run --log-dir DIR`, `Program.train(log_dir=DIR)`.

`DIR/metrics.jsonl` holds one JSON object a line, always: one per step (`{"step", "loss", "lr",
"seconds"}`, and with --watch-grads `grad_norm` and `update_ratio` per param), one per epoch
(`{"epoch", "step", "loss", "val_loss", …}`, as `TrainResult.epoch_log`) and a last one with the final
numbers (`{"final": true, …}`, as `--json` prints them). It is appended to, so that a resumed run
continues its file; any tool reads it (`pandas.read_json(path, lines=True)`).

Where the `tensorboard` extra is installed (tensorboardX, a well-kept writer of TensorBoard's event
files), the same numbers also go to event files in DIR for `tensorboard --logdir DIR`: `train/loss` and
`train/lr` per step, `epoch/<name>` per epoch and `final/<name>` at the end, each at its step.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import GradError
from .reporting import Reporter

JSON_LINES = "metrics.jsonl"
TENSORBOARD_EXTRA = "pip install 'gradlang[tensorboard]'"


def tensorboard_available() -> bool:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def _number(value):
    """A JSON-safe number: NaN and infinity as strings (JSON has no such numbers)."""
    value = float(value)
    return value if math.isfinite(value) else str(value)


class MetricsLog(Reporter):
    """Writes every step, epoch and the final numbers to a folder (module doc), and passes each event on
    to `inner` (the terminal's progress, say), so that a run has one reporter."""

    def __init__(self, folder: str | Path, inner: Reporter | None = None, tensorboard: bool | None = None,
                 watch=None):
        self.folder = Path(folder)
        self.watch = watch   # a GradientWatch: each step's gradient norms and update ratios join its record
        self.inner = inner or Reporter()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lines = open(self.folder / JSON_LINES, "a", encoding="utf-8")   # noqa: SIM115 - closed by close()
        except OSError as err:
            raise GradError(f"cannot write the metrics log in {self.folder}: {err.strerror or err}") from None
        self.tensorboard = tensorboard_available() if tensorboard is None else tensorboard
        if self.tensorboard and not tensorboard_available():
            raise GradError(f"TensorBoard event files need the tensorboard extra: {TENSORBOARD_EXTRA}")
        self.events = None
        self.learning_rate = None
        self.last_step = 0

    def _writer(self, purge_step: int | None = None):
        if self.events is None and self.tensorboard:
            from tensorboardX import SummaryWriter
            self.events = SummaryWriter(str(self.folder), purge_step=purge_step)
        return self.events

    def _write(self, record: dict) -> None:
        self.lines.write(json.dumps(record) + "\n")

    # ---- what the loop reports ---------------------------------------------------------------------
    def resumed(self, done, total, path):
        self._writer(purge_step=done)   # events after the checkpoint's step, from the lost run, are dropped
        self.inner.resumed(done, total, path)

    def started(self, learning_rate):
        self.learning_rate = learning_rate
        self._writer()
        self.inner.started(learning_rate)

    def step(self, done, total, loss, seconds):
        rate = self.learning_rate() if self.learning_rate is not None else None
        record = {"step": done, "loss": _number(loss), "seconds": round(seconds, 6)}
        if rate is not None:
            record["lr"] = _number(rate)
        watched = self.watch.last if self.watch is not None else {}
        if watched:
            record["grad_norm"] = {name: _number(norm) for name, (norm, _) in watched.items()}
            record["update_ratio"] = {name: _number(ratio) for name, (_, ratio) in watched.items()}
        self._write(record)
        if self.events is not None:
            self.events.add_scalar("train/loss", loss, done)
            if rate is not None:
                self.events.add_scalar("train/lr", rate, done)
            for name, (norm, ratio) in watched.items():
                self.events.add_scalar(f"grad_norm/{name}", norm, done)
                self.events.add_scalar(f"update_ratio/{name}", ratio, done)
        self.last_step = done
        self.inner.step(done, total, loss, seconds)

    def epoch(self, record):
        self._write({key: _number(value) if isinstance(value, float) else value for key, value in record.items()})
        if self.events is not None:
            for key, value in record.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.events.add_scalar(f"epoch/{key}", value, record.get("step", self.last_step))
        self.lines.flush()
        self.inner.epoch(record)

    # ---- the end of a run ----------------------------------------------------------------------------
    def finish(self, summary: dict) -> None:
        """Write the final numbers (`TrainResult.as_dict()`) and close the files."""
        flat = {"loss": summary.get("loss"), **summary.get("metrics", {})}
        for part in ("validation", "test"):
            for key, value in (summary.get(part) or {}).items():
                flat[f"{part}_{key}"] = value
        self._write({"final": True, "step": summary.get("steps", self.last_step),
                     **{k: _number(v) for k, v in flat.items() if isinstance(v, (int, float))}})
        if self.events is not None:
            for key, value in flat.items():
                if isinstance(value, (int, float)):
                    self.events.add_scalar(f"final/{key}", value, summary.get("steps", self.last_step))
        self.close()

    def close(self) -> None:
        self.lines.close()
        if self.events is not None:
            self.events.close()
            self.events = None
