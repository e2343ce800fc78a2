"""Optimizer updates: what a training step applies.

An `Update` is one optimizer update of some params from the gradients of one loss: the compiled
executable of [loss, gradient…] for each set of feed shapes, and the `ScheduledOptimizer` that applies
them. A training step makes one update of every param (runner.py), or, trained in phases, one per
phase and repeat, each of its own params with its own optimizer (phases.py).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..frontend.values import OptimizerSpec, Tensor
from ..ir.graph import Graph
from ..lowering.schedule import schedule
from ..ops.shapes import DTYPES
from .interpreter import Executable
from .optimizers import OPTIMIZERS


def constant_sgd_rate(kind: str, static: dict, dynamic: dict) -> float | None:
    """The learning rate when the update is p ← p − lr·g with the same lr every step: SGD with every
    other setting at its default, nothing scheduled. Otherwise None."""
    if kind != "sgd" or dynamic:
        return None
    defaults = OPTIMIZERS["sgd"].settings
    if any(static.get(name, default) != default for name, default in defaults.items() if name != "lr"):
        return None
    return static["lr"]


class ScheduledOptimizer:
    """An optimizer over `params` made from its spec, with its settings at each step: those that follow
    the step (schedules) are outputs `<prefix>:<setting>` of the plan's graph, compiled once.

    With `fold`, plain SGD at a constant rate is expected to get gradients already multiplied by the
    rate (`folded_lr`: the training step's backward pass starts from it), and only subtracts them. It
    is decided from the settings alone, so every process and every MPI rank (one whose share of a
    batch is empty computes no gradients) agrees on what its gradients mean."""

    def __init__(self, spec: OptimizerSpec, params: list[np.ndarray], plan_graph: Graph | None, prefix: str,
                 float_dtype: str, fold: bool = False):
        self.params = params
        self.optimizer = OPTIMIZERS[spec.kind].make(params)
        self.static = {k: v for k, v in spec.settings if not isinstance(v, Tensor)}
        dynamic = {k: v for k, v in spec.settings if isinstance(v, Tensor)}
        self.dynamic_names = list(dynamic)
        self.step_dtype = DTYPES[float_dtype]
        self.settings_exec = None
        if dynamic:
            for k, v in dynamic.items():
                plan_graph.outputs[f"{prefix}:{k}"] = v.node
            sched = schedule(plan_graph, [f"{prefix}:{k}" for k in dynamic], {})
            self.settings_exec = Executable(sched, plan_graph, ["step"], [])
        self.folded_lr = constant_sgd_rate(spec.kind, self.static, dynamic) if fold else None

    def settings(self, step: int) -> dict:
        """The settings for the update after `step` updates."""
        if self.settings_exec is None:
            return self.static
        values = self.settings_exec.run([np.asarray(step, dtype=self.step_dtype)], [])
        return dict(self.static, **{k: float(v) for k, v in zip(self.dynamic_names, values)})

    def apply(self, gradients: list, step: int, owned=None) -> None:
        """Update the params in place from `gradients` (lr · gradient when `folded_lr` is set); `owned`
        says which of them are memory the optimizer may overwrite (Optimizer.update)."""
        if self.folded_lr is not None:
            self.optimizer.subtract(self.params, gradients)
        else:
            self.optimizer.update(self.params, gradients, owned=owned, **self.settings(step))


class Update:
    """One optimizer update of `param_names` from the gradients of `loss` (None: the loss the program
    trains, looked up on first use), computed by `graph()` (made on first use too) and applied by
    `optimizer`; the step also computes the new values of the `states` it updates (`update NAME = …`).
    `runner` compiles it (Runner.executable)."""

    def __init__(self, runner, optimizer: ScheduledOptimizer, graph: Callable[[], Graph], loss: str | None,
                 param_names, states=()):
        self.runner, self.optimizer, self.graph, self.loss = runner, optimizer, graph, loss
        self.param_names = tuple(param_names)
        self.gradients = tuple(f"grad:{n}" for n in param_names)
        self.states = tuple(states)
        self.executables: dict = {}   # (feed shapes, metered) → the compiled update (the hot path: one lookup)

    def executable(self, arrays: list, metered: bool = False) -> Executable:
        """The compiled [loss, gradient…] for these feed shapes, then the new value of each state the
        update writes, then the program's metrics on the batch when `metered` (computed from the same
        forward values, dropout on). Its large matrix products write into memory allocated once (the
        caller consumes a run's values before the next), and `owned_gradients` says which gradients are
        fresh arrays the optimizer may overwrite. `state_writes` holds (output index, state array) for
        each state, to copy the value into after the update (empty without state), and `state_snapshots`
        the indices of those values that live in memory the update may change (a param's) and are copied
        first."""
        key = (tuple([None if a is None else a.shape for a in arrays]), metered)
        exe = self.executables.get(key)
        if exe is None:
            metrics = tuple(f"metric:{m}" for m in self.runner.metric_names) if metered else ()
            updates = tuple(f"update:{n}" for n in self.states)
            outputs = (self.loss or self.runner.graphs.single_loss(),) + self.gradients + updates + metrics
            exe = self.runner.executable(self.graph(), outputs, arrays, training=True, reuse_buffers=True)
            exe.owned_gradients = exe.schedule.fresh_outputs[1:1 + len(self.gradients)]
            first = 1 + len(self.gradients)
            exe.state_writes = tuple((first + i, self.runner.state[n]) for i, n in enumerate(self.states))
            exe.state_snapshots = tuple(first + i for i in range(len(self.states))
                                        if not exe.schedule.fresh_outputs[first + i])
            self.executables[key] = exe
        return exe
