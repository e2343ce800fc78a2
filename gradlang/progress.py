"""Progress for `gradlang run`: a live bar with rate and ETA on a terminal, a line every so often when
the output is a file or a pipe, one line per epoch with the training and validation numbers, and the
loss curves drawn compactly in text at the end."""
from __future__ import annotations

import math
import sys
import time

from .runtime.reporting import Reporter

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """`values` resampled to at most `width` points and drawn with block characters."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [sum(values[int(i * step):int((i + 1) * step)]) / len(values[int(i * step):int((i + 1) * step)])
                  for i in range(width)]
    finite = [v for v in values if math.isfinite(v)]   # a NaN or infinite loss is drawn as a gap
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    span = (high - low) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int((v - low) / span * len(_BARS)))] if math.isfinite(v) else " "
                   for v in values)


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class TerminalReporter(Reporter):
    def __init__(self, stream=None, interval: float = 0.1, plain_interval: float = 10.0):
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if self.live else plain_interval
        self.last = 0.0
        self.losses: list[float] = []
        self.val_losses: list[float] = []
        self.resumed_at = 0   # steps a resumed run had taken before this process: not counted in the rate
        # an epoch's line at most this often (the first and the last always): a full-batch run of 600
        # epochs in a second would otherwise print 600 lines
        self.epoch_interval = 1.0 if self.live else plain_interval
        self.epoch_shown: float | None = None
        self.done = self.total = 0
        self.learning_rate = None   # a function giving the last update's rate, once training starts

    def started(self, learning_rate):
        self.learning_rate = learning_rate

    def resumed(self, done, total, path):
        self.resumed_at = done
        self.stream.write(f"resumed at step {done:,} of {total:,} from {path}\n")
        self.stream.flush()

    def step(self, done, total, loss, seconds):
        self.losses.append(loss)
        self.done, self.total = done, total
        now = time.monotonic()
        if done != total and now - self.last < self.interval and done > 1:
            return
        self.last = now
        rate = (done - self.resumed_at) / seconds if seconds > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * done / total)
        bar = "█" * filled + "·" * (width - filled)
        lr = self.learning_rate() if self.learning_rate is not None else None
        text = (f"{bar} {done:>{len(str(total))}}/{total}  loss {loss:.4g}  "
                + (f"lr {lr:.3g}  " if lr is not None else "") + f"{rate:,.1f} steps/s  "
                f"elapsed {_fmt_time(seconds)}  eta {_fmt_time(eta)}")
        if self.live:
            self.stream.write("\r" + text + "\033[K" + ("\n" if done == total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def epoch(self, record):
        if "val_loss" in record:
            self.val_losses.append(record["val_loss"])
        if "val_loss" not in record and not self.live:
            return
        now = time.monotonic()
        if self.epoch_shown is not None and self.done != self.total and now - self.epoch_shown < self.epoch_interval:
            return
        self.epoch_shown = now
        parts = [f"epoch {record['epoch']}", f"loss {record['loss']:.4g}"]
        parts += [f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch", "step", "loss")]
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write("  ".join(parts) + "\n")
        self.stream.flush()

    def curves(self) -> str:
        """The training (and validation) loss curves as text, for the end of a run."""
        lines = [f"train loss {sparkline(self.losses)}  {self.losses[0]:.4g} → {self.losses[-1]:.4g}"] \
            if self.losses else []
        if len(self.val_losses) > 1:
            lines.append(f"val loss   {sparkline(self.val_losses)}  {self.val_losses[0]:.4g} → "
                         f"{self.val_losses[-1]:.4g}")
        return "\n".join(lines)
