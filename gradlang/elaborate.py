"""AST → IR: resolve names and imports, evaluate everything static, inline functions and layers,
and emit one IR node per tensor operation, with its shape, dtype and source span.

The result is an `Elaborated` program: the forward graph (outputs: the losses and metrics), the params
with their initialisers, the inputs, the data sources and the training plan. The plan's settings that
vary with the step (a learning-rate schedule) live in a small graph of their own whose input is `step`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import builtins as bi
from .errors import GradError, Span
from .ir.graph import Graph, check_size, memory_limit
from .ops.shapes import DTYPES, FLOATS, INTS, fmt_type
from .resources import stdlib_dir
from .syntax import ast, parse_file
from .values import (Builtin, DataSpec, Function, InitSpec, LayerDef, LayerInstance, ModuleValue,
                     OptimizerSpec, Scope, Tensor, UnboundLayer, describe)

PRELUDE = ("activations", "losses", "schedules")
MAX_CALL_DEPTH = 200
# Static loops and list comprehensions run at compile time: bound their total work (a nested
# comprehension over two large ranges would otherwise run for hours or exhaust memory).
MAX_UNROLLED = 100_000
TRAIN_SETTINGS = ("data", "batch", "epochs", "steps", "optimizer", "seed", "save", "loss", "validation",
                  "early_stopping", "test", "checkpoint", "phases", "on_nonfinite")


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
class TrainPlan:
    settings: dict = field(default_factory=dict)   # name → value
    spans: dict = field(default_factory=dict)      # name → Span, for errors found at run time
    graph: Graph = field(default_factory=Graph)     # step-dependent settings; input `step`
    span: Span | None = None


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


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class Elaborator:
    def __init__(self, float_dtype: str = "f32"):
        self.float = float_dtype
        self.graph = Graph()
        self.params: dict[str, ParamSpec] = {}
        self.inputs: dict[str, InputSpec] = {}
        self.data: dict[str, DataSpec] = {}
        self.plan: TrainPlan | None = None
        self.losses: list[str] = []
        self.metrics: list[str] = []
        self.outputs: list[str] = []
        self.modules: dict[Path, ModuleValue] = {}
        self.loading: list[Path] = []
        self.depth = 0
        self.param_bytes = 0
        self.unrolled = 0     # loop iterations and comprehension items so far (MAX_UNROLLED)
        self.auto_names: dict[str, int] = {}
        self.random_keys = 0
        self.builtins = Scope(None, bi.BUILTINS)
        self.prelude = Scope(self.builtins)
        for name in PRELUDE:
            module = self.load_module([name], None, _no_span())
            self.prelude.vars.update({k: v for k, v in module.scope.vars.items() if not k.startswith("_")})

    # ---- modules ---------------------------------------------------------------------------------
    def elaborate_main(self, module: ast.Module, folder: Path | None) -> Elaborated:
        scope = Scope(self.prelude)
        self.exec_block(module.body, scope, context="main", folder=folder)
        if not self.losses:
            raise GradError("the program declares no loss; add a line such as `loss = mean((y - pred) ** 2)`",
                            module.span)   # (an empty module's span is its line 1, column 1)
        return Elaborated(self.graph, self.params, self.inputs, self.data, self.plan,
                          self.losses, self.metrics, self.float, self.outputs)

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
        if isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value, scope)
            value = self.bind(stmt.name, value, scope, layer, stmt.span, context)
            scope.vars[stmt.name] = value
        elif isinstance(stmt, ast.Import):
            self._allowed(stmt, context, "import", "main", "module")
            module = self.load_module(stmt.module, folder, stmt.span)
            scope.vars[stmt.alias or stmt.module[-1]] = module
        elif isinstance(stmt, ast.FromImport):
            self._allowed(stmt, context, "import", "main", "module")
            module = self.load_module(stmt.module, folder, stmt.span)
            for name in stmt.names:
                if name not in module.scope.vars:
                    raise GradError(f"module {module.name!r} has no {name!r}", stmt.span)
                scope.vars[name] = module.scope.vars[name]
        elif isinstance(stmt, ast.FnDef):
            scope.vars[stmt.name] = Function(stmt.name, stmt.formals, stmt.body, scope, stmt.span)
        elif isinstance(stmt, ast.LayerDef):
            self._allowed(stmt, context, "a layer definition", "main", "module")
            scope.vars[stmt.name] = LayerDef(stmt, scope)
        elif isinstance(stmt, ast.InputDecl):
            self._allowed(stmt, context, "an input declaration", "main")
            scope.vars[stmt.name] = self.declare_input(stmt, scope)
        elif isinstance(stmt, ast.ParamDecl):
            self._allowed(stmt, context, "a param declaration", "main", "layer")
            prefix = f"{layer.name}." if layer is not None else ""
            tensor = self.declare_param(stmt, prefix + stmt.name, scope)
            if layer is not None:
                layer.params.append(tensor)
            scope.vars[stmt.name] = tensor
        elif isinstance(stmt, ast.DataDecl):
            self._allowed(stmt, context, "a data declaration", "main")
            value = self.eval(stmt.value, scope)
            if not isinstance(value, DataSpec):
                raise GradError(f"`data {stmt.name} = …` needs a data source such as two_moons(n: 100), "
                                f"got {describe(value)}", stmt.value.span)
            self.data[stmt.name] = value
            scope.vars[stmt.name] = value
        elif isinstance(stmt, ast.LossDecl):
            self._allowed(stmt, context, "a loss declaration", "main")
            if stmt.name == "loss":   # `loss loss = …` would be a second thing called `loss`
                raise GradError("a loss cannot be named 'loss' (the unnamed loss is called that); write "
                                "`loss = …`, or give it another name", stmt.span)
            name = "loss" if stmt.name is None else f"loss:{stmt.name}"
            self.declare_output(name, self.eval(stmt.value, scope), stmt, "loss", float_only=True)
            self.losses.append(name)
            scope.vars[stmt.name or "loss"] = Tensor(self.graph, self.graph.outputs[name])
        elif isinstance(stmt, ast.MetricDecl):
            self._allowed(stmt, context, "a metric declaration", "main")
            value = self.eval(stmt.value, scope)
            if isinstance(value, Tensor) and value.dtype not in FLOATS:
                value = self.cast(value, self.float, stmt.value.span)
            self.declare_output(f"metric:{stmt.name}", value, stmt, "metric", float_only=True)
            self.metrics.append(stmt.name)
            scope.vars[stmt.name] = value
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
            scope.vars[stmt.name] = value
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
                scope.vars[stmt.var] = item
                self.exec_block(stmt.body, scope, context, folder, layer)
        elif isinstance(stmt, ast.If):
            cond = self.eval(stmt.cond, scope)
            if isinstance(cond, Tensor):
                raise GradError("`if` needs a condition known at compile time; for tensors use where(cond, a, b)",
                                stmt.cond.span)
            self.exec_block(stmt.then if cond else stmt.orelse, scope, context, folder, layer)
        else:  # pragma: no cover - the grammar produces nothing else
            raise GradError(f"unsupported statement {type(stmt).__name__}", stmt.span)

    def bind(self, name: str, value, scope: Scope, layer: LayerInstance | None, span: Span,
             context: str = "main"):
        """Give a value its name: a layer gets its params (qualified by the name), a tensor a print name."""
        prefix = f"{layer.name}." if layer is not None else ""
        if context == "function" and _holds_layers(value):
            # a function may run many times: each run's layers get fresh names
            taken = {p.split(".")[0] for p in self.params}
            k, base = 1, name
            while name in taken:
                k += 1
                name = f"{base}_{k}"
        value = self.instantiate_all(value, prefix + name)
        if layer is not None:
            for instance in _layers_in(value):
                layer.params.extend(instance.params)
        if isinstance(value, Tensor) and value.graph is self.graph:
            data = self.graph.data(value.node)
            if data["name"] is None and data["op"] not in ("input", "param"):
                data["name"] = prefix + name
        return value

    def instantiate_all(self, value, name: str):
        """Instantiate every unbound layer in `value` (nested lists named name.0, name.0.1, …)."""
        if isinstance(value, UnboundLayer):
            return self.instantiate(value, name)
        if isinstance(value, list) and _holds_layers(value):
            return [self.instantiate_all(v, f"{name}.{i}") for i, v in enumerate(value)]
        return value

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
            if isinstance(expr, ast.Name) and expr.id not in scope.names():
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

    def declare_param(self, stmt: ast.ParamDecl, qualified: str, scope: Scope) -> Tensor:
        if qualified in self.params:
            raise GradError(f"param {qualified!r} is declared twice", stmt.span)
        dtype = self.resolve_dtype(stmt.type, self.float)
        if dtype not in FLOATS:
            raise GradError(f"a param must be a float, got {dtype}", stmt.type.span)
        shape = self.eval_dims(stmt.type, scope, symbolic_ok=False)
        self.param_bytes += check_size(shape, dtype, f"param {qualified}", stmt.type.span)
        if self.param_bytes > memory_limit():
            raise GradError(f"the params declared so far need {self.param_bytes:,} bytes, more than the limit of "
                            f"{memory_limit():,} bytes (the machine's memory, or $GRADLANG_MAX_BYTES)", stmt.span)
        init = bi.default_init(shape) if stmt.init is None else self.eval(stmt.init, scope)
        if isinstance(init, Builtin) and init.name in bi.INITIALIZERS:
            init = init.impl(self, stmt.init.span)
        if isinstance(init, (int, float)) and not isinstance(init, bool):
            init = InitSpec("constant", (float(init),))
        elif isinstance(init, list):
            init = self.literal_init(init, shape, stmt.init.span)
        if not isinstance(init, InitSpec):
            raise GradError(f"a param's initialiser must be one of {', '.join(bi.INITIALIZERS)} or a number, "
                            f"got {describe(init)}", (stmt.init or stmt).span)
        self.params[qualified] = ParamSpec(shape, dtype, init, stmt.span)
        node = self.graph.add("param", (), {"name": qualified, "shape": shape, "dtype": dtype}, stmt.span)
        return Tensor(self.graph, node)

    def literal_init(self, values: list, shape: tuple, span: Span) -> InitSpec:
        try:
            array = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise GradError("a param's initial values must be numbers in a regular (rectangular) list", span) from None
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
        for setting in stmt.body:
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
            _check_setting(setting.name, value, setting.value.span)
        if "phases" in plan.settings:
            from .runtime.phases import check_phases
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

    def with_depth(self, thunk, span: Span, fname: str, definition: Span):
        """Run a call's body (of the function or layer defined at `definition`), bounding the depth."""
        if self.depth >= MAX_CALL_DEPTH:
            raise GradError(f"calls nested more than {MAX_CALL_DEPTH} deep (is {fname} recursive without end?)",
                            span)
        self.depth += 1
        outer_site = self.graph.site
        if outer_site is None and _in_stdlib(definition) and not _in_stdlib(span):
            self.graph.site = span   # entering library code from the user's program: remember the call
        try:
            return thunk()
        except GradError as err:
            # an error inside the standard library is reported at the user's call, with the inner place noted
            if err.span is not None and _in_stdlib(err.span) and not _in_stdlib(span):
                raise GradError(f"{err.message} (in {fname}, {err.span})", span, err.notes) from None
            raise
        finally:
            self.depth -= 1
            self.graph.site = outer_site

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
        method = getattr(self, "eval_" + type(node).__name__)
        return method(node, scope)

    def eval_Number(self, node, scope):
        return node.value

    def eval_String(self, node, scope):
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
        if isinstance(value, ModuleValue):
            if node.name not in value.scope.vars:
                close = _closest(node.name, set(value.scope.vars))
                raise GradError(f"module {value.name!r} has no {node.name!r}"
                                + (f"; did you mean {close!r}?" if close else ""), node.span)
            return value.scope.vars[node.name]
        if isinstance(value, LayerInstance):
            if node.name == "params":
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
            try:
                array = np.array(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise GradError("a list used as a tensor must hold numbers in a regular (rectangular) shape",
                                span) from None
            dtype = like.dtype if like is not None and like.dtype in FLOATS else self.float
            return Tensor(graph, graph.const(array, dtype, span))
        raise GradError(f"expected a tensor or a number, got {describe(value)}", span)

    def cast(self, value: Tensor, dtype: str, span: Span) -> Tensor:
        return value if value.dtype == dtype else self.emit("cast", [value], span, dtype=dtype)


def ast_slice(el: Elaborator, node: ast.Slice, scope: Scope) -> slice:
    parts = []
    for part in (node.start, node.stop, node.step):
        value = None if part is None else el.eval(part, scope)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise GradError(f"slice bounds must be integers known at compile time, got {describe(value)}", part.span)
        parts.append(value)
    return slice(*parts)


_PARSED: dict = {}


def _parse_cached(path: Path, display: str) -> ast.Module:
    """Parse an imported module once per process (per version of the file): the AST is never mutated."""
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size, display)
    if key not in _PARSED:
        _PARSED[key] = parse_file(path, display)
    return _PARSED[key]


