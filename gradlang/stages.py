"""A program at each stage of the compiler, as text, DOT or JSON, and counts of what each stage made.

    parsed      the AST of the file
    elaborated  the forward IR, before simplification
    grad        the forward IR plus the gradient IR (outputs grad:<param>), before simplification
    optimized   after simplification: the forward IR, or forward plus gradient with grad=True

What `gradlang ir FILE --stage S --format F` prints and `Program.draw` draws.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .errors import GradError
from .frontend.syntax import parse_file
from .frontend.syntax.dump import ast_to_dot, ast_to_json, format_ast
from .ir.dot import graph_to_dot
from .ir.graph import Graph
from .ir.printer import format_graph, graph_to_json
from .passes.simplify import simplify

STAGES = ("parsed", "elaborated", "grad", "optimized")
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
    raise GradError(f"no stage {stage!r} has a graph; the stages with one are elaborated, grad, optimized")


def show_stage(program, path: Path, stage: str, grad: bool, fmt: str, locations: bool = True) -> str:
    """The program (compiled from `path`) after `stage`, in format `fmt` (text, dot or json)."""
    if stage == "parsed":
        module = parse_file(path)
        if fmt == "json":
            return json.dumps(ast_to_json(module), indent=1) + "\n"
        return ast_to_dot(module) if fmt == "dot" else format_ast(module)
    graph = stage_graph(program, stage, grad)
    if fmt == "json":
        return json.dumps(graph_to_json(graph), indent=1) + "\n"
    if fmt == "dot":
        return graph_to_dot(graph, title=f"{path} — {stage}")
    return format_graph(graph, locations=locations)


def _ops(graph: Graph) -> Counter:
    return Counter(graph.op(n) for n in graph.nx.nodes)


def stage_stats(program) -> dict:
    """Node counts per op at each stage, and how often each simplification rule fired on the forward
    graph and on the gradient graph (counted on fresh runs of `simplify`)."""
    forward_rules, gradient_rules = Counter(), Counter()
    raw = program.raw_gradient_graph()
    graphs = {"elaborated": program.elaborated.graph,
              "optimized forward": simplify(program.elaborated.graph, stats=forward_rules),
              "grad": raw,
              "optimized": simplify(raw, stats=gradient_rules)}
    return {"nodes": {stage: {"total": len(g), **dict(sorted(_ops(g).items()))} for stage, g in graphs.items()},
            "rules": {"forward": dict(forward_rules.most_common()), "gradient": dict(gradient_rules.most_common())}}


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
    return "\n".join(lines) + "\n"
