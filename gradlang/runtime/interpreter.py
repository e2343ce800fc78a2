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
from ..ops.helper import StepRun
from .threads import WithThreads, step_threads

_KERNEL_ERRORS = (ValueError, IndexError, TypeError, FloatingPointError, MemoryError)


def _call(kernel, operands, i: int, namespace: dict, value) -> str:
    """The source of step i's kernel call, `value(slot)` naming each operand's value."""
    args = ", ".join(value(o) for o in operands)
    if isinstance(kernel, InPlace):   # call the kernel itself with out=: no wrapper in the step
        kernel, args = kernel.kernel, f"{args}, out={value(operands[kernel.index])}"
    elif isinstance(kernel, IntoBuffer):
        namespace[f"b{i}"] = kernel.buffer
        kernel, args = kernel.kernel, f"{args}, out=b{i}"
    namespace[f"k{i}"] = kernel
    return f"k{i}({args})"


def _generate(sched: Schedule, input_names: list[str], param_names: list[str]):
    """The schedule as a Python function run(inputs, params) -> list of outputs.

    Steps of the helper lane (`sched.helper_steps`) become task functions, one per run of consecutive
    helper steps, queued when the step reaches the run's end: a task reads the step's values as
    arguments and keeps its own in `w` (a list by slot); the step returns once every task has run, and
    waits for them before it raises. The scheduler guarantees the step never reads a value a task
    computes, but in the steps from `sched.join_at` on, which it makes after that wait."""
    namespace: dict = {"StepRun": StepRun}
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
    lanes = sched.helper_steps
    on_helper = {sched.steps[i][2] for i in lanes}
    last_read: dict[int, int] = {}   # of the step's own values: the last step that reads each (the outputs: the end)
    for j, (_, operands, _, _) in enumerate(sched.steps):
        for o in operands:
            if o not in on_helper:
                last_read[o] = j
    last_read.update((s, len(sched.steps)) for s in sched.output_slots)
    body: list[str] = []
    after: list[str] = []   # the steps made once the helper is done (`sched.join_at`)
    task: list[str] = []    # the source of the task being gathered
    args: list[int] = []    # the step's values it reads, passed when it is queued
    join_at = len(sched.steps) if sched.join_at is None else sched.join_at

    def _own(o):
        return f"v{o}"

    def _after_wait(o):
        return f"helper.values[{o}]" if o in on_helper else f"v{o}"
    for i, (kernel, operands, result, frees) in enumerate(sched.steps):
        if i not in lanes:
            late = i >= join_at   # after the wait: the helper's values are there to read
            lines_for = after if late else body
            lines_for.append(f"v{result} = {_call(kernel, operands, i, namespace, _after_wait if late else _own)}")
            if frees:
                lines_for.append(" = ".join(f"v{f}" for f in frees) + " = None")
            continue
        for o in operands:
            if o not in on_helper and o not in sched.preloaded and o not in args:
                args.append(o)

        def value(o):
            return f"w[{o}]" if o in on_helper else f"c{o}" if o in sched.preloaded else f"a{o}"
        task.append(f"    w[{result}] = {_call(kernel, operands, i, namespace, value)}")
        dropped = [f for f in frees if f in on_helper]
        if dropped:
            task.append("    " + " = ".join(f"w[{f}]" for f in dropped) + " = None")
        if i + 1 not in lanes:   # the run's last step: the task is queued
            source = "\n".join([f"def task{i}(w{''.join(f', a{o}' for o in args)}):", *task])
            exec(compile(source, f"<gradlang helper task {i}>", "exec"), namespace)  # noqa: S102 - our own code
            body.append(f"helper.start(task{i}, ({''.join(f'v{o}, ' for o in args)}))")
            released = [o for o in args if last_read.get(o, -1) <= i]
            if released:   # the task holds them now; the step reads them no more
                body.append(" = ".join(f"v{o}" for o in released) + " = None")
            task, args = [], []
    outputs = ", ".join(f"helper.values[{s}]" if s in on_helper else f"v{s}" for s in sched.output_slots)
    if lanes:
        lines.append(f"    helper = StepRun({max(on_helper) + 1})")   # the helper's values, by slot
        lines.append("    try:")
        lines += [f"        {line}" for line in body]
        lines += ["        helper.finish()", *(f"        {line}" for line in after),
                  "    except BaseException:", "        helper.drain()", "        raise"]
    else:
        lines += [f"    {line}" for line in body + after]
    lines.append(f"    return [{outputs}]")
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

    def leaf_values(self, inputs: list, params: list) -> dict:
        """slot → value before the first step: the preloaded constants, the inputs and the params (for
        running the schedule step by step, outside the generated code)."""
        sched = self.schedule
        env = dict(sched.preloaded)
        env.update({sched.input_slots[n]: v for n, v in zip(self.input_names, inputs) if n in sched.input_slots})
        env.update({sched.param_slots[n]: v for n, v in zip(self.param_names, params) if n in sched.param_slots})
        return env

    def _locate(self, inputs: list, params: list) -> GradError:
        """Re-run step by step to name the op and source line whose kernel failed (the slow path)."""
        sched = self.schedule
        env = self.leaf_values(inputs, params)
        for i, (kernel, operands, result, _) in enumerate(self.steps):
            try:
                env[result] = kernel(*[env[o] for o in operands])
            except _KERNEL_ERRORS as err:
                node = sched.nodes[i]
                return GradError(f"{self.graph.op(node)} failed at run time: {err}", self.graph.location(node))
        return GradError("a kernel failed at run time and could not be located")
