"""The LSTM cell's gate arithmetic as one primitive, with its derivative as a second.

An LSTM time step is two products and then some fifteen elementwise operations on [B, H] pieces of
the gates' pre-activations z = x W + h U + b. Written op by op, each is a NumPy call that costs more
in dispatch than in arithmetic, and the four gate blocks are strided columns of z, which NumPy reads
two to three times slower than a contiguous array (`python -m benchmarks.lstm_breakdown`). Here:

- `lstm_gates(z, c)` — z [.., 4H] holds the input, forget, candidate and output gates' pre-activations
  in that order, c [.., H] the cell: the result [.., 2H] is h' and c' side by side, with
  c' = σ(z_f + forget_bias)·c + σ(z_i)·tanh(z_g) and h' = σ(z_o)·tanh(c'). The kernel makes one
  sigmoid pass over all four gates (the candidate's tanh written over its block) and writes h' and c'
  into the one result.
- `lstm_gates_grad(z, c, dh, dc)` — the cotangents of z and of c, side by side [.., 5H], from those of
  h' and c': the gates are recomputed from z (one pass), so nothing but the operands is kept.

The second one's VJP is written in primitives (sigmoid, tanh, mul, …): gradients of gradients work.
"""
from __future__ import annotations

import numpy as np

from .primitives import sigmoid
from .registry import define
from .shapes import DTYPES, FLOATS, ShapeError, fmt_shape, fmt_type

_FULL = ("s", None, None, None)


def _hidden(op: str, z_shape: tuple, c_shape: tuple) -> int:
    """H, after checking z [.., 4H] against c [.., H]."""
    if len(z_shape) < 1 or len(z_shape) != len(c_shape) or z_shape[:-1] != c_shape[:-1]:
        raise ShapeError(f"{op} needs the gates z [.., 4H] and the cell c [.., H] with the same leading "
                         f"dimensions, got {fmt_shape(z_shape)} and {fmt_shape(c_shape)}")
    hidden = c_shape[-1]
    if not isinstance(hidden, int) or z_shape[-1] != 4 * hidden:
        raise ShapeError(f"{op}: z's last dimension must be 4 times the cell's known size H "
                         f"(input, forget, candidate and output gates), got {z_shape[-1]} and {hidden}")
    return hidden


def _check_dtypes(op: str, shapes, dtypes) -> None:
    if len(set(dtypes)) != 1 or dtypes[0] not in FLOATS:
        raise ShapeError(f"{op} needs float operands of one type, got "
                         + ", ".join(fmt_type(s, d) for s, d in zip(shapes, dtypes)))


