"""Hand-written NumPy implementations of exactly the computations in the benchmark .grad files: what a
careful person would write, with preallocated buffers and `out=` where it saves a copy."""
from __future__ import annotations

import numpy as np


class SGDReference:
    """Params copied under gradlang's names, a gradient buffer for each, and plain SGD; a subclass
    writes `loss_and_grads(x, y)`."""

    def __init__(self, params: dict, lr: float):
        self.p = {k: v.copy() for k, v in params.items()}
        self.grads = {k: np.empty_like(v) for k, v in self.p.items()}
        self.lr = np.float32(lr)

    def step(self, x, y) -> float:
        loss, g = self.loss_and_grads(x, y)
        for k, v in self.p.items():
            g[k] *= self.lr
            v -= g[k]
        return loss


class MLPReference(SGDReference):
    """784-128-64-10 ReLU MLP, softmax cross-entropy on integer labels, SGD — the step of mlp.grad."""

    def __init__(self, params: dict, batch: int, lr: float = 0.05):
        super().__init__(params, lr)
        self.rows = np.arange(batch)

    def loss_and_grads(self, x, y):
        p, g = self.p, self.grads
        z1 = x @ p["W1"]
        z1 += p["b1"]
        h1 = np.maximum(z1, 0)
        z2 = h1 @ p["W2"]
        z2 += p["b2"]
        h2 = np.maximum(z2, 0)
        z3 = h2 @ p["W3"]
        z3 += p["b3"]
        z3 -= z3.max(axis=1, keepdims=True)
        e = np.exp(z3)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - z3[self.rows, y]))
        d3 = e
        d3 /= s
        d3[self.rows, y] -= 1
        d3 *= np.float32(1.0 / len(y))
        np.matmul(h2.T, d3, out=g["W3"])
        np.sum(d3, axis=0, out=g["b3"])
        dh2 = d3 @ p["W3"].T
        dh2 *= z2 > 0
        np.matmul(h1.T, dh2, out=g["W2"])
        np.sum(dh2, axis=0, out=g["b2"])
        dh1 = dh2 @ p["W2"].T
        dh1 *= z1 > 0
        np.matmul(x.T, dh1, out=g["W1"])
        np.sum(dh1, axis=0, out=g["b1"])
        return loss, g


class LinRegReference:
    """mean((w·x + b − y)²) over 1,000 points, full batch, SGD — the step of linreg.grad."""

    def __init__(self, params: dict, n: int, lr: float = 0.1):
        self.w = np.float32(params["w"])
        self.b = np.float32(params["b"])
        self.lr = np.float32(lr)
        self.r = np.empty(n, dtype=np.float32)

    def loss_and_grads(self, x, y):
        r = self.r
        np.multiply(x, self.w, out=r)
        r += self.b
        r -= y
        n = np.float32(len(r))
        loss = np.dot(r, r) / n
        gw = np.float32(2.0) * np.dot(r, x) / n
        gb = np.float32(2.0) * r.sum() / n
        return float(loss), {"w": gw, "b": gb}

    def step(self, x, y) -> float:
        loss, g = self.loss_and_grads(x, y)
        self.w -= self.lr * g["w"]
        self.b -= self.lr * g["b"]
        return loss
