"""Finding the first op that made a value NaN or infinite.

A normal step pays nothing for this: the generated step function (runtime/interpreter.py) runs as it
is, and training only looks at the loss it returns. When that loss is not finite, the same step is run
once more here, kernel by kernel over the same schedule, testing every float result; the first
non-finite one names the op, its place in the program and the step. `Program.check_numerics = True`
(`gradlang run --check-numerics`) runs every step this way, so a NaN in a gradient or in a value the
loss does not depend on is caught too, at the step it appears.

The checked run uses the executable's schedule as it is, and frees buffers where the schedule does.
"""
from __future__ import annotations

import numpy as np

from ..errors import GradError


class NonFiniteError(GradError):
    """A NaN or infinity, located at the op (or the input or param) where it first appeared."""

    def __init__(self, message: str, span=None, step: int | None = None, op: str | None = None,
                 node: int | None = None, notes: tuple[str, ...] = ()):
        super().__init__(message, span, notes)
        self.step, self.op, self.node = step, op, node


def _float(value) -> bool:
    return isinstance(value, np.ndarray | np.generic) and value.dtype.kind in "fc"


def _what(value: np.ndarray) -> str:
    """'nan', 'inf' or '-inf' (the first kind present, in that order), with a count for arrays."""
    a = np.asarray(value)
    kind = "nan" if np.isnan(a).any() else "inf" if np.isposinf(a).any() else "-inf"
    if a.size <= 1:
        return kind
    return f"{kind} ({int(np.count_nonzero(~np.isfinite(a)))} of {a.size} values)"


def _at(step: int | None) -> str:
    return f" at step {step}" if step is not None else ""


def _magnitude(value) -> float | None:
    return float(np.max(np.abs(value))) if _float(value) and np.size(value) else None


def _largest(sizes: list) -> str:
    sizes = [s for s in sizes if s is not None]
    return f"; the largest operand magnitude was {max(sizes):.4g}" if sizes else ""


def _overwritten_operand(kernel) -> int | None:
    """The operand a kernel writes its result into (schedule.py's InPlace and WhereInto, perhaps inside
    an IndexGuard): its value is gone once the kernel has run, so it is measured before."""
    while not hasattr(kernel, "index") and hasattr(kernel, "kernel"):
        kernel = kernel.kernel
    return getattr(kernel, "index", None)


def run_checked(exe, inputs: list, params: list, step: int | None = None) -> list:
    """Run `exe` (an interpreter Executable) like `exe.run`, but test the inputs, the params and every
    float result, and raise NonFiniteError at the first NaN or infinity. Slow: for diagnosis."""
    sched, graph = exe.schedule, exe.graph
    env = dict(sched.preloaded)
    for kind, names, values, slots in (("input", exe.input_names, inputs, sched.input_slots),
                                       ("param", exe.param_names, params, sched.param_slots)):
        for name, value in zip(names, values):
            if name not in slots:
                continue
            env[slots[name]] = value
            if _float(value) and not np.isfinite(value).all():
                node = graph.leaves(kind).get(name)
                if node is None and kind == "param" and name in graph.leaves("state"):   # read as params are
                    kind, node = "state", graph.leaves("state")[name]
                where = graph.location(node) if node is not None else None
                cause = {"input": "",
                         "param": "; an earlier update made it so (a non-finite gradient whose loss was finite?)",
                         "state": "; an earlier training step's `update` made it so (from a non-finite value "
                                  "of that step's forward pass?)"}[kind]
                raise NonFiniteError(f"{kind} {name} holds {_what(value)}{_at(step)}{cause}", where, step, kind, node)
    for i, entry in enumerate(sched.steps):
        kernel, operands, result = entry[0], entry[1], entry[2]
        args = [env[o] for o in operands]
        overwritten = _overwritten_operand(kernel)
        before = _magnitude(args[overwritten]) if overwritten is not None else None
        with np.errstate(all="ignore"):
            value = kernel(*args)
        if _float(value) and not np.isfinite(value).all():
            node = sched.nodes[i]
            op = graph.op(node)
            # every computed operand was tested already; only a constant folded at compile time can be bad
            # (and an in-place kernel may have overwritten its first operand by now)
            bad = [k for k, o in enumerate(operands) if o in sched.preloaded and _float(sched.preloaded[o])
                   and not np.isfinite(sched.preloaded[o]).all()]
            origin = (f"from its non-finite operand {bad[0] + 1} (a constant computed at compile time)" if bad
                      else "from finite operands" + _largest(
                          [before if k == overwritten else _magnitude(a) for k, a in enumerate(args)]))
            part = " in the backward pass" if graph.data(node).get("role") == "grad" else ""
            raise NonFiniteError(f"{op} produced {_what(value)}{_at(step)}{part}, {origin}",
                                 graph.location(node), step, op, node)
        env[result] = value
        for freed in (entry[3] if len(entry) > 3 else ()):
            env.pop(freed, None)
    return [env[s] for s in sched.output_slots]


def nonfinite_loss(exe, inputs: list, params: list, step: int, loss: float) -> NonFiniteError:
    """The error for a step whose loss came out `loss` (NaN or ±inf): the step is re-run checked to find
    the first op that produced a non-finite value, and the error is located there."""
    advice = "try a smaller learning rate or gradient clipping (clip_norm)"
    sched = exe.schedule
    if sched.output_slots[0] in sched.preloaded:   # folded at compile time: no step to re-run
        node = sched.output_nodes[0]
        return NonFiniteError(f"the loss is {loss}: it depends on no input or param, so it was computed when the "
                              "program was compiled", exe.graph.location(node), step, exe.graph.op(node), node)
    try:
        run_checked(exe, inputs, params, step)
    except NonFiniteError as found:
        return NonFiniteError(f"the loss became {loss} at step {step}; the first non-finite value: {found.message}; "
                              f"{advice}", found.span, step, found.op, found.node)
    return NonFiniteError(f"the loss became {loss} at step {step}, but running the step again op by op gave "
                          f"finite values (it draws random numbers, e.g. for dropout); {advice}", None, step)
