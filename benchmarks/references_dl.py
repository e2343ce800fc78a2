"""Hand-written NumPy steps of the deep-learning benchmark programs (cnn.grad, lstm.grad, attention.grad).

Each is what a careful person writes by hand for exactly the program's computation: buffers
allocated once per batch size, `out=` wherever it saves a copy, convolution as im2col
(`sliding_window_view`) plus one matrix product, a recurrence's input products done for all time
steps at once. Params are copied from the gradlang program (so both start from the same numbers) and
keep gradlang's qualified names; `loss_and_grads` returns gradients under those names.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .references import SGDReference

F32 = np.float32


def sigmoid(z, out):
    """1 / (1 + e^−z) as ½·tanh(z/2) + ½: no overflow for large |z|."""
    np.multiply(z, F32(0.5), out=out)
    np.tanh(out, out=out)
    out *= F32(0.5)
    out += F32(0.5)
    return out


class SoftmaxCrossEntropy:
    """The mean over rows of −log softmax(logits)[label], and its gradient in the logits, for [R, C] logits."""

    def __init__(self, rows: int, classes: int):
        self.rows = np.arange(rows)
        self.max = np.empty((rows, 1), F32)
        self.total = np.empty((rows, 1), F32)
        self.scale = F32(1.0 / rows)

    def __call__(self, logits, labels, grad_out) -> float:
        """The loss; writes d loss / d logits into grad_out (logits are left shifted by their row maximum)."""
        np.max(logits, axis=1, keepdims=True, out=self.max)
        logits -= self.max
        np.exp(logits, out=grad_out)
        np.sum(grad_out, axis=1, keepdims=True, out=self.total)
        loss = float(np.mean(np.log(self.total[:, 0]) - logits[self.rows, labels]))
        grad_out /= self.total
        grad_out[self.rows, labels] -= 1
        grad_out *= self.scale
        return loss


class LayerNorm:
    """(x − mean) / √(variance + eps) · gain + bias over the last axis of [R, n] rows, with its backward pass."""

    def __init__(self, rows: int, n: int, eps: float = 1e-5):
        self.eps = F32(eps)
        self.normed = np.empty((rows, n), F32)
        self.rstd = np.empty((rows, 1), F32)
        self.col = np.empty((rows, 1), F32)
        self.tmp = np.empty((rows, n), F32)
        self.inv_n = F32(1.0 / n)

    def forward(self, x, gain, bias, out):
        np.mean(x, axis=1, keepdims=True, out=self.col)
        np.subtract(x, self.col, out=self.normed)
        np.multiply(self.normed, self.normed, out=self.tmp)
        np.mean(self.tmp, axis=1, keepdims=True, out=self.rstd)
        self.rstd += self.eps
        np.sqrt(self.rstd, out=self.rstd)
        np.reciprocal(self.rstd, out=self.rstd)
        self.normed *= self.rstd
        np.multiply(self.normed, gain, out=out)
        out += bias
        return out

    def backward(self, dy, gain, dgain, dbias, dx_out):
        """Writes d/d gain and d/d bias; returns dx = rstd·(dn − mean(dn) − n·mean(dn·n)), dn = dy·gain."""
        np.multiply(dy, self.normed, out=self.tmp)
        np.sum(self.tmp, axis=0, out=dgain)
        np.sum(dy, axis=0, out=dbias)
        dn = np.multiply(dy, gain, out=dx_out)
        np.multiply(dn, self.normed, out=self.tmp)
        np.mean(self.tmp, axis=1, keepdims=True, out=self.col)
        np.multiply(self.normed, self.col, out=self.tmp)
        np.mean(dn, axis=1, keepdims=True, out=self.col)
        dn -= self.col
        dn -= self.tmp
        dn *= self.rstd
        return dn


def _pool_forward(a, pooled):
    """2×2, stride-2 max pooling of NHWC a [N, H, W, C] into pooled [N, H/2, W/2, C]."""
    n, h, w, c = a.shape
    win = a.reshape(n, h // 2, 2, w // 2, 2, c)
    np.maximum(win[:, :, 0, :, 0], win[:, :, 0, :, 1], out=pooled)
    np.maximum(pooled, win[:, :, 1, :, 0], out=pooled)
    np.maximum(pooled, win[:, :, 1, :, 1], out=pooled)
    return pooled


def _pool_backward(a, pooled, dpooled, da, taken, hit):
    """Routes dpooled to each window's first maximum (row-major), as gradlang's max_pool2d_grad does."""
    n, h, w, c = a.shape
    win = a.reshape(n, h // 2, 2, w // 2, 2, c)
    dwin = da.reshape(n, h // 2, 2, w // 2, 2, c)
    taken[...] = False
    for i in (0, 1):
        for j in (0, 1):
            np.equal(win[:, :, i, :, j], pooled, out=hit)
            hit &= ~taken
            taken |= hit
            np.multiply(dpooled, hit, out=dwin[:, :, i, :, j])
    return da


class CNNReference(SGDReference):
    """The step of cnn.grad: conv 5×5 (1 → 16, pad 2) + ReLU + 2×2 max-pool, conv 5×5 (16 → 32, pad 2) +
    ReLU + max-pool, flatten in NCHW order, dense 1568 → 128 ReLU, dense 128 → 10, softmax
    cross-entropy, SGD. Activations are kept NHWC and im2col columns in (KH, KW, C) order, so that each
    convolution is one contiguous copy and one product; conv2's input gradient is a third such
    convolution (of the padded output gradient with flipped filters) instead of a loop adding windows back."""

    def __init__(self, params: dict, batch: int, lr: float = 0.05):
        super().__init__(params, lr)
        n = batch
        self.pad1 = np.zeros((n, 32, 32, 1), F32)            # the input, zero-padded by 2
        self.cols1 = np.empty((n * 784, 25), F32)             # im2col of conv1: [N·28·28, C·KH·KW]
        self.a1 = np.empty((n * 784, 16), F32)                # conv1 + bias + ReLU, NHWC rows
        self.pad2 = np.zeros((n, 18, 18, 16), F32)            # pool1's output, zero-padded by 2
        self.cols2 = np.empty((n * 196, 400), F32)           # columns in (KH, KW, C) order: contiguous copies
        self.a2 = np.empty((n * 196, 32), F32)
        self.pool2 = np.empty((n, 7, 7, 32), F32)
        self.flat = np.empty((n, 1568), F32)                  # pool2 in NCHW order, as conv.flatten
        self.hidden = np.empty((n, 128), F32)
        self.logits = np.empty((n, 10), F32)
        self.dlogits = np.empty((n, 10), F32)
        self.dhidden = np.empty((n, 128), F32)
        self.dflat = np.empty((n, 1568), F32)
        self.da2 = np.empty((n * 196, 32), F32)
        self.pad_da2 = np.zeros((n, 18, 18, 32), F32)         # conv2's output gradient, zero-padded by 2
        self.cols_da2 = np.empty((n * 196, 800), F32)
        self.dpool1 = np.empty((n * 196, 16), F32)
        self.da1 = np.empty((n * 784, 16), F32)
        self.taken1, self.hit1 = np.empty((n, 14, 14, 16), bool), np.empty((n, 14, 14, 16), bool)
        self.taken2, self.hit2 = np.empty((n, 7, 7, 32), bool), np.empty((n, 7, 7, 32), bool)
        self.ce = SoftmaxCrossEntropy(n, 10)

    def loss_and_grads(self, x, y):
        p, g, n = self.p, self.grads, len(x)
        w1 = p["conv1.W"].reshape(16, 25)
        w2 = p["conv2.W"].transpose(0, 2, 3, 1).reshape(32, 400)            # [O, (KH, KW, C)]
        # conv1: im2col, one product, bias, ReLU
        self.pad1[:, 2:30, 2:30, 0] = x[:, 0]
        self.cols1.reshape(n, 28, 28, 1, 5, 5)[...] = sliding_window_view(self.pad1, (5, 5), axis=(1, 2))
        a1 = np.matmul(self.cols1, w1.T, out=self.a1)
        a1 += p["conv1.b"]
        np.maximum(a1, 0, out=a1)
        a1_img = a1.reshape(n, 28, 28, 16)
        pool1 = _pool_forward(a1_img, self.pad2[:, 2:16, 2:16, :])
        # conv2
        self.cols2.reshape(n, 14, 14, 5, 5, 16)[...] = sliding_window_view(
            self.pad2, (5, 5), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
        a2 = np.matmul(self.cols2, w2.T, out=self.a2)
        a2 += p["conv2.b"]
        np.maximum(a2, 0, out=a2)
        a2_img = a2.reshape(n, 14, 14, 32)
        pool2 = _pool_forward(a2_img, self.pool2)
        self.flat.reshape(n, 32, 7, 7)[...] = pool2.transpose(0, 3, 1, 2)
        # dense layers and the loss
        hidden = np.matmul(self.flat, p["hidden.W"], out=self.hidden)
        hidden += p["hidden.b"]
        np.maximum(hidden, 0, out=hidden)
        logits = np.matmul(hidden, p["out.W"], out=self.logits)
        logits += p["out.b"]
        loss = self.ce(logits, y, self.dlogits)
        # backward through the dense layers
        d = self.dlogits
        np.matmul(hidden.T, d, out=g["out.W"])
        np.sum(d, axis=0, out=g["out.b"])
        dh = np.matmul(d, p["out.W"].T, out=self.dhidden)
        dh *= hidden > 0
        np.matmul(self.flat.T, dh, out=g["hidden.W"])
        np.sum(dh, axis=0, out=g["hidden.b"])
        dflat = np.matmul(dh, p["hidden.W"].T, out=self.dflat)
        dpool2 = dflat.reshape(n, 32, 7, 7).transpose(0, 2, 3, 1)
        # pool2, ReLU, conv2
        da2 = _pool_backward(a2_img, pool2, dpool2, self.da2.reshape(n, 14, 14, 32), self.taken2, self.hit2)
        da2 = da2.reshape(n * 196, 32)
        da2 *= a2 > 0
        g["conv2.W"].transpose(0, 2, 3, 1)[...] = np.matmul(da2.T, self.cols2).reshape(32, 5, 5, 16)
        np.sum(da2, axis=0, out=g["conv2.b"])
        # conv2's input gradient is a convolution of the padded output gradient with the filters flipped
        # and their channel axes swapped: one more im2col and product (faster than adding windows back)
        self.pad_da2[:, 2:16, 2:16, :] = da2.reshape(n, 14, 14, 32)
        self.cols_da2.reshape(n, 14, 14, 5, 5, 32)[...] = sliding_window_view(
            self.pad_da2, (5, 5), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
        flipped = p["conv2.W"][:, :, ::-1, ::-1].transpose(1, 2, 3, 0).reshape(16, 800)   # [C, (KH, KW, O)]
        dpool1 = np.matmul(self.cols_da2, flipped.T, out=self.dpool1).reshape(n, 14, 14, 16)
        # pool1, ReLU, conv1 (the input gets no gradient)
        da1 = _pool_backward(a1_img, pool1, dpool1, self.da1.reshape(n, 28, 28, 16), self.taken1, self.hit1)
        da1 = da1.reshape(n * 784, 16)
        da1 *= a1 > 0
        np.matmul(da1.T, self.cols1, out=g["conv1.W"].reshape(16, 25))
        np.sum(da1, axis=0, out=g["conv1.b"])
        return loss, g


class LSTMReference(SGDReference):
    """The step of lstm.grad: embedding 65 → 32, the stdlib LSTM cell 32 → 128 (gates i, f, o, g from
    x W + h U + b; forget bias 1) over T steps from a zero state, dense 128 → 65 on every step's h,
    softmax cross-entropy averaged over batch and time, backpropagation through time, SGD. Arrays are
    time-major [T, B, …]; the input and readout products cover all steps in one matrix product."""

    def __init__(self, params: dict, batch: int, steps: int, lr: float = 0.5):
        super().__init__(params, lr)
        b, t = batch, steps
        n_in, n_h = self.p["cell.W"].shape[0], self.p["cell.U"].shape[0]
        vocab = self.p["embed.E"].shape[0]
        self.n_h = n_h
        self.emb = np.empty((t, b, n_in), F32)
        self.gates = np.empty((t, b, 4 * n_h), F32)           # x W + h U + b, then i, f, g, o in place
        self.cells = np.zeros((t + 1, b, n_h), F32)           # cells[0] is the zero state
        self.hs = np.zeros((t + 1, b, n_h), F32)              # likewise h
        self.tanh_c = np.empty((t, b, n_h), F32)
        self.logits = np.empty((t * b, vocab), F32)
        self.dlogits = np.empty((t * b, vocab), F32)
        self.dh_out = np.empty((t, b, n_h), F32)
        self.dgates = np.empty((t, b, 4 * n_h), F32)
        self.demb = np.empty((t * b, n_in), F32)
        self.dh = np.empty((b, n_h), F32)
        self.dc = np.empty((b, n_h), F32)
        self.tmp = np.empty((b, n_h), F32)
        self.ce = SoftmaxCrossEntropy(t * b, vocab)

    def loss_and_grads(self, x, y):
        p, g, n_h = self.p, self.grads, self.n_h
        steps, b = x.shape[1], x.shape[0]
        tokens = x.T                                          # time-major
        np.take(p["embed.E"], tokens, axis=0, out=self.emb)
        gates, cells, hs, tanh_c = self.gates, self.cells, self.hs, self.tanh_c
        np.matmul(self.emb.reshape(steps * b, -1), p["cell.W"], out=gates.reshape(steps * b, -1))
        gates += p["cell.b"]
        u = p["cell.U"]
        for t in range(steps):
            z = gates[t]
            z += hs[t] @ u
            i, f, gg, o = z[:, :n_h], z[:, n_h:2 * n_h], z[:, 2 * n_h:3 * n_h], z[:, 3 * n_h:]
            sigmoid(i, i)
            f += F32(1.0)                                     # forget_bias
            sigmoid(f, f)
            np.tanh(gg, out=gg)
            sigmoid(o, o)
            c = np.multiply(f, cells[t], out=cells[t + 1])
            c += np.multiply(i, gg, out=self.tmp)
            np.tanh(c, out=tanh_c[t])
            np.multiply(o, tanh_c[t], out=hs[t + 1])
        h_all = hs[1:].reshape(steps * b, n_h)
        logits = np.matmul(h_all, p["readout.W"], out=self.logits)
        logits += p["readout.b"]
        loss = self.ce(logits, y.T.reshape(-1), self.dlogits)
        d = self.dlogits
        np.matmul(h_all.T, d, out=g["readout.W"])
        np.sum(d, axis=0, out=g["readout.b"])
        np.matmul(d, p["readout.W"].T, out=self.dh_out.reshape(steps * b, n_h))
        dh, dc, tmp, dgates = self.dh, self.dc, self.tmp, self.dgates
        dh[...] = 0
        dc[...] = 0
        for t in reversed(range(steps)):
            z, dz = gates[t], dgates[t]
            i, f, gg, o = z[:, :n_h], z[:, n_h:2 * n_h], z[:, 2 * n_h:3 * n_h], z[:, 3 * n_h:]
            di, df, dg, do = dz[:, :n_h], dz[:, n_h:2 * n_h], dz[:, 2 * n_h:3 * n_h], dz[:, 3 * n_h:]
            dh += self.dh_out[t]
            # dc += dh·o·(1 − tanh²c);  do = dh·tanh c
            np.multiply(tanh_c[t], tanh_c[t], out=tmp)
            np.subtract(F32(1.0), tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp
            np.multiply(dh, tanh_c[t], out=do)
            # through the gates' activations: σ' = σ(1 − σ), tanh' = 1 − tanh²
            np.subtract(F32(1.0), o, out=tmp)
            tmp *= o
            do *= tmp
            np.multiply(dc, gg, out=di)
            np.subtract(F32(1.0), i, out=tmp)
            tmp *= i
            di *= tmp
            np.multiply(dc, cells[t], out=df)
            np.subtract(F32(1.0), f, out=tmp)
            tmp *= f
            df *= tmp
            np.multiply(dc, i, out=dg)
            np.multiply(gg, gg, out=tmp)
            np.subtract(F32(1.0), tmp, out=tmp)
            dg *= tmp
            dc *= f                                           # to the previous cell
            np.matmul(dz, u.T, out=dh)                        # to the previous h
        dz_all = dgates.reshape(steps * b, -1)
        np.matmul(hs[:-1].reshape(steps * b, n_h).T, dz_all, out=g["cell.U"])
        np.matmul(self.emb.reshape(steps * b, -1).T, dz_all, out=g["cell.W"])
        np.sum(dz_all, axis=0, out=g["cell.b"])
        np.matmul(dz_all, p["cell.W"].T, out=self.demb)
        g["embed.E"][...] = 0
        np.add.at(g["embed.E"], tokens.reshape(-1), self.demb)
        return loss, g


class AttentionReference(SGDReference):
    """The step of attention.grad: token embedding + learned positions; a pre-norm transformer block
    (layer norm, 4-head causal self-attention with output projection, residual; layer norm, ReLU MLP
    d → 4d → d, residual); a final layer norm, a readout to the vocabulary, softmax cross-entropy over
    every position, SGD."""

    def __init__(self, params: dict, batch: int, length: int, heads: int = 4, lr: float = 0.1):
        super().__init__(params, lr)
        b, t, h = batch, length, heads
        d = self.p["position"].shape[1]
        d_ff = self.p["block.ff.layers.0.W"].shape[1]
        vocab = self.p["embed.E"].shape[0]
        rows = b * t
        self.shape = (b, t, h, d // h)
        self.scale = F32(1.0 / np.sqrt(d // h))
        self.allowed = np.tril(np.ones((t, t), dtype=bool))
        self.masked = F32(-1e9)
        self.x0 = np.empty((rows, d), F32)
        self.ln1, self.ln2, self.lnf = LayerNorm(rows, d), LayerNorm(rows, d), LayerNorm(rows, d)
        self.n1, self.n2, self.n3 = (np.empty((rows, d), F32) for _ in range(3))
        self.q, self.k, self.v = (np.empty((rows, d), F32) for _ in range(3))
        self.scores = np.empty((b, h, t, t), F32)             # then the attention weights, in place
        self.rowsum = np.empty((b, h, t, 1), F32)
        self.heads_out = np.empty((b, t, h, d // h), F32)     # merged: [B, T, heads, d_head] = [rows, d]
        self.x1 = np.empty((rows, d), F32)
        self.ff = np.empty((rows, d_ff), F32)
        self.x2 = np.empty((rows, d), F32)
        self.logits = np.empty((rows, vocab), F32)
        self.dlogits = np.empty((rows, vocab), F32)
        self.dn3, self.dx2, self.dx1 = (np.empty((rows, d), F32) for _ in range(3))
        self.dff = np.empty((rows, d_ff), F32)
        self.dn, self.dx_ln = np.empty((rows, d), F32), np.empty((rows, d), F32)
        self.dmerged = np.empty((rows, d), F32)
        self.dweights = np.empty((b, h, t, t), F32)
        self.dq, self.dk, self.dv = (np.empty((b, t, h, d // h), F32) for _ in range(3))
        self.ce = SoftmaxCrossEntropy(rows, vocab)

    def _split(self, a):
        """[rows, d] → [B, heads, T, d_head] (a view)."""
        return a.reshape(self.shape).transpose(0, 2, 1, 3)

    def loss_and_grads(self, x, y):
        p, g = self.p, self.grads
        b, t, h, dh = self.shape
        rows = b * t
        x0 = self.x0
        np.take(p["embed.E"], x.reshape(-1), axis=0, out=x0)
        x0.reshape(b, t, -1)[...] += p["position"]
        # attention half: x1 = x0 + merge(softmax(mask(q kᵀ / √d_head)) v) Wo
        n1 = self.ln1.forward(x0, p["block.norm1.gain"], p["block.norm1.bias"], self.n1)
        np.matmul(n1, p["block.attend.Wq"], out=self.q)
        np.matmul(n1, p["block.attend.Wk"], out=self.k)
        np.matmul(n1, p["block.attend.Wv"], out=self.v)
        q, k, v = self._split(self.q), self._split(self.k), self._split(self.v)
        w = np.matmul(q, k.transpose(0, 1, 3, 2), out=self.scores)
        w *= self.scale
        np.copyto(w, self.masked, where=~self.allowed)
        np.max(w, axis=-1, keepdims=True, out=self.rowsum)
        w -= self.rowsum
        np.exp(w, out=w)
        np.sum(w, axis=-1, keepdims=True, out=self.rowsum)
        w /= self.rowsum
        np.matmul(w, v, out=self.heads_out.transpose(0, 2, 1, 3))
        merged = self.heads_out.reshape(rows, -1)
        x1 = np.matmul(merged, p["block.attend.Wo"], out=self.x1)
        x1 += x0
        # MLP half: x2 = x1 + relu(norm2(x1) W0 + b0) W1 + b1
        n2 = self.ln2.forward(x1, p["block.norm2.gain"], p["block.norm2.bias"], self.n2)
        ff = np.matmul(n2, p["block.ff.layers.0.W"], out=self.ff)
        ff += p["block.ff.layers.0.b"]
        np.maximum(ff, 0, out=ff)
        x2 = np.matmul(ff, p["block.ff.layers.1.W"], out=self.x2)
        x2 += p["block.ff.layers.1.b"]
        x2 += x1
        # readout and loss
        n3 = self.lnf.forward(x2, p["norm.gain"], p["norm.bias"], self.n3)
        logits = np.matmul(n3, p["readout.W"], out=self.logits)
        logits += p["readout.b"]
        loss = self.ce(logits, y.reshape(-1), self.dlogits)
        # backward: readout and final norm
        d = self.dlogits
        np.matmul(n3.T, d, out=g["readout.W"])
        np.sum(d, axis=0, out=g["readout.b"])
        np.matmul(d, p["readout.W"].T, out=self.dn3)
        dx2 = self.lnf.backward(self.dn3, p["norm.gain"], g["norm.gain"], g["norm.bias"], self.dx2)
        # MLP half
        np.matmul(ff.T, dx2, out=g["block.ff.layers.1.W"])
        np.sum(dx2, axis=0, out=g["block.ff.layers.1.b"])
        dff = np.matmul(dx2, p["block.ff.layers.1.W"].T, out=self.dff)
        dff *= ff > 0
        np.matmul(n2.T, dff, out=g["block.ff.layers.0.W"])
        np.sum(dff, axis=0, out=g["block.ff.layers.0.b"])
        np.matmul(dff, p["block.ff.layers.0.W"].T, out=self.dn)
        dx1 = self.ln2.backward(self.dn, p["block.norm2.gain"], g["block.norm2.gain"], g["block.norm2.bias"],
                                self.dx_ln)
        dx1 += dx2                                            # the residual
        # attention half
        np.matmul(merged.T, dx1, out=g["block.attend.Wo"])
        dmerged = np.matmul(dx1, p["block.attend.Wo"].T, out=self.dmerged)
        do = self._split(dmerged)
        dw = np.matmul(do, v.transpose(0, 1, 3, 2), out=self.dweights)
        np.matmul(w.transpose(0, 1, 3, 2), do, out=self.dv.transpose(0, 2, 1, 3))
        # softmax backward: ds = w·(dw − Σ dw·w); masked entries have w = 0, so ds = 0 there
        dw *= w
        np.sum(dw, axis=-1, keepdims=True, out=self.rowsum)
        np.multiply(w, self.rowsum, out=w)
        dw -= w
        dw *= self.scale
        np.matmul(dw, k, out=self.dq.transpose(0, 2, 1, 3))
        np.matmul(dw.transpose(0, 1, 3, 2), q, out=self.dk.transpose(0, 2, 1, 3))
        dq, dk, dv = (a.reshape(rows, -1) for a in (self.dq, self.dk, self.dv))
        np.matmul(n1.T, dq, out=g["block.attend.Wq"])
        np.matmul(n1.T, dk, out=g["block.attend.Wk"])
        np.matmul(n1.T, dv, out=g["block.attend.Wv"])
        dn1 = np.matmul(dq, p["block.attend.Wq"].T, out=self.dn)
        dn1 += np.matmul(dk, p["block.attend.Wk"].T, out=self.dmerged)
        dn1 += np.matmul(dv, p["block.attend.Wv"].T, out=self.dmerged)
        dx0 = self.ln1.backward(dn1, p["block.norm1.gain"], g["block.norm1.gain"], g["block.norm1.bias"],
                                self.dx2)
        dx0 += dx1
        # embedding and positions
        np.sum(dx0.reshape(b, t, -1), axis=0, out=g["position"])
        g["embed.E"][...] = 0
        np.add.at(g["embed.E"], x.reshape(-1), dx0)
        return loss, g
