"""JAX references for every benchmark step, written as a JAX user would: a pure loss function of a
dict of params, `jax.jit` of `jax.value_and_grad` plus the SGD update (params donated, so XLA may
update them in place), float32 on the CPU. The ops are JAX's own: `lax.conv_general_dilated` for the
convolutions, `lax.reduce_window` for max pooling, `lax.scan` for the LSTM's recurrence,
`jax.nn.softmax` / `jax.nn.log_softmax` for attention and the losses.

Optional: the runner adds them when `import jax` works (`pip install -e '.[bench]'`). They take NumPy
arrays like the other references, so the runner checks their loss and gradients against gradlang's
the same way. An input array is put on the device once (as a training loop that keeps its batch there
would); integer labels become int32, JAX's default integer type.
"""
from __future__ import annotations

import numpy as np


def version() -> str | None:
    """jax's version, or None when it is not installed."""
    try:
        import jax
    except ImportError:
        return None
    return jax.__version__


def available() -> bool:
    return version() is not None


def cross_entropy(logits, labels):
    """The mean over rows of −log softmax(logits)[label], for [R, C] logits and [R] labels."""
    import jax
    import jax.numpy as jnp
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)
    return -jnp.mean(picked)


class JaxReference:
    """Params as device arrays under gradlang's names, a jitted SGD step, and a subclass's pure
    `loss(params, x, y)` (a static method: jit traces it once)."""

    def __init__(self, params: dict, lr: float):
        import jax
        import jax.numpy as jnp
        self.jnp = jnp
        self.state = {k: jnp.asarray(np.array(v, dtype=np.float32)) for k, v in params.items()}
        loss = self.loss

        def sgd_step(params, x, y):
            value, grads = jax.value_and_grad(loss)(params, x, y)
            return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), value

        self._step = jax.jit(sgd_step, donate_argnums=0)
        self._loss_and_grads = jax.jit(jax.value_and_grad(loss))
        self._arrays: dict[int, tuple] = {}

    def array(self, array: np.ndarray):
        """The array on the device (made once per array, as a training loop would)."""
        found = self._arrays.get(id(array))
        if found is None or found[0] is not array:
            value = array.astype(np.int32) if array.dtype.kind in "iu" else array
            found = self._arrays[id(array)] = (array, self.jnp.asarray(value))
        return found[1]

    def loss_and_grads(self, x, y):
        value, grads = self._loss_and_grads(self.state, self.array(x), self.array(y))
        return float(value), {k: np.array(g) for k, g in grads.items()}

    def params(self) -> dict:
        """The current params, as NumPy arrays under gradlang's names."""
        return {k: np.array(v) for k, v in self.state.items()}

    def step(self, x, y) -> float:
        # float() waits for the result: JAX dispatches asynchronously, and the step isn't done before
        self.state, value = self._step(self.state, self.array(x), self.array(y))
        return float(value)


class JaxMLP(JaxReference):
    """784-128-64-10 ReLU MLP, softmax cross-entropy, SGD at 0.05 — the step of mlp.grad."""

    def __init__(self, params: dict, lr: float = 0.05):
        super().__init__(params, lr)

    @staticmethod
    def loss(p, x, y):
        import jax
        h1 = jax.nn.relu(x @ p["W1"] + p["b1"])
        h2 = jax.nn.relu(h1 @ p["W2"] + p["b2"])
        return cross_entropy(h2 @ p["W3"] + p["b3"], y)


class JaxLinReg(JaxReference):
    """mean((w·x + b − y)²), full batch, SGD at 0.1 — the step of linreg.grad."""

    def __init__(self, params: dict, lr: float = 0.1):
        super().__init__(params, lr)

    @staticmethod
    def loss(p, x, y):
        import jax.numpy as jnp
        return jnp.mean((p["w"] * x + p["b"] - y) ** 2)


