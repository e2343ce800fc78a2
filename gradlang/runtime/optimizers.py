"""Optimizers: each updates params in place. Their settings, defaults and update rules are declared in
frontend/plan.py (OPTIMIZERS), where a program's call is checked.

A setting may be a number or a function of the step (a learning-rate schedule), evaluated by the
training loop before each update and passed in as a float. Every optimizer applies `clip_norm` and
`weight_decay` here, before its own update.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..frontend.plan import OPTIMIZERS as SIGNATURES


class Optimizer:
    """Shared by all: gradient clipping, weight decay, a step counter, state for checkpoints."""

    decoupled_decay = False
    slots: tuple[str, ...] = ()      # per-param state arrays, zero-initialised

    def __init__(self, params: list[np.ndarray]):
        self.t = 0
        self.state_arrays = {slot: [np.zeros_like(p) for p in params] for slot in self.slots}
        self.scratch = [np.empty_like(p) for p in params]   # updates write here: no allocation per step

    def update(self, params, grads, clip_norm: float = 0.0, weight_decay: float = 0.0, owned=None,
               **settings) -> None:
        """`owned[i]` says grads[i] is memory the caller gives up (a step's fresh result): the update
        may use it as its scratch, sparing a pass through other memory."""
        self.t += 1
        owned = owned or (False,) * len(grads)
        if clip_norm:
            norm = np.sqrt(sum(float(np.vdot(g, g)) for g in grads))
            if norm > clip_norm:
                grads = [g * g.dtype.type(clip_norm / norm) for g in grads]
                owned = (True,) * len(grads)
        if weight_decay and not self.decoupled_decay:
            grads = [g + p.dtype.type(weight_decay) * p for p, g in zip(params, grads)]
            owned = (True,) * len(grads)
        if weight_decay and self.decoupled_decay:
            for p in params:
                p *= p.dtype.type(1.0 - settings["lr"] * weight_decay)
        self.apply(params, grads, owned, **settings)

    def apply(self, params, grads, owned, **settings) -> None:  # pragma: no cover - each optimizer defines it
        raise NotImplementedError

    def state(self) -> dict:
        out = {"t": np.asarray(self.t)}
        for slot, arrays in self.state_arrays.items():
            out.update({f"{slot}.{i}": a for i, a in enumerate(arrays)})
        return out

    def load_state(self, state: dict) -> None:
        self.t = int(state["t"])
        for slot, arrays in self.state_arrays.items():
            for i, a in enumerate(arrays):
                a[...] = state[f"{slot}.{i}"]


class SGD(Optimizer):
    slots = ("velocity",)

    def apply(self, params, grads, owned, lr, momentum=0.0, nesterov=False):
        if not momentum:   # the common case, kept short: it runs once per param per step
            for p, g, tmp, mine in zip(params, grads, self.scratch, owned):
                if p.ndim:
                    step = g if mine else tmp   # g·lr written over g itself, when g is ours to overwrite
                    np.multiply(g, lr, out=step)
                    np.subtract(p, step, out=p)
                else:   # a scalar: NumPy scalar arithmetic, the same float ops without two ufunc calls
                    p[()] = p[()] - g * lr
            return
        for p, g, v, tmp in zip(params, grads, self.state_arrays["velocity"], self.scratch):
            t = p.dtype.type
            v *= t(momentum)
            v += g
            if nesterov:
                np.multiply(v, t(momentum), out=tmp)
                tmp += g
                g = tmp
            else:
                g = v
            np.multiply(g, t(lr), out=tmp)
            p -= tmp


    def subtract(self, params, updates) -> None:
        """p ← p − u: the step for updates that are already lr·g (plain SGD at a constant rate, whose
        rate the compiled training step folds into its backward pass); no clipping or decay applies."""
        self.t += 1
        for p, u in zip(params, updates):
            if p.ndim:
                np.subtract(p, u, out=p)
            else:   # a scalar: NumPy scalar arithmetic, the same float op without a ufunc call
                p[()] = p[()] - u


class Adam(Optimizer):
    slots = ("m", "v")

    def apply(self, params, grads, owned, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        correction1 = 1.0 - beta1 ** self.t
        correction2 = 1.0 - beta2 ** self.t
        step = lr * np.sqrt(correction2) / correction1
        for p, g, m, v, tmp in zip(params, grads, self.state_arrays["m"], self.state_arrays["v"], self.scratch):
            t = p.dtype.type
            m *= t(beta1)
            np.multiply(g, t(1.0 - beta1), out=tmp)
            m += tmp
            v *= t(beta2)
            np.multiply(g, g, out=tmp)
            tmp *= t(1.0 - beta2)
            v += tmp
            # ε is added to √v̂ = √v / √correction2, as in the paper and PyTorch
            np.sqrt(v, out=tmp)
            tmp += t(eps * np.sqrt(correction2))
            np.divide(m, tmp, out=tmp)
            tmp *= t(step)
            p -= tmp


class AdamW(Adam):
    decoupled_decay = True


class RMSProp(Optimizer):
    slots = ("square_avg", "buffer")

    def apply(self, params, grads, owned, lr, alpha=0.99, eps=1e-8, momentum=0.0):
        for p, g, s, b in zip(params, grads, self.state_arrays["square_avg"], self.state_arrays["buffer"]):
            t = p.dtype.type
            s *= t(alpha)
            s += t(1.0 - alpha) * (g * g)
            direction = g / (np.sqrt(s) + t(eps))
            if momentum:
                b *= t(momentum)
                b += direction
                direction = b
            p -= t(lr) * direction


class Adagrad(Optimizer):
    slots = ("sum_sq",)

    def apply(self, params, grads, owned, lr, eps=1e-10):
        for p, g, s in zip(params, grads, self.state_arrays["sum_sq"]):
            t = p.dtype.type
            s += g * g
            p -= t(lr) * g / (np.sqrt(s) + t(eps))


@dataclass(frozen=True)
class OptimizerDef:
    settings: dict          # name → default (None: required), including the common ones
    make: type
    doc: str


OPTIMIZERS: dict[str, OptimizerDef] = {
    name: OptimizerDef(SIGNATURES[name].settings, cls, SIGNATURES[name].doc)
    for name, cls in [("sgd", SGD), ("adam", Adam), ("adamw", AdamW), ("rmsprop", RMSProp), ("adagrad", Adagrad)]
}
if set(OPTIMIZERS) != set(SIGNATURES):
    raise TypeError(f"optimizers declared without an implementation: {sorted(set(SIGNATURES) - set(OPTIMIZERS))}")
