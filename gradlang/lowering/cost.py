"""What one training step costs, computed from the IR before anything runs: FLOPs and peak memory.

FLOPs per op are counted as lowering/flops.py says: 2 per multiply-add of a product or convolution,
1 per element of other arithmetic, 0 for moving data.

Memory follows the schedule the interpreter runs: each value's buffer lives from the step that makes
it to its last use (outputs to the end), and reshape, transpose, broadcast_to and slice make views
that share their operand's buffer (keeping it alive) rather than new buffers. Peak activation memory
is the most bytes such buffers hold at once; inputs, params and constants are counted apart.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import prod

import numpy as np

from ..errors import GradError
from ..ir.graph import Graph
from ..ops import registry
from ..ops.registry import VIEW
from ..ops.shapes import DTYPES, resolve
from .flops import node_flops
from .schedule import schedule


@dataclass
class PassCost:
    flops: int = 0
    peak_bytes: int = 0
    flops_by_op: Counter = field(default_factory=Counter)


@dataclass
class StepCost:
    program: str
    batch: int
    dtype: str
    forward: PassCost            # the forward pass alone, computing the loss
    backward: PassCost           # the gradient ops of a training step (peak: the whole step's)
    param_bytes: int
    input_bytes: int

    @property
    def step_flops(self) -> int:
        return self.forward.flops + self.backward.flops

    def as_dict(self) -> dict:
        def part(p: PassCost) -> dict:
            return {"flops": p.flops, "peak_activation_bytes": p.peak_bytes, "flops_by_op": dict(p.flops_by_op)}
        return {"program": self.program, "batch": self.batch, "dtype": self.dtype, "forward": part(self.forward),
                "backward": part(self.backward), "training_step_flops": self.step_flops,
                "param_bytes": self.param_bytes, "input_bytes": self.input_bytes}


def _peak_bytes(graph: Graph, outputs: list[str], bindings: dict) -> int:
    """The most bytes that intermediate buffers hold at once while the schedule for `outputs` runs."""
    sched = schedule(graph, outputs, bindings)
    buffer_of: dict[int, int] = {}     # slot → the node that owns the buffer it shares
    holders: Counter = Counter()       # buffer → live slots sharing it
    size: dict[int, int] = {}
    live = peak = 0
    for (_, operand_slots, result, frees), node in zip(sched.steps, sched.nodes):
        if registry.has(graph.op(node), VIEW) and operand_slots[0] in buffer_of:
            owner = buffer_of[operand_slots[0]]
        elif registry.has(graph.op(node), VIEW):
            owner = None   # a view of an input, param or constant: no new memory
        else:
            owner = node
            size[node] = prod(resolve(graph.shape(node), bindings)) * np.dtype(DTYPES[graph.dtype(node)]).itemsize
            live += size[node]
        if owner is not None:
            buffer_of[result] = owner
            holders[owner] += 1
        peak = max(peak, live)
        for slot in frees:
            owner = buffer_of.pop(slot, None)
            if owner is not None:
                holders[owner] -= 1
                if holders[owner] == 0:
                    live -= size[owner]
    return peak


def _bytes(shapes_and_dtypes, bindings: dict) -> int:
    return sum(prod(resolve(shape, bindings)) * np.dtype(DTYPES[dtype]).itemsize for shape, dtype in shapes_and_dtypes)


def training_step_cost(program, batch: int | None) -> StepCost:
    """FLOPs and peak activation memory of one training step of `program` at batch size `batch` (which
    every symbolic dimension is bound to; None only for programs without symbolic dimensions)."""
    symbolic = {d for info in program.inputs.values() for d in info.shape if isinstance(d, str)}
    if symbolic and batch is None:
        raise GradError(f"the cost depends on the batch size ({', '.join(sorted(symbolic))}): say --batch N")
    bindings = {d: batch for d in symbolic}
    loss = program.loss_output()
    step = program.graphs.for_mode(program.gradient_graph(), training=True)   # the branches a training step takes
    step_outputs = [loss] + [f"grad:{p}" for p in program.param_names] + \
        [f"update:{n}" for n in program.elaborated.updates]
    forward, backward = PassCost(), PassCost()
    for node in step.order(roots=[step.outputs[o] for o in step_outputs]):
        part = backward if step.data(node)["role"] == "grad" else forward
        flops = node_flops(step, node, bindings)
        part.flops += flops
        if flops:
            part.flops_by_op[step.op(node)] += flops
    forward.peak_bytes = _peak_bytes(program.graphs.for_mode(program.forward_graph, training=True), [loss], bindings)
    backward.peak_bytes = _peak_bytes(step, step_outputs, bindings)
    params = [(spec.shape, spec.dtype) for spec in program.elaborated.params.values()]
    inputs = [(info.shape, info.dtype) for info in program.inputs.values()]
    return StepCost(program.name, batch, program.float_dtype, forward, backward,
                    _bytes(params, bindings), _bytes(inputs, bindings))


def _digits(value: float) -> str:
    """Three significant digits, never in exponent notation (1,020 KiB, not 1.02e+03 KiB)."""
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{_digits(value / factor)} {prefix}{unit}"
    return f"{_digits(value)} {unit}"


def _binary(value: int) -> str:
    for factor, prefix in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if value >= factor:
            return f"{_digits(value / factor)} {prefix}"
    return f"{value} B"


def format_cost(cost: StepCost) -> str:
    at = f" at batch {cost.batch}" if cost.batch is not None else ""
    rows = [("", "FLOPs", "peak activation memory"),
            ("forward (loss)", _si(cost.forward.flops, "FLOP"), _binary(cost.forward.peak_bytes)),
            ("backward (gradients)", _si(cost.backward.flops, "FLOP"), ""),
            ("training step", _si(cost.step_flops, "FLOP"), _binary(cost.backward.peak_bytes))]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines = [f"one training step of {cost.program}{at} ({cost.dtype}):"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    lines.append(f"  params {_binary(cost.param_bytes)}, inputs {_binary(cost.input_bytes)} per batch "
                 "(besides the activations)")
    total = cost.forward.flops_by_op + cost.backward.flops_by_op
    if cost.step_flops:
        shares = ", ".join(f"{op} {n / cost.step_flops:.0%}" for op, n in total.most_common(4)
                           if n >= 0.01 * cost.step_flops)
        lines.append(f"  FLOPs by op: {shares}")
    return "\n".join(lines) + "\n"
