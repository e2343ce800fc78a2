"""PyTorch eager references for every benchmark step: what most people would write in a framework with
a tape (autograd), its fused ops (`F.conv2d`, `F.max_pool2d`, `nn.LSTM`, `F.scaled_dot_product_attention`,
`F.layer_norm`, `F.cross_entropy`) and `torch.optim.SGD`. Optional: the runner adds them when
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
    """Run PyTorch's ops on the calling thread alone, when it is installed."""
    if available():
        import torch
        torch.set_num_threads(1)


def threads() -> int | None:
    """How many threads PyTorch's ops use (None without torch)."""
    if not available():
        return None
    import torch
    return torch.get_num_threads()


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

    def gradients(self) -> dict:
        """The gradients of the last backward pass, as NumPy arrays under gradlang's names and layouts."""
        return {k: p.grad.numpy().copy() for k, p in self.p.items()}

    def params(self) -> dict:
        """The current params, as NumPy arrays under gradlang's names and layouts."""
        return {k: p.detach().numpy().copy() for k, p in self.p.items()}

    def loss_and_grads(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.tensor(x), self.tensor(y))
        loss.backward()
        return loss.item(), self.gradients()

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


class TorchCNN(TorchReference):
    """The step of cnn.grad: `F.conv2d` (5×5, pad 2) + ReLU + `F.max_pool2d` twice, flatten (NCHW),
    dense 1568 → 128 ReLU, dense 128 → 10, `F.cross_entropy`, SGD at 0.05."""

    def __init__(self, params: dict, lr: float = 0.05):
        super().__init__(params, lr)

    def loss(self, x, y):
        torch, p = self.torch, self.p
        F = torch.nn.functional
        h = F.max_pool2d(torch.relu(F.conv2d(x, p["conv1.W"], p["conv1.b"], padding=2)), 2)
        h = F.max_pool2d(torch.relu(F.conv2d(h, p["conv2.W"], p["conv2.b"], padding=2)), 2)
        h = torch.relu(torch.addmm(p["hidden.b"], h.flatten(1), p["hidden.W"]))
        return F.cross_entropy(torch.addmm(p["out.b"], h, p["out.W"]), y)


class TorchLSTM(TorchReference):
    """The step of lstm.grad with `nn.LSTM`: embedding 65 → 32, one LSTM layer 32 → 128 over every step
    from a zero state, dense 128 → 65 on each step's h, `F.cross_entropy` over batch and time, SGD at 0.5.

    nn.LSTM keeps gradlang's gate order (i, f, g, o) with transposed weights: weight_ih = Wᵀ,
    weight_hh = Uᵀ, bias_ih = b. Its second bias, bias_hh, holds the stdlib cell's constant forget bias
    (1 on the f block, 0 elsewhere) and is frozen, so the sum of the two biases is what gradlang adds
    and only b learns."""

    CELL = ("cell.W", "cell.U", "cell.b")

    def __init__(self, params: dict, lr: float = 0.5, forget_bias: float = 1.0):
        import torch
        rest = {k: v for k, v in params.items() if k not in self.CELL}
        n_in, n_gates = params["cell.W"].shape
        n_h = n_gates // 4
        self.lstm = torch.nn.LSTM(n_in, n_h, batch_first=True)
        with torch.no_grad():
            self.lstm.weight_ih_l0.copy_(torch.from_numpy(np.array(params["cell.W"]).T))
            self.lstm.weight_hh_l0.copy_(torch.from_numpy(np.array(params["cell.U"]).T))
            self.lstm.bias_ih_l0.copy_(torch.from_numpy(np.array(params["cell.b"])))
            self.lstm.bias_hh_l0.zero_()
            self.lstm.bias_hh_l0[n_h:2 * n_h] = forget_bias
        self.lstm.bias_hh_l0.requires_grad_(False)
        super().__init__(rest, lr)
        self.optimizer.add_param_group({"params": [self.lstm.weight_ih_l0, self.lstm.weight_hh_l0,
                                                   self.lstm.bias_ih_l0]})

    def _cell(self):
        return {"cell.W": (self.lstm.weight_ih_l0, True), "cell.U": (self.lstm.weight_hh_l0, True),
                "cell.b": (self.lstm.bias_ih_l0, False)}

    def gradients(self) -> dict:
        out = super().gradients()
        for name, (t, transposed) in self._cell().items():
            out[name] = (t.grad.T if transposed else t.grad).numpy().copy()
        return out

    def params(self) -> dict:
        out = super().params()
        for name, (t, transposed) in self._cell().items():
            out[name] = (t.T if transposed else t).detach().numpy().copy()
        return out

    def loss(self, x, y):
        torch, p = self.torch, self.p
        F = torch.nn.functional
        hs, _ = self.lstm(F.embedding(x, p["embed.E"]))          # [B, T, hidden], from a zero state
        logits = torch.addmm(p["readout.b"], hs.reshape(-1, hs.shape[-1]), p["readout.W"])
        return F.cross_entropy(logits, y.reshape(-1))


class TorchAttention(TorchReference):
    """The step of attention.grad: embedding + learned positions, a pre-norm transformer block
    (`F.layer_norm`, 4-head causal `F.scaled_dot_product_attention`, output projection, residual;
    `F.layer_norm`, ReLU MLP d → 4d → d, residual), a final `F.layer_norm`, readout, `F.cross_entropy`
    over every position, SGD at 0.1."""

    def __init__(self, params: dict, heads: int = 4, lr: float = 0.1, eps: float = 1e-5):
        super().__init__(params, lr)
        self.heads, self.eps = heads, eps

    def loss(self, x, y):
        torch, p = self.torch, self.p
        F = torch.nn.functional
        b, t = x.shape
        d = p["position"].shape[1]

        def norm(h, name):
            return F.layer_norm(h, (d,), p[name + ".gain"], p[name + ".bias"], self.eps)

        def split(h):                                         # [B, T, d] → [B, heads, T, d_head]
            return h.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        x0 = F.embedding(x, p["embed.E"]) + p["position"]
        n1 = norm(x0, "block.norm1")
        q, k, v = (split(n1 @ p[f"block.attend.W{c}"]) for c in "qkv")
        heads_out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x1 = x0 + heads_out.transpose(1, 2).reshape(b, t, d) @ p["block.attend.Wo"]
        ff = torch.relu(norm(x1, "block.norm2") @ p["block.ff.layers.0.W"] + p["block.ff.layers.0.b"])
        x2 = x1 + ff @ p["block.ff.layers.1.W"] + p["block.ff.layers.1.b"]
        logits = norm(x2, "norm") @ p["readout.W"] + p["readout.b"]
        return F.cross_entropy(logits.view(b * t, -1), y.view(-1))
