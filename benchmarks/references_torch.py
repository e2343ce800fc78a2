"""PyTorch eager references for the MLP and linear-regression steps: what most people would write
in a framework with a tape (autograd) and `torch.optim.SGD`. Optional: the runner adds them when
`import torch` works (`pip install -e '.[bench]'`; for the CPU build alone,
`pip install torch --index-url https://download.pytorch.org/whl/cpu`).

They take and return NumPy arrays like the other references, so the runner checks their loss and
gradients against gradlang's the same way; the timed `step` converts nothing (tensors share the
feed's memory)."""
from __future__ import annotations

import numpy as np


def version() -> str | None:
    """torch's version, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def available() -> bool:
    return version() is not None


def one_thread() -> None:
    """Run PyTorch's ops on the calling thread alone (for the CPU-time clock), when it is installed."""
    if available():
        import torch
        torch.set_num_threads(1)


class TorchReference:
    """Params as leaf tensors under gradlang's names, plain SGD, and a subclass's `loss(x, y)`."""

    def __init__(self, params: dict, lr: float):
        import torch
        self.torch = torch
        self.p = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in params.items()}
        self.optimizer = torch.optim.SGD(list(self.p.values()), lr=lr)
        self._tensors: dict[int, object] = {}

    def tensor(self, array: np.ndarray):
        """The array as a tensor sharing its memory (made once per array, as a training loop would)."""
        found = self._tensors.get(id(array))
        if found is None or found[0] is not array:
            found = self._tensors[id(array)] = (array, self.torch.from_numpy(array))
        return found[1]

    def loss_and_grads(self, x, y):
        for p in self.p.values():
            p.grad = None
        loss = self.loss(self.tensor(x), self.tensor(y))
        loss.backward()
        return loss.item(), {k: p.grad.numpy().copy() for k, p in self.p.items()}

    def step(self, x, y) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.tensor(x), self.tensor(y))
        loss.backward()
        self.optimizer.step()
        return loss.item()


class TorchMLP(TorchReference):
    """784-128-64-10 ReLU MLP, softmax cross-entropy, SGD at 0.05 — the step of mlp.grad."""

    def __init__(self, params: dict, lr: float = 0.05):
        super().__init__(params, lr)

    def loss(self, x, y):
        torch, p = self.torch, self.p
        h1 = torch.relu(torch.addmm(p["b1"], x, p["W1"]))
        h2 = torch.relu(torch.addmm(p["b2"], h1, p["W2"]))
        logits = torch.addmm(p["b3"], h2, p["W3"])
        return torch.nn.functional.cross_entropy(logits, y)


class TorchLinReg(TorchReference):
    """mean((w·x + b − y)²), full batch, SGD at 0.1 — the step of linreg.grad."""

    def __init__(self, params: dict, lr: float = 0.1):
        super().__init__(params, lr)

    def loss(self, x, y):
        p = self.p
        return ((p["w"] * x + p["b"] - y) ** 2).mean()
