"""Gradient checking: the compiler's gradients against central finite differences, in float64.

`check_params` compares d loss / d param for every param with (L(θ + h·d) − L(θ − h·d)) / 2h along
random directions d and along single elements (the largest gradient and a few random ones), on one
batch. `check_ops` checks each primitive's VJP rule in place: for every op the loss's gradient goes
through, at the values its operands take in this batch, the rule's cotangents against finite
differences of that op alone — so a wrong rule is named with its source line even where the whole
gradient happens to come out close.

Errors are relative: |analytic − numeric| / max(|analytic|, |numeric|, floor). Rounding makes a
difference quotient uncertain by about ε·|loss|/h, so entries far smaller than the param's largest
gradient entry cannot be resolved: `floor` is a thousandth of that largest entry. Random draws (with
dropout on, as in training) and values under stop_gradient are held fixed, as the compiler's
derivative holds them.

Kinks (relu at 0, the maximum of a pooling window changing hands) make central differences wrong
wherever one lies within the step, however small its effect on the slope. So the step is not fixed:
along each probe the loss is evaluated at ±h for h = 1e-3, 1e-4, … 1e-7, and the central difference at
h is used once the slope and the curvature measured at h and at 10h agree — on a smooth function they
differ only by O(h²) and rounding; a kink between h and 10h changes one of them by about its slope
jump, and the error it leaves in the slope at h is at most that change. A point where no step
qualifies has a kink at the point itself (relu at exactly 0, a tie in max): its comparison is skipped
rather than failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import GradError
from .ir.graph import Graph
from .lowering.schedule import schedule
from .ops import registry
from .ops.registry import RunContext
from .ops.shapes import DTYPES, FLOATS, resolve
from .passes.autodiff import backprop, differentiate
from .passes.simplify import simplify
from .runtime.feeds import bind_dimensions
from .runtime.interpreter import Executable

DEFAULT_TOLERANCE = 1e-4
DEFAULT_BATCH = 8
STEPS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)   # finite-difference steps h, tried in turn (see above)
RESOLUTION = 1e-3     # entries below this fraction of the largest are compared on its scale (see above)
FLOOR = 1e-6          # and none below this times 1 + |loss|: rounding alone is ε·|loss|/h
DIRECTIONS = 2        # random directions per param
ELEMENTS = 4          # random single elements per param, besides the one with the largest gradient
SMOOTHNESS = 1e-5     # a slope is trusted when what can spoil it (a kink, rounding) is below this
                      # fraction of it: a tenth of the default tolerance


@dataclass
class ParamResult:
    name: str
    error: float          # the largest relative error of the comparisons made
    compared: int
    skipped: int          # comparisons skipped at kinks


@dataclass
class OpFailure:
    op: str
    location: str | None
    operand: int
    error: float

    def describe(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return (f"{where}the gradient rule of {self.op} is wrong for operand {self.operand}: relative error "
                f"{self.error:.2e} against finite differences")


@dataclass
class Report:
    program: str
    feed: str                      # where the batch came from
    tolerance: float
    params: list[ParamResult]
    ops_checked: int | None = None  # None: no per-op check
    op_failures: list[OpFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.error <= self.tolerance for p in self.params) and not self.op_failures

    def as_dict(self) -> dict:
        out = {"program": self.program, "feed": self.feed, "tolerance": self.tolerance, "ok": self.ok,
               "params": {p.name: {"max_relative_error": p.error, "compared": p.compared, "skipped": p.skipped}
                          for p in self.params}}
        if self.ops_checked is not None:
            out["per_op"] = {"checked": self.ops_checked,
                             "failures": [{"op": f.op, "location": f.location, "operand": f.operand,
                                           "relative_error": f.error} for f in self.op_failures]}
        return out

    def format(self) -> str:
        lines = [f"gradcheck {self.program}: float64, {self.feed}"]
        width = max([len(p.name) for p in self.params] + [5])
        lines.append(f"  {'param':<{width}}  max rel. error")
        for p in self.params:
            if not p.compared:
                lines.append(f"  {p.name:<{width}}  {'—':<8}  not compared: a kink at this point along each of "
                             f"its {p.skipped} probes")
                continue
            verdict = "ok" if p.error <= self.tolerance else "WRONG"
            note = f"  ({p.skipped} comparisons skipped at kinks)" if p.skipped else ""
            lines.append(f"  {p.name:<{width}}  {p.error:.2e}  {verdict}{note}")
        bad = [p for p in self.params if p.error > self.tolerance]
        lines.append(f"{len(bad)} of {len(self.params)} params beyond the tolerance {self.tolerance:g}" if bad else
                     f"every param's gradient agrees with central differences (tolerance {self.tolerance:g})")
        if self.ops_checked is not None:
            if self.op_failures:
                lines.append(f"first wrong gradient rule: {self.op_failures[0].describe()}")
                if len(self.op_failures) > 1:
                    lines.append(f"({len(self.op_failures) - 1} more ops disagree, after it)")
            else:
                lines.append(f"each of the {self.ops_checked} ops the gradient goes through has a correct rule here")
                if bad:
                    lines.append("so the disagreement comes from how the ops are composed: a point where the "
                                 "program is smooth but a piece of it is not (a kink that cancels, such as "
                                 "relu(x) + g(|x|) at x = 0), where each piece's convention holds but their "
                                 "sum is not the derivative")
        return "\n".join(lines) + "\n"


def _relative(a: float, n: float, floor: float) -> float:
    return abs(a - n) / max(abs(a), abs(n), floor)


# ---- the batch ---------------------------------------------------------------------------------------

def random_feed(program, batch: int, rng: np.random.Generator) -> dict:
    """Random inputs of the declared shapes, every symbolic dimension `batch`: floats standard normal,
    integers 0 or 1 (valid labels and indices for any class count), booleans fair coins."""
    feed = {}
    for name, info in program.inputs.items():
        shape = tuple(batch if isinstance(d, str) else d for d in info.shape)
        if info.dtype in FLOATS:
            feed[name] = rng.standard_normal(shape).astype(DTYPES[info.dtype])
        elif info.dtype == "bool":
            feed[name] = rng.random(shape) < 0.5
        else:
            feed[name] = rng.integers(0, 2, shape).astype(DTYPES[info.dtype])
    return feed


def choose_feed(program, batch: int, rng: np.random.Generator, use_data: bool = True) -> tuple[dict, str]:
    """A batch to check on and where it came from: the first `batch` examples of the program's data,
    else (no data, or it cannot be loaded) random inputs of the declared shapes."""
    if not program.input_names:
        return {}, "no inputs"
    reason = "random inputs of the declared shapes"
    if use_data and program.plan.get("data") is not None:
        try:
            data = program.load_data()
        except GradError as err:
            reason += f" (the program's data cannot be loaded: {err.message})"
        else:
            feed = {k: np.asarray(data[k])[:batch] for k in program.input_names if k in data}
            n = len(next(iter(feed.values()))) if feed else 0
            return feed, f"a batch of the first {n} examples of the program's data"
    return random_feed(program, batch, rng), reason + (f", batch {batch}" if _symbolic(program) else "")


def _symbolic(program) -> bool:
    return any(isinstance(d, str) for info in program.inputs.values() for d in info.shape)


# ---- whole-program check --------------------------------------------------------------------------------

def _direction(rng, shape) -> np.ndarray:
    d = rng.standard_normal(shape)
    return d / max(np.linalg.norm(d), 1e-300)


def _slope(f, base: float, floor: float) -> float | None:
    """The derivative at 0 of f (a function of the step, f(0) = base): the central difference at the
    first step h of STEPS whose slope and curvature agree with those at 10h, so that f is smooth over
    [−10h, 10h] as far as the comparison can tell; None where no step does (a kink at 0)."""
    coarser = None
    for h in STEPS:
        up, down = f(h), f(-h)
        if not np.isfinite([up, down]).all():
            coarser = None   # the step leaves the function's domain: a smaller one may not
            continue
        slope, curvature = (up - down) / (2 * h), (up + down - 2 * base) / h ** 2
        if coarser is not None:
            departure = max(abs(slope - coarser[0]), h * abs(curvature - coarser[1]))
            rounding = np.finfo(np.float64).eps * (1 + abs(base)) / h
            if max(departure, rounding) <= SMOOTHNESS * max(abs(slope), floor):
                return slope
        coarser = slope, curvature
    return None


def _compare(f, base: float, analytic: float, floor: float) -> float | None:
    """The relative error of `analytic` against the numeric slope of f; None at a kink."""
    numeric = _slope(f, base, floor)
    return None if numeric is None else _relative(analytic, numeric, floor)


class FrozenLoss:
    """The training loss on one feed as a function of the params' current values, with every random
    draw and every stop_gradient value fixed at what one training run of the program gives (dropout
    on) — the function whose derivative the compiler computes (finite differences would otherwise see
    through stop_gradient, and fresh noise at every evaluation). Both are scheduled as a training step
    is (`training(a, b)` is a: batch norm normalises by the batch's statistics), reading the program's
    state as it is. `loss()` evaluates it, `gradients()` its compiled gradient."""

    def __init__(self, program, feed: dict):
        graph = program.elaborated.graph.copy()
        loss = program.loss_output()
        frozen = [n for n in graph.order(roots=[graph.outputs[loss]])
                  if graph.op(n) == "stop_gradient" or registry.get(graph.op(n)).random]
        for n in frozen:
            graph.outputs[f"frozen:{n}"] = n
        values = program.run([f"frozen:{n}" for n in frozen], feed, graph, training=True) if frozen else []
        names = list(program.input_names)
        for n in frozen:
            leaf = graph.add("input", (), {"name": f"frozen:{n}", "shape": graph.shape(n), "dtype": graph.dtype(n)})
            graph.replace_uses(n, leaf)
            names.append(f"frozen:{n}")
        gradient = simplify(differentiate(graph, loss))
        fed = [None if feed.get(n) is None else np.asarray(feed[n], dtype=DTYPES[info.dtype])
               for n, info in program.inputs.items()]
        bindings = bind_dimensions(program.elaborated.inputs, fed)
        grads = [f"grad:{p}" for p in program.param_names]
        step = RunContext(None, True)   # (every random draw on the loss's path is frozen above)
        leaves = program.runner.leaf_names   # the params, then the state
        self._loss = Executable(schedule(graph, [loss], bindings, step), graph, names, leaves)
        self._grads = Executable(schedule(gradient, grads, bindings, step), gradient, names, leaves)
        self._inputs = fed + [np.array(v) for v in values]   # copies: a frozen value may be the very
        # array of a param (stop_gradient(p) is p), which the checks move
        self._params = [program.params[n] for n in program.param_names] + list(program.state.values())
        self._names = program.param_names

    def loss(self) -> float:
        with np.errstate(all="ignore"):   # a step may leave a function's domain: that shows as non-finite
            return float(self._loss.run(self._inputs, self._params)[0])

    def gradients(self) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._grads.run(self._inputs, self._params)))


def check_params(program, feed: dict, rng: np.random.Generator) -> list[ParamResult]:
    """Every param's gradient against central differences of the loss (program compiled in float64)."""
    frozen = FrozenLoss(program, feed)
    grads, loss = frozen.gradients(), frozen.loss
    base = loss()
    results = []
    for name, value in program.params.items():
        if value.size == 0:   # no value to nudge, no gradient to compare
            continue
        g = grads[name]
        original = value.copy()
        floor = max(RESOLUTION * float(np.max(np.abs(g), initial=0.0)), FLOOR * (1 + abs(base)))

        def loss_along(d, value=value, original=original):
            def f(h):
                value[...] = original + h * d
                return loss()
            return f
        errors, skipped = [], 0
        probes = [_direction(rng, value.shape) for _ in range(DIRECTIONS)]
        flat = [int(np.argmax(np.abs(g)))] + list(rng.integers(0, value.size, ELEMENTS))
        for i in dict.fromkeys(flat):   # unique, in order
            d = np.zeros(value.size)
            d[i] = 1.0
            probes.append(d.reshape(value.shape))
        try:
            for d in probes:
                error = _compare(loss_along(d), base, float(np.sum(g * d)), floor)
                skipped += error is None
                errors.append(0.0 if error is None else error)
        finally:
            value[...] = original
        results.append(ParamResult(name, float(np.max(errors)), len(probes) - skipped, skipped))
    return results


# ---- per-op check -----------------------------------------------------------------------------------------

def _bindings(graph: Graph, nodes, values: dict) -> dict:
    """Symbolic dimension → size, read off the actual values of `nodes`."""
    out = {}
    for n in nodes:
        for dim, size in zip(graph.shape(n), np.shape(values[n])):
            if isinstance(dim, str):
                out[dim] = size
    return out


def _op_alone(graph: Graph, node: int, values: dict) -> tuple[Graph, list[int]]:
    """A graph computing `node`'s op alone from inputs holding its operands' values (`operand0`, …) and
    its output `s` = sum(op · w), for an input `w`; returns it and the operand inputs."""
    d = graph.data(node)
    prim = registry.get(d["op"])
    bindings = _bindings(graph, [node, *d["operands"]], values)
    attrs = {k: resolve(v, bindings) if k in prim.shape_attrs else v for k, v in d["attrs"].items()}
    alone = Graph()
    operands = [alone.add("input", (), {"name": f"operand{i}", "shape": np.shape(values[o]),
                                        "dtype": graph.dtype(o)}) for i, o in enumerate(d["operands"])]
    out = alone.add(d["op"], operands, attrs)
    weights = alone.add("input", (), {"name": "w", "shape": alone.shape(out), "dtype": d["dtype"]})
    alone.outputs["s"] = alone.add("reduce_sum", (alone.add("mul", (out, weights)),), {"axes": None})
    return alone, operands


def check_op(graph: Graph, node: int, values: dict, rng: np.random.Generator, active: set | None = None,
             tolerance: float = DEFAULT_TOLERANCE) -> list[OpFailure]:
    """The VJP rule of `node`'s op at the values its operands have (`values`: node → array), against
    central differences of the op alone, along a random direction of each float operand that is in
    `active` (default: every float operand) — those the program's gradient flows into."""
    alone, operands = _op_alone(graph, node, values)
    inputs = [f"operand{i}" for i in range(len(operands))] + ["w"]
    float_operands = [i for i, (o, p) in enumerate(zip(operands, graph.operands(node)))
                      if alone.dtype(o) in FLOATS and (active is None or p in active)]
    grads = backprop(alone, alone.outputs["s"], [operands[i] for i in float_operands])
    for i, g in zip(float_operands, grads):
        alone.outputs[f"grad{i}"] = g
    names = ["s"] + [f"grad{i}" for i in float_operands]
    # as a training step runs it (the values come from one): `training(a, b)` is a, and its rule is checked
    # for a (tests/test_gradients.py checks b's, as evaluation takes it)
    exe = Executable(schedule(alone, names, {}, RunContext(None, True)), alone, inputs, [])
    arrays = [np.asarray(values[o]) for o in graph.operands(node)]
    w = rng.standard_normal(np.shape(values[node])).astype(DTYPES[graph.dtype(node)])
    with np.errstate(all="ignore"):
        results = exe.run(arrays + [w], [])
    base, cotangents = float(results[0]), results[1:]
    failures = []
    for i, cotangent in zip(float_operands, cotangents):
        floor = max(RESOLUTION * float(np.max(np.abs(cotangent), initial=0.0)), FLOOR * (1 + abs(base)))
        d = _direction(rng, arrays[i].shape)

        def f(h, i=i, d=d):
            moved = list(arrays)
            moved[i] = arrays[i] + h * d
            with np.errstate(all="ignore"):   # a step may leave the op's domain: that shows as non-finite
                return float(exe.run(moved + [w], [])[0])
        error = _compare(f, base, float(np.sum(np.asarray(cotangent) * d)), floor)
        if error is not None and not error <= tolerance:
            location = graph.location(node)
            failures.append(OpFailure(graph.op(node), None if location is None else str(location), i, error))
    return failures


def check_ops(program, feed: dict, rng: np.random.Generator,
              tolerance: float = DEFAULT_TOLERANCE) -> tuple[int, list[OpFailure]]:
    """Check the VJP rule of every op the loss's gradient goes through, in execution order; returns the
    number of ops checked and the failures (the first is the earliest wrong op)."""
    graph = program.elaborated.graph.copy()
    loss = graph.outputs[program.loss_output()]
    active = graph.reachable([loss]) & graph.reachable(list(graph.params.values()), forward=True)
    nodes = [n for n in graph.order(roots=[loss]) if n in active and _differentiable(graph, n)]
    for n in {n for node in nodes for n in (node, *graph.operands(node))}:
        graph.outputs[f"value:{n}"] = n
    wanted = sorted({n for node in nodes for n in (node, *graph.operands(node))})
    values = dict(zip(wanted, program.run([f"value:{n}" for n in wanted], feed, graph, training=True)))
    failures = []
    for node in nodes:
        failures += check_op(graph, node, values, rng, active, tolerance)
    return len(nodes), failures


def _differentiable(graph: Graph, node: int) -> bool:
    prim = registry.get(graph.op(node))
    return prim.vjp is not None and not prim.random and graph.dtype(node) in FLOATS


def gradcheck(path, batch: int = DEFAULT_BATCH, tolerance: float = DEFAULT_TOLERANCE, per_op: bool = False,
              use_data: bool = True, seed: int = 0, data_dir=None) -> Report:
    """Compile `path` in float64 and check its gradients on one batch (see the module's docstring)."""
    from . import api
    program = api.compile(path, dtype="float64")
    program.data_dir = data_dir
    rng = np.random.default_rng(seed)
    feed, source = choose_feed(program, batch, rng, use_data)
    report = Report(str(path), source, tolerance, check_params(program, feed, rng))
    if per_op:
        report.ops_checked, report.op_failures = check_ops(program, feed, rng, tolerance)
    return report
