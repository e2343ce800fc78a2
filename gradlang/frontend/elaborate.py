"""AST → IR: resolve names and imports, evaluate everything static, inline functions and layers,
and emit one IR node per tensor operation, with its shape, dtype and source span.

The result is an `Elaborated` program: the forward graph (outputs: the losses and metrics), the params
with their initialisers, the inputs, the data sources and the training plan. The plan's settings that
vary with the step (a learning-rate schedule) live in a small graph of their own whose input is `step`.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GradError, Span
from ..ir.graph import Graph, check_size, memory_limit
from ..ops.shapes import DTYPES, FLOATS, INTS, MAX_RANK, fmt_type
from ..resources import stdlib_dir
from . import builtins as bi
from .observe import ElaborationObserver
from .plan import TRAIN_SETTINGS, TrainPlan, check_phases, check_setting
from .syntax import ast, parse_file
from .values import (
    Builtin,
    DataSpec,
    Function,
    InitSpec,
    LayerDef,
    LayerInstance,
    ModuleValue,
    Scope,
    Tensor,
    UnboundLayer,
    describe,
)

PRELUDE = ("activations", "losses", "schedules")
MAX_CALL_DEPTH = 200
# Static loops and list comprehensions run at compile time: bound their total work (a nested
# comprehension over two large ranges would otherwise run for hours or exhaust memory).
MAX_UNROLLED = 100_000
# And all the compile-time work, however it is spent: a function that calls itself twice stays 30 calls
# deep while making 2**30 of them. A step is an expression evaluated, a statement run, a graph node made,
# a list item folded into a node or a number put into a constant; a gradient counts
# builtins.GRAD_STEPS_PER_NODE per node it differentiates, and static lists one per LIST_ITEMS_PER_STEP
# items made, copied or read. The examples take at most 56,000 (hvp.grad), the rest under 20,000.
MAX_WORK = 1_000_000
WORK_CHECK_INTERVAL = 1_000
LIST_ITEMS_PER_STEP = 100
MAX_LIST_NESTING = 32   # the most dimensions a list made a tensor may have (NumPy's limit, in its older versions)
# the names training reports its numbers under, beside the metrics' (and `val_<name>` for the validation set)
REPORTED_NAMES = ("loss", "step", "epoch")


@dataclass
class ParamSpec:
    shape: tuple
    dtype: str
    init: InitSpec
    span: Span


@dataclass
class InputSpec:
    shape: tuple
    dtype: str
    span: Span


@dataclass
class Elaborated:
    graph: Graph
    params: dict[str, ParamSpec]
    inputs: dict[str, InputSpec]
    data: dict[str, DataSpec]
    plan: TrainPlan | None
    losses: list[str]
    metrics: list[str]
    float_dtype: str
    outputs: list[str] = field(default_factory=list)   # `output name = …`: what `predict` computes
    # `state name : … = init`: values kept between steps, read like params, never trained (ParamSpecs)
    states: dict[str, ParamSpec] = field(default_factory=dict)
    # the states a training step writes (`update name = …`), each from the graph's output `update:<name>`
    updates: list[str] = field(default_factory=list)


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class Elaborator:
    def __init__(self, float_dtype: str = "f32", observer: ElaborationObserver | None = None):
        self.float = float_dtype
        self.observer = observer   # told what happens (observe.py); None costs a test per hook site
        self.graph = Graph()
        self.params: dict[str, ParamSpec] = {}
        self.states: dict[str, ParamSpec] = {}
        self.updates: dict[str, Span] = {}   # state name → where its update is written
        self.inputs: dict[str, InputSpec] = {}
        self.data: dict[str, DataSpec] = {}
        self.plan: TrainPlan | None = None
        self.overrides: dict = {}   # train setting name → its ast.Assign given outside the file
        self.losses: list[str] = []
        self.metrics: list[str] = []
        self.outputs: list[str] = []
        self.modules: dict[Path, ModuleValue] = {}
        self.loading: list[Path] = []
        self.depth = 0
        self.param_bytes = 0
        self.unrolled = 0     # loop iterations and comprehension items so far (MAX_UNROLLED)
        self.work = 0         # steps of compile-time work so far, graph nodes aside (MAX_WORK)
        self.next_check = 0   # the step count at which spend takes the total again
        self.auto_names: dict[str, int] = {}
        self.param_roots: set[str] = set()          # the first part of every param's name (`net` of net.W)
        self.fresh_suffixes: dict[str, int] = {}    # base name → the last k of base_k a function's layer got
        self.random_keys = 0
        self.builtins = Scope(None, bi.BUILTINS)
        self.prelude = Scope(self.builtins)
        for name in PRELUDE:
            module = self.load_module([name], None, _no_span())
            self.prelude.vars.update({k: v for k, v in module.scope.vars.items() if not k.startswith("_")})

    # ---- modules ---------------------------------------------------------------------------------
    def elaborate_main(self, module: ast.Module, folder: Path | None, overrides: tuple = ()) -> Elaborated:
        """`overrides`: train settings given outside the file (`parse_setting`), each replacing the train
        block's setting of that name or joining it (the last of one name wins); without a train block
        they make one, after the program's last line."""
        for setting in overrides:
            if setting.name not in TRAIN_SETTINGS:
                close = _closest(setting.name, set(TRAIN_SETTINGS))
                raise GradError(f"unknown train setting {setting.name!r}"
                                f"{f' (did you mean {close!r}?)' if close else ''}; known: {', '.join(TRAIN_SETTINGS)}",
                                _setting_name_span(setting))
            self.overrides[setting.name] = setting
        scope = Scope(self.prelude)
        if self.observer is not None:
            self.observer.on_program(scope)
        self.exec_block(module.body, scope, context="main", folder=folder)
        if self.overrides and self.plan is None:
            self.train_block(ast.TrainBlock(next(iter(self.overrides.values())).span, []), scope)
        if not self.losses:
            raise GradError("the program declares no loss; add a line such as `loss = mean((y - pred) ** 2)`",
                            module.span)   # (an empty module's span is its line 1, column 1)
        if self.plan is not None and "loss" in self.plan.settings:
            self.check_trained_loss()
        if self.states and self.plan is not None and "phases" in self.plan.settings:
            first = next(iter(self.states.values()))
            raise GradError("a program with state (batch norm's running statistics, say) cannot train in phases: "
                            "which phase's step would update it? Train it with one loss", self.plan.spans["phases"],
                            (f"the first state is declared at {first.span}",))
        return Elaborated(self.graph, self.params, self.inputs, self.data, self.plan,
                          self.losses, self.metrics, self.float, self.outputs, self.states, list(self.updates))

    def check_trained_loss(self) -> None:
        """The train block's `loss` names a loss the program declares (perhaps after the block)."""
        name, span = self.plan.settings["loss"], self.plan.spans["loss"]
        if not isinstance(name, str):
            raise GradError(f"the train block's loss must name a declared loss, got {describe(name)}", span)
        if ("loss" if name == "loss" else f"loss:{name}") not in self.losses:
            declared = ", ".join(output.split(":", 1)[-1] for output in self.losses)
            raise GradError(f"no loss named {name!r}; the program declares {declared}", span)

    def resolve_module(self, parts: list[str], folder: Path | None, span: Span) -> Path:
        relative = Path(*parts).with_suffix(".grad")
        bases = [stdlib_dir()] + ([folder] if folder is not None else [])
        for base in bases:
            path = base / relative
            if path.is_file():
                resolved, root = path.resolve(), base.resolve()
                if not resolved.is_relative_to(root):   # a symbolic link out of the folder
                    raise GradError(f"import {'.'.join(parts)} refused: {path} leads to {resolved}, outside "
                                    f"{root} (a program imports only from the standard library and from below "
                                    "its own folder)", span)
                return resolved
        raise GradError(f"no module named {'.'.join(parts)!r} (looked for {relative} in the standard library"
                        f"{' and in ' + str(folder) if folder is not None else ''})", span)

    def load_module(self, parts: list[str], folder: Path | None, span: Span) -> ModuleValue:
        path = self.resolve_module(parts, folder, span)
        if path in self.modules:
            return self.modules[path]
        if path in self.loading:
            chain = " → ".join(p.stem for p in self.loading[self.loading.index(path):] + [path])
            raise GradError(f"import cycle: {chain}", span)
        self.loading.append(path)
        try:
            in_stdlib = path.is_relative_to(stdlib_dir().resolve())
            display = f"<stdlib>/{path.relative_to(stdlib_dir().resolve())}" if in_stdlib else str(path)
            tree = _parse_cached(path, display)
            is_prelude = in_stdlib and path.stem in PRELUDE
            scope = Scope(self.builtins if is_prelude else self.prelude)
            self.exec_block(tree.body, scope, context="module", folder=path.parent)
        finally:
            self.loading.pop()
        module = ModuleValue(".".join(parts), scope)
        self.modules[path] = module
        return module

    # ---- statements ------------------------------------------------------------------------------
    def exec_block(self, body: list, scope: Scope, context: str, folder: Path | None = None,
                   layer: LayerInstance | None = None) -> None:
        for stmt in body:
            self.exec_stmt(stmt, scope, context, folder, layer)

    def _allowed(self, stmt, context: str, what: str, *contexts: str) -> None:
        if context not in contexts:
            where = {"main": "at the top level of a program", "module": "in an imported module",
                     "layer": "in a layer body", "function": "in a function body",
                     "train": "in a train block"}[context]
            raise GradError(f"{what} is not allowed {where}", stmt.span)

    def check_assertion(self, stmt, scope: Scope) -> None:
        """`assert cond, "message"`: how a function or layer refuses settings it cannot work with."""
        cond, message = self.eval(stmt.cond, scope), self.eval(stmt.message, scope)
        if not isinstance(message, str):
            raise GradError(f"an assert's message must be a string, got {describe(message)}", stmt.message.span)
        if isinstance(cond, Tensor) or not isinstance(cond, (bool, int, float)):
            raise GradError(f"assert needs a condition known at compile time (a number or true/false), got "
                            f"{describe(cond)}", stmt.cond.span)
        if not cond:
            raise GradError(message, stmt.span)

    def exec_stmt(self, stmt, scope: Scope, context: str, folder: Path | None, layer: LayerInstance | None):
        self.work += 1
        if self.work > self.next_check:
            self.spend(stmt.span, 0)
        if isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value, scope)
            value = self.bind(stmt.name, value, scope, layer, stmt.span, context)
            self.define(scope, stmt.name, value, stmt)
        elif isinstance(stmt, (ast.Import, ast.FromImport)):
            self._allowed(stmt, context, "import", "main", "module")
            self.run_import(stmt, scope, folder)
        elif isinstance(stmt, ast.FnDef):
            self.define(scope, stmt.name, Function(stmt.name, stmt.formals, stmt.body, scope, stmt.span), stmt)
        elif isinstance(stmt, ast.LayerDef):
            self._allowed(stmt, context, "a layer definition", "main", "module")
            self.define(scope, stmt.name, LayerDef(stmt, scope), stmt)
        elif isinstance(stmt, ast.InputDecl):
            self._allowed(stmt, context, "an input declaration", "main")
            self.define(scope, stmt.name, self.declare_input(stmt, scope), stmt)
        elif isinstance(stmt, ast.ParamDecl):
            self._allowed(stmt, context, "a param declaration", "main", "layer")
            prefix = f"{layer.name}." if layer is not None else ""
            tensor = self.declare_param(stmt, prefix + stmt.name, scope)
            if layer is not None:
                layer.params.append(tensor)
            self.define(scope, stmt.name, tensor, stmt)
        elif isinstance(stmt, ast.StateDecl):
            self._allowed(stmt, context, "a state declaration", "main", "layer")
            prefix = f"{layer.name}." if layer is not None else ""
            self.define(scope, stmt.name, self.declare_param(stmt, prefix + stmt.name, scope, "state"), stmt)
        elif isinstance(stmt, ast.Update):
            self._allowed(stmt, context, "update", "main", "layer", "function")
            self.update_state(stmt, scope)
        elif isinstance(stmt, ast.DataDecl):
            self._allowed(stmt, context, "a data declaration", "main")
            value = self.eval(stmt.value, scope)
            if not isinstance(value, DataSpec):
                raise GradError(f"`data {stmt.name} = …` needs a data source such as two_moons(n: 100), "
                                f"got {describe(value)}", stmt.value.span)
            self.data[stmt.name] = value
            self.define(scope, stmt.name, value, stmt)
        elif isinstance(stmt, ast.LossDecl):
            self._allowed(stmt, context, "a loss declaration", "main")
            if stmt.name == "loss":   # `loss loss = …` would be a second thing called `loss`
                raise GradError("a loss cannot be named 'loss' (the unnamed loss is called that); write "
                                "`loss = …`, or give it another name", stmt.span)
            if f"metric:{stmt.name}" in self.graph.outputs:
                raise GradError(f"{stmt.name!r} is already a metric; training reports losses and metrics by "
                                "name, so give the loss another", _name_span(stmt, "loss"))
            name = "loss" if stmt.name is None else f"loss:{stmt.name}"
            self.declare_output(name, self.eval(stmt.value, scope), stmt, "loss", float_only=True)
            self.losses.append(name)
            self.define(scope, stmt.name or "loss", Tensor(self.graph, self.graph.outputs[name]), stmt)
        elif isinstance(stmt, ast.MetricDecl):
            self._allowed(stmt, context, "a metric declaration", "main")
            self.check_metric_name(stmt)
            value = self.eval(stmt.value, scope)
            if isinstance(value, Tensor) and value.dtype not in FLOATS:
                value = self.cast(value, self.float, stmt.value.span)
            self.declare_output(f"metric:{stmt.name}", value, stmt, "metric", float_only=True)
            self.metrics.append(stmt.name)
            self.define(scope, stmt.name, value, stmt)
        elif isinstance(stmt, ast.OutputDecl):
            self._allowed(stmt, context, "an output declaration", "main")
            name = f"output:{stmt.name}"
            if name in self.graph.outputs:
                raise GradError(f"output {stmt.name!r} is declared twice", stmt.span)
            value = self.to_tensor(self.eval(stmt.value, scope), stmt.value.span)
            if value.graph is not self.graph:
                raise GradError("an output must be computed from the model", stmt.value.span)
            if self.graph.data(value.node)["name"] is None:
                self.graph.data(value.node)["name"] = stmt.name
            self.graph.outputs[name] = value.node
            self.outputs.append(stmt.name)
            self.define(scope, stmt.name, value, stmt)
        elif isinstance(stmt, ast.TrainBlock):
            self._allowed(stmt, context, "a train block", "main")
            self.train_block(stmt, scope)
        elif isinstance(stmt, ast.ForwardDef):
            self._allowed(stmt, context, "forward", "layer")
            layer.forward = Function("forward", stmt.formals, stmt.body, scope, stmt.span)
        elif isinstance(stmt, ast.Assert):
            self.check_assertion(stmt, scope)
        elif isinstance(stmt, ast.Return):
            self._allowed(stmt, context, "return", "function")
            raise _Return(self.eval(stmt.value, scope))
        elif isinstance(stmt, ast.For):
            items = self.eval(stmt.iterable, scope)
            if not isinstance(items, list):
                raise GradError(f"a for loop runs over a list or range(...), got {describe(items)}",
                                stmt.iterable.span)
            self.count_unrolled(len(items), stmt.iterable.span)
            for item in items:
                self.define(scope, stmt.var, item, stmt)
                self.exec_block(stmt.body, scope, context, folder, layer)
        elif isinstance(stmt, ast.If):
            cond = self.eval(stmt.cond, scope)
            if isinstance(cond, Tensor):
                raise GradError("`if` needs a condition known at compile time; for tensors use where(cond, a, b)",
                                stmt.cond.span)
            self.exec_block(stmt.then if cond else stmt.orelse, scope, context, folder, layer)
        else:  # pragma: no cover - the grammar produces nothing else
            raise GradError(f"unsupported statement {type(stmt).__name__}", stmt.span)

    def define(self, scope: Scope, name: str, value, stmt) -> None:
        """Bind a statement's name in `scope`, and tell the observer."""
        scope.vars[name] = value
        if self.observer is not None:
            self.observer.on_bind(name, value, scope, stmt)

    def run_import(self, stmt: ast.Import | ast.FromImport, scope: Scope, folder: Path | None) -> None:
        """`import a.b [as c]` binds the module, `from a.b import x, y` the names it lists."""
        if self.observer is not None:
            self.observer.on_import(stmt, self.resolve_module(stmt.module, folder, stmt.span), scope)
        module = self.load_module(stmt.module, folder, stmt.span)
        if isinstance(stmt, ast.Import):
            scope.vars[stmt.alias or stmt.module[-1]] = module
        else:
            for name in stmt.names:
                if name not in module.scope.vars:
                    raise GradError(f"module {module.name!r} has no {name!r}", stmt.span)
                scope.vars[name] = module.scope.vars[name]
        if self.observer is not None:
            self.observer.on_imported(stmt, module, scope)

    def check_metric_name(self, stmt: ast.MetricDecl) -> None:
        """A metric is reported beside the loss, the epoch's numbers and the validation set's (`val_…`)
        under its own name: one of theirs would replace them (`metric loss = …` would stand in for the
        loss, and for the validation loss early stopping watches)."""
        name = stmt.name
        taken = "the program has a loss of that name" if f"loss:{name}" in self.graph.outputs else \
            f"training reports its {name} under that name" if name in REPORTED_NAMES else \
            "training reports the validation set's numbers as val_<name>" if name.startswith("val_") else None
        if taken:
            raise GradError(f"a metric cannot be named {name!r}: {taken}; give it another", _name_span(stmt, "metric"))

    def bind(self, name: str, value, scope: Scope, layer: LayerInstance | None, span: Span,
             context: str = "main"):
        """Give a value its name: a layer gets its params (qualified by the name), a tensor a print name."""
        prefix = f"{layer.name}." if layer is not None else ""
        if context == "function" and self.layers_of(value, span)[0]:
            # a function may run many times: each run's layers get fresh names (the search for one goes on
            # from the last name given, so that n runs take n steps, not n²)
            base = name
            k = self.fresh_suffixes.get(base, 1)
            while name in self.param_roots:
                k += 1
                name = f"{base}_{k}"
            self.fresh_suffixes[base] = k
        value = self.instantiate_all(value, prefix + name, span)
        if layer is not None:
            for instance in self.layers_of(value, span)[1]:
                layer.params.extend(instance.params)
        if isinstance(value, Tensor) and value.graph is self.graph:
            data = self.graph.data(value.node)
            if data["name"] is None and data["op"] not in ("input", "param", "state"):
                data["name"] = prefix + name
        return value

    def instantiate_all(self, value, name: str, span: Span):
        """Instantiate every unbound layer in `value` (nested lists named name.0, name.0.1, …)."""
        if isinstance(value, UnboundLayer):
            return self.instantiate(value, name)
        if isinstance(value, list) and self.layers_of(value, span)[0]:
            return [self.instantiate_all(v, f"{name}.{i}", span) for i, v in enumerate(value)]
        return value

    def layers_of(self, value, span: Span, walked: dict | None = None) -> tuple[bool, tuple]:
        """Whether `value` is or holds (in nested lists) a layer not yet named, and the named layers it
        holds, each once. Each list walked counts as work; one that a list holds many times over is
        walked once (`walked`: id → answer, for the lists of this walk, which are alive throughout it)."""
        if isinstance(value, UnboundLayer):
            return True, ()
        if isinstance(value, LayerInstance):
            return False, (value,)
        if not isinstance(value, list):
            return False, ()
        walked = {} if walked is None else walked
        if id(value) not in walked:
            self.spend_items(span, len(value))
            parts = [self.layers_of(v, span, walked) for v in value
                     if isinstance(v, (list, UnboundLayer, LayerInstance))]
            walked[id(value)] = (any(unbound for unbound, _ in parts),
                                 tuple(dict.fromkeys(i for _, named in parts for i in named)))
        return walked[id(value)]

    def declare_output(self, name: str, value, stmt, what: str, float_only: bool) -> None:
        if name in self.graph.outputs:
            raise GradError(f"{what} {name.split(':')[-1]!r} is declared twice", stmt.span)
        if not isinstance(value, Tensor):
            value = self.to_tensor(value, stmt.value.span)
        if value.graph is not self.graph:
            raise GradError(f"a {what} must be computed from the model, not the training plan", stmt.value.span)
        if value.shape != ():
            raise GradError(f"a {what} must be a float scalar, got {fmt_type(value.shape, value.dtype)}; "
                            "reduce it with mean(...) or sum(...)", stmt.value.span)
        if float_only and value.dtype not in FLOATS:
            raise GradError(f"a {what} must be a float scalar, got {fmt_type(value.shape, value.dtype)}; "
                            "convert it with float(...)", stmt.value.span)
        if self.graph.data(value.node)["name"] is None:
            self.graph.data(value.node)["name"] = name.split(":")[-1]
        self.graph.outputs[name] = value.node

    # ---- declarations ----------------------------------------------------------------------------
    def resolve_dtype(self, spec: ast.TypeSpec, default: str) -> str:
        if spec.dtype is None:
            return default
        if spec.dtype == "float" or spec.dtype in FLOATS:
            return self.float   # the program's float precision decides (float32 unless asked otherwise)
        if spec.dtype in DTYPES:
            return spec.dtype
        raise GradError(f"unknown type {spec.dtype!r}; expected one of f32, f64, i32, i64, bool", spec.span)

    def eval_dims(self, spec: ast.TypeSpec, scope: Scope, symbolic_ok: bool) -> tuple:
        dims = []
        for expr in spec.dims or []:
            if isinstance(expr, ast.Name) and not scope.defines(expr.id):
                if not symbolic_ok:
                    raise GradError(f"unknown name {expr.id!r}: a param's dimensions must be known at compile "
                                    "time (symbolic dimensions such as B belong in input declarations)", expr.span)
                dims.append(expr.id)
                continue
            value = self.eval(expr, scope)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                shown = repr(value) if type(value) in (int, float) else describe(value)
                raise GradError(f"a dimension must be a non-negative integer, got {shown}", expr.span)
            dims.append(value)
        if len(dims) > MAX_RANK:
            raise GradError(f"a tensor has at most {MAX_RANK} dimensions (NumPy's limit), got {len(dims)}", spec.span)
        return tuple(dims)

    def declare_input(self, stmt: ast.InputDecl, scope: Scope) -> Tensor:
        if stmt.name in self.inputs:
            raise GradError(f"input {stmt.name!r} is declared twice", stmt.span)
        dtype = self.resolve_dtype(stmt.type, self.float)
        shape = self.eval_dims(stmt.type, scope, symbolic_ok=True)
        check_size(shape, dtype, f"input {stmt.name}", stmt.type.span)
        self.inputs[stmt.name] = InputSpec(shape, dtype, stmt.span)
        node = self.graph.add("input", (), {"name": stmt.name, "shape": shape, "dtype": dtype}, stmt.span)
        return Tensor(self.graph, node)

    def declare_param(self, stmt: ast.ParamDecl | ast.StateDecl, qualified: str, scope: Scope,
                      kind: str = "param") -> Tensor:
        """A param, or (`kind` "state") a state: declared alike, but a state starts at zeros unless told
        otherwise, and no optimizer trains it."""
        if qualified in self.params or qualified in self.states:
            other = "param" if qualified in self.params else "state"
            raise GradError(f"{kind} {qualified!r} is declared twice" if other == kind else
                            f"{kind} {qualified!r}: the name is already a {other}'s", stmt.span)
        dtype = self.resolve_dtype(stmt.type, self.float)
        if dtype not in FLOATS:
            raise GradError(f"a {kind} must be a float, got {dtype}", stmt.type.span)
        shape = self.eval_dims(stmt.type, scope, symbolic_ok=False)
        self.param_bytes += check_size(shape, dtype, f"{kind} {qualified}", stmt.type.span)
        if self.param_bytes > memory_limit():
            raise GradError(f"the params declared so far need {self.param_bytes:,} bytes, more than the limit of "
                            f"{memory_limit():,} bytes (the machine's memory, or $GRADLANG_MAX_BYTES)", stmt.span)
        if stmt.init is None:
            init = bi.default_init(shape) if kind == "param" else InitSpec("zeros")
        else:
            init = self.eval(stmt.init, scope)
        if isinstance(init, Builtin) and init.name in bi.INITIALIZERS:
            init = init.impl(self, stmt.init.span)
        if isinstance(init, (int, float)) and not isinstance(init, bool):
            init = InitSpec("constant", (float(init),))
        elif isinstance(init, list):
            init = self.literal_init(init, shape, stmt.init.span)
        if not isinstance(init, InitSpec):
            raise GradError(f"a {kind}'s initialiser must be one of {', '.join(bi.INITIALIZERS)} or a number, "
                            f"got {describe(init)}", (stmt.init or stmt).span)
        _fitting_all(np.asarray(init.args, dtype=np.float64), dtype, (stmt.init or stmt).span)
        (self.params if kind == "param" else self.states)[qualified] = ParamSpec(shape, dtype, init, stmt.span)
        self.param_roots.add(qualified.split(".")[0])
        node = self.graph.add(kind, (), {"name": qualified, "shape": shape, "dtype": dtype}, stmt.span)
        return Tensor(self.graph, node)

    def update_state(self, stmt: ast.Update, scope: Scope) -> None:
        """`update NAME = value`: the state NAME names takes `value` after each training step (an output
        `update:<state>` of the graph, computed by the step from its own forward values; no gradient is
        taken of it). Evaluation never writes a state; a training step writes each at most once."""
        where = _name_span(stmt, "update")
        try:
            target = scope.lookup(stmt.name)
        except KeyError:
            close = _closest(stmt.name, scope.names())
            raise GradError(f"unknown name {stmt.name!r}" + (f"; did you mean {close!r}?" if close else "")
                            + " (`update` writes a state declared with `state NAME : [shape] = init`)", where) from None
        if not isinstance(target, Tensor) or target.graph is not self.graph or self.graph.op(target.node) != "state":
            what = f"the param {self.graph.attrs(target.node)['name']!r}" if isinstance(target, Tensor) \
                and target.graph is self.graph and self.graph.op(target.node) == "param" else describe(target)
            raise GradError(f"`update` writes a state (declared `state {stmt.name} : [shape] = init`), but "
                            f"{stmt.name} is {what}", where)
        name = self.graph.attrs(target.node)["name"]
        value = self.eval(stmt.value, scope)   # (first: a call in it may update the state too)
        if name in self.updates:
            first = self.updates[name]
            raise GradError(f"state {name!r} is updated twice (first at {first}): a training step writes each state "
                            "once (is its layer called twice?)", stmt.span)
        if not isinstance(value, Tensor):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise GradError(f"the new value of state {name!r} must be a tensor or a number, got "
                                f"{describe(value)}", stmt.value.span)
            value = self.to_tensor(value, stmt.value.span, like=target)
        if value.graph is not self.graph:
            raise GradError("a state's new value must be computed from the model, not the training plan",
                            stmt.value.span)
        if value.dtype != target.dtype:
            raise GradError(f"state {name!r} is {fmt_type(target.shape, target.dtype)}, but its new value is "
                            f"{fmt_type(value.shape, value.dtype)}; convert it with float(...)", stmt.value.span)
        if value.shape != target.shape:
            hint = "; reduce it over the batch (mean(..., axis: 0))" if len(value.shape) > len(target.shape) else ""
            raise GradError(f"state {name!r} is {fmt_type(target.shape, target.dtype)}, but its new value is "
                            f"{fmt_type(value.shape, value.dtype)}{hint}", stmt.value.span)
        self.updates[name] = self.graph.site or stmt.span   # (in library code: the user's call)
        self.graph.outputs[f"update:{name}"] = value.node

    def literal_init(self, values: list, shape: tuple, span: Span) -> InitSpec:
        array = self.array_of(values, "a param's initial values", span)
        if array.shape != shape:
            raise GradError(f"the initial values have shape {list(array.shape)} but the param is declared "
                            f"{list(shape)}", span)
        return InitSpec("values", tuple(array.reshape(-1).tolist()))

    def train_block(self, stmt: ast.TrainBlock, scope: Scope) -> None:
        if self.plan is not None:
            raise GradError("the program has two train blocks", stmt.span)
        plan = TrainPlan(span=stmt.span)
        step = plan.graph.add("input", (), {"name": "step", "shape": (), "dtype": self.float}, stmt.span)
        inner = Scope(scope, {"step": Tensor(plan.graph, step)})
        written = {setting.name for setting in stmt.body}
        body = [self.overrides.get(setting.name, setting) for setting in stmt.body]
        body += [setting for name, setting in self.overrides.items() if name not in written]
        for setting in body:
            if setting.name not in TRAIN_SETTINGS:
                raise GradError(f"unknown train setting {setting.name!r}; known: {', '.join(TRAIN_SETTINGS)}",
                                setting.span)
            if setting.name in plan.settings:
                raise GradError(f"train setting {setting.name!r} is given twice", setting.span)
            if setting.name == "loss" and isinstance(setting.value, ast.Name):
                value = setting.value.id   # names a declared loss
            else:
                value = self.eval(setting.value, inner)
            plan.settings[setting.name] = value
            plan.spans[setting.name] = setting.value.span
            check_setting(setting.name, value, setting.value.span)
        if "phases" in plan.settings:
            check_phases(plan.settings, plan.spans)
        self.plan = plan

    # ---- layers and calls -----------------------------------------------------------------------
    def instantiate(self, unbound: UnboundLayer, name: str) -> LayerInstance:
        node = unbound.layer.node
        scope = Scope(unbound.layer.closure)
        self.bind_formals(node.name, node.formals, unbound.args, unbound.kwargs, scope, unbound.span,
                          unbound.layer.closure)
        instance = LayerInstance(name, scope, None)
        scope.vars["self"] = instance
        self.with_depth(lambda: self.exec_block(node.body, scope, "layer", layer=instance), unbound.span,
                        node.name, node.span)
        return instance

    def bind_formals(self, fname: str, formals: list, args: list, kwargs: dict, scope: Scope, span: Span,
                     defaults_scope: Scope) -> None:
        names = [f.name for f in formals]
        if len(args) > len(formals):
            raise GradError(f"{fname}() takes {len(formals)} argument{'s' * (len(formals) != 1)} "
                            f"but {len(args)} were given", span)
        for kw in kwargs:
            if kw not in names:
                raise GradError(f"{fname}() has no parameter named {kw!r}"
                                f"{'; its parameters are ' + ', '.join(names) if names else ''}", span)
        for i, formal in enumerate(formals):
            if i < len(args):
                if formal.name in kwargs:
                    raise GradError(f"{fname}() got two values for {formal.name!r}", span)
                scope.vars[formal.name] = args[i]
            elif formal.name in kwargs:
                scope.vars[formal.name] = kwargs[formal.name]
            elif formal.default is not None:
                scope.vars[formal.name] = self.eval(formal.default, defaults_scope)
            else:
                raise GradError(f"{fname}() is missing its argument {formal.name!r}", span)
        if self.observer is not None:
            for formal in formals:
                self.observer.on_bind(formal.name, scope.vars[formal.name], scope, formal)

    def with_depth(self, thunk, span: Span, fname: str, definition: Span):
        """Run a call's body (of the function or layer defined at `definition`), bounding the depth."""
        if self.depth >= MAX_CALL_DEPTH:
            raise GradError(f"calls nested more than {MAX_CALL_DEPTH} deep (is {fname} recursive without end?)",
                            span)
        self.depth += 1
        outer_site = self.graph.site
        if outer_site is None and _in_stdlib(definition) and not _in_stdlib(span):
            self.graph.site = span   # entering library code from the user's program: remember the call
        if self.observer is not None:
            self.observer.on_call(span)
        error = None
        try:
            return thunk()
        except GradError as err:
            error = err
            # an error inside the standard library is reported at the user's call, with the inner place noted
            if err.span is not None and _in_stdlib(err.span) and not _in_stdlib(span):
                error = GradError(f"{err.message} (in {fname}, {err.span})", span, err.notes)
                raise error from None
            raise
        finally:
            self.depth -= 1
            self.graph.site = outer_site
            if self.observer is not None:
                self.observer.on_call_end(span, error)

    def call(self, func, args: list, kwargs: dict, span: Span):
        if isinstance(func, Builtin):
            return bi.call_builtin(self, func, args, kwargs, span)
        if isinstance(func, Function):
            scope = Scope(func.closure)
            self.bind_formals(func.name, func.formals, args, kwargs, scope, span, func.closure)
            return self.with_depth(lambda: self.run_body(func, scope), span, func.name, func.span)
        if isinstance(func, LayerDef):
            return UnboundLayer(func, args, kwargs, span)
        if isinstance(func, UnboundLayer):   # dense(2, 3)(x): a layer used once, named automatically
            base = func.layer.node.name
            self.auto_names[base] = self.auto_names.get(base, 0) + 1
            func = self.instantiate(func, f"{base}_{self.auto_names[base]}")
        if isinstance(func, LayerInstance):
            if func.forward is None:
                raise GradError(f"layer {func.name!r} has no forward(...) definition", span)
            return self.call(func.forward, args, kwargs, span)
        raise GradError(f"{describe(func)} cannot be called", span)

    def run_body(self, func: Function, scope: Scope):
        if not isinstance(func.body, list):
            return self.eval(func.body, scope)
        try:
            self.exec_block(func.body, scope, "function")
        except _Return as ret:
            return ret.value
        raise GradError(f"function {func.name} ends without `return`", func.span)

    # ---- expressions ----------------------------------------------------------------------------
    def eval(self, node, scope: Scope):
        self.work += 1   # (spend's count, without its check at every step: see next_check)
        if self.work > self.next_check:
            self.spend(node.span, 0)
        value = getattr(self, "eval_" + type(node).__name__)(node, scope)
        if self.observer is not None:
            self.observer.on_expression(node, value, scope)
        return value

    def spend(self, span: Span, steps: int) -> None:
        """Count steps of compile-time work, the graph's nodes with them, and refuse at `span` the step
        that takes the total past MAX_WORK. The total is taken again within the next WORK_CHECK_INTERVAL
        steps, or at the limit if that is nearer: each step makes a few nodes at most (those that make
        many, such as a gradient or a fold, spend as many steps first)."""
        self.work += steps
        total = self.work + len(self.graph)
        self.next_check = self.work + min(MAX_WORK - total, WORK_CHECK_INTERVAL)
        if total > MAX_WORK:
            raise GradError(f"compiling this program takes more than {MAX_WORK:,} steps of work (expressions "
                            "evaluated, statements run, graph nodes made and differentiated, list items used, in "
                            "all); does a function call itself more than once per call?", span)

    def eval_Number(self, node, scope):
        return node.value

    def eval_String(self, node, scope):
        if "\0" in node.value:   # no file name, setting or label holds one; the OS cuts a path short at it
            raise GradError("a string cannot hold a NUL character (\\x00)", node.span)
        return node.value

    def eval_Bool(self, node, scope):
        return node.value

    def eval_Name(self, node, scope):
        try:
            return scope.lookup(node.id)
        except KeyError:
            close = _closest(node.id, scope.names())
            raise GradError(f"unknown name {node.id!r}" + (f"; did you mean {close!r}?" if close else ""),
                            node.span) from None

    def eval_ListExpr(self, node, scope):
        return [self.eval(item, scope) for item in node.items]

    def eval_ListComp(self, node, scope):
        items = self.eval(node.iterable, scope)
        if not isinstance(items, list):
            raise GradError(f"a list comprehension runs over a list or range(...), got {describe(items)}",
                            node.iterable.span)
        self.count_unrolled(len(items), node.iterable.span)
        out = []
        for item in items:
            out.append(self.eval(node.item, Scope(scope, {node.var: item})))
        return out

    def spend_items(self, span: Span, items: int) -> None:
        """Count the work of making, copying or reading through `items` items of a static list or
        string: a step per LIST_ITEMS_PER_STEP of them (an item costs tens of nanoseconds, a step
        microseconds)."""
        self.spend(span, -(-items // LIST_ITEMS_PER_STEP))

    def count_unrolled(self, n: int, span: Span) -> None:
        self.unrolled += n
        if self.unrolled > MAX_UNROLLED:
            raise GradError(f"static loops and list comprehensions unroll more than {MAX_UNROLLED:,} iterations "
                            f"in all (this one adds {n:,}); the program would take too long and too much memory "
                            "to compile", span)

    def eval_Neg(self, node, scope):
        value = self.eval(node.operand, scope)
        if isinstance(value, Tensor):
            return Tensor(value.graph, value.graph.add("neg", (value.node,), {}, node.span))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
        raise GradError(f"cannot negate {describe(value)}", node.span)

    def eval_BinOp(self, node, scope):
        left, right = self.eval(node.left, scope), self.eval(node.right, scope)
        return bi.binary(self, node.op, left, right, node.span)

    def eval_Call(self, node, scope):
        func = self.eval(node.func, scope)
        args = [self.eval(a, scope) for a in node.args]
        kwargs = {}
        for kw in node.kwargs:
            if kw.name in kwargs:
                raise GradError(f"keyword argument {kw.name!r} is given twice", kw.span)
            kwargs[kw.name] = self.eval(kw.value, scope)
        return self.call(func, args, kwargs, node.span)

    def eval_Attribute(self, node, scope):
        value = self.eval(node.value, scope)
        if node.name.isdigit():   # `layers.0`: the spelling of a param's printed name, `layers[0]`
            if not isinstance(value, list):
                raise GradError(f"`.{node.name}` picks an item of a list (as param names print a layer's position), "
                                f"but this is {describe(value)}; write [{node.name}] to index it", node.span)
            if int(node.name) >= len(value):
                raise GradError(f"`.{node.name}` is past the end of a list of {len(value)}", node.span)
            return value[int(node.name)]
        if isinstance(value, ModuleValue):
            if node.name not in value.scope.vars:
                close = _closest(node.name, set(value.scope.vars))
                raise GradError(f"module {value.name!r} has no {node.name!r}"
                                + (f"; did you mean {close!r}?" if close else ""), node.span)
            return value.scope.vars[node.name]
        if isinstance(value, LayerInstance):
            if node.name == "params":
                self.spend_items(node.span, len(value.params))
                return list(value.params)
            if node.name in value.scope.vars and node.name != "self":
                return value.scope.vars[node.name]
            raise GradError(f"layer {value.name!r} has no {node.name!r}", node.span)
        if isinstance(value, Tensor):
            if node.name == "shape":
                return list(value.shape)
            if node.name == "T":
                return bi.transpose(self, node.span, value)
        raise GradError(f"{describe(value)} has no attribute {node.name!r}", node.span)

    def eval_Index(self, node, scope):
        value = self.eval(node.value, scope)
        items = [ast_slice(self, i, scope) if isinstance(i, ast.Slice) else self.eval(i, scope)
                 for i in node.items]
        return bi.index(self, node.span, value, items)

    # ---- tensor helpers -------------------------------------------------------------------------
    def emit(self, op: str, operands: list[Tensor], span: Span, **attrs) -> Tensor:
        graphs = {t.graph for t in operands}
        if len(graphs) > 1:
            raise GradError("a training-plan value (which depends on `step`) cannot be mixed with the model's "
                            "tensors", span)
        graph = graphs.pop() if graphs else self.graph
        return Tensor(graph, graph.add(op, [t.node for t in operands], attrs, span))

    def to_tensor(self, value, span: Span, like: Tensor | None = None, graph: Graph | None = None) -> Tensor:
        """A static value as a constant tensor; Python numbers take `like`'s dtype where it fits."""
        if isinstance(value, Tensor):
            return value
        graph = like.graph if like is not None else (graph or self.graph)
        if isinstance(value, bool):
            return Tensor(graph, graph.const(value, "bool", span))
        if isinstance(value, (int, float)):
            dtype = self.float
            if like is not None and (like.dtype in FLOATS or like.dtype in INTS and isinstance(value, int)):
                dtype = like.dtype
            return Tensor(graph, graph.const(_fitting(value, dtype, span), dtype, span))
        if isinstance(value, list):
            array = self.array_of(value, "a list used as a tensor", span)
            dtype = like.dtype if like is not None and like.dtype in FLOATS else self.float
            return Tensor(graph, graph.const(array, dtype, span))
        raise GradError(f"expected a tensor or a number, got {describe(value)}", span)

    def array_of(self, values: list, what: str, span: Span) -> np.ndarray:
        """A static (nested) list of numbers as a float64 array. Its numbers are counted as work, and its
        size checked, before the array is made: a list may hold one inner list many times over, cheap to
        build and huge as an array."""
        count = _numbers_in(values, {}, span)
        self.spend(span, count)
        check_size((count,), "f64", what, span)
        try:
            return np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise GradError(f"{what} must hold numbers in a regular (rectangular) shape", span) from None

    def cast(self, value: Tensor, dtype: str, span: Span) -> Tensor:
        return value if value.dtype == dtype else self.emit("cast", [value], span, dtype=dtype)


def ast_slice(el: Elaborator, node: ast.Slice, scope: Scope) -> slice:
    parts = []
    for part in (node.start, node.stop, node.step):
        value = None if part is None else el.eval(part, scope)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise GradError(f"slice bounds must be integers known at compile time, got {describe(value)}", part.span)
        if part is node.step and value == 0:
            raise GradError("a slice's step cannot be zero", part.span)
        parts.append(value)
    return slice(*parts)


def _numbers_in(values: list, counted: dict, span: Span, depth: int = 1) -> int:
    """How many numbers a nested list holds, in all; an inner list that recurs is walked once."""
    if depth > MAX_LIST_NESTING:
        raise GradError(f"a list nested more than {MAX_LIST_NESTING} deep cannot be a tensor", span)
    if id(values) not in counted:
        counted[id(values)] = sum(_numbers_in(v, counted, span, depth + 1) if isinstance(v, list) else 1
                                  for v in values)
    return counted[id(values)]


_PARSED: dict = {}


def _parse_cached(path: Path, display: str) -> ast.Module:
    """Parse an imported module once per process (per version of the file): the AST is never mutated."""
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size, display)
    if key not in _PARSED:
        _PARSED[key] = parse_file(path, display)
    return _PARSED[key]


def _fitting(value, dtype: str, span: Span):
    """A Python number as a NumPy scalar of `dtype`, or an error when it does not fit (1e39 in f32, 2**40
    in i32), rather than an inf or an OverflowError."""
    from ..ops.shapes import DTYPES
    try:
        with np.errstate(over="ignore"):
            out = np.asarray(value, dtype=DTYPES[dtype])
        fits = np.isfinite(out) if dtype in FLOATS else out == value
    except OverflowError:
        fits = False
    if not fits:
        shown = repr(value) if len(repr(value)) <= 20 else f"{repr(value)[:6]}… ({len(repr(value))} digits)"
        raise GradError(f"the number {shown} does not fit in {dtype}", span)
    return out


def _fitting_all(values: np.ndarray, dtype: str, span: Span) -> None:
    """Refuse the first of `values` that is not finite or does not fit in `dtype` (as _fitting does)."""
    with np.errstate(over="ignore", invalid="ignore"):
        fits = np.isfinite(values.astype(DTYPES[dtype]))
    if not fits.all():
        _fitting(float(values[~fits][0]), dtype, span)


def _name_span(stmt, keyword: str) -> Span:
    """Where the name after `keyword` is written in the declaration `stmt` (`metric NAME = …`), else
    the whole declaration."""
    line = stmt.span.source.line(stmt.span.line)
    found = re.compile(rf"{keyword}\s+({re.escape(stmt.name)})\b").match(line, stmt.span.col - 1)
    if found is None:
        return stmt.span
    return Span(stmt.span.source, stmt.span.line, found.start(1) + 1, stmt.span.line, found.end(1) + 1)


def _in_stdlib(span: Span) -> bool:
    return span.source.name.startswith("<stdlib>")


def _setting_name_span(setting: ast.Assign) -> Span:
    """The span of a setting's name (its statement starts with it)."""
    span = setting.span
    return Span(span.source, span.line, span.col, span.line, span.col + len(setting.name))


def _closest(name: str, candidates: set[str]) -> str | None:
    import difflib
    found = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.75)
    return found[0] if found else None


def _no_span() -> Span:
    from ..errors import Source
    return Span(Source("<prelude>", ""), 1, 1, 1, 1)


def elaborate_source(module: ast.Module, folder: Path | None, float_dtype: str = "f32",
                     overrides: tuple = ()) -> Elaborated:
    # Elaboration recurses once per nested call or expression; allow the depths MAX_CALL_DEPTH permits, and
    # turn anything deeper into an error rather than a crash.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return Elaborator(float_dtype).elaborate_main(module, folder, overrides)
    except RecursionError:
        raise GradError("the program nests too deeply (expressions, calls or imports) to compile",
                        module.span) from None
    finally:
        sys.setrecursionlimit(limit)
