"""Training in phases: a training step that runs several (loss, params, optimizer) updates in turn,
declared in the train block as `phases = [phase(loss: …, params: …, optimizer: …, repeat: k), …]` —
the alternating updates of a GAN's two players, or k critic updates per generator update.

- Each phase differentiates its own loss with respect to its own params only, so no backward work is
  spent on the other params (and no stop_gradient is needed to keep one player's loss off the other's
  params).
- Each phase has its own optimizer and optimizer state; a param belongs to at most one phase, and a
  param in no phase is not trained.
- A phase runs `repeat` times per step, and every update takes the next mini-batch of the shuffled
  data: a step of phases with repeats k₁, k₂, … uses k₁ + k₂ + … batches (the classic choice: a
  critic trained k times per generator step sees k different real batches).
"""
from __future__ import annotations

import sys
import time
from functools import partial

from ..errors import GradError
from ..frontend.plan import loss_name
from ..frontend.values import PhaseSpec
from .reporting import Reporter
from .updates import ScheduledOptimizer, Update

# ---- run time ----------------------------------------------------------------------------------------

class PhasedTraining:
    """The phases of a program's plan as updates (updates.py), each of its own params by its own
    optimizer, made by `runner` (runner.py) one after the other; and what the last step measured."""

    def __init__(self, runner, phases: list[PhaseSpec]):
        self.runner = runner
        self.phases = phases
        self.names = [loss_name(p.loss) for p in phases]
        self.updates = [
            Update(runner, ScheduledOptimizer(p.optimizer, [runner.params[n] for n in p.params], runner.plan.graph,
                                              f"phase{i}", runner.float_dtype),
                   partial(runner.graphs.gradient_graph, loss_name(p.loss), params=p.params), p.loss, p.params)
            for i, p in enumerate(phases)]
        self.last_losses: dict[str, float] = {}   # each phase's loss in the last step (mean over its repeats)

    @property
    def updates_per_step(self) -> int:
        return sum(p.repeat for p in self.phases)

    def step(self, feed) -> float:
        """One step: every phase's updates in order, the i-th update on `feed[i]` (a list of
        `updates_per_step` feeds) or all on `feed` (one dict). Returns the sum of the phases' losses.
        A non-finite loss raises before its update; the step's earlier updates stay made."""
        runner = self.runner
        feeds = feed if isinstance(feed, list) else [feed] * self.updates_per_step
        if len(feeds) != self.updates_per_step:
            raise GradError(f"a step of these phases makes {self.updates_per_step} updates and takes one feed "
                            f"each (or one feed for all), got {len(feeds)}")
        feeds = iter(feeds)
        losses = {}
        for name, phase, update in zip(self.names, self.phases, self.updates):
            total = 0.0
            for _ in range(phase.repeat):
                total += runner.apply(update, runner.feed(next(feeds)))
            losses[name] = total / phase.repeat
        runner.steps_taken += 1
        self.last_losses = losses
        return float(sum(losses.values()))

    def state(self) -> dict:
        """Every phase's optimizer state, its keys prefixed by the phase's loss (for checkpoints)."""
        return {f"{name}/{k}": v for name, update in zip(self.names, self.updates)
                for k, v in update.optimizer.optimizer.state().items()}

    def load_state(self, state: dict) -> None:
        for name, update in zip(self.names, self.updates):
            update.optimizer.optimizer.load_state({k[len(name) + 1:]: v for k, v in state.items()
                                                   if k.startswith(f"{name}/")})


class PhaseReporter(Reporter):
    """Passes progress on to another reporter and prints each phase's loss — averaged since the last
    line — every `interval` seconds and at the end."""

    def __init__(self, inner: Reporter, program, stream=None, interval: float = 10.0):
        self.inner, self.program, self.interval = inner, program, interval
        self.stream = stream or getattr(inner, "stream", None) or sys.stderr
        self.sums = {loss_name(p.loss): 0.0 for p in program.plan["phases"]}
        self.count = 0
        self.last = time.monotonic()

    def step(self, done, total, loss, seconds):
        self.inner.step(done, total, loss, seconds)
        for name, value in self.program.phase_losses.items():
            self.sums[name] += value
        self.count += 1
        if done == total or time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            parts = "  ".join(f"{name} {total_ / self.count:.4g}" for name, total_ in self.sums.items())
            live = hasattr(self.stream, "isatty") and self.stream.isatty()
            self.stream.write(("\r\033[K" if live else "") + f"step {done}/{total}  {parts}\n")
            self.stream.flush()
            self.sums = dict.fromkeys(self.sums, 0.0)
            self.count = 0

    def epoch(self, record):
        self.inner.epoch(record)

    def resumed(self, done, total, path):
        self.inner.resumed(done, total, path)

    def started(self, learning_rate):
        self.inner.started(learning_rate)

    def curves(self) -> str:
        return self.inner.curves() if hasattr(self.inner, "curves") else ""
