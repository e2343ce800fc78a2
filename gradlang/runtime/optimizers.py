"""Optimizers: each declares its settings (None = required) and updates params in place.

A setting may be a number or a function of the step (a learning-rate schedule), evaluated by the
training loop before each update and passed in as a float.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class OptimizerDef:
    settings: dict          # name → default (None: required)
    make: Callable          # (params: list[ndarray]) -> optimizer object with .update(params, grads, **settings)
    doc: str


class SGD:
    """p ← p − lr·v with v ← momentum·v + g (plain gradient descent when momentum = 0)."""

    def __init__(self, params: list[np.ndarray]):
        self.velocity = [np.zeros_like(p) for p in params]
        self.scratch = [np.empty_like(p) for p in params]

    def update(self, params, grads, lr: float, momentum: float = 0.0, nesterov: bool = False) -> None:
        for p, g, v, tmp in zip(params, grads, self.velocity, self.scratch):
            if momentum:
                v *= momentum
                v += g
                direction = np.add(g, momentum * v, out=tmp) if nesterov else v
            else:
                direction = g
            np.multiply(direction, p.dtype.type(lr), out=tmp)
            p -= tmp

    def state(self) -> dict:
        return {f"velocity.{i}": v for i, v in enumerate(self.velocity)}

    def load_state(self, state: dict) -> None:
        for i, v in enumerate(self.velocity):
            v[...] = state[f"velocity.{i}"]


OPTIMIZERS: dict[str, OptimizerDef] = {
    "sgd": OptimizerDef({"lr": None, "momentum": 0.0, "nesterov": False}, SGD,
                        "stochastic gradient descent, optionally with (Nesterov) momentum"),
}
