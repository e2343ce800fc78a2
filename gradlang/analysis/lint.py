"""Lints: mistakes that compile but that a compiler can point out, as warnings at the source line.

- an input declared but never used (no loss, metric or output depends on it);
- a param that receives no gradient from the loss trained, so training never changes it — because
  the loss does not depend on it, or depends on it only through ops that pass no gradient;
- an op the loss depends on a param through that passes no gradient there (`floor`, `sign`, a cast
  to an integer, a comparison used as a number, `argmax`): the gradient silently ignores that path.
  Deliberate cases stay quiet: `stop_gradient`, shape queries, comparisons that only choose a branch
  of `where` (a piecewise function), and the ops inside a gradient taken with `grad`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import GradError, Span
from ..ir.graph import Emit, Graph
from ..ops import registry
from ..ops.registry import COMPARISON, NO_GRADIENT_BY_DESIGN
from ..ops.shapes import FLOATS
from ..passes.simplify import filled_with


@dataclass(frozen=True)
class Diagnostic:
    kind: str           # unused-input, no-gradient, non-differentiable
    message: str
    span: Span | None

    def format(self) -> str:
        """`file:line:col: warning: message`, the source line and a caret, as errors print."""
        lines = GradError(self.message, self.span).format().split("\n")
        lines[0] = f"{self.span}: warning: {self.message}" if self.span else f"warning: {self.message}"
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "location": None if self.span is None else str(self.span)}


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def unused_inputs(graph: Graph) -> list[Diagnostic]:
    """Inputs that no output depends on."""
    live = graph.reachable(graph.outputs.values())
    return [Diagnostic("unused-input", f"input {name} is declared but never used", graph.span(node))
            for name, node in graph.inputs.items() if node not in live]


def blocked_paths(graph: Graph, loss: int) -> list[Diagnostic]:
    """Ops written in the program through which the loss depends on a param but no gradient flows."""
    params = graph.params
    param_names = {node: name for name, node in params.items()}
    downstream = graph.reachable(list(params.values()), forward=True)
    scratch = graph.copy()   # VJP rules may add nodes while saying which operands they differentiate
    warnings, seen = [], set()
    for node in graph.order(roots=[loss]):
        d = graph.data(node)
        if d["role"] != "forward" or registry.has(d["op"], NO_GRADIENT_BY_DESIGN) or not any(
                o in downstream and graph.dtype(o) in FLOATS for o in d["operands"]):
            continue
        if registry.has(d["op"], COMPARISON) and all(graph.op(u) == "where" and graph.operands(u)[0] == node
                                           for u in graph.users(node)):
            continue   # a condition choosing between branches: piecewise, not a dead path
        blocked = [o for o, passes in zip(d["operands"], _passes_gradient(scratch, node))
                   if not passes and o in downstream and graph.dtype(o) in FLOATS]
        where = graph.location(node)
        if not blocked or (d["op"], where) in seen:
            continue
        seen.add((d["op"], where))
        # the params upstream, read off the nodes upstream (testing every param per warning is quadratic)
        through = sorted(param_names[n] for n in graph.reachable(blocked) if n in param_names)
        warnings.append(Diagnostic("non-differentiable",
                                   f"{d['op']} passes no gradient, but the loss depends on {_names(through)} "
                                   "through it: their gradient ignores this path", where))
    return warnings


def _passes_gradient(scratch: Graph, node: int) -> list[bool]:
    """For each operand of `node`, whether its op's VJP rule sends a gradient there."""
    ref = scratch.ref(node)
    prim = registry.get(ref.op)
    if prim.vjp is None or ref.dtype not in FLOATS:
        return [False] * len(ref.operands)
    emit = Emit(scratch, ref.span, "grad", ref.site)
    return [rule is not None for rule in prim.vjp(emit, ref, emit.const(0, ref.dtype))]


def params_without_gradient(program) -> list[Diagnostic]:
    """Params whose gradient, once simplified, is zero by construction."""
    graph = program.gradient_graph()
    loss = program.loss_output()
    upstream = graph.reachable([graph.outputs[loss]])
    trained = graph.params   # (a scan of the whole graph: once, not once per param)
    out = []
    for name, node in program.elaborated.graph.params.items():
        if filled_with(graph, graph.outputs[f"grad:{name}"]) != 0.0:
            continue
        why = "does not depend on it" if trained[name] not in upstream else \
            "depends on it only through ops that pass no gradient"
        which = "the loss" if loss == "loss" else f"the loss {loss.split(':', 1)[1]}"
        out.append(Diagnostic("no-gradient", f"param {name} receives no gradient: {which} {why}, so training "
                              "leaves it unchanged", program.elaborated.graph.location(node)))
    return out


def lint(program) -> list[Diagnostic]:
    """Every warning about `program`, in source order. Without a loss to train (several losses and no
    `loss = …` in the train block) only unused inputs are checked."""
    graph = program.elaborated.graph
    warnings = unused_inputs(graph)
    try:
        loss = program.loss_output()
    except GradError:
        loss = None
    if loss is not None:
        warnings += params_without_gradient(program) + blocked_paths(graph, graph.outputs[loss])
    return sorted(warnings, key=_source_order)


def _source_order(w: Diagnostic) -> tuple:
    return (0, w.span.source.name, w.span.line, w.span.col) if w.span else (1, "", 0, 0)
