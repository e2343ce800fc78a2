"""A program at each stage of the compiler, as text, DOT or JSON, and counts of what each stage made.

    parsed      the AST of the file
    elaborated  the forward IR, before simplification
    grad        the forward IR plus the gradient IR (outputs grad:<param>), before simplification
    optimized   after simplification: the forward IR, or forward plus gradient with grad=True
    scheduled   the training step as the interpreter runs it: one line per kernel call, naming the
                kernel each rewrite of the scheduler chose (text only)

What `gradlang ir FILE --stage S --format F` prints and `Program.draw` draws.
"""
from __future__ import annotations

import functools
import inspect
import json
from collections import Counter
from pathlib import Path

from .errors import GradError
from .frontend.syntax import parse_file
from .frontend.syntax.dump import ast_to_dot, ast_to_json, format_ast
from .ir.dot import graph_to_dot
from .ir.graph import Graph
from .ir.printer import format_graph, graph_to_json
from .lowering.schedule import InPlace, IntoBuffer, Schedule, WhereInto, schedule
from .ops import helper
from .ops.nn_ops import Chunked
from .ops.registry import RunContext
from .passes.simplify import simplify

STAGES = ("parsed", "elaborated", "grad", "optimized", "scheduled")
DEFAULT_BATCH = 32   # the batch a scheduled step is shown at when neither --batch nor the train block says
FORMATS = ("text", "dot", "json")


def stage_graph(program, stage: str, grad: bool = False) -> Graph:
    """The program's IR after `stage` (not `parsed`, which is an AST); `grad` picks the forward plus
    gradient graph for the optimized stage (the grad stage always has it, the elaborated never)."""
    if stage == "elaborated":
        if grad:
            raise GradError("the elaborated stage is the forward IR; the gradient before simplification is "
                            "the grad stage")
        return program.elaborated.graph
    if stage == "grad":
        return program.raw_gradient_graph()
    if stage == "optimized":
        return program.gradient_graph() if grad else program.forward_graph
    if stage == "scheduled":
        raise GradError("the scheduled stage is a listing of kernel calls, not a graph: --format text")
    raise GradError(f"no stage {stage!r} has a graph; the stages with one are elaborated, grad, optimized")


def show_stage(program, path: Path, stage: str, grad: bool, fmt: str, locations: bool = True,
               batch: int | None = None) -> str:
    """The program (compiled from `path`) after `stage`, in format `fmt` (text, dot or json); the
    scheduled stage at `batch` (default: the train block's, else DEFAULT_BATCH)."""
    if stage == "parsed":
        module = parse_file(path)
        if fmt == "json":
            return json.dumps(ast_to_json(module), indent=1) + "\n"
        return ast_to_dot(module) if fmt == "dot" else format_ast(module)
    if stage == "scheduled":
        if fmt != "text":
            raise GradError("the scheduled stage is a listing of kernel calls: --format text")
        graph, sched, batch = training_schedule(program, batch)
        return format_schedule(graph, sched, batch, locations)
    graph = stage_graph(program, stage, grad)
    if fmt == "json":
        return json.dumps(graph_to_json(graph), indent=1) + "\n"
    if fmt == "dot":
        return graph_to_dot(graph, title=f"{path} — {stage}")
    return format_graph(graph, locations=locations)


def _ops(graph: Graph) -> Counter:
    return Counter(graph.op(n) for n in graph.nx.nodes)


def training_schedule(program, batch: int | None = None) -> tuple[Graph, Schedule, int]:
    """The training step's graph and its schedule as a run makes it (buffers reused, the program's
    `no_opt` left out), every symbolic dimension bound to `batch` (default: the train block's batch,
    else DEFAULT_BATCH)."""
    batch = batch or program.plan.get("batch") or DEFAULT_BATCH
    symbolic = {d for info in program.inputs.values() for d in info.shape if isinstance(d, str)}
    graph = program.graphs.for_mode(program.gradient_graph(), training=True)   # as a run schedules it
    outputs = [program.loss_output()] + [f"grad:{p}" for p in program.param_names] + \
        [f"update:{n}" for n in program.runner.updated_states]
    sched = schedule(graph, outputs, {d: batch for d in symbolic}, RunContext(program.rng, True), reuse_buffers=True,
                     disabled=program.runner.no_opt)
    return graph, sched, batch


