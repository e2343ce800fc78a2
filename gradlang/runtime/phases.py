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
from ..ir.graph import Emit, Graph
from ..passes.autodiff import backprop
from ..frontend.values import LayerInstance, OptimizerSpec, PhaseSpec, Tensor, describe
from ..frontend.plan import DEFAULT_OPTIMIZER
from .train import Reporter
from .updates import ScheduledOptimizer, Update


# ---- compile time: the `phase` builtin and the checks of `phases` ------------------------------------

# updates of one phase per step: more is a step that never ends (a GAN's critic takes 5)
MAX_REPEAT = 10_000


def make_phase(el, span, loss, params, optimizer, repeat) -> PhaseSpec:
    """The value of `phase(loss: …, params: …, optimizer: …, repeat: …)`, checked against the program."""
    losses = [name for name in el.losses if isinstance(loss, Tensor) and loss.graph is el.graph
              and el.graph.outputs[name] == loss.node]
    if not losses:
        raise GradError(f"phase(loss: …) must be a loss the program declares (such as `loss d_loss = …`), "
                        f"got {describe(loss)}", span)
    by_node = {node: name for name, node in el.graph.params.items()}
    names: set[str] = set()
    for item in params if isinstance(params, list) else [params]:
        if isinstance(item, LayerInstance):
            names.update(by_node[t.node] for t in item.params)
        elif isinstance(item, Tensor) and item.graph is el.graph and item.node in by_node:
            names.add(by_node[item.node])
        else:
            raise GradError(f"phase(params: …) must be params of the program: a layer, its .params or a list "
                            f"of params, got {describe(item)}", span)
    if not names:
        raise GradError("phase(params: …) names no params", span)
    if optimizer is None:
        optimizer = DEFAULT_OPTIMIZER
    if not isinstance(optimizer, OptimizerSpec):
        raise GradError("phase(optimizer: …) must be an optimizer such as adam(lr: 0.001), got "
                        f"{describe(optimizer)}", span)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise GradError(f"phase(repeat: …) must be an integer ≥ 1, got {describe(repeat)}", span)
    if repeat > MAX_REPEAT:
        raise GradError(f"phase(repeat: {repeat}) is more than {MAX_REPEAT:,} updates per step", span)
    order = [n for n in el.params if n in names]   # declaration order, whatever order they were listed in
    return PhaseSpec(losses[0], tuple(order), optimizer, repeat, span)


def check_phases(settings: dict, spans: dict) -> None:
    """`phases` is a non-empty list of phases, with a loss each, sharing no param, and replaces the
    train block's `optimizer` and `loss` (each phase has its own)."""
    phases = settings["phases"]
    wrong = [phases] if not isinstance(phases, list) else [p for p in phases if not isinstance(p, PhaseSpec)]
    if wrong:
        raise GradError("phases must be a list of phase(loss: …, params: …, optimizer: …), got "
                        f"{describe(wrong[0])}", spans["phases"])
    if not phases:
        raise GradError("phases is empty: list at least one phase(loss: …, params: …)", spans["phases"])
    for setting in ("optimizer", "loss"):
        if setting in settings:
            raise GradError(f"train settings `{setting}` and `phases` exclude each other: each phase names its "
                            f"own {setting}", spans[setting])
    owner: dict[str, PhaseSpec] = {}
    trained: set[str] = set()
    for phase in phases:
        if phase.loss in trained:
            raise GradError(f"two phases train the loss {loss_name(phase.loss)}; give one phase all of its params",
                            phase.span)
        trained.add(phase.loss)
        for name in phase.params:
            if name in owner:
                raise GradError(f"param {name} is in two phases (the {loss_name(owner[name].loss)} phase's and "
                                f"this one's); a param is trained by one phase", phase.span)
            owner[name] = phase


def loss_name(output: str) -> str:
    """"loss:d_loss" → "d_loss"; the unnamed loss is "loss"."""
    return output.split(":", 1)[-1]


# ---- gradients ---------------------------------------------------------------------------------------

def differentiate_phases(graph: Graph, phases: list[tuple[str, tuple]], untrained: list[str] = ()) -> Graph:
    """A copy of `graph` with outputs `grad:<param>` = d loss / d param for each (loss output, params)
    pair: only those params' gradients are built, so only the backward work they need. The `untrained`
    params (in no phase) get a zero gradient: training leaves them as they are."""
    out = graph.copy()
    for loss, params in phases:
        grads = backprop(out, out.outputs[loss], [out.params[p] for p in params])
        for name, node in zip(params, grads):
            out.outputs[f"grad:{name}"] = node
    for name in untrained:
        w = out.params[name]
        e = Emit(out, out.span(w), "grad", out.data(w)["site"])
        out.outputs[f"grad:{name}"] = e("broadcast_to", e.const(0, out.dtype(w)), shape=out.shape(w))
    return out


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

    def curves(self) -> str:
        return self.inner.curves() if hasattr(self.inner, "curves") else ""
