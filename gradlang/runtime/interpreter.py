"""Runs a `Schedule`: the inner loop of every training step.

The schedule is turned once into straight-line Python — one line per kernel call, values in local
variables, a buffer dropped right after its last use — so a step pays for the kernels and nothing
else: no graph walking, no name lookups, no shape checks, not even a loop. The generated source is
built only from slot numbers and kernels the compiler chose; nothing in it comes from the program's
text.
"""
from __future__ import annotations

from ..errors import GradError
from ..ir.graph import Graph
from ..lowering.schedule import InPlace, IntoBuffer, Schedule
from .threads import WithThreads, step_threads

_KERNEL_ERRORS = (ValueError, IndexError, TypeError, FloatingPointError, MemoryError)


def _generate(sched: Schedule, input_names: list[str], param_names: list[str]):
    """The schedule as a Python function run(inputs, params) -> list of outputs."""
    namespace: dict = {}
    lines = ["def run(inputs, params):"]
    for i, name in enumerate(input_names):
        if name in sched.input_slots:
            lines.append(f"    v{sched.input_slots[name]} = inputs[{i}]")
    for i, name in enumerate(param_names):
        if name in sched.param_slots:
            lines.append(f"    v{sched.param_slots[name]} = params[{i}]")
    for slot, value in sched.preloaded.items():
        namespace[f"c{slot}"] = value
        lines.append(f"    v{slot} = c{slot}")
    for i, (kernel, operands, result, frees) in enumerate(sched.steps):
        args = ", ".join(f"v{o}" for o in operands)
        if isinstance(kernel, InPlace):   # call the kernel itself with out=: no wrapper in the step
            kernel, args = kernel.kernel, f"{args}, out=v{operands[kernel.index]}"
        elif isinstance(kernel, IntoBuffer):
            namespace[f"b{i}"] = kernel.buffer
            kernel, args = kernel.kernel, f"{args}, out=b{i}"
        namespace[f"k{i}"] = kernel
        lines.append(f"    v{result} = k{i}({args})")
        if frees:
            lines.append("    " + " = ".join(f"v{f}" for f in frees) + " = None")
    lines.append(f"    return [{', '.join(f'v{s}' for s in sched.output_slots)}]")
    exec(compile("\n".join(lines), "<gradlang schedule>", "exec"), namespace)  # noqa: S102 - our own code
    return namespace["run"]


class Executable:
    def __init__(self, sched: Schedule, graph: Graph, input_names: list[str], param_names: list[str]):
        self.schedule = sched
        self.graph = graph
        self.input_names, self.param_names = input_names, param_names
        self.steps = sched.steps
        self._run = _generate(sched, input_names, param_names)
        threads = step_threads(sched.largest_product)
        if threads is not None:   # small products: one BLAS thread, or what GRADLANG_BLAS_THREADS says
            self._run = WithThreads(self._run, threads)

    def run(self, inputs: list, params: list) -> list:
        """The requested outputs, given one array per declared input (None where unused) and per param."""
        try:
            return self._run(inputs, params)
        except _KERNEL_ERRORS:
            raise self._locate(inputs, params) from None

    def _locate(self, inputs: list, params: list) -> GradError:
        """Re-run step by step to name the op and source line whose kernel failed (the slow path)."""
        sched = self.schedule
        env = dict(sched.preloaded)
        env.update({sched.input_slots[n]: v for n, v in zip(self.input_names, inputs) if n in sched.input_slots})
        env.update({sched.param_slots[n]: v for n, v in zip(self.param_names, params) if n in sched.param_slots})
        for i, (kernel, operands, result, _) in enumerate(self.steps):
            try:
                env[result] = kernel(*[env[o] for o in operands])
            except _KERNEL_ERRORS as err:
                node = sched.nodes[i]
                return GradError(f"{self.graph.op(node)} failed at run time: {err}", self.graph.location(node))
        return GradError("a kernel failed at run time and could not be located")
