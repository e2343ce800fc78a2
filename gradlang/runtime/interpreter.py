"""Runs a `Schedule`: the inner loop of every training step.

The environment is a list indexed by slot; preloaded constants are copied in from a template, params
and inputs are placed in their slots, and each step is one kernel call. Nothing here walks a graph,
builds a dict or checks a shape.
"""
from __future__ import annotations

from ..errors import GradError
from ..ir.graph import Graph
from ..passes.schedule import Schedule

_KERNEL_ERRORS = (ValueError, IndexError, TypeError, FloatingPointError, MemoryError)


class Executable:
    def __init__(self, sched: Schedule, graph: Graph, input_names: list[str], param_names: list[str]):
        self.schedule = sched
        self.graph = graph
        self.template = [None] * sched.n_slots
        for s, value in sched.preloaded.items():
            self.template[s] = value
        # one slot per declared input / param, in the program's order; unused ones go to a scratch slot
        scratch = sched.n_slots
        self.template.append(None)
        self.input_slots = [sched.input_slots.get(n, scratch) for n in input_names]
        self.param_slots = [sched.param_slots.get(n, scratch) for n in param_names]
        self.steps = sched.steps
        self.output_slots = sched.output_slots

    def _env(self, inputs: list, params: list) -> list:
        env = self.template.copy()
        for s, value in zip(self.input_slots, inputs):
            env[s] = value
        for s, value in zip(self.param_slots, params):
            env[s] = value
        return env

    def run(self, inputs: list, params: list) -> list:
        env = self._env(inputs, params)
        try:
            for kernel, operands, result, frees in self.steps:
                env[result] = kernel(*[env[o] for o in operands])
                for f in frees:
                    env[f] = None
        except _KERNEL_ERRORS:
            raise self._locate(inputs, params) from None
        return [env[s] for s in self.output_slots]

    def _locate(self, inputs: list, params: list) -> GradError:
        """Re-run step by step to name the op and source line whose kernel failed (the slow path)."""
        env = self._env(inputs, params)
        for i, (kernel, operands, result, _) in enumerate(self.steps):
            try:
                env[result] = kernel(*[env[o] for o in operands])
            except _KERNEL_ERRORS as err:
                node = self.schedule.nodes[i]
                return GradError(f"{self.graph.op(node)} failed at run time: {err}", self.graph.span(node))
        return GradError("a kernel failed at run time and could not be located")
