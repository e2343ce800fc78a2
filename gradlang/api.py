"""The Python surface: `gradlang.compile(...)` → `Program`.

    prog = gradlang.compile("examples/moons_mlp.grad")
    prog.loss(feed); prog.gradients(feed); prog.step(feed); prog.train()

A feed is a dict of input name → array. Executables are compiled once per set of outputs and feed
shapes, then reused: the first call with a new batch size compiles, later ones only run.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .elaborate import Elaborated, elaborate_source
from .errors import GradError
from .ir.graph import Graph
from .ir.printer import format_graph
from .ops.shapes import DTYPES, fmt_shape, fmt_type
from .passes import differentiate, simplify
from .ops.registry import RunContext
from .passes.index_checks import input_index_checks
from .passes.schedule import schedule
from .passes.stability import stabilize
from .runtime import data as data_sources
from .runtime.interpreter import Executable
from .runtime.numerics import nonfinite_loss, run_checked
from .runtime.optimizers import OPTIMIZERS
from .runtime.outputs import OUTPUT_SETTINGS, resolve_output
from .runtime.params import Params, checked_value
from .runtime.phases import PhasedTraining, differentiate_phases, loss_name
from .runtime.train import Reporter, TrainResult, fit, save_params, split_validation
from .syntax import parse, parse_file
from .values import DataSpec, OptimizerSpec, Tensor, describe

_DTYPE_NAMES = {"float32": "f32", "float64": "f64", "f32": "f32", "f64": "f64"}


@dataclass(frozen=True)
class InputInfo:
    shape: tuple      # ints and symbolic dimension names
    dtype: str

    def __repr__(self) -> str:
        return fmt_type(self.shape, self.dtype)


def compile(source: str | Path, dtype: str = "float32", seed: int | None = None) -> "Program":  # noqa: A001
    """Compile a `.grad` file (a path) or gradlang source text into a `Program`.

    `dtype` is the float precision of every float value ("float32" or "float64");
    `seed` overrides the training plan's seed (which seeds initialisation, shuffling and dropout).
    """
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    path = Path(source) if isinstance(source, Path) or _looks_like_path(source) else None
    if path is not None:
        if not path.is_file():
            raise GradError(f"no such file: {path}")
        module, folder, name = parse_file(path), path.resolve().parent, str(path)
    else:
        module, folder, name = parse(source, "<string>"), Path.cwd(), "<string>"
    elaborated = elaborate_source(module, folder, _DTYPE_NAMES[dtype])
    program = Program(elaborated, folder, seed, name)
    for setting in OUTPUT_SETTINGS:   # refused now, not after an hour of training
        program.plan_output(setting)
    return program


def _constant_sgd_rate(kind: str, static: dict, dynamic: dict) -> float | None:
    """The learning rate when the update is p ← p − lr·g with the same lr every step: SGD with every
    other setting at its default, nothing scheduled. Otherwise None."""
    if kind != "sgd" or dynamic:
        return None
    defaults = OPTIMIZERS["sgd"].settings
    if any(static.get(name, default) != default for name, default in defaults.items() if name != "lr"):
        return None
    return static["lr"]


class Program:
    """A compiled gradlang program and its parameters."""

    def __init__(self, elaborated: Elaborated, folder: Path, seed: int | None, name: str = "<string>"):
        self.elaborated = elaborated
        self.name = name
        self.folder = folder
        plan = elaborated.plan.settings if elaborated.plan else {}
        self.seed = seed if seed is not None else plan.get("seed", 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            span = elaborated.plan.spans.get("seed") if seed is None and elaborated.plan else None
            raise GradError(f"seed must be a non-negative integer, got {describe(self.seed)}", span)
        self.rng = np.random.default_rng(self.seed)
        self.float_dtype = elaborated.float_dtype
        self.input_names = list(elaborated.inputs)
        self._input_dtypes = {n: np.dtype(DTYPES[s.dtype]) for n, s in elaborated.inputs.items()}
        self.param_names = list(elaborated.params)
        # inputs holding indices (labels, rows to gather): checked in range on every feed
        self._fed_indices = [(self.input_names.index(n), checks)
                             for n, checks in input_index_checks(elaborated.graph).items()]
        self.stats: Counter = Counter()
        # the model as trained: the elaborated graph with numerical-stability rewrites applied — before
        # differentiation, so gradients are stable too (those of grad(...) in the program were taken from the
        # stable form during elaboration); `rewrites` lists each once, where it fires, as `gradlang check` does
        self.model_graph, self.rewrites = stabilize(elaborated.graph)
        self.forward_graph = simplify(self.model_graph, stats=self.stats)
        self._grad_graphs: dict[str, Graph] = {}
        self._executables: dict = {}
        self._step_executables: dict = {}   # feed shapes → the training step's executable (the hot path)
        self._folded_lr = None   # the SGD learning rate the step's gradients come multiplied by, if any
        self._params = {name: _initialise(spec, self.rng) for name, spec in elaborated.params.items()}
        self._param_list = list(self._params.values())
        self._live_params = Params(self._params)
        self._optimizer = None
        self._settings_exec = None
        self._phased = None   # the plan's phases, their optimizers (runtime/phases.py), made on first use
        self.steps_taken = 0
        # test every op's result for NaN and infinity, every step (runtime/numerics.py; slow, for diagnosis)
        self.check_numerics = False
        self._data_dir: Path | None = None
        # data-parallel training over MPI (runtime/distributed.py: DataParallel; None: this process trains
        # alone): when set, step and evaluate take this rank's share of each batch and combine the ranks' results
        self.distributed = None

    @property
    def data_dir(self) -> Path | None:
        """Where named data sets (mnist, …) live; None: $GRADLANG_DATA, else ~/.cache/gradlang."""
        return self._data_dir

    @data_dir.setter
    def data_dir(self, folder) -> None:
        if folder is not None and not isinstance(folder, (str, Path)):
            raise TypeError(f"data_dir must be a path (a str or pathlib.Path) or None, not {type(folder).__name__}")
        self._data_dir = None if folder is None else Path(folder)

    # ---- what the program declares ---------------------------------------------------------------
    @property
    def inputs(self) -> dict[str, InputInfo]:
        return {n: InputInfo(s.shape, s.dtype) for n, s in self.elaborated.inputs.items()}

    @property
    def params(self) -> Params:
        """The parameters by qualified name: the live arrays, which training updates in place.
        `prog.params[name] = value` copies `value` into the live array (its shape must match)."""
        return self._live_params

    def set_params(self, values: dict) -> None:
        """Copy new values into the params (shapes must match); unknown names are a KeyError. All
        values are checked before any is written."""
        unknown = [name for name in values if name not in self._params]
        if unknown:
            raise KeyError(f"no param named {unknown[0]!r}; the program's params are {', '.join(self._params)}")
        checked = {name: checked_value(name, value, self._params[name].shape, self._params[name].dtype)
                   for name, value in values.items()}
        for name, value in checked.items():
            self._params[name][...] = value

    @property
    def losses(self) -> list[str]:
        return [n.split(":", 1)[-1] for n in self.elaborated.losses]

    @property
    def metric_names(self) -> list[str]:
        return list(self.elaborated.metrics)

    @property
    def plan(self) -> dict:
        return dict(self.elaborated.plan.settings) if self.elaborated.plan else {}

    @property
    def phases(self) -> list:
        """The train block's `phases` (PhaseSpec values); empty when it trains one loss."""
        return self.elaborated.plan.settings.get("phases", []) if self.elaborated.plan else []

    # ---- graphs and their text ------------------------------------------------------------------
    def _loss_output(self, loss: str | None) -> str:
        losses = self.elaborated.losses
        if loss is None and self.phases:
            names = ", ".join(loss_name(p.loss) for p in self.phases)
            first = loss_name(self.phases[0].loss)
            raise GradError(f"the program trains in phases, each on its own loss ({names}), and this needs a "
                            f"single loss; from Python, name it (prog.gradients(feed, \"{first}\"))")
        if loss is None:
            chosen = self.plan.get("loss")
            if chosen is None:
                if len(losses) > 1:
                    raise GradError(f"the program has {len(losses)} losses ({', '.join(self.losses)}); "
                                    "say which to train with `loss = name` in the train block")
                return losses[0]
            loss = chosen
        output = "loss" if loss == "loss" else f"loss:{loss}"
        if output not in losses:
            raise GradError(f"no loss named {loss!r}; the program declares {', '.join(self.losses)}",
                            self.elaborated.plan.spans.get("loss") if self.elaborated.plan else None)
        return output

    def gradient_graph(self, loss: str | None = None, params: tuple | None = None) -> Graph:
        """The forward graph plus d loss / d param (outputs `grad:<name>`), simplified: for every param,
        or only for `params` (no backward work for the others). A program trained in phases, asked for
        no loss, gives what its training step differentiates: each phase's loss for its own params."""
        if loss is None and params is None and self.phases:
            key = ("phases",)
            if key not in self._grad_graphs:
                self._grad_graphs[key] = simplify(self.raw_gradient_graph(), stats=self.stats)
            return self._grad_graphs[key]
        output = self._loss_output(loss)
        key = output if params is None else (output, tuple(params))
        if key not in self._grad_graphs:
            raw = differentiate(self.model_graph, output) if params is None \
                else differentiate_phases(self.model_graph, [(output, tuple(params))])
            self._grad_graphs[key] = simplify(raw, stats=self.stats)
        return self._grad_graphs[key]

    @property
    def graph(self):
        """The NetworkX graph of the forward and gradient IR."""
        return self.gradient_graph().nx

    @property
    def ir(self) -> str:
        return format_graph(self.forward_graph)

    @property
    def gradient_ir(self) -> str:
        return format_graph(self.gradient_graph())

    def loss_output(self, loss: str | None = None) -> str:
        """The output that training differentiates (or the one named `loss`): "loss" or "loss:<name>".
        With phases, the first phase's: the tools that check one loss (gradcheck, cost, lint) check it."""
        if loss is None and self.phases:
            return self.phases[0].loss
        return self._loss_output(loss)

    def raw_gradient_graph(self, loss: str | None = None) -> Graph:
        """The forward graph plus d loss / d param as autodiff makes them, before simplification."""
        if loss is None and self.phases:
            trained = {n for p in self.phases for n in p.params}
            return differentiate_phases(self.model_graph, [(p.loss, p.params) for p in self.phases],
                                        untrained=[n for n in self.param_names if n not in trained])
        return differentiate(self.model_graph, self.loss_output(loss))

    def draw(self, stage: str = "optimized", grad: bool = True):
        """The IR after `stage` (elaborated, grad, optimized) as a `Drawing`: shown inline in Jupyter
        (an SVG where Graphviz is installed, the text form otherwise); `.save("ir.png")` draws a file."""
        from .ir.dot import Drawing
        from .stages import stage_graph
        return Drawing(stage_graph(self, stage, grad and stage != "elaborated"), title=f"{self.name} — {stage}")

    def backward_listing(self, loss: str | None = None) -> str:
        """The backward pass written out as gradlang assignments, in execution order (`gradlang grad`)."""
        from .ir.listing import backward_listing
        return backward_listing(self.gradient_graph(loss), source=self.name)

    # ---- execution ------------------------------------------------------------------------------
    def _feed(self, feed: dict) -> list:
        """The feed as one array per declared input, in order (None where absent), in the declared dtypes."""
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
                value = _convert(value, want, name, self.elaborated.inputs[name])
            out.append(value)
        for position, checks in self._fed_indices:
            if out[position] is not None:
                for check in checks:
                    check.check(out[position])
        return out

    def _executable(self, graph: Graph, outputs: tuple, arrays: list, training: bool = False,
                    reuse_buffers: bool = False) -> Executable:
        """The compiled executable of `outputs` for these feed shapes. `reuse_buffers` (for a caller
        that consumes the outputs before the next run, as a training step does) writes large matrix
        products into memory allocated once."""
        key = (id(graph), outputs, training, reuse_buffers, tuple(None if a is None else a.shape for a in arrays))
        found = self._executables.get(key)
        if found is None:
            needed = graph.reachable([graph.outputs[o] for o in outputs])
            for name, node in graph.inputs.items():
                if node in needed and arrays[self.input_names.index(name)] is None:
                    fed = [n for n, a in zip(self.input_names, arrays) if a is not None]
                    raise GradError(f"the feed is missing input {name!r} (it has {', '.join(fed) or 'no inputs'})",
                                    self.elaborated.inputs[name].span)
            bindings = self._bind(arrays)
            sched = schedule(graph, list(outputs), bindings, RunContext(self.rng, training), reuse_buffers)
            found = self._executables[key] = Executable(sched, graph, self.input_names, self.param_names)
        return found

    def _bind(self, arrays: list) -> dict:
        bindings: dict = {}
        for name, value in zip(self.input_names, arrays):
            if value is None:
                continue
            spec = self.elaborated.inputs[name]
            expected = fmt_type(spec.shape, spec.dtype)
            if len(value.shape) != len(spec.shape):
                raise GradError(f"input {name}: expected {expected}, got an array of shape {fmt_shape(value.shape)}",
                                spec.span)
            for dim, actual in zip(spec.shape, value.shape):
                if isinstance(dim, str) and actual == 0:
                    raise GradError(f"input {name}: dimension {dim} is 0 (an empty batch, shape "
                                    f"{fmt_shape(value.shape)}); feed at least one example", spec.span)
                if isinstance(dim, str):
                    if bindings.setdefault(dim, actual) != actual:
                        raise GradError(f"input {name}: dimension {dim} is {bindings[dim]} in another input but "
                                        f"{actual} here (shape {fmt_shape(value.shape)})", spec.span)
                elif dim != actual:
                    raise GradError(f"input {name}: expected {expected}, got an array of shape "
                                    f"{fmt_shape(value.shape)}", spec.span)
        return bindings

    def run(self, outputs: list[str], feed: dict, graph: Graph | None = None, training: bool = False) -> list:
        """Evaluate named outputs of the (forward, by default) graph on one feed. `training` switches
        dropout on (evaluation, the default, switches it off)."""
        graph = graph or self.forward_graph
        if not all(o in graph.outputs for o in outputs):
            graph, outputs = self._graph_with_values(graph, outputs)
        arrays = self._feed(feed)
        exe = self._executable(graph, tuple(outputs), arrays, training)
        if self.check_numerics:
            return run_checked(exe, arrays, self._param_list)
        return exe.run(arrays, self._param_list)

    def _graph_with_values(self, graph: Graph, names: list[str]) -> tuple[Graph, list[str]]:
        """`graph` with every name in `names` that is not yet an output made one (`value:<name>`): a
        named value of the program, found before simplification dropped what no output reads."""
        source = self.model_graph if graph is self.forward_graph else graph
        key = ("values", id(graph), tuple(names))
        wanted = [n if n in graph.outputs else f"value:{n}" for n in names]
        if key not in self._grad_graphs:
            extended = source.copy()
            for name in names:
                if name in graph.outputs:
                    continue
                node = source.find_value(name)
                if node is None:
                    named = sorted({d["name"] for _, d in source.nx.nodes(data=True)
                                    if d["name"] and d["role"] == "forward" and d["op"] not in ("input", "param")})
                    raise GradError(f"no output or named value {name!r}; the program's outputs are "
                                    f"{', '.join(graph.outputs)}, and its named values "
                                    f"{', '.join(named) or 'none'}")
                extended.outputs[f"value:{name}"] = node
            self._grad_graphs[key] = simplify(extended)
        return self._grad_graphs[key], wanted

    def loss(self, feed: dict, loss: str | None = None) -> float:
        return float(self.run([self._loss_output(loss)], feed)[0])

    def metrics(self, feed: dict) -> dict[str, float]:
        names = self.metric_names
        return dict(zip(names, (float(v) for v in self.run([f"metric:{m}" for m in names], feed))))

    @property
    def output_names(self) -> list[str]:
        return list(self.elaborated.outputs)

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

    def gradients(self, feed: dict, loss: str | None = None, training: bool = False) -> dict[str, np.ndarray]:
        """d loss / d param for every param, as arrays of the params' shapes (with dropout on if `training`)."""
        graph = self.gradient_graph(loss)
        values = self.run([f"grad:{n}" for n in self.param_names], feed, graph, training)
        return {n: np.array(v, dtype=self._params[n].dtype) for n, v in zip(self.param_names, values)}

    def step(self, feed: dict | list) -> float:
        """One optimizer step on `feed` per the training plan; returns the loss before the update.

        With `phases`, every phase's updates in order, on `feed` or on a list of `updates_per_step`
        feeds (one per update); returns the sum of the phases' losses, each in `phase_losses`."""
        if self.phases:
            return self._phases().step(feed)
        arrays = self._feed(feed)
        owned = None
        if self.distributed is not None:   # this rank's share of the batch, gradients averaged over all ranks
            values = self.distributed.loss_and_gradients(self, arrays)
        else:
            exe = self._step_executable(arrays)
            values = self._loss_and_gradients(arrays, exe)
            owned = exe.owned_gradients
        optimizer, settings = self._optimizer_for_step()
        if self._folded_lr is not None:   # the step computed lr · gradient: the update only subtracts it
            optimizer.subtract(self._param_list, values[1:])
        else:
            optimizer.update(self._param_list, values[1:], owned=owned, **settings)
        self.steps_taken += 1
        return float(values[0])

    def _step_executable(self, arrays: list) -> Executable:
        """The compiled training step (loss and every param's gradient) for these feed shapes.

        With plain SGD at a constant learning rate (no momentum, clipping or decay), the gradients
        it computes are already multiplied by the rate: the backward pass starts from lr instead of
        1 (`differentiate`'s seed), and simplification folds it into the mean's 1/B, so the update
        needs no pass to scale them."""
        key = tuple([None if a is None else a.shape for a in arrays])
        exe = self._step_executables.get(key)
        if exe is None:
            outputs = (self._loss_output(None),) + tuple(f"grad:{n}" for n in self.param_names)
            self._optimizer_for_step()   # decides _folded_lr
            lr = self._folded_lr
            graph = self.gradient_graph() if lr is None else self._scaled_gradient_graph(lr)
            exe = self._step_executables[key] = self._executable(graph, outputs, arrays, True, reuse_buffers=True)
            exe.owned_gradients = exe.schedule.fresh_outputs[1:]   # gradients the optimizer may overwrite
        return exe

    def _scaled_gradient_graph(self, lr: float) -> Graph:
        """gradient_graph() with every gradient multiplied by `lr`, for the SGD step (its rewrites
        are not counted in `stats`, which describe the graphs `gradlang ir` shows)."""
        key = ("scaled", lr)
        if key not in self._grad_graphs:
            output = self._loss_output(None)
            self._grad_graphs[key] = simplify(differentiate(self.model_graph, output, seed=lr))
        return self._grad_graphs[key]

    def _loss_and_gradients(self, arrays: list, exe: Executable | None = None) -> list:
        """[loss, gradient of every param] on one batch (inputs in declared order), dropout on."""
        exe = exe or self._step_executable(arrays)
        if self.check_numerics:
            return run_checked(exe, arrays, self._param_list, self.steps_taken + 1)
        values = exe.run(arrays, self._param_list)
        if not math.isfinite(values[0]):   # (the only cost of a normal step) the update is not applied
            raise nonfinite_loss(exe, arrays, self._param_list, self.steps_taken + 1, float(values[0]))
        return values

    def _optimizer_for_step(self):
        if self._optimizer is None:
            spec = self.plan.get("optimizer")
            if spec is None:
                spec = OptimizerSpec("sgd", (("lr", 0.01),), None)
            elif not isinstance(spec, OptimizerSpec):
                raise GradError("the train block's optimizer must be an optimizer such as sgd(lr: 0.1)",
                                self.elaborated.plan.spans["optimizer"])
            self._optimizer = OPTIMIZERS[spec.kind].make(self._param_list)
            self._static_settings = {k: v for k, v in spec.settings if not isinstance(v, Tensor)}
            dynamic = {k: v for k, v in spec.settings if isinstance(v, Tensor)}
            self._dynamic_names = list(dynamic)
            # decided here, from the settings alone, so every process and every MPI rank (one whose
            # share of a batch is empty computes no gradients) agrees on what its gradients mean
            self._folded_lr = _constant_sgd_rate(spec.kind, self._static_settings, dynamic)
            if dynamic:
                plan_graph = self.elaborated.plan.graph
                for k, v in dynamic.items():
                    plan_graph.outputs[f"optimizer:{k}"] = v.node
                sched = schedule(plan_graph, [f"optimizer:{k}" for k in dynamic], {})
                self._settings_exec = Executable(sched, plan_graph, ["step"], [])
        settings = self._static_settings
        if self._settings_exec is not None:
            step = np.asarray(self.steps_taken, dtype=DTYPES[self.float_dtype])
            values = self._settings_exec.run([step], [])
            settings = dict(settings, **{k: float(v) for k, v in zip(self._dynamic_names, values)})
        return self._optimizer, settings

    def evaluate(self, arrays: dict, batch_size: int = 10_000) -> dict[str, float]:
        """The loss and every metric over a whole data set (averaged over batches, weighted by size)."""
        names = [n for n in self.input_names if n in arrays]
        arrays = {k: arrays[k] for k in names}
        losses = self._evaluated_losses()
        if self.distributed is not None:   # each rank evaluates its share; the sums are added across ranks
            totals, n = self.distributed.evaluation_sums(self, arrays, batch_size)
        else:
            totals, n = self._evaluation_sums(arrays, batch_size)
        values = totals / n
        parts = {loss_name(o): float(v) for o, v in zip(losses, values)} if len(losses) > 1 else {}
        return {"loss": float(values[:len(losses)].sum()), **parts,
                **{m: float(v) for m, v in zip(self.metric_names, values[len(losses):])}}

    def _evaluated_losses(self) -> list[str]:
        # with phases, "loss" is the sum of the phases' losses, and each is reported by name too
        return [p.loss for p in self.phases] if self.phases else [self._loss_output(None)]

    def _evaluation_sums(self, arrays: dict, batch_size: int) -> tuple[np.ndarray, int]:
        """Every loss and metric summed over the examples of `arrays` (a batch's value × its size), and
        the number of examples (1 for a program without inputs)."""
        names = list(arrays)
        n = data_sources.count_examples(arrays, names) if names else 1
        outputs = self._evaluated_losses() + [f"metric:{m}" for m in self.metric_names]
        totals = np.zeros(len(outputs))
        for idx in data_sources.batches(n, max(1, min(batch_size, n)), None):   # n = 0: a rank's empty share
            feed = arrays if len(idx) == n else {k: arrays[k][idx] for k in names}
            totals += np.array([float(v) for v in self.run(outputs, feed)]) * len(idx)
        return totals, n

    # ---- training ----------------------------------------------------------------------------
    def plan_output(self, setting: str) -> Path | None:
        """The file the plan's `save` or `checkpoint` names, resolved below the program's folder
        (runtime/outputs.py), or None when the plan names none."""
        value = self.plan.get(setting)
        return None if value is None else resolve_output(self.folder, setting, value, self._plan_span(setting))

    def _plan_span(self, key: str):
        return self.elaborated.plan.spans.get(key) if self.elaborated.plan else None

    def load_data(self, name: str | None = None, setting: str = "data") -> dict:
        """The arrays of a data declaration `name`, or of the data source named by a train setting."""
        if name is not None:
            if name not in self.elaborated.data:
                raise KeyError(f"no data declaration named {name!r}")
            spec = self.elaborated.data[name]
        else:
            spec = self.plan.get(setting)
            if spec is None:
                raise GradError(f"the train block names no {setting} (add `{setting} = …`)"
                                + ("; or pass data to train()" if setting == "data" else ""),
                                self.elaborated.plan.span if self.elaborated.plan else None)
            if not isinstance(spec, DataSpec):
                raise GradError(f"train setting {setting} must be a data source, got {describe(spec)}",
                                self._plan_span(setting))
        arrays = data_sources.load(spec, self.folder, self.data_dir)
        files = data_sources.paths(spec, self.folder, self.data_dir)
        origin = ", ".join(str(f) for f in files) if files else f"{spec.source}(…)"
        data_sources.check_fields(arrays, self.elaborated.inputs, self.model_graph, origin, spec.span)
        return arrays

    def optimizer(self):
        """The optimizer and its state (made from the plan's `optimizer` on first use)."""
        if self.phases:
            raise GradError("the program trains in phases, each with its own optimizer (see optimizer_state())")
        return self._optimizer_for_step()[0]

    def _phases(self) -> PhasedTraining:
        if self._phased is None:
            self._phased = PhasedTraining(self, self.phases)
        return self._phased

    @property
    def updates_per_step(self) -> int:
        """Mini-batches a training step uses: 1, or one per update of the plan's phases."""
        return self._phases().updates_per_step if self.phases else 1

    @property
    def phase_losses(self) -> dict[str, float]:
        """Each phase's loss in the last step (before its updates); empty without phases."""
        return dict(self._phased.last_losses) if self._phased is not None else {}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer state (every phase's, with phases) as named arrays, as checkpoints store it."""
        return self._phases().state() if self.phases else self.optimizer().state()

    def load_optimizer_state(self, state: dict) -> None:
        if self.phases:
            self._phases().load_state(state)
        else:
            self.optimizer().load_state(state)

    def _plan_int(self, key: str, value, minimum: int = 1):
        value = self.plan.get(key) if value is None else value
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise GradError(f"{key} must be an integer ≥ {minimum}, got {_show(value)}", self._plan_span(key))
        return value

    def train(self, data: dict | None = None, epochs: int | None = None, steps: int | None = None,
              batch_size: int | None = None, validation: float | dict | None = None,
              early_stopping: int | None = None, log=None, reporter: Reporter | None = None,
              checkpoint: str | Path | None = None, resume: bool = False,
              checkpoint_interval: float = 0.0, on_nonfinite: str | None = None) -> TrainResult:
        """Train per the file's plan; arguments override it.

        `validation` is a fraction of the data to hold out or a dict of arrays; `early_stopping` the
        number of epochs without a better validation loss after which training stops (and the best
        params are restored); `checkpoint` a path written atomically after every epoch, from which
        `resume=True` continues (`checkpoint_interval`: at least this many seconds between writes).
        `log(step, total, loss, seconds)` or a `Reporter` hears progress. `on_nonfinite` ("stop" or
        "skip", else the plan's setting, else "stop") says what a step whose loss is NaN or infinite does.
        """
        on_nonfinite = on_nonfinite or self.plan.get("on_nonfinite", "stop")
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', not {on_nonfinite!r}")
        if data is None and not self.input_names and "data" not in self.plan:
            data = {}   # nothing to feed: each step just updates the params
        arrays = data if data is not None else self.load_data()
        self._check_fields_cover_inputs(arrays, "the training data" if data is not None
                                        else f"the data {self.plan['data'].source}(…)")
        if epochs is None and steps is None:
            epochs, steps = self._plan_int("epochs", None), self._plan_int("steps", None)
        for key, value in (("epochs", epochs), ("steps", steps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise GradError(f"{key} must be a positive integer, got {_show(value)}", self._plan_span(key))
        batch_size = self._plan_int("batch", batch_size)
        early_stopping = self._plan_int("early_stopping", early_stopping, minimum=0) or 0
        setting_span = self._plan_span("validation") if validation is None else None
        validation = self.plan.get("validation") if validation is None else validation
        names = [n for n in self.input_names if n in arrays]
        if isinstance(validation, DataSpec):   # checked as the training data is: shapes, labels, NaN
            validation = self.load_data(setting="validation")
        elif isinstance(validation, (int, float)) and not isinstance(validation, bool):
            if not 0 < validation < 1:
                raise GradError(f"validation must be a fraction between 0 and 1, got {validation}", setting_span)
            arrays, validation = split_validation(arrays, names, float(validation), self.rng, setting_span)
        elif validation is not None and not isinstance(validation, dict):
            raise GradError(f"validation must be a fraction or a data source, got {describe(validation)}",
                            self._plan_span("validation"))
        if early_stopping and validation is None:
            raise GradError("early_stopping needs a validation set (validation = 0.1, say)",
                            self._plan_span("early_stopping"))
        if checkpoint is None:
            checkpoint = self.plan_output("checkpoint")
        if reporter is None and log is not None:
            reporter = _CallbackReporter(log)
        result = fit(self, arrays, epochs, steps, batch_size, validation, early_stopping, reporter,
                     Path(checkpoint) if checkpoint is not None else None, resume, checkpoint_interval,
                     on_nonfinite=on_nonfinite)
        if "test" in self.plan:
            result.test = self.evaluate(self.load_data(setting="test"))
        return result

    def _check_fields_cover_inputs(self, arrays: dict, origin: str) -> None:
        """Every input that training reads is a field of `arrays` (a named error before any step)."""
        graph = self.model_graph
        needed = graph.reachable([graph.outputs[o] for o in self._evaluated_losses()])
        for name, node in graph.inputs.items():
            if node in needed and name not in arrays:
                raise GradError(f"{origin} is missing input {name!r}: its fields are "
                                f"{', '.join(map(str, arrays)) or 'none'}, and each input is fed from the field "
                                "of its name", self.elaborated.inputs[name].span)

    def save(self, path: str | Path) -> Path:
        return save_params(self._params, path)

    def load(self, path: str | Path) -> None:
        with np.load(path, allow_pickle=False) as archive:
            self.set_params({k: archive[k] for k in archive.files})

    def export_onnx(self, path: str | Path, outputs: list[str] | None = None, batch: int | None = None) -> Path:
        """Write the inference graph (dropout off) of `outputs` — by default the `output` declarations —
        as an ONNX model holding the current params; `batch` fixes every symbolic dimension, which
        otherwise stays symbolic. Needs the `onnx` extra; see docs/onnx.md."""
        from .export.onnx import export_onnx
        return export_onnx(self, path, outputs, batch)

    def __repr__(self) -> str:
        inputs = ", ".join(f"{n}: {i!r}" for n, i in self.inputs.items())
        n_values = sum(p.size for p in self._params.values())
        return f"<gradlang.Program {self.name} inputs({inputs}) params={len(self._params)} ({n_values} values)>"

    def _repr_html_(self) -> str:
        """Jupyter's display: inputs, params with their shapes, losses, metrics, the plan, the IR folded."""
        from .display import program_html
        return program_html(self)

    def _repr_markdown_(self) -> str:
        from .display import program_markdown
        return program_markdown(self)


def _show(value) -> str:
    return repr(value) if isinstance(value, (int, float, str)) else describe(value)


def _looks_like_path(source: str) -> bool:
    """A one-line string ending in .grad is a path, unless it reads like a program (has `=`, `#` or spaces)."""
    if "\n" in source or not source.endswith(".grad"):
        return False
    return Path(source).exists() or not any(c in source for c in "=# ")


class _CallbackReporter(Reporter):
    def __init__(self, log):
        self.log = log

    def step(self, done, total, loss, seconds):
        self.log(done, total, loss, seconds)


def _convert(value, dtype, name: str, spec) -> np.ndarray:
    """`value` as an array of the input's dtype, or a GradError: nothing is cast that changes a value
    (fractions to integers, integers out of the dtype's range, finite floats that overflow, complex
    numbers to real ones), and only numbers are accepted."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:   # a ragged nested list, say
        raise GradError(f"input {name}: cannot make an array of the value fed ({err})", spec.span) from None
    kind = array.dtype.kind
    if kind not in "biuf":
        what = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}.get(kind, str(array.dtype))
        raise GradError(f"input {name}: expected {spec.dtype} numbers, got {what}", spec.span)
    if dtype == np.bool_:
        if kind != "b":
            raise GradError(f"input {name}: expected booleans, got {array.dtype}", spec.span)
        return array
    if np.issubdtype(dtype, np.integer) and kind in "iuf":
        if kind == "f" and not np.all(np.isfinite(array)):
            raise GradError(f"input {name}: expected integers ({spec.dtype}), got NaN or infinity", spec.span)
        if kind == "f" and not np.all(np.equal(np.mod(array, 1), 0)):
            raise GradError(f"input {name}: expected integers ({spec.dtype}), got fractional values", spec.span)
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            bad = array.max() if array.max() > info.max else array.min()
            shown = int(bad) if kind in "iu" else f"{bad:.16g}"
            raise GradError(f"input {name}: {shown} does not fit in {spec.dtype} "
                            f"({info.min} to {info.max})", spec.span)
    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    if kind == "f" and np.issubdtype(dtype, np.floating):
        overflow = np.isfinite(array) & ~np.isfinite(converted)
        if overflow.any():
            raise GradError(f"input {name}: {float(array[overflow].flat[0]):g} does not fit in {spec.dtype}",
                            spec.span)
    return converted


def _fans(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out): [in, out] for a weight matrix; conv kernels [out, in, kh, kw] count the window."""
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    if len(shape) == 2:
        return shape[0], shape[1]
    window = int(np.prod(shape[2:]))
    return shape[1] * window, shape[0] * window


def _initialise(spec, rng: np.random.Generator) -> np.ndarray:
    shape, dtype, init = spec.shape, DTYPES[spec.dtype], spec.init
    if 0 in shape:   # no values to draw (and fans of 0 would divide by zero)
        return np.zeros(shape, dtype)
    fan_in, fan_out = _fans(shape)
    kind, args = init.kind, init.args
    if kind == "zeros":
        value = np.zeros(shape)
    elif kind == "ones":
        value = np.ones(shape)
    elif kind == "constant":
        value = np.full(shape, args[0])
    elif kind == "normal":
        value = rng.normal(args[0], args[1], size=shape)
    elif kind == "values":
        value = np.array(args).reshape(shape)
    elif kind == "uniform":
        value = rng.uniform(args[0], args[1], size=shape)
    elif kind == "glorot_uniform":
        limit = np.sqrt(6.0 * args[0] / (fan_in + fan_out))
        value = rng.uniform(-limit, limit, size=shape)
    elif kind == "glorot_normal":
        value = rng.normal(0.0, np.sqrt(2.0 * args[0] / (fan_in + fan_out)), size=shape)
    elif kind == "he_uniform":
        limit = np.sqrt(6.0 * args[0] / fan_in)
        value = rng.uniform(-limit, limit, size=shape)
    elif kind == "he_normal":
        value = rng.normal(0.0, np.sqrt(2.0 * args[0] / fan_in), size=shape)
    else:  # pragma: no cover - the elaborator only makes the kinds above
        raise ValueError(f"unknown initialiser {kind}")
    return np.array(value, dtype=dtype, order="C")   # (ascontiguousarray would make a scalar 1-D)
