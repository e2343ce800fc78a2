"""Running a compiled program: its params, feeds, compiled executables, the training step with its
optimizers, and evaluation. `Program` (api.py) is a facade over one `Runner`; phased training
(phases.py) and data-parallel training (distributed.py) use the same public methods.

Executables are compiled once per (graph, outputs, feed shapes) and then only run: the first batch of
a new size compiles, later ones only run. The training step is the hot path: `step` converts the
feed, looks up the compiled update for its shapes, calls it (the schedule as straight-line Python,
interpreter.py) and then the optimizer — no graph walking or shape checking per step. An executable
holds state for one run at a time (reused buffers), so a runner must not run from two threads at once.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from ..analysis.index_checks import input_index_checks
from ..errors import GradError
from ..frontend.plan import Plan, loss_name
from ..ir.graph import Graph
from ..lowering.schedule import schedule
from ..ops.registry import RunContext
from ..ops.shapes import DTYPES
from . import data as data_sources
from .allocator import keep_freed_memory
from .feeds import bind_dimensions, convert
from .graphs import ProgramGraphs
from .initializers import initial_value
from .interpreter import Executable
from .numerics import nonfinite_loss, run_checked
from .params import Params
from .phases import PhasedTraining
from .updates import ScheduledOptimizer, Update


class Runner:
    """The run-time state of a compiled program (`elaborated`, frontend/elaborate.py) and how to run it.

    Public state: `params` (the live arrays by name, updated in place; `param_list` in declaration
    order), `state` (the program's state, `state NAME : … = init`, likewise: written after each training
    step by the `update`s, never by an optimizer or an evaluation; `state_list` in order), `rng` (the
    seeded generator that draws the initial params, the shuffling and dropout), `steps_taken` (updates
    made so far: the `step` of schedules), `check_numerics` (test every op's result for NaN and
    infinity, every run: runtime/numerics.py, slow, for diagnosis) and `distributed` (a DataParallel,
    distributed.py: each MPI rank steps and evaluates its share of each batch and the ranks' results
    are combined; None: this process works alone)."""

    def __init__(self, elaborated, plan: Plan, graphs: ProgramGraphs, seed: int, no_opt: frozenset = frozenset()):
        self.inputs = elaborated.inputs   # name → InputSpec
        self.input_names = list(elaborated.inputs)
        self.param_names = list(elaborated.params)
        self.metric_names = list(elaborated.metrics)
        self.output_names = list(elaborated.outputs)
        self.float_dtype = elaborated.float_dtype
        self.plan, self.graphs, self.phases = plan, graphs, plan.phases
        self.seed = seed
        self.no_opt = no_opt   # the schedule's rewrites left out (lowering/schedule.py: REWRITES)
        self.rng = np.random.default_rng(seed)
        arrays = {name: initial_value(spec, self.rng) for name, spec in elaborated.params.items()}
        self.params = Params(arrays)
        self.param_list = list(arrays.values())
        # the state: drawn after the params (a program without state draws what it always drew)
        self.state_names = list(elaborated.states)
        states = {name: initial_value(spec, self.rng) for name, spec in elaborated.states.items()}
        self.state = Params(states, noun="state")
        self.state_list = list(states.values())
        self.updated_states = list(elaborated.updates)   # the states a training step writes, in order
        # what executables read besides the feed: the params, then the state (a state reads as a param does)
        self.leaf_names = self.param_names + self.state_names
        self.leaf_list = self.param_list + self.state_list if states else self.param_list
        self._input_dtypes = {n: np.dtype(DTYPES[s.dtype]) for n, s in elaborated.inputs.items()}
        # inputs holding indices (labels, rows to gather): checked in range on every feed
        self._fed_indices = [(self.input_names.index(n), checks)
                             for n, checks in input_index_checks(elaborated.graph).items()]
        self.executables: dict = {}   # (graph, outputs, training, reuse_buffers, feed shapes) → Executable
        self.steps_taken = 0
        self.check_numerics = False
        self.distributed = None
        self.batch_metrics: dict[str, float] = {}    # the metrics of the last metered step's batch
        self.watch = None   # a GradientWatch (watch.py) that sees every update, or None
        self._training_update: Update | None = None   # made on first use, as are the phases'
        self._phased: PhasedTraining | None = None

    # ---- feeds and executables -------------------------------------------------------------------
    def feed(self, feed: dict) -> list:
        """The feed as one array per declared input, in order (None where absent), in the declared
        dtypes; indices fed unchanged to an op that takes them are checked in range here, once."""
        if not isinstance(feed, dict):
            raise TypeError("a feed is a dict of input name → array")
        if not feed.keys() <= self._input_dtypes.keys():
            unknown = sorted(set(feed) - set(self.input_names))
            raise GradError(f"the feed names unknown input(s) {', '.join(unknown)}; the program's "
                            f"inputs are {', '.join(self.input_names) or 'none'}")
        out = []
        for name, want in self._input_dtypes.items():
            value = feed.get(name)
            if value is not None and (type(value) is not np.ndarray or value.dtype != want):
                value = convert(value, want, name, self.inputs[name])
            out.append(value)
        for position, checks in self._fed_indices:
            if out[position] is not None:
                for check in checks:
                    check.check(out[position])
        return out

    def executable(self, graph: Graph, outputs: tuple, arrays: list, training: bool = False,
                   reuse_buffers: bool = False) -> Executable:
        """The compiled executable of `outputs` for these feed shapes. `training` switches dropout on, and
        makes every `training(a, b)` a (b otherwise);
        `reuse_buffers` (for a caller that consumes the outputs before the next run, as a training
        step does) writes large matrix products into memory allocated once."""
        key = (id(graph), outputs, training, reuse_buffers, tuple(None if a is None else a.shape for a in arrays))
        found = self.executables.get(key)
        if found is None:
            graph = self.graphs.for_mode(graph, training)   # `training(a, b)`: the branch of this kind of run
            needed = graph.reachable([graph.outputs[o] for o in outputs])
            for name, node in graph.inputs.items():
                if node in needed and arrays[self.input_names.index(name)] is None:
                    fed = [n for n, a in zip(self.input_names, arrays) if a is not None]
                    raise GradError(f"the feed is missing input {name!r} (it has {', '.join(fed) or 'no inputs'})",
                                    self.inputs[name].span)
            if reuse_buffers:   # a training step: the next step allocates what this one frees
                keep_freed_memory()
            sched = schedule(graph, list(outputs), bind_dimensions(self.inputs, arrays),
                             RunContext(self.rng, training), reuse_buffers, self.no_opt)
            found = self.executables[key] = Executable(sched, graph, self.input_names, self.leaf_names)
        return found

    # ---- running ---------------------------------------------------------------------------------
    def run(self, outputs: list[str], feed: dict, graph: Graph | None = None, training: bool = False) -> list:
        """Named outputs of `graph` (the forward graph by default), or named values of the program, on
        one feed. `training` switches dropout on (evaluation, the default, switches it off)."""
        graph = graph or self.graphs.forward_graph
        if not all(o in graph.outputs for o in outputs):
            graph, outputs = self.graphs.with_values(graph, outputs)
        arrays = self.feed(feed)
        exe = self.executable(graph, tuple(outputs), arrays, training)
        if self.check_numerics:
            return run_checked(exe, arrays, self.leaf_list)
        return exe.run(arrays, self.leaf_list)

    def loss(self, feed: dict, loss: str | None = None) -> float:
        """The loss (the trained one, or the one named `loss`) on one feed, dropout off."""
        return float(self.run([self.graphs.single_loss(loss)], feed)[0])

    def metrics(self, feed: dict) -> dict[str, float]:
        """Every metric on one feed, dropout off."""
        values = self.run([f"metric:{m}" for m in self.metric_names], feed)
        return {m: float(v) for m, v in zip(self.metric_names, values)}

    def run_step(self, exe: Executable, arrays: list) -> list:
        """[loss, gradient…] from a compiled update on one batch. A loss that is not finite raises
        NonFiniteError naming the op that first made a non-finite value, before any update uses the
        gradients: testing the loss is all a normal step pays for this."""
        if self.check_numerics:
            return run_checked(exe, arrays, self.leaf_list, self.steps_taken + 1)
        values = exe.run(arrays, self.leaf_list)
        if not math.isfinite(values[0]):
            raise nonfinite_loss(exe, arrays, self.leaf_list, self.steps_taken + 1, float(values[0]))
        return values

    def loss_and_gradients(self, arrays: list) -> list:
        """[loss, gradient of every param] of the training step on one batch (as `feed` makes it), dropout
        on; with plain SGD at a constant rate the gradients come multiplied by it (updates.py)."""
        return self.run_step(self.training_update.executable(arrays), arrays)

    def gradients(self, feed: dict, loss: str | None = None, training: bool = False) -> dict[str, np.ndarray]:
        """d loss / d param for every param, as fresh arrays of the params' shapes (dropout on if `training`)."""
        values = self.run([f"grad:{n}" for n in self.param_names], feed, self.graphs.gradient_graph(loss), training)
        return {n: np.array(v, dtype=p.dtype) for n, p, v in zip(self.param_names, self.param_list, values)}

    def predict(self, feed: dict, batch_size: int = 10_000) -> dict[str, np.ndarray]:
        """Every `output` the program declares, on a whole feed (in batches, dropout off)."""
        if not self.output_names:
            raise GradError("the program declares no outputs; add one such as `output probs = softmax(logits)`")
        names = [n for n in self.input_names if n in feed]
        n = data_sources.count_examples(feed, names) if names else 1
        if n == 0:
            raise GradError(f"nothing to predict: the inputs ({', '.join(names)}) hold no examples")
        wanted = [f"output:{o}" for o in self.output_names]
        parts: list[list] = [[] for _ in wanted]
        for idx in data_sources.batches(n, min(batch_size, n), None):
            values = self.run(wanted, feed if len(idx) == n else {k: feed[k][idx] for k in names})
            for part, value in zip(parts, values):
                part.append(np.asarray(value))
        return {o: (np.concatenate(p) if len(p) > 1 and p[0].ndim else p[0]) for o, p in zip(self.output_names, parts)}

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self, arrays: dict, batch_size: int = 10_000) -> dict[str, float]:
        """The loss and every metric over a whole data set (averaged over batches, weighted by size); with
        phases, "loss" is the sum of the phases' losses, each also reported by name."""
        names = [n for n in self.input_names if n in arrays]
        arrays = {k: arrays[k] for k in names}
        losses = self.graphs.evaluated_losses()
        if self.distributed is not None:   # each rank evaluates its share; the sums are added across ranks
            totals, n = self.distributed.evaluation_sums(self, arrays, batch_size)
        else:
            totals, n = self.evaluation_sums(arrays, batch_size)
        values = totals / n
        parts = {loss_name(o): float(v) for o, v in zip(losses, values)} if len(losses) > 1 else {}
        return {"loss": float(values[:len(losses)].sum()), **parts,
                **{m: float(v) for m, v in zip(self.metric_names, values[len(losses):])}}

    def evaluation_sums(self, arrays: dict, batch_size: int) -> tuple[np.ndarray, int]:
        """Every evaluated loss and metric summed over the examples of `arrays` in this process (a
        batch's value × its size), and the number of examples (1 for a program without inputs)."""
        names = list(arrays)
        n = data_sources.count_examples(arrays, names) if names else 1
        outputs = self.graphs.evaluated_losses() + [f"metric:{m}" for m in self.metric_names]
        totals = np.zeros(len(outputs))
        for idx in data_sources.batches(n, max(1, min(batch_size, n)), None):   # n = 0: a rank's empty share
            feed = arrays if len(idx) == n else {k: arrays[k][idx] for k in names}
            totals += np.array([float(v) for v in self.run(outputs, feed)]) * len(idx)
        return totals, n

    # ---- training --------------------------------------------------------------------------------
    def step(self, feed: dict | list, metered: bool = False) -> float:
        """One optimizer step on `feed` per the plan; returns the loss before the update. With phases,
        every phase's updates in order, on `feed` or on a list of `updates_per_step` feeds (one per
        update); returns the sum of the phases' losses, each in `phase_losses`. `metered` also computes
        the metrics on the batch (dropout on, before the update), into `batch_metrics` (training alone,
        without phases)."""
        if self.phases:
            return self.phased.step(feed)
        arrays = self.feed(feed)
        update = self.training_update
        if self.distributed is None:
            loss = self.apply(update, arrays, metered)
        else:   # this rank's share of the batch, gradients averaged over all ranks
            values = self.distributed.loss_and_gradients(self, arrays)
            self.optimize(update, values[1:])
            loss = float(values[0])
        self.steps_taken += 1
        return loss

    def apply(self, update: Update, arrays: list, metered: bool = False) -> float:
        """Make `update` on one batch (as `feed` makes it); returns the loss before it. The step count
        is the caller's to advance. `metered`: the batch's metrics too, into `batch_metrics`. The state
        the program updates takes its new values (computed by the same step) after the optimizer's update."""
        exe = update.executable(arrays, metered and bool(self.metric_names))
        values = self.run_step(exe, arrays)
        if metered and self.metric_names:
            count = len(self.metric_names)
            self.batch_metrics = {m: float(v) for m, v in zip(self.metric_names, values[-count:])}
            values = values[:-count]
        writes = exe.state_writes
        if not writes:
            self.optimize(update, values[1:], exe.owned_gradients)
            return float(values[0])
        for index in exe.state_snapshots:   # a new value in another array's memory (a param's) is taken now
            values[index] = values[index].copy()
        self.optimize(update, values[1:writes[0][0]], exe.owned_gradients)
        for index, state in writes:
            np.copyto(state, values[index])
        return float(values[0])

    def optimize(self, update: Update, gradients: list, owned=None) -> None:
        """Apply `update`'s optimizer to its gradients, watched where `watch` (watch.py) is set."""
        if self.watch is None:
            update.optimizer.apply(gradients, self.steps_taken, owned)
            return
        self.watch.before(update, gradients)
        update.optimizer.apply(gradients, self.steps_taken, owned)
        self.watch.after(update, update.param_names, self.steps_taken + 1)

    @property
    def training_update(self) -> Update:
        """The update of every param by the plan's optimizer from the trained loss (made on first use).
        With plain SGD at a constant rate it runs the scaled gradient graph (graphs.py)."""
        if self._training_update is None:
            optimizer = ScheduledOptimizer(self.plan.optimizer_spec(), self.param_list, self.plan.graph,
                                           "optimizer", self.float_dtype, fold=True)
            lr = optimizer.folded_lr
            graph = self.graphs.gradient_graph if lr is None else partial(self.graphs.scaled_gradient_graph, lr)
            self._training_update = Update(self, optimizer, graph, None, self.param_names, self.updated_states)
        return self._training_update

    def use_plan(self, plan: Plan) -> None:
        """Train by `plan` from now on: the same program's plan with another optimizer. The params and the
        step count stay; the optimizer starts afresh."""
        if plan.phases != self.plan.phases or plan.get("loss") != self.plan.get("loss"):
            raise GradError("a new plan may change the optimizer only, not the losses or phases trained")
        self.plan = plan
        self._training_update = None

    @property
    def phased(self) -> PhasedTraining:
        """The plan's phases as updates (made on first use)."""
        if self._phased is None:
            self._phased = PhasedTraining(self, self.phases)
        return self._phased

    @property
    def updates_per_step(self) -> int:
        """Mini-batches a training step uses: 1, or one per update of the plan's phases."""
        return self.phased.updates_per_step if self.phases else 1

    @property
    def phase_losses(self) -> dict[str, float]:
        """Each phase's loss in the last step (before its updates); empty without phases."""
        return dict(self._phased.last_losses) if self._phased is not None else {}

    def learning_rate(self, step: int | None = None) -> float | None:
        """The learning rate of the update after `step` updates (default: the next one; a schedule's
        value there); None for a program trained in phases, each with its own."""
        if self.phases:
            return None
        rate = self.training_update.optimizer.settings(self.steps_taken if step is None else step).get("lr")
        return None if rate is None else float(rate)

    def optimizer(self):
        """The optimizer and its state (made from the plan's `optimizer` on first use)."""
        if self.phases:
            raise GradError("the program trains in phases, each with its own optimizer (see optimizer_state())")
        return self.training_update.optimizer.optimizer

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer state (every phase's, with phases) as named arrays, as checkpoints store it."""
        return self.phased.state() if self.phases else self.optimizer().state()

    def load_optimizer_state(self, state: dict) -> None:
        if self.phases:
            self.phased.load_state(state)
        else:
            self.optimizer().load_state(state)