def _check_forget_bias(op: str, attrs: dict) -> None:
    bias = attrs.setdefault("forget_bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not np.isfinite(bias):
        raise ShapeError(f"{op}: forget_bias must be a finite number, got {bias!r}")
    attrs["forget_bias"] = float(bias)


def _gates_infer(shapes, dtypes, attrs):
    _check_dtypes("lstm_gates", shapes, dtypes)
    _check_forget_bias("lstm_gates", attrs)
    hidden = _hidden("lstm_gates", *shapes)
    return shapes[1][:-1] + (2 * hidden,), dtypes[0]


def _grad_infer(shapes, dtypes, attrs):
    _check_dtypes("lstm_gates_grad", shapes, dtypes)
    _check_forget_bias("lstm_gates_grad", attrs)
    z, c, dh, dc = shapes
    hidden = _hidden("lstm_gates_grad", z, c)
    if dh != c or dc != c:
        raise ShapeError(f"lstm_gates_grad needs the cotangents of h and c shaped like the cell "
                         f"{fmt_shape(c)}, got {fmt_shape(dh)} and {fmt_shape(dc)}")
    return c[:-1] + (5 * hidden,), dtypes[0]


class LstmGates:
    """The kernels of lstm_gates and of its gradient for one cell shape. When a step computes both on
    the same z and c, the scheduler runs them as a pair (`keep`, the `shared-lstm-gates` rewrite):
    the forward keeps the gates' activations and tanh(c') for the gradient, which then only
    multiplies; otherwise (or should the forward not have run first) the gradient recomputes them."""

    def __init__(self, attrs: dict, z_shape: tuple, dtype: str, keep: bool = False):
        self.hidden = h = z_shape[-1] // 4
        self.lead = tuple(z_shape[:-1])
        self.i, self.f, self.g, self.o = (np.s_[..., k * h:(k + 1) * h] for k in range(4))
        self.dtype = DTYPES[dtype]
        self.shift = np.zeros(4 * h, self.dtype)       # the forget bias, in the forget gate's block
        self.shift[self.f[-1]] = attrs["forget_bias"]
        self.keep = keep
        self.saved = None

    def _activations(self, z, c):
        """The four gates' activations [.., 4H] and tanh(c'), fresh arrays."""
        acts = np.add(z, self.shift)
        sigmoid(acts, out=acts)                        # one contiguous pass over all four gates,
        np.tanh(z[self.g], out=acts[self.g])           # then the candidate's block written over
        new_c = np.multiply(acts[self.f], c)
        new_c += acts[self.i] * acts[self.g]
        return acts, new_c

    def forward(self, z, c):
        h = self.hidden
        acts, new_c = self._activations(z, c)
        out = np.empty(self.lead + (2 * h,), self.dtype)
        out[..., h:] = new_c
        tanh_c = np.tanh(new_c, out=new_c)
        np.multiply(acts[self.o], tanh_c, out=out[..., :h])
        if self.keep:
            self.saved = acts, tanh_c
        return out

    def gradient(self, z, c, dh, dc):
        if self.saved is None:
            acts, new_c = self._activations(z, c)
            tanh_c = np.tanh(new_c, out=new_c)
        else:
            (acts, tanh_c), self.saved = self.saved, None
        h = self.hidden
        i, f, g, o = self.i, self.f, self.g, self.o
        out = np.empty(self.lead + (5 * h,), self.dtype)
        dz = out[..., :4 * h]
        np.multiply(dh, tanh_c, out=dz[o])
        total = np.multiply(tanh_c, tanh_c, out=tanh_c)   # the whole cotangent of c':
        np.subtract(1, total, out=total)                   # dc + dh·o·(1 − tanh²c')
        total *= acts[o]
        total *= dh
        total += dc
        np.multiply(total, acts[g], out=dz[i])
        np.multiply(total, c, out=dz[f])
        np.multiply(total, acts[i], out=dz[g])
        np.multiply(total, acts[f], out=out[..., 4 * h:])
        factor = np.subtract(1, acts)                      # σ' = s(1 − s) for three gates,
        factor *= acts
        np.multiply(acts[g], acts[g], out=factor[g])       # tanh' = 1 − g² for the candidate
        np.subtract(1, factor[g], out=factor[g])
        dz *= factor
        return out


def _gates_kernel(attrs, in_shapes, out_shape, dtype):
    return LstmGates(attrs, in_shapes[0], dtype).forward


def _grad_kernel(attrs, in_shapes, out_shape, dtype):
    return LstmGates(attrs, in_shapes[0], dtype).gradient


def _part(e, x, k: int, width: int, hidden: int):
    """x's last axis from k·hidden, `width` long."""
    return e("slice", x, index=(_FULL,) * (len(e.shape(x)) - 1) + (("s", k * hidden, k * hidden + width, None),))


def _vjp_gates(e, n, g):
    z, c = n.operands
    h = e.shape(c)[-1]

    def rules():
        grad = e("lstm_gates_grad", z, c, _part(e, g, 0, h, h), _part(e, g, 1, h, h),
                 forget_bias=n.attrs["forget_bias"])
        return [_part(e, grad, 0, 4 * h, h), _part(e, grad, 4, h, h)]
    cached = []

    def get(k):
        def rule():
            if not cached:
                cached.extend(rules())
            return cached[k]
        return rule
    return [get(0), get(1)]


def _vjp_gates_grad(e, n, cot):
    """The adjoint of lstm_gates_grad, in primitives: the forward recomputed, then reverse mode by hand
    through out = [C·g·σ'ᵢ, C·c·σ'_f, C·i·(1 − g²), dh·t·σ'ₒ, C·f] with t = tanh(c'),
    C = dc + dh·o·(1 − t²), c' = f·c + i·g."""
    z, c, dh, dc = n.operands
    hidden = e.shape(c)[-1]
    dtype = e.dtype(z)
    one, two = e.const(1.0, dtype), e.const(2.0, dtype)

    def mul(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = e("mul", out, x)
        return out

    def add(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = e("add", out, x)
        return out

    def sub(a, b):
        return e("sub", a, b)

    def slope(s):                     # σ' in terms of σ
        return mul(s, sub(one, s))

    z_f = _part(e, z, 1, hidden, hidden)
    if n.attrs["forget_bias"]:
        z_f = e("add", z_f, e.const(n.attrs["forget_bias"], dtype))
    s_i, s_f, s_o = (e("sigmoid", x) for x in (_part(e, z, 0, hidden, hidden), z_f, _part(e, z, 3, hidden, hidden)))
    q = e("tanh", _part(e, z, 2, hidden, hidden))
    t = e("tanh", add(mul(s_f, c), mul(s_i, q)))
    a = sub(one, mul(t, t))
    total = add(dc, mul(dh, s_o, a))
    g_i, g_f, g_g, g_o, g_c = (_part(e, cot, k, hidden, hidden) for k in range(5))
    q_slope = sub(one, mul(q, q))

    bar_total = add(mul(g_i, q, slope(s_i)), mul(g_f, c, slope(s_f)), mul(g_g, s_i, q_slope), mul(g_c, s_f))
    bar_q = sub(mul(g_i, total, slope(s_i)), mul(two, g_g, total, s_i, q))
    bar_s_i = add(mul(g_i, total, q, sub(one, mul(two, s_i))), mul(g_g, total, q_slope))
    bar_s_f = add(mul(g_f, total, c, sub(one, mul(two, s_f))), mul(g_c, total))
    bar_c = mul(g_f, total, slope(s_f))
    bar_dh = mul(g_o, t, slope(s_o))
    bar_t = mul(g_o, dh, slope(s_o))
    bar_s_o = mul(g_o, dh, t, sub(one, mul(two, s_o)))
    # through total = dc + dh·o·a, a = 1 − t²
    bar_dh = add(bar_dh, mul(bar_total, s_o, a))
    bar_s_o = add(bar_s_o, mul(bar_total, dh, a))
    bar_t = sub(bar_t, mul(two, bar_total, dh, s_o, t))
    # through t = tanh(c'), c' = f·c + i·g
    bar_cell = mul(bar_t, a)
    bar_s_f = add(bar_s_f, mul(bar_cell, c))
    bar_c = add(bar_c, mul(bar_cell, s_f))
    bar_s_i = add(bar_s_i, mul(bar_cell, q))
    bar_q = add(bar_q, mul(bar_cell, s_i))
    bar_z = e("concat", mul(bar_s_i, slope(s_i)), mul(bar_s_f, slope(s_f)), mul(bar_q, q_slope),
              mul(bar_s_o, slope(s_o)), axis=len(e.shape(z)) - 1)
    results = [bar_z, bar_c, bar_dh, bar_total]
    return [lambda k=k: results[k] for k in range(4)]


define("lstm_gates", 2, _gates_infer, _gates_kernel, _vjp_gates,
       "an LSTM step after its products: z [.., 4H] (input, forget, candidate, output gates' pre-activations) "
       "and the cell c [.., H] → [h', c'] side by side [.., 2H], c' = σ(z_f + attrs.forget_bias)·c + "
       "σ(z_i)·tanh(z_g), h' = σ(z_o)·tanh(c')")
define("lstm_gates_grad", 4, _grad_infer, _grad_kernel, _vjp_gates_grad,
       "the derivative of lstm_gates: from z, c and the cotangents dh, dc of h' and c', those of z and c "
       "side by side [.., 5H] (the gates recomputed from z)")
