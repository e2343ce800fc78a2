"""Gradient health over training (`gradlang run --watch-grads`, `Program.train(watch_grads=True)`).

After every update, for each param the update touched: the norm of its gradient ‖∂loss/∂p‖ (divided
back by the learning rate where plain SGD folds it into the backward pass) and the size of the update
relative to the param, ‖Δp‖ / ‖p‖ (a healthy rate is often near 1e-3). At the end: each param's
gradient at the start and at the end of training (the mean over the first and the last tenth of its
updates), which shrank or grew most, and warnings for a gradient that vanishes (below `VANISHING` for
`VANISHING_RUN` updates in a row, or all of them in a shorter run), explodes (above `EXPLODING_FACTOR`
times where it started, or not finite) or ends `LAYER_SPREAD` times smaller than another weight's (the
layers before it learn that much more slowly), each naming the param and the source line that makes it.

Watching costs a norm per gradient and a copy of the params per update; when it is off the training
step is unchanged (the runner tests one attribute for None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

VANISHING = 1e-8
VANISHING_RUN = 50
EXPLODING_FACTOR = 1e4
LAYER_SPREAD = 1e-3   # one weight's final gradient below this fraction of another's: a warning


@dataclass
class ParamHistory:
    """One param's record: the update count at each update it received, its gradient norms and
    update-to-param ratios (NaN where the param was zero before the update)."""

    name: str
    location: str
    dimensions: int
    steps: list = field(default_factory=list)
    norms: list = field(default_factory=list)
    ratios: list = field(default_factory=list)

    def window(self, last: bool) -> float:
        """The mean gradient norm over the first (or last) tenth of the updates, at least one."""
        count = max(1, len(self.norms) // 10)
        values = self.norms[-count:] if last else self.norms[:count]
        return float(np.mean(values)) if values else float("nan")


class GradientWatch:
    """Watches every update a runner makes (Runner.watch); `histories` by param name, in declaration order."""

    def __init__(self, runner, locations: dict[str, str]):
        self.histories = {name: ParamHistory(name, locations.get(name, ""), param.ndim)
                          for name, param in zip(runner.param_names, runner.param_list)}
        self._norms: list[float] = []         # the update being made: its gradients' norms
        self._before: list | None = None       # and its params' values before it
        self.last: dict[str, tuple[float, float]] = {}   # the last update's (norm, ratio) per param

    def before(self, update, gradients: list) -> None:
        """Called with an update's gradients, before the optimizer applies them."""
        scale = update.optimizer.folded_lr or 1.0
        self._norms = [math.sqrt(float(np.vdot(g, g))) / scale for g in gradients]
        self._before = [np.array(p) for p in update.optimizer.params]

    def after(self, update, names, step: int) -> None:
        """Called after the optimizer applied the update, `step` the update count it makes."""
        self.last = {}
        for name, norm, old, new in zip(names, self._norms, self._before, update.optimizer.params):
            size = math.sqrt(float(np.vdot(old, old)))
            change = new - old
            ratio = math.sqrt(float(np.vdot(change, change))) / size if size > 0 else float("nan")
            history = self.histories[name]
            history.steps.append(step)
            history.norms.append(norm)
            history.ratios.append(ratio)
            self.last[name] = (norm, ratio)
        self._before = None

    # ---- the summary ---------------------------------------------------------------------------------
    def warnings(self) -> list[str]:
        found = []
        for h in self.histories.values():
            if not h.norms:
                continue
            where = f" ({h.location})" if h.location else ""
            run, longest, since, start = 0, 0, None, None
            for step, norm in zip(h.steps, h.norms):
                run = run + 1 if norm < VANISHING else 0
                if run == 1:
                    start = step
                if run > longest:
                    longest, since = run, start
            if longest >= min(VANISHING_RUN, len(h.norms)):
                found.append(f"the gradient of {h.name}{where} vanished: below {VANISHING:g} for {longest} updates "
                             f"in a row from step {since}")
            first = h.window(last=False)
            bad = next(((s, n) for s, n in zip(h.steps, h.norms)
                        if not math.isfinite(n) or (first > 0 and n > EXPLODING_FACTOR * first)), None)
            if bad is not None:
                size = "not finite" if not math.isfinite(bad[1]) else f"{bad[1] / first:.3g}× where it started"
                found.append(f"the gradient of {h.name}{where} exploded: {bad[1]:.3g} at step {bad[0]}, {size}")
        spread = self._spread()
        if spread is not None and spread[2] < LAYER_SPREAD:
            small, large, factor = spread
            h = self.histories[small]
            where = f" ({h.location})" if h.location else ""
            found.append(f"the gradient of {small}{where} ended {1 / factor:,.0f} times smaller than that of {large}: "
                         "the layers before it learn that much more slowly (vanishing gradients through the layers)")
        return found

    def _spread(self):
        """(the weight with the smallest final gradient norm, the one with the largest, their ratio), among
        params of two or more dimensions; None with fewer than two."""
        ends = {h.name: h.window(last=True) for h in self.histories.values() if h.norms and h.dimensions >= 2}
        ends = {k: v for k, v in ends.items() if math.isfinite(v)}
        if len(ends) < 2:
            return None
        small, large = min(ends, key=ends.get), max(ends, key=ends.get)
        return small, large, ends[small] / ends[large] if ends[large] > 0 else float("nan")

    def summary(self) -> str:
        """Each param's gradient norm at the start and the end, its last update ratio, and which shrank
        or grew most."""
        rows = [h for h in self.histories.values() if h.norms]
        if not rows:
            return "no updates were watched"
        width = max(len(h.name) for h in rows)
        lines = ["gradient norms (mean over the first → the last tenth of the updates) and the last update/param "
                 "ratio:"]
        change = {}
        for h in rows:
            first, last = h.window(last=False), h.window(last=True)
            change[h.name] = last / first if first > 0 else float("nan")
            ratio = h.ratios[-1]
            lines.append(f"  {h.name:<{width}}  {first:9.3g} → {last:9.3g}  ({_factor(change[h.name])})  "
                         f"update/param {ratio:.3g}")
        finite = {k: v for k, v in change.items() if math.isfinite(v)}
        if finite:
            low, high = min(finite, key=finite.get), max(finite, key=finite.get)
            first = f"shrank most: {low}" if finite[low] < 1 else f"grew least: {low}"
            second = f"grew most: {high}" if finite[high] > 1 else f"shrank least: {high}"
            lines.append(f"over training, {first} ({_factor(finite[low])}); {second} ({_factor(finite[high])})")
        spread = self._spread()
        if spread is not None and math.isfinite(spread[2]):
            lines.append(f"across layers at the end: {spread[0]}'s gradient is {_factor(spread[2])} of "
                         f"{spread[1]}'s")
        return "\n".join(lines)

    def totals(self) -> dict:
        """Per param: the gradient norm at the start and the end (as `summary`) and the last update ratio."""
        return {h.name: {"location": h.location, "grad_norm_first": h.window(last=False),
                         "grad_norm_last": h.window(last=True), "update_ratio_last": h.ratios[-1]}
                for h in self.histories.values() if h.norms}

    def as_dict(self) -> dict:
        return {name: {"location": h.location, "steps": h.steps, "grad_norm": h.norms, "update_ratio": h.ratios}
                for name, h in self.histories.items()}


def _factor(change: float) -> str:
    if not math.isfinite(change):
        return "—"
    return f"×{change:.3g}" if change >= 1 else f"÷{1 / change:.3g}" if change > 0 else "→ 0"
