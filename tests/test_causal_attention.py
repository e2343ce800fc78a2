"""Causal attention with fewer queries than keys (`attention.attention(q, k, v, causal: true)` with
Tq < Tk, as in incremental decoding): the queries are the last Tq positions of the keys' sequence, so
query i sees keys 0 … Tk − Tq + i. Values against NumPy, gradients against central differences in
float64, static and symbolic lengths, `causal_mask(n, keys)`, and Tq > Tk refused at the call.
"""
from __future__ import annotations

import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.passes import backprop, simplify

PROGRAM = """
import attention as att
input q : f32[{q}]
input k : f32[{k}]
input v : f32[{v}]
input c : f32[{c}]
output y = att.attention(q, k, v, causal: true)
loss = sum(att.attention(q, k, v, causal: true) * c)
"""


def reference(q, k, v):
    """softmax(q kᵀ/√d) v with query i (of Tq) seeing keys j ≤ Tk − Tq + i, by a loop over queries."""
    tq, tk = q.shape[-2], k.shape[-2]
    out = np.zeros(q.shape[:-1] + v.shape[-1:])
    for i in range(tq):
        seen = tk - tq + i + 1
        scores = q[..., i:i + 1, :] @ np.swapaxes(k[..., :seen, :], -1, -2) / np.sqrt(q.shape[-1])
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out[..., i, :] = (weights @ v[..., :seen, :])[..., 0, :]
    return out


def compile_case(q, k, v):
    """The program for declared shapes q, k, v (lists of dims, symbolic names allowed)."""
    c = q[:-1] + v[-1:]
    fmt = {name: ", ".join(map(str, dims)) for name, dims in dict(q=q, k=k, v=v, c=c).items()}
    return gradlang.compile(PROGRAM.format(**fmt), dtype="float64")


def feed_for(rng, batch, tq, tk, d=4, dv=3, heads=()):
    lead = (batch,) + heads
    return {"q": rng.standard_normal(lead + (tq, d)), "k": rng.standard_normal(lead + (tk, d)),
            "v": rng.standard_normal(lead + (tk, dv)), "c": rng.standard_normal(lead + (tq, dv))}


def input_gradients(prog, feed):
    g = prog.elaborated.graph.copy()
    grads = backprop(g, g.outputs["loss"], [g.inputs[name] for name in "qkv"])
    for name, grad in zip("qkv", grads):
        g.outputs[f"d{name}"] = grad
    return dict(zip("qkv", prog.run(["dq", "dk", "dv"], feed, graph=simplify(g))))


def numeric_gradient(prog, feed, name, eps=1e-6):
    grad = np.zeros_like(feed[name])
    for index in np.ndindex(grad.shape):
        plus, minus = {**feed, name: feed[name].copy()}, {**feed, name: feed[name].copy()}
        plus[name][index] += eps
        minus[name][index] -= eps
        grad[index] = (prog.loss(plus) - prog.loss(minus)) / (2 * eps)
    return grad


# declared shapes of q, k, v; the lengths (Tq, Tk) fed; a head axis or not
CASES = [
    (["B", 2, 4], ["B", 5, 4], ["B", 5, 3], (2, 5), ()),                    # static lengths, Tq < Tk
    (["B", 5, 4], ["B", 5, 4], ["B", 5, 3], (5, 5), ()),                    # static, Tq = Tk: as before
    (["B", 1, 4], ["B", "S", 4], ["B", "S", 3], (1, 6), ()),                # one new token, a cache of S keys
    (["B", "T", 4], ["B", "S", 4], ["B", "S", 3], (3, 7), ()),              # both symbolic, different names
    (["B", "T", 4], ["B", "T", 4], ["B", "T", 3], (4, 4), ()),              # self-attention, symbolic T
    (["B", 2, 3, 4], ["B", 2, "S", 4], ["B", 2, "S", 3], (3, 5), (2,)),     # a head axis
]
IDS = ["static", "static_square", "one_query_symbolic_keys", "both_symbolic", "symbolic_square", "heads"]