class JaxCNN(JaxReference):
    """The step of cnn.grad: `lax.conv_general_dilated` (5×5, pad 2, NCHW / OIHW) + ReLU + a 2×2
    `lax.reduce_window` max, twice; flatten (NCHW), dense 1568 → 128 ReLU, dense 128 → 10, softmax
    cross-entropy, SGD at 0.05."""

    def __init__(self, params: dict, lr: float = 0.05):
        super().__init__(params, lr)

    @staticmethod
    def loss(p, x, y):
        import jax
        import jax.numpy as jnp
        from jax import lax

        def conv_relu_pool(h, w, b):
            h = lax.conv_general_dilated(h, w, (1, 1), ((2, 2), (2, 2)), dimension_numbers=("NCHW", "OIHW", "NCHW"))
            h = jax.nn.relu(h + b[:, None, None])
            return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

        h = conv_relu_pool(x, p["conv1.W"], p["conv1.b"])
        h = conv_relu_pool(h, p["conv2.W"], p["conv2.b"])
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ p["hidden.W"] + p["hidden.b"])
        return cross_entropy(h @ p["out.W"] + p["out.b"], y)


class JaxLSTM(JaxReference):
    """The step of lstm.grad: embedding 65 → 32; the stdlib LSTM cell 32 → 128 (gates i, f, g, o from
    x W + h U + b, forget bias 1) as a `lax.scan` over time from a zero state, the input products for
    all steps done before it; dense 128 → 65 on every step's h; softmax cross-entropy over batch and
    time; SGD at 0.5."""

    def __init__(self, params: dict, lr: float = 0.5):
        super().__init__(params, lr)

    @staticmethod
    def loss(p, x, y, forget_bias=1.0):
        import jax
        import jax.numpy as jnp
        from jax import lax

        u = p["cell.U"]

        def cell(state, xw):
            h, c = state
            i, f, g, o = jnp.split(xw + h @ u, 4, axis=-1)
            c = jax.nn.sigmoid(f + forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        xw = p["embed.E"][x.T] @ p["cell.W"] + p["cell.b"]      # time-major [T, B, 4·hidden]
        zeros = jnp.zeros((x.shape[0], u.shape[0]), xw.dtype)
        _, hs = lax.scan(cell, (zeros, zeros), xw)
        logits = hs.reshape(-1, hs.shape[-1]) @ p["readout.W"] + p["readout.b"]
        return cross_entropy(logits, y.T.reshape(-1))


class JaxAttention(JaxReference):
    """The step of attention.grad: embedding + learned positions; a pre-norm transformer block (layer
    norm, 4-head causal self-attention with `jax.nn.softmax` and an output projection, residual; layer
    norm, ReLU MLP d → 4d → d, residual); a final layer norm, readout, softmax cross-entropy over every
    position, SGD at 0.1."""

    def __init__(self, params: dict, lr: float = 0.1):
        super().__init__(params, lr)

    @staticmethod
    def loss(p, x, y, heads=4, eps=1e-5):
        import jax
        import jax.numpy as jnp

        b, t = x.shape
        d = p["position"].shape[1]

        def norm(h, name):
            centred = h - h.mean(-1, keepdims=True)
            variance = (centred * centred).mean(-1, keepdims=True)
            return centred * jax.lax.rsqrt(variance + eps) * p[name + ".gain"] + p[name + ".bias"]

        def split(h):                                         # [B, T, d] → [B, T, heads, d_head]
            return h.reshape(b, t, heads, d // heads)

        x0 = p["embed.E"][x] + p["position"]
        n1 = norm(x0, "block.norm1")
        q, k, v = (split(n1 @ p[f"block.attend.W{c}"]) for c in "qkv")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads).astype(np.float32)
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -1e9)
        heads_out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        x1 = x0 + heads_out.reshape(b, t, d) @ p["block.attend.Wo"]
        ff = jax.nn.relu(norm(x1, "block.norm2") @ p["block.ff.layers.0.W"] + p["block.ff.layers.0.b"])
        x2 = x1 + ff @ p["block.ff.layers.1.W"] + p["block.ff.layers.1.b"]
        logits = norm(x2, "norm") @ p["readout.W"] + p["readout.b"]
        return cross_entropy(logits.reshape(b * t, -1), y.reshape(-1))
