"""What the training loop tells the outside, as it goes: the `Reporter` interface that the terminal's
progress (progress.py), the metrics log (metrics_log.py) and a user's own reporter implement."""
from __future__ import annotations

from pathlib import Path


class Reporter:
    """What the loop tells the outside; the default says nothing."""

    def step(self, done: int, total: int, loss: float, seconds: float) -> None:
        pass

    def epoch(self, record: dict) -> None:
        pass

    def resumed(self, done: int, total: int, path: Path) -> None:
        """The run continues from a checkpoint at `path`, `done` of its `total` steps already taken."""

    def started(self, learning_rate) -> None:
        """Training starts; `learning_rate()` gives the rate of the update just made (None with phases)."""


class CallbackReporter(Reporter):
    """Calls `log(done, total, loss, seconds)` after every step (`Program.train(log=…)`)."""

    def __init__(self, log):
        self.log = log

    def step(self, done, total, loss, seconds):
        self.log(done, total, loss, seconds)
