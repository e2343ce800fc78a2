"""The train block: what each setting may be, checked where the program compiles, and the plan the run
reads. `check`, `run --dry-run` and `run` refuse a setting alike, at its line, because every rule is here:
the numbers' ranges, the optimizers' settings, the phases of a step, the files a run will write. What only
a run can find wrong (a seed or step count passed from Python) is reported at the setting too (`Plan`).
A program without a train block has an empty plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GradError, Span
from ..ir.graph import Graph
from .outputs import resolve_output
from .settings import COUNT, COUNT_OR_0, FRACTION_BELOW_1, SCALE_SETTING, SEED, Range, Static
from .values import DataSpec, LayerInstance, OptimizerSpec, PhaseSpec, Tensor, describe, show

# each train setting and what it says, in one line (`gradlang run --help`; docs/language.md has the full table)
SETTING_HELP = {
    "data": "the training data: a data declaration or a data source",
    "batch": "mini-batch size (default: the whole data set)",
    "epochs": "passes over the data (default 1)",
    "steps": "optimizer updates; wins over epochs",
    "optimizer": "an optimizer, as sgd(lr: 0.1, momentum: 0.9) (default sgd(lr: 0.01))",
    "seed": "seeds initialisation, shuffling and the validation split (default 0)",
    "save": 'where `run` saves the params, "name.npz" below the program\'s folder',
    "loss": "the name of the loss to train, with several losses",
    "validation": "a fraction of the data held out, or a data source",
    "early_stopping": "stop after this many epochs without a better validation loss",
    "test": "a data source evaluated once after training",
    "checkpoint": 'a file written after every epoch, "name.npz" below the program\'s folder',
    "phases": "[phase(loss: …, params: …, optimizer: …), …] instead of optimizer and loss",
    "on_nonfinite": '"stop" or "skip" a step whose loss is NaN or infinite (default "stop")',
}
TRAIN_SETTINGS = tuple(SETTING_HELP)


@dataclass
class TrainPlan:
    """A train block as elaborated: each setting's value and where it is written."""

    settings: dict = field(default_factory=dict)   # name → value
    spans: dict = field(default_factory=dict)      # name → Span, for errors found at run time
    graph: Graph = field(default_factory=Graph)     # step-dependent settings; input `step`
    span: Span | None = None


# ---- the settings ----------------------------------------------------------------------------------

_COUNT_SETTING = Static("integer", COUNT)
PLAN_NUMBERS = {"steps": _COUNT_SETTING, "epochs": _COUNT_SETTING, "batch": _COUNT_SETTING,
                "early_stopping": Static("integer", COUNT_OR_0), "seed": Static("integer", SEED)}
VALIDATION_FRACTION = Static("number", Range(0, 1, above=True, below=True))
ON_NONFINITE = ("stop", "skip")


def check_setting(name: str, value, span: Span | None) -> None:
    """Settings whose value is checked as soon as it is known: a number in its range, a data source, an
    optimizer, a word from a fixed set, or a file the run will write (below the program's folder: a model
    file must not overwrite files elsewhere)."""
    requirement = PLAN_NUMBERS[name].refusal(value, {}) if name in PLAN_NUMBERS else None
    if requirement is not None:
        raise GradError(f"{name} must be {requirement}, got {show(value)}", span)
    if name in ("data", "test") and not isinstance(value, DataSpec):
        raise GradError(f"train setting {name} must be a data source, got {describe(value)}", span)
    if name == "validation" and not isinstance(value, DataSpec) and VALIDATION_FRACTION.refusal(value, {}):
        raise GradError(f"validation must be a fraction of the data, between 0 and 1, or a data source, got "
                        f"{show(value)}", span)
    if name == "optimizer" and not isinstance(value, OptimizerSpec):
        raise GradError(f"the train block's optimizer must be an optimizer such as sgd(lr: 0.1), got "
                        f"{describe(value)}", span)
    if name == "on_nonfinite" and value not in ON_NONFINITE:
        raise GradError(f'on_nonfinite must be "stop" or "skip", got {value!r}' if isinstance(value, str) else
                        f'on_nonfinite must be "stop" or "skip", got {describe(value)}', span)
    if name in ("save", "checkpoint"):
        if not isinstance(value, str) or not value:
            raise GradError(f"{name} must be a file name in quotes, got {describe(value)}", span)
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or value.startswith("~"):
            raise GradError(f"{name} = {value!r} would write outside the program's folder; a program may only "
                            f"write below its own folder (to write elsewhere, use --out or --checkpoint)", span)


# ---- optimizers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimizerSignature:
    settings: dict          # name → default (None: required), the common ones included
    doc: str


