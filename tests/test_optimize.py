"""The optimisation passes: each rule of `identities` on a graph built for it, constant folding that
does not expand, CSE across operand order, and on every example: the gradient graph shrinks and
computes the same values (float64, to rounding) with and without simplification."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.analysis import verify
from gradlang.gradcheck import random_feed
from gradlang.ir.graph import Emit, Graph
from gradlang.passes import simplify
from gradlang.passes.simplify import RULES, common_subexpressions, dead_code, fold_constants, identities, rule_names

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ALL_EXAMPLES = [pytest.param(p.stem, marks=pytest.mark.slow) if p.stem == "char_lstm" else p.stem   # 64 steps: ~10 s
                for p in sorted(EXAMPLES.glob("*.grad"))]


def leaf(g, name, shape, dtype="f64"):
    return g.add("input", (), {"name": name, "shape": shape, "dtype": dtype})


def run(g, output, feed):
    """Evaluate one output of a graph of f64 inputs with NumPy-fed values."""
    from gradlang.lowering.schedule import schedule
    from gradlang.runtime.interpreter import Executable
    names = list(g.inputs)
    bindings = {d: np.shape(feed[n])[i] for n in names for i, d in enumerate(g.shape(g.inputs[n]))
                if isinstance(d, str)}
    exe = Executable(schedule(g, [output], bindings), g, names, [])
    return exe.run([feed[n] for n in names], [])[0]


def rewritten(build, shapes, rule):
    """Build out = build(emit, *inputs); simplify; check the rule fired and the value is unchanged."""
    g = Graph()
    inputs = [leaf(g, f"x{i}", s) for i, s in enumerate(shapes)]
    g.outputs["out"] = build(Emit(g, None), *inputs)
    stats = Counter()
    out = verify(simplify(g, stats=stats))
    assert stats[rule] >= 1, dict(stats)
    rng = np.random.default_rng(0)
    feed = {f"x{i}": rng.uniform(0.5, 2.0, tuple(4 if isinstance(d, str) else d for d in s))
            for i, s in enumerate(shapes)}
    np.testing.assert_allclose(run(out, "out", feed), run(g, "out", feed), rtol=1e-14)
    return out


def ops(g):
    return sorted(g.op(n) for n in g.nx.nodes if g.op(n) not in ("input", "const"))


FULL = ("s", None, None, None)
IDENTITY_CASES = [
    ("x * 1 → x", lambda e, x: e("mul", x, e("broadcast_to", e.const(1, "f64"), shape=(2, 3))), [(2, 3)], []),
    ("x * 1 → x", lambda e, x: e("mul", e("broadcast_to", e.const(1, "f64"), shape=(2, 3)), x), [(3,)],
     ["broadcast_to"]),
    ("x + 0 → x", lambda e, x: e("add", e.const(0, "f64"), x), [(3,)], []),
    ("x - 0, x / 1, x ** 1 → x", lambda e, x: e("div", x, e.const(1, "f64")), [(3,)], []),
    ("-(-x) → x", lambda e, x: e("neg", e("neg", x)), [(3,)], []),
    ("x * -1, 0 - x → -x", lambda e, x: e("mul", e.const(-1, "f64"), x), [(3,)], ["neg"]),
    ("x * -1, 0 - x → -x", lambda e, x: e("sub", e.const(0, "f64"), x), [(3,)], ["neg"]),
    ("x + x → 2 * x", lambda e, x: e("add", x, x), [(3,)], ["mul"]),
    ("s * (c * x) → (s·c) * x",
     lambda e, x: e("mul", e.const(3, "f64"), e("mul", x, e.const(0.5, "f64"))), [(3,)], ["mul"]),
    # a scalar s that is not a constant: the scalars are multiplied first, then x once
    ("s * (c * x) → (s·c) * x",
     lambda e, x: e("mul", e("size", x, axes=(0,), dtype="f64"), e("mul", e.const(0.5, "f64"), x)),
     [(3,)], ["mul", "mul", "size"]),
    ("x ** 0 → 1, x ** 2 → x * x", lambda e, x: e("pow", x, e.const(2, "f64")), [(3,)], ["mul"]),
    ("x ** 0 → 1, x ** 2 → x * x", lambda e, x: e("add", x, e("pow", x, e.const(0, "f64"))), [(3,)], ["add"]),
    ("reshape, broadcast or cast to the same type → x", lambda e, x: e("cast", x, dtype="f64"), [(3,)], []),
    ("reshape(reshape(x)) → reshape(x)", lambda e, x: e("reshape", e("reshape", x, shape=(6,)), shape=(3, 2)),
     [(2, 3)], ["reshape"]),
    ("broadcast(broadcast(x)), broadcast(reshape(x)) → broadcast(x)",
     lambda e, x: e("broadcast_to", e("broadcast_to", x, shape=(2, 3)), shape=(4, 2, 3)), [(3,)],
     ["broadcast_to"]),
    ("broadcast(broadcast(x)), broadcast(reshape(x)) → broadcast(x)",
     lambda e, x: e("broadcast_to", e("reshape", x, shape=(1, 3)), shape=(2, 3)), [(3,)], ["broadcast_to"]),
    ("reshape or transpose of broadcast(c) → broadcast(c) for a single value c",
     lambda e, x: e("mul", x, e("reshape", e("broadcast_to", e.const(2, "f64"), shape=(6,)), shape=(2, 3))),
     [(2, 3)], ["mul"]),
    ("f(broadcast(x)) → broadcast(f(x)) for elementwise f",
     lambda e, x: e("exp", e("broadcast_to", x, shape=(5, 3))), [(3,)], ["broadcast_to", "exp"]),
    ("transpose(transpose(x)) → transpose(x), identity transpose → x",
     lambda e, x: e("transpose", e("transpose", x, perm=(1, 2, 0)), perm=(1, 2, 0)), [(2, 3, 4)], ["transpose"]),
    ("transpose(transpose(x)) → transpose(x), identity transpose → x",
     lambda e, x: e("transpose", e("transpose", x, perm=(1, 0)), perm=(1, 0)), [(2, 3)], []),
    ("transpose(a @ transpose(b)) → b @ transpose(a)",
     lambda e, a, b: e("transpose", e("matmul", a, e("transpose", b, perm=(1, 0))), perm=(1, 0)),
     [(2, 3), (4, 3)], ["matmul", "transpose"]),
    ("ones @ x → sum(x), x @ ones → sum(x)",
     lambda e, x: e("matmul", e("broadcast_to", e.const(1, "f64"), shape=(2, 4)), x), [(4, 3)],
     ["broadcast_to", "reduce_sum"]),
    ("sum or max over size-1 axes → reshape", lambda e, x: e("reduce_sum", x, axes=(1,)), [(3, 1)], ["reshape"]),
    ("sum(broadcast(x)) → count * x",
     lambda e, x: e("reduce_sum", e("broadcast_to", x, shape=(5, 3)), axes=(0,)), [(3,)], ["mul"]),
    ("sum(broadcast(x)) → count * x",
     lambda e, x, batch: e("reduce_sum", e("broadcast_to", x, shape=("B", 3)), axes=(0,)), [(3,), ("B",)],
     ["broadcast_to", "mul", "size"]),
    ("implicit broadcast: op(broadcast(x), y) → op(x, y)",
     lambda e, x, y: e("mul", e("broadcast_to", x, shape=(4, 3)), y), [(3,), (4, 3)], ["mul"]),
    ("implicit broadcast: op(broadcast(x), y) → op(x, y)",
     lambda e, x, y: e("add", e("reshape", x, shape=(1, 3)), y), [(3,), (4, 3)], ["add"]),
    ("unslice(a) + unslice(b) + … tiling an axis → concat(a, b, …)",
     lambda e, a, b: e("add", e("unslice", b, index=((FULL, ("s", 2, None, None))), shape=(4, 6)),
                       e("unslice", a, index=(FULL, ("s", 0, 2, None)), shape=(4, 6))), [(4, 2), (4, 4)], ["concat"]),
    # the gradient of the steps x[:, t] of an unrolled loop: picked positions (one from the end) written back
    ("unslice(a) + unslice(b) + … tiling an axis → concat(a, b, …)",
     lambda e, a, b, c: e("add", e("add", e("unslice", c, index=(FULL, ("i", -1)), shape=(4, 3, 2)),
                                   e("unslice", a, index=(FULL, ("i", 0)), shape=(4, 3, 2))),
                          e("unslice", b, index=(FULL, ("i", 1)), shape=(4, 3, 2))),
     [(4, 2), (4, 2), (4, 2)], ["concat", "reshape", "reshape", "reshape"]),
    ("slice or unslice of every element → reshape",
     lambda e, x: e("slice", x, index=(("s", None, None, None), ("i", 0))), [(4, 1)], ["reshape"]),
    ("slice or unslice of every element → reshape",
     lambda e, x: e("unslice", x, index=(("s", None, None, None), ("i", 0)), shape=(4, 1)), [(4,)], ["reshape"]),
]


@pytest.mark.parametrize("rule, build, shapes, left", IDENTITY_CASES)
def test_each_identity_rewrites_and_keeps_the_value(rule, build, shapes, left):
    assert ops(rewritten(build, shapes, rule)) == left


def test_every_rule_has_a_test_above():
    assert {r.name for r in RULES} == {case[0] for case in IDENTITY_CASES}


def test_rules_leave_alone_what_they_must_not_change():
    g = Graph()
    x, y = leaf(g, "x", (2, 3)), leaf(g, "y", (2, 3))
    e = Emit(g, None)
    outs = {
        "partial slice": e("slice", x, index=(("s", None, None, None), ("s", 0, 2, None))),
        "unslice of part": e("unslice", e("slice", x, index=(("i", 0),)), index=(("i", 0),), shape=(2, 3)),
        "sum of stretched and real axes": e("reduce_sum", e("broadcast_to", e("reduce_sum", x, axes=(0,)),
                                                            shape=(2, 3)), axes=(0, 1)),
        "x ** 3": e("pow", x, e.const(3, "f64")),
        "x + y": e("add", x, y),
        "unslices with a gap": e("add", e("unslice", e("slice", x, index=(FULL, ("s", 0, 1, None))),
                                          index=(FULL, ("s", 0, 1, None)), shape=(2, 3)),
                                 e("unslice", e("slice", x, index=(FULL, ("s", 2, 3, None))),
                                   index=(FULL, ("s", 2, 3, None)), shape=(2, 3))),
        "reshape that moves elements": e("broadcast_to", e("reshape", x, shape=(3, 2, 1)), shape=(3, 2, 4)),
    }
    g.outputs.update(outs)
    out = verify(simplify(g))
    assert [out.op(out.outputs[k]) for k in outs] == ["slice", "unslice", "reduce_sum", "pow", "add", "add",
                                                      "broadcast_to"]


def test_constant_folding_folds_but_never_expands():
    g = Graph()
    e = Emit(g, None)
    x = leaf(g, "x", (3,))
    g.outputs["folded"] = e("mul", x, e("exp", e("add", e.const(1.5, "f64"), e.const(0.5, "f64"))))
    g.outputs["kept"] = e("mul", x, e("broadcast_to", e.const(2.0, "f64"), shape=(3,)))
    out = fold_constants(g)
    consts = [out.attrs(n)["value"] for n in out.nx.nodes if out.op(n) == "const"]
    assert any(v.ndim == 0 and float(v) == pytest.approx(np.exp(2.0)) for v in consts)
    assert out.op(out.operands(out.outputs["kept"])[1]) == "broadcast_to"   # one number, not three


def test_common_subexpressions_see_through_operand_order_of_commutative_ops():
    g = Graph()
    x, y = leaf(g, "x", (3,)), leaf(g, "y", (3,))
    e = Emit(g, None)
    g.outputs["a"] = e("mul", x, y)
    g.outputs["b"] = e("mul", y, x)
    g.outputs["c"] = e("sub", x, y)
    g.outputs["d"] = e("sub", y, x)
    out = verify(common_subexpressions(g))
    assert out.outputs["a"] == out.outputs["b"] and out.outputs["c"] != out.outputs["d"]


def test_random_ops_are_never_merged():
    g = Graph()
    x = leaf(g, "x", (3,))
    e = Emit(g, None)
    g.outputs["a"] = e("dropout_mask", x, rate=0.5, key=1)
    g.outputs["b"] = e("dropout_mask", x, rate=0.5, key=1)
    out = common_subexpressions(g)
    assert out.outputs["a"] != out.outputs["b"]


def test_passes_are_pure_and_stats_count_by_rule():
    g = Graph()
    x = leaf(g, "x", (3,))
    e = Emit(g, None)
    g.outputs["out"] = e("add", e("mul", x, e.const(1, "f64")), e.const(0, "f64"))
    e("exp", x)                                          # dead
    before = len(g)
    stats = Counter()
    out = simplify(g, stats=stats)
    assert len(g) == before                              # the input graph is untouched
    assert out.outputs["out"] == x and len(out) == 1
    assert stats["x * 1 → x"] == 1 and stats["x + 0 → x"] == 1 and stats["dead code"] >= 3
    assert set(stats) <= set(rule_names())
    for p in (identities, fold_constants, common_subexpressions, dead_code):
        assert p.__doc__ and len(p(g)) <= before and len(g) == before


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_every_example_gradient_shrinks_and_computes_the_same(name):
    prog = gradlang.compile(EXAMPLES / f"{name}.grad", dtype="float64")
    raw = verify(prog.raw_gradient_graph())
    simple = verify(simplify(raw))
    assert len(simple) < len(raw)
    feed = random_feed(prog, 3, np.random.default_rng(0))
    outputs = [prog.loss_output()] + [k for k in raw.outputs if k.startswith("grad:")]
    draws = prog.rng.bit_generator.state       # both runs draw the same noise (gan)
    before = prog.run(outputs, feed, raw)
    prog.rng.bit_generator.state = draws
    for b, a in zip(before, prog.run(outputs, feed, simple)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