def kernel_name(kernel, op: str) -> str:
    """How a listing names the kernel scheduled for an `op` node: its function, or its class and method
    for the kernels that share state (`MaxPool.forward`), with what the scheduler wrapped it in."""
    if isinstance(kernel, InPlace):
        return f"{kernel_name(kernel.kernel, op)} in place of operand {kernel.index + 1}"
    if isinstance(kernel, IntoBuffer):
        return f"{kernel_name(kernel.kernel, op)} into a reused buffer"
    if isinstance(kernel, WhereInto):
        return f"where in place of operand {kernel.index + 1}"
    if isinstance(kernel, functools.partial):
        return kernel_name(kernel.func, op)
    if isinstance(kernel, Chunked):
        return kernel.listing_name + _sharing(kernel)
    inner = getattr(kernel, "kernel", None)
    if inner is not None:   # a kernel that checks its indices first
        return f"{kernel_name(inner, op)}, indices checked"
    owner = getattr(kernel, "__self__", None)
    name = getattr(kernel, "__name__", type(kernel).__name__)
    if owner is not None and not inspect.ismodule(owner):   # a method: np.add.reduce, MaxPool.forward
        return f"{getattr(owner, '__name__', type(owner).__name__)}.{name}" + _sharing(owner)
    return op if name == "<lambda>" else name


def _sharing(kernel) -> str:
    return " sharing the batch with the helper" if getattr(kernel, "each", None) is helper.shared else ""


def format_schedule(graph: Graph, sched: Schedule, batch: int, locations: bool = True) -> str:
    """One line per kernel call of a schedule: the slot it writes, the kernel, the slots it reads, the
    op it computes and where in the program; then the rewrites the scheduler made."""
    lines = [f"# the training step at batch {batch}: {len(sched.steps)} kernel calls"]
    for i, ((kernel, operands, result, _), node) in enumerate(zip(sched.steps, sched.nodes)):
        if i == sched.join_at:
            lines.append("# the step waits for the helper thread here")
        where = f"  # {graph.op(node)}" + (f"  {graph.location(node)}" if locations else "")
        reads = ", ".join(f"%{o}" for o in operands)
        lane = " on the helper thread" if i in sched.helper_steps else ""
        lines.append(f"%{result} = {kernel_name(kernel, graph.op(node))}({reads}){lane}{where}")
        if i in sched.helper_steps and i + 1 not in sched.helper_steps:
            lines.append("# the helper steps above are queued to the helper thread here")
    lines.append("# rewrites: " + (", ".join(f"{name} {count}" for name, count in sched.rewrites.items()) or "none"))
    return "\n".join(lines) + "\n"


def stage_stats(program, batch: int | None = None) -> dict:
    """Node counts per op at each stage, how often each simplification rule fired on the forward
    graph and on the gradient graph (counted on fresh runs of `simplify`), and the kernel calls of the
    training step at `batch` with the calls each rewrite of the scheduler changed."""
    forward_rules, gradient_rules = Counter(), Counter()
    raw = program.raw_gradient_graph()
    graphs = {"elaborated": program.elaborated.graph,
              "optimized forward": simplify(program.elaborated.graph, stats=forward_rules),
              "grad": raw,
              "optimized": simplify(raw, stats=gradient_rules)}
    _, sched, batch = training_schedule(program, batch)
    return {"nodes": {stage: {"total": len(g), **dict(sorted(_ops(g).items()))} for stage, g in graphs.items()},
            "rules": {"forward": dict(forward_rules.most_common()), "gradient": dict(gradient_rules.most_common())},
            "schedule": {"batch": batch, "kernel_calls": len(sched.steps), "rewrites": sched.rewrites}}


def format_stats(stats: dict) -> str:
    """The counts of `stage_stats` as two tables."""
    stages = list(stats["nodes"])
    ops = sorted({op for counts in stats["nodes"].values() for op in counts} - {"total"})
    rows = [["nodes", *stages]] + [[op] + [str(stats["nodes"][s].get(op, "")) for s in stages]
                                   for op in ["total", *ops]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    for graph, fired in stats["rules"].items():
        lines += ["", f"simplification rules fired on the {graph} graph"]
        if not fired:
            lines.append("  (none)")
        width = max((len(name) for name in fired), default=0)
        lines += [f"  {name:<{width}}  {count}" for name, count in fired.items()]
    scheduled = stats["schedule"]
    lines += ["", f"the training step at batch {scheduled['batch']}: {scheduled['kernel_calls']} kernel calls; "
                  "calls each rewrite of the scheduler changed"]
    width = max((len(name) for name in scheduled["rewrites"]), default=0)
    lines += [f"  {name:<{width}}  {count}" for name, count in scheduled["rewrites"].items()] or ["  (none)"]
    return "\n".join(lines) + "\n"