# Every optimizer accepts these: rescale the gradients to a global L2 norm of at most clip_norm (0: off);
# an L2 pull toward zero added to the gradient (AdamW decays the params directly, "decoupled").
COMMON_OPTIMIZER_SETTINGS = {"clip_norm": 0.0, "weight_decay": 0.0}
# (each optimizer's own settings first, as `sgd() has no setting …; known: …` lists them; its own default
# for a common one, AdamW's weight_decay, wins)
OPTIMIZERS = {name: OptimizerSignature({**settings, **{k: v for k, v in COMMON_OPTIMIZER_SETTINGS.items()
                                                       if k not in settings}}, doc)
              for name, settings, doc in [
    ("sgd", {"lr": None, "momentum": 0.0, "nesterov": False},
     "v ← μ·v + g;  p ← p − lr·v   (Nesterov: p ← p − lr·(g + μ·v));  μ = 0 is plain gradient descent."),
    ("adam", {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
     "m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  p ← p − lr·m̂ / (√v̂ + ε), with bias-corrected m̂, v̂."),
    ("adamw", {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
     "Adam with decoupled weight decay: p ← p·(1 − lr·λ) before the Adam step (Loshchilov & Hutter)."),
    ("rmsprop", {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0},
     "s ← α·s + (1−α)·g²;  b ← μ·b + g/(√s + ε);  p ← p − lr·b   (μ = 0: p ← p − lr·g/(√s + ε))."),
    ("adagrad", {"lr": 0.01, "eps": 1e-10}, "s ← s + g²;  p ← p − lr·g / (√s + ε)."),
]}
# What each optimizer setting may be. One that follows the step (a schedule) has its values only as training
# runs, and is not checked here.
OPTIMIZER_SETTINGS = {"lr": SCALE_SETTING, "momentum": FRACTION_BELOW_1, "nesterov": Static("boolean"),
                      "clip_norm": SCALE_SETTING, "weight_decay": SCALE_SETTING, "beta1": FRACTION_BELOW_1,
                      "beta2": FRACTION_BELOW_1, "eps": SCALE_SETTING, "alpha": Static("number", Range(0, 1))}
DEFAULT_OPTIMIZER = OptimizerSpec("sgd", (("lr", 0.01),), None)   # what the train block defaults to


# ---- phases ----------------------------------------------------------------------------------------

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


# ---- the plan a run reads ----------------------------------------------------------------------------

class Plan:
    """The settings of a train block (a TrainPlan, or None for a program without one), as a run reads them."""

    def __init__(self, block=None):
        self.settings: dict = block.settings if block is not None else {}
        self.spans: dict = block.spans if block is not None else {}
        self.span: Span | None = block.span if block is not None else None
        self.graph = block.graph if block is not None else None   # the settings that follow `step`
        self.phases: list = self.settings.get("phases", [])        # PhaseSpec values; empty: one loss

    def get(self, key: str, default=None):
        return self.settings.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.settings

    def span_of(self, key: str) -> Span | None:
        return self.spans.get(key)

    def seed(self, override: int | None = None) -> int:
        """The seed: `override` (from Python or the command line), else the block's, else 0."""
        seed = override if override is not None else self.settings.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            span = self.spans.get("seed") if override is None else None
            raise GradError(f"seed must be a non-negative integer, got {describe(seed)}", span)
        return seed

    def integer(self, key: str, value=None, minimum: int = 1):
        """`value`, else the block's `key` (None when neither is given), checked to be an integer ≥ minimum."""
        value = self.settings.get(key) if value is None else value
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise GradError(f"{key} must be an integer ≥ {minimum}, got {quote_setting(value)}", self.spans.get(key))
        return value

    def data_spec(self, setting: str) -> DataSpec:
        """The data source a setting (`data`, `validation`, `test`) names."""
        spec = self.settings.get(setting)
        if spec is None:
            raise GradError(f"the train block names no {setting} (add `{setting} = …`)"
                            + ("; or pass data to train()" if setting == "data" else ""), self.span)
        if not isinstance(spec, DataSpec):
            raise GradError(f"train setting {setting} must be a data source, got {describe(spec)}",
                            self.spans.get(setting))
        return spec

    def optimizer_spec(self) -> OptimizerSpec:
        """The block's optimizer; sgd(lr: 0.01) when it names none."""
        spec = self.settings.get("optimizer")
        if spec is None:
            return DEFAULT_OPTIMIZER
        if not isinstance(spec, OptimizerSpec):
            raise GradError("the train block's optimizer must be an optimizer such as sgd(lr: 0.1)",
                            self.spans["optimizer"])
        return spec

    def output(self, folder: Path, setting: str) -> Path | None:
        """The file the block's `save` or `checkpoint` names, resolved below `folder` (outputs.py), or None."""
        value = self.settings.get(setting)
        return None if value is None else resolve_output(folder, setting, value, self.spans.get(setting))


def quote_setting(value) -> str:
    """A setting passed from Python or the command line, as an error message quotes it."""
    return repr(value) if isinstance(value, (int, float, str)) else describe(value)