def _check_setting(name: str, value, span: Span) -> None:
    """Settings whose value is checked as soon as it is known: a word from a fixed set, or a file the
    run will write (below the program's folder: a model file must not overwrite files elsewhere)."""
    if name == "on_nonfinite" and value not in ("stop", "skip"):
        raise GradError(f'on_nonfinite must be "stop" or "skip", got {value!r}' if isinstance(value, str) else
                        f'on_nonfinite must be "stop" or "skip", got {describe(value)}', span)
    if name in ("save", "checkpoint"):
        if not isinstance(value, str) or not value:
            raise GradError(f"{name} must be a file name in quotes, got {describe(value)}", span)
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or value.startswith("~"):
            raise GradError(f"{name} = {value!r} would write outside the program's folder; a program may only "
                            f"write below its own folder (to write elsewhere, use --out or --checkpoint)", span)


def _holds_layers(value) -> bool:
    return isinstance(value, UnboundLayer) or isinstance(value, list) and any(_holds_layers(v) for v in value)


def _layers_in(value):
    if isinstance(value, LayerInstance):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _layers_in(v)


def _fitting(value, dtype: str, span: Span):
    """A Python number as a NumPy scalar of `dtype`, or an error when it does not fit (1e39 in f32, 2**40
    in i32), rather than an inf or an OverflowError."""
    from .ops.shapes import DTYPES
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


def _in_stdlib(span: Span) -> bool:
    return span.source.name.startswith("<stdlib>")


def _closest(name: str, candidates: set[str]) -> str | None:
    import difflib
    found = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.75)
    return found[0] if found else None


def _no_span() -> Span:
    from .errors import Source
    return Span(Source("<prelude>", ""), 1, 1, 1, 1)


def elaborate_source(module: ast.Module, folder: Path | None, float_dtype: str = "f32") -> Elaborated:
    # Elaboration recurses once per nested call or expression; allow the depths MAX_CALL_DEPTH permits, and
    # turn anything deeper into an error rather than a crash.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return Elaborator(float_dtype).elaborate_main(module, folder)
    except RecursionError:
        raise GradError("the program nests too deeply (expressions, calls or imports) to compile",
                        module.span) from None
    finally:
        sys.setrecursionlimit(limit)