@pytest.mark.parametrize("q, k, v, lengths, heads", CASES, ids=IDS)
def test_values_match_numpy_and_gradients_match_central_differences(q, k, v, lengths, heads):
    prog = compile_case(q, k, v)
    rng = np.random.default_rng(0)
    feed = feed_for(rng, 2, *lengths, heads=heads)
    out = prog.predict({n: feed[n] for n in "qkv"})["y"]
    np.testing.assert_allclose(out, reference(feed["q"], feed["k"], feed["v"]), rtol=1e-12, atol=1e-14)
    analytic = input_gradients(prog, feed)
    for name in "qkv":
        np.testing.assert_allclose(analytic[name], numeric_gradient(prog, feed, name), rtol=1e-6, atol=1e-8)


def test_the_last_queries_of_causal_self_attention_are_attention_of_those_queries_to_every_key():
    """Incremental decoding: attending with the last Tq queries only gives the last Tq rows of full causal
    self-attention, and keys after the last query's position (none here) are never seen."""
    full = compile_case(["B", "T", 4], ["B", "T", 4], ["B", "T", 3])
    last = compile_case(["B", "Q", 4], ["B", "T", 4], ["B", "T", 3])
    rng = np.random.default_rng(1)
    feed = feed_for(rng, 3, 6, 6)
    y = full.predict({n: feed[n] for n in "qkv"})["y"]
    for tq in (1, 2, 6):
        tail = last.predict({"q": feed["q"][:, -tq:], "k": feed["k"], "v": feed["v"]})["y"]
        np.testing.assert_allclose(tail, y[:, -tq:], rtol=1e-12, atol=1e-14)


def test_causal_mask_of_queries_and_keys():
    prog = gradlang.compile("""
        input s : f32[B, S]
        output square = causal_mask(3)
        output wide = causal_mask(2, 4)
        output decoding = causal_mask(2, s.shape[1])
        output symbolic = causal_mask(s.shape[1])
        loss = mean(s)
    """)
    out = prog.predict({"s": np.zeros((1, 5), np.float32)})
    np.testing.assert_array_equal(out["square"], np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(out["wide"], [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(out["decoding"], np.tril(np.ones((5, 5), bool))[-2:])
    np.testing.assert_array_equal(out["symbolic"], np.tril(np.ones((5, 5), bool)))
    # known sizes make a constant, as before; a symbolic one a primitive bound at run time
    ops = {prog.forward_graph.op(n) for n in prog.forward_graph.order()}
    assert "causal_mask" in ops


@pytest.mark.parametrize("source, message", [
    ("input s : f32[B, 3]\nloss = sum(where(causal_mask(4, 3), s[:, 0:1], 0.0))",
     "causal_mask: 4 queries but only 3 keys"),
    ("import attention as att\ninput q : f32[B, 6, 4]\ninput k : f32[B, 5, 4]\n"
     "loss = sum(att.attention(q, k, k, causal: true))", "causal_mask: 6 queries but only 5 keys"),
    ("input s : f32[B, 3]\nloss = sum(where(causal_mask(0, 3), 1.0, 0.0))",
     "causal_mask needs a positive integer size, got 0"),
    ("input s : f32[B, 3]\nloss = sum(where(causal_mask(2, 1.5), 1.0, 0.0))",
     "causal_mask needs a positive integer size, got 1.5"),
])
def test_mistakes_are_located_at_the_call(source, message):
    with pytest.raises(GradError) as info:
        gradlang.compile(source)
    assert message in info.value.message
    assert info.value.span is not None and info.value.span.line == source.count("\n") + 1


def test_more_queries_than_keys_of_symbolic_length_is_refused_at_run_time_at_the_call():
    prog = compile_case(["B", "T", 4], ["B", "S", 4], ["B", "S", 3])
    feed = feed_for(np.random.default_rng(2), 2, 4, 3)
    with pytest.raises(GradError) as info:
        prog.predict({n: feed[n] for n in "qkv"})
    assert "causal_mask: 4 queries but only 3 keys" in info.value.message
    assert info.value.span is not None and info.value.span.line == 7   # `output y = att.attention(…)`
    assert prog.predict({n: v for n, v in feed_for(np.random.default_rng(2), 2, 3, 3).items() if n != "c"})
