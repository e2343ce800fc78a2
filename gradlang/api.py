"""The Python surface: `gradlang.compile(...)` → `Program`.

    prog = gradlang.compile("examples/moons_mlp.grad")
    prog.loss(feed); prog.gradients(feed); prog.step(feed); prog.train()

A feed is a dict of input name → array. `Program` is a facade over the parts that do the work: the
train block's settings (frontend/plan.py: `Plan`), the graphs (runtime/graphs.py: `ProgramGraphs`), the
params, feeds, compiled executables, optimizers and training step (runtime/runner.py: `Runner`), and
the training loop (runtime/train.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GradError
from .frontend.elaborate import Elaborated, elaborate_source
from .frontend.outputs import OUTPUT_SETTINGS
from .frontend.plan import Plan, loss_name
from .frontend.syntax import parse, parse_file, parse_setting
from .ir.printer import format_graph
from .lowering.schedule import REWRITES
from .ops.shapes import fmt_type
from .runtime import data as data_sources
from .runtime.graphs import ProgramGraphs
from .runtime.params import Params
from .runtime.reporting import Reporter
from .runtime.runner import Runner
from .runtime.train import TrainResult, save_params, train_per_plan

_DTYPE_NAMES = {"float32": "f32", "float64": "f64", "f32": "f32", "f64": "f64"}
# What `compile(no_opt=…)` and `--no-opt` may leave out: name → what it does
OPTIMIZATIONS = dict(REWRITES)


@dataclass(frozen=True)
class InputInfo:
    shape: tuple      # ints and symbolic dimension names
    dtype: str

    def __repr__(self) -> str:
        return fmt_type(self.shape, self.dtype)


def compile(source: str | Path, dtype: str = "float32", seed: int | None = None,  # noqa: A001
            no_opt=(), settings: dict | None = None) -> Program:
    """Compile a `.grad` file (a path) or gradlang source text into a `Program`.

    `dtype` is the float precision of every float value ("float32" or "float64");
    `seed` overrides the training plan's seed (which seeds initialisation, shuffling and dropout);
    `no_opt` names optimisations to leave out (`gradlang.OPTIMIZATIONS`), to debug one or measure it;
    `settings` replaces or adds train settings, as `gradlang run --set` does: name → gradlang text
    (`{"optimizer": "adam(lr: 0.01)", "save": '"model.npz"'}`; a Python number or bool is written as one),
    checked as the file's are.
    """
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    no_opt = frozenset([no_opt] if isinstance(no_opt, str) else no_opt)
    unknown = sorted(no_opt - set(OPTIMIZATIONS))
    if unknown:
        raise GradError(f"no optimisation named {unknown[0]!r}; the optimisations are {', '.join(OPTIMIZATIONS)}")
    if isinstance(source, str) and source != source.strip() and _looks_like_path(source.strip()):
        raise GradError(f"no such file: {source!r}: the name has spaces around it (did you mean "
                        f"{source.strip()!r}?)")
    path = Path(source) if isinstance(source, Path) or _looks_like_path(source) else None
    if path is not None:
        if not path.is_file():
            raise GradError(f"no such file: {path}")
        module, folder, name = parse_file(path), path.resolve().parent, str(path)
    else:
        module, folder, name = parse(source, "<string>"), Path.cwd(), "<string>"
    overrides = settings_from_python(settings)
    elaborated = elaborate_source(module, folder, _DTYPE_NAMES[dtype], overrides)
    program = Program(elaborated, folder, seed, name, no_opt, (module, overrides))
    for setting in OUTPUT_SETTINGS:   # refused now, not after an hour of training
        program.plan_output(setting)
    return program


class _Held:
    """A Program attribute that one of its parts holds (`steps_taken`: the runner's): read there, and
    written there unless `read_only` (a method: the part's own, with its signature and docstring)."""

    def __init__(self, part: str, read_only: bool = False):
        self.part, self.read_only = part, read_only

    def __set_name__(self, owner, name: str):
        self.name = name

    def __get__(self, program, owner=None):
        return self if program is None else getattr(getattr(program, self.part), self.name)

    def __set__(self, program, value):
        if self.read_only:
            raise AttributeError(f"Program.{self.name} cannot be replaced")
        setattr(getattr(program, self.part), self.name, value)


def _held(part: str, count: int, read_only: bool = False) -> list[_Held]:
    return [_Held(part, read_only) for _ in range(count)]


class Program:
    """A compiled gradlang program and its parameters: a facade over the parts that hold its state."""

    # held by the runner (runtime/runner.py): the seed and its generator (initial params, shuffling,
    # dropout); the updates made so far; whether every op of every step is checked for NaN and infinity
    # (slow, for diagnosis); the data-parallel context (runtime/distributed.py; None: training alone)
    seed, rng, steps_taken, check_numerics, distributed = _held("runner", 5)
    input_names, param_names, float_dtype = _held("runner", 3)
    # and its methods: outputs, gradients and evaluation on feeds; the training step; the optimizers
    run, loss, metrics, predict, gradients, evaluate, step = _held("runner", 7, read_only=True)
    optimizer, optimizer_state, load_optimizer_state, updates_per_step, phase_losses = \
        _held("runner", 5, read_only=True)
    # held by the graphs (runtime/graphs.py): the model as trained, its simplified forward graph, the
    # stability rewrites applied, the simplification rules that fired; and the gradient graphs
    model_graph, forward_graph, rewrites, stats = _held("graphs", 4)
    gradient_graph, raw_gradient_graph, loss_output = _held("graphs", 3, read_only=True)

    def __init__(self, elaborated: Elaborated, folder: Path, seed: int | None, name: str = "<string>",
                 no_opt: frozenset = frozenset(), source: tuple | None = None):
        self.elaborated, self.folder, self.name = elaborated, folder, name
        self._source = source   # (module AST, settings given outside it): to elaborate again with others
        plan = Plan(elaborated.plan)
        seed = plan.seed(seed)
        self.graphs = ProgramGraphs(elaborated, plan)
        self.runner = Runner(elaborated, plan, self.graphs, seed, no_opt)
        self._data_dir: Path | None = None
        # the training data's feature statistics, for `standardize: true` sets (None until computed or loaded)
        self.standardization: data_sources.Standardization | None = None

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
        return self.runner.params

    def set_params(self, values: dict) -> None:
        """Copy new values into the params (shapes must match); unknown names are a KeyError. All
        values are checked before any is written."""
        self.runner.params.assign(values)

    @property
    def state(self) -> Params:
        """The program's state (`state NAME : … = init`: batch norm's running statistics, say) by qualified
        name: the live arrays, which each training step writes after its update (`update NAME = …`) and
        evaluation only reads; no optimizer trains them, and they have no gradients. `prog.state[name] =
        value` copies `value` into the live array. Empty for a program without state."""
        return self.runner.state

    @property
    def state_names(self) -> list[str]:
        return list(self.runner.state_names)

    @property
    def losses(self) -> list[str]:
        return [loss_name(n) for n in self.elaborated.losses]

    @property
    def metric_names(self) -> list[str]:
        return list(self.elaborated.metrics)

    @property
    def output_names(self) -> list[str]:
        return list(self.elaborated.outputs)

    @property
    def plan(self) -> dict:
        return dict(self.runner.plan.settings)

    @property
    def phases(self) -> list:
        """The train block's `phases` (PhaseSpec values); empty when it trains one loss."""
        return self.runner.phases

    # ---- graphs and their text ------------------------------------------------------------------
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

    def draw(self, stage: str = "optimized", grad: bool = True):
        """The IR after `stage` (elaborated, grad, optimized) as a `Drawing`: shown inline in Jupyter
        (an SVG where Graphviz is installed, the text form otherwise); `.save("ir.png")` draws a file."""
        from .ir.dot import Drawing
        from .stages import stage_graph
        return Drawing(stage_graph(self, stage, grad and stage != "elaborated"), title=f"{self.name} — {stage}")

    def trace(self, feed: dict, loss: str | None = None, training: bool = False):
        """One forward and backward pass on `feed`: every node of the forward graph with its value and
        d loss / d value, next to its source line (`gradlang trace`; gradlang/trace.py). Prints as text,
        shows as a table in Jupyter, `.save("t.png")` draws it."""
        from .trace import trace
        return trace(self, feed, loss, training)

    def backward_listing(self, loss: str | None = None) -> str:
        """The backward pass written out as gradlang assignments, in execution order (`gradlang grad`): a
        training step's (each `training(a, b)` is a)."""
        from .listing import backward_listing
        return backward_listing(self.graphs.for_mode(self.gradient_graph(loss), training=True), source=self.name)

    # ---- data and training ---------------------------------------------------------------------
    def plan_output(self, setting: str) -> Path | None:
        """The file the plan's `save` or `checkpoint` names, resolved below the program's folder
        (frontend/outputs.py), or None when the plan names none."""
        return self.runner.plan.output(self.folder, setting)

    def load_data(self, name: str | None = None, setting: str = "data") -> dict:
        """The arrays of a data declaration `name`, or of the data source named by a train setting."""
        if name is not None and name not in self.elaborated.data:
            raise KeyError(f"no data declaration named {name!r}")
        spec = self.elaborated.data[name] if name is not None else self.runner.plan.data_spec(setting)
        arrays = data_sources.load(spec, self.folder, self.data_dir)
        origin = self._origin(spec)
        if data_sources.standardizes(spec):
            arrays = self.standardization_for(spec, arrays).apply(arrays, origin, spec.span)
        data_sources.check_fields(arrays, self.elaborated.inputs, self.model_graph, origin, spec.span)
        return arrays

    def _origin(self, spec) -> str:
        files = data_sources.paths(spec, self.folder, self.data_dir)
        return ", ".join(str(f) for f in files) if files else f"{spec.source}(…)"

    def standardization_for(self, spec, arrays: dict | None = None) -> data_sources.Standardization:
        """The statistics that scale a `standardize: true` data set: the training data's (the train block's
        `data`), computed from it when first needed (`arrays`: that set as read, if `spec` is it) and
        saved with the params; loaded back with them."""
        if self.standardization is None:
            training = self.runner.plan.get("data")
            if not data_sources.standardizes(training):
                raise GradError("standardize: true scales a data set with the training data's statistics, but the "
                                "train block's data is not a csv(…, standardize: true) set; standardize that too, "
                                "or scale this one yourself", spec.span)
            if spec != training or arrays is None:
                arrays = data_sources.load(training, self.folder, self.data_dir)
            self.standardization = data_sources.Standardization.of(arrays)
        return self.standardization

    def train(self, data: dict | None = None, epochs: int | None = None, steps: int | None = None,
              batch_size: int | None = None, validation: float | dict | None = None,
              early_stopping: int | None = None, log=None, reporter: Reporter | None = None,
              checkpoint: str | Path | None = None, resume: bool = False,
              checkpoint_interval: float = 0.0, on_nonfinite: str | None = None,
              eval_limit: int | None = None, optimizer: str | None = None,
              log_dir: str | Path | None = None, watch_grads: bool = False) -> TrainResult:
        """Train per the file's plan; arguments override it.

        `optimizer` is gradlang text such as "sgd(lr: 0.1, momentum: 0.9)", checked as the train block's
        (schedules may use `step` and the program's names): it replaces the plan's optimizer for this and
        later training, starting afresh (no momentum or Adam moments carried over); params and the step
        count stay. `log_dir` is a folder where every step, epoch and the final numbers are written
        (`metrics.jsonl`, and TensorBoard event files with the `tensorboard` extra: runtime/metrics_log.py).
        `watch_grads` records each param's gradient norm and update/param ratio at every update
        (`TrainResult.gradient_watch`: its `summary()`, `warnings()`, `histories`; runtime/watch.py).
        `validation` is a fraction of the data to hold out or a dict of arrays; `early_stopping` the
        number of epochs without a better validation loss after which training stops (and the best
        params are restored); `checkpoint` a path written atomically after every epoch, from which
        `resume=True` continues (`checkpoint_interval`: at least this many seconds between writes).
        `log(step, total, loss, seconds)` or a `Reporter` hears progress. `on_nonfinite` ("stop" or
        "skip", else the plan's setting, else "stop") says what a step whose loss is NaN or infinite does.
        `eval_limit` bounds the final evaluation to each set's first examples (0: none; the result's loss
        is then the last epoch's mean training loss)."""
        if optimizer is not None:
            self.use_optimizer(optimizer)
        return train_per_plan(self, data, epochs, steps, batch_size, validation, early_stopping, log, reporter,
                              checkpoint, resume, checkpoint_interval, on_nonfinite, eval_limit, log_dir,
                              watch_grads)

    def use_optimizer(self, text: str) -> None:
        """Train from now on with the optimizer `text` (gradlang, as in the train block), started afresh."""
        if self._source is None:
            raise GradError("this program was not made by gradlang.compile, so its optimizer cannot be replaced")
        module, overrides = self._source
        setting = parse_setting("optimizer", text, "<optimizer>")
        elaborated = elaborate_source(module, self.folder, self.float_dtype, (*overrides, setting))
        self.runner.use_plan(Plan(elaborated.plan))

    def save(self, path: str | Path) -> Path:
        """Write the params and the state (each under its qualified name: no state has a param's name), and
        the standardization statistics if any, to an .npz file."""
        extra = self.standardization.arrays() if self.standardization is not None else {}
        return save_params({**self.params, **self.state, **extra}, path)

    def load(self, path: str | Path) -> None:
        """Read params written by `save` (or `gradlang run`), with their state and standardization statistics."""
        with np.load(path, allow_pickle=False) as archive:
            self.load_arrays({k: archive[k] for k in archive.files}, str(path))

    def load_arrays(self, arrays: dict, origin: str = "the params") -> None:
        """Set the params from named arrays, the state from those named as the program's state, and the
        standardization statistics where they are included. Everything is checked before anything is set."""
        params, statistics = data_sources.Standardization.split(arrays, origin)
        state = {k: params.pop(k) for k in self.runner.state_names if k in params}
        params, state = self.runner.params.checked(params), self.runner.state.checked(state)
        self.runner.params.write(params)
        self.runner.state.write(state)
        if statistics is not None:
            self.standardization = statistics

    def export_onnx(self, path: str | Path, outputs: list[str] | None = None, batch: int | None = None) -> Path:
        """Write the inference graph (dropout off) of `outputs` — by default the `output` declarations —
        as an ONNX model holding the current params; `batch` fixes every symbolic dimension, which
        otherwise stays symbolic. Needs the `onnx` extra; see docs/onnx.md."""
        from .export.onnx import export_onnx
        return export_onnx(self, path, outputs, batch)

    def __repr__(self) -> str:
        inputs = ", ".join(f"{n}: {i!r}" for n, i in self.inputs.items())
        n_values = sum(p.size for p in self.params.values())
        return f"<gradlang.Program {self.name} inputs({inputs}) params={len(self.params)} ({n_values} values)>"

    def _repr_html_(self) -> str:
        """Jupyter's display: inputs, params with their shapes, losses, metrics, the plan, the IR folded."""
        from .display import program_html
        return program_html(self)

    def _repr_markdown_(self) -> str:
        from .display import program_markdown
        return program_markdown(self)


def settings_from_python(settings: dict | None, origin: str = "<settings>") -> tuple:
    """Train settings passed from Python (name → gradlang text, or a number or bool) as parsed settings."""
    if settings is None:
        return ()
    if isinstance(settings, tuple):   # parsed already (the command line's --set)
        return settings
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict of train setting → gradlang text, not {type(settings).__name__}")
    return tuple(parse_setting(name, _setting_text(value), origin) for name, value in settings.items())


def _setting_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return value


def _looks_like_path(source: str) -> bool:
    """A one-line string ending in .grad is a path, unless it reads like a program (has `=`, `#` or spaces)."""
    if "\n" in source or not source.endswith(".grad"):
        return False
    return Path(source).exists() or not any(c in source for c in "=# ")
