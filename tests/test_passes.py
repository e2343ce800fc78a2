"""Each pass alone: simplify's rewrites, dead code, CSE, constant folding, the verifier, the scheduler."""
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.analysis import verify
from gradlang.ir.graph import Emit, Graph
from gradlang.lowering.schedule import REUSE_MIN_BYTES, InPlace, IntoBuffer, WhereInto, schedule
from gradlang.passes import differentiate, simplify
from gradlang.passes.simplify import common_subexpressions, dead_code, fold_constants, identities
from gradlang.runtime.interpreter import Executable

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def leaf(g, name, shape, op="input", dtype="f64"):
    return g.add(op, (), {"name": name, "shape": shape, "dtype": dtype})


def ops(g):
    return sorted(g.op(n) for n in g.nx.nodes)


@pytest.mark.parametrize("build, survivor", [
    (lambda e, x: e("mul", x, e.const(1, "f64")), "x"),
    (lambda e, x: e("mul", e.const(1, "f64"), x), "x"),
    (lambda e, x: e("add", x, e.const(0, "f64")), "x"),
    (lambda e, x: e("sub", x, e.const(0, "f64")), "x"),
    (lambda e, x: e("div", x, e.const(1, "f64")), "x"),
    (lambda e, x: e("pow", x, e.const(1, "f64")), "x"),
    (lambda e, x: e("neg", e("neg", x)), "x"),
    (lambda e, x: e("transpose", e("transpose", x, perm=(1, 0)), perm=(1, 0)), "x"),
    (lambda e, x: e("reshape", e("reshape", x, shape=(6,)), shape=(2, 3)), "x"),
    (lambda e, x: e("broadcast_to", x, shape=(2, 3)), "x"),
    (lambda e, x: e("cast", x, dtype="f64"), "x"),
    (lambda e, x: e("reduce_sum", x, axes=(), keepdims=False), "x"),
])
def test_identities_remove_the_no_op(build, survivor):
    g = Graph()
    x = leaf(g, "x", (2, 3))
    g.outputs["out"] = build(Emit(g, None), x)
    out = dead_code(identities(g))
    verify(out)
    assert out.outputs["out"] == x
    assert ops(out) == ["input"]


def test_identities_keep_ops_that_change_the_shape():
    g = Graph()
    x = leaf(g, "x", (3,))
    e = Emit(g, None)
    g.outputs["out"] = e("mul", x, e.const(np.ones((2, 3)), "f64"))   # broadcasts: not a no-op
    assert simplify(g).op(simplify(g).outputs["out"]) == "mul"


def test_common_subexpressions_merge_equal_nodes_and_constants():
    g = Graph()
    x = leaf(g, "x", (2,))
    e = Emit(g, None)
    a = e("tanh", e("mul", x, e.const(2.0, "f64")))
    b = e("tanh", e("mul", x, e.const(2.0, "f64")))
    g.outputs["out"] = e("add", a, b)
    out = verify(common_subexpressions(g))
    assert ops(out) == ["add", "const", "input", "mul", "tanh"]
    add = out.outputs["out"]
    assert out.operands(add)[0] == out.operands(add)[1]


def test_dead_code_keeps_inputs_and_params_but_drops_unused_work():
    g = Graph()
    x = leaf(g, "x", (2,))
    w = leaf(g, "w", (2,), op="param")
    e = Emit(g, None)
    e("exp", x)                                     # unused
    g.outputs["out"] = e("mul", x, w)
    assert ops(verify(dead_code(g))) == ["input", "mul", "param"]


def test_fold_constants_evaluates_constant_subgraphs():
    g = Graph()
    x = leaf(g, "x", (2,))
    e = Emit(g, None)
    two = e("add", e.const(1.5, "f64"), e.const(0.5, "f64"))
    g.outputs["out"] = e("mul", x, e("exp", two))
    out = verify(fold_constants(g))
    assert ops(out) == ["const", "input", "mul"]
    const = next(n for n in out.nx.nodes if out.op(n) == "const")
    assert float(out.attrs(const)["value"]) == pytest.approx(np.exp(2.0))


def test_fold_constants_never_materialises_large_broadcasts():
    g = Graph()
    e = Emit(g, None)
    g.outputs["out"] = e("broadcast_to", e.const(0.0, "f64"), shape=(1000, 1000))
    assert fold_constants(g).op(fold_constants(g).outputs["out"]) == "broadcast_to"


def test_verify_rejects_a_graph_whose_edges_disagree_with_operands():
    g = Graph()
    x, y = leaf(g, "x", (2,)), leaf(g, "y", (2,))
    s = g.add("sub", (x, y))
    g.data(s)["operands"] = (y, x)                  # operand list edited without the edges
    with pytest.raises(AssertionError, match="edges"):
        verify(g)


def test_verify_rejects_a_recorded_shape_the_rule_does_not_give():
    g = Graph()
    x = leaf(g, "x", (2,))
    n = g.add("exp", (x,))
    g.data(n)["shape"] = (3,)
    with pytest.raises(AssertionError, match="rule gives"):
        verify(g)


def test_schedule_preloads_static_values_and_frees_dead_buffers():
    g = Graph()
    x = leaf(g, "x", ("B", 4))
    e = Emit(g, None)
    count = e("size", x, axes=(0,), dtype="f64")    # depends only on the shape: computed at schedule time
    h = e("exp", x)
    t = e("tanh", h)
    g.outputs["mean"] = e("div", e("reduce_sum", t, axes=(0, 1), keepdims=False), count)
    sched = schedule(g, ["mean"], {"B": 5})
    assert [g.op(n) for n in sched.nodes] == ["exp", "tanh", "reduce_sum", "div"]
    assert any(float(v) == 5.0 for v in sched.preloaded.values())
    freed = {s for step in sched.steps for s in step[3]}
    assert freed >= {sched.steps[0][2], sched.steps[1][2]}   # exp's and tanh's buffers die after use
    exe = Executable(sched, g, ["x"], [])
    value = np.random.default_rng(0).normal(size=(5, 4))
    assert exe.run([value], [])[0] == pytest.approx(np.tanh(np.exp(value)).sum() / 5)


@pytest.mark.parametrize("name", ["linear_regression", "moons_mlp", "xor"])
def test_simplify_shrinks_each_example_gradient_without_changing_it(name):
    prog = gradlang.compile(EXAMPLES / f"{name}.grad", dtype="float64")
    raw = verify(differentiate(prog.elaborated.graph, "loss"))
    simple = verify(simplify(raw))
    assert len(simple) < len(raw)
    data = prog.load_data()
    outputs = [k for k in raw.outputs if k.startswith("grad:")]
    before = prog.run(outputs, data, raw)
    after = prog.run(outputs, data, simple)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_in_place_kernels_reuse_dead_buffers_but_never_one_a_live_view_shares():
    g = Graph()
    x = leaf(g, "x", (3, 4))
    e = Emit(g, None)
    h = e("exp", x)                         # a fresh buffer
    view = e("transpose", h, perm=(1, 0))    # shares h's memory, read at the very end
    shifted = e("add", h, e.const(1.0, "f64"))   # h is not dead here: its view is read later
    doubled = e("mul", shifted, e.const(2.0, "f64"))   # shifted is dead after this: may be overwritten
    g.outputs["a"] = e("reduce_sum", doubled, axes=(0, 1), keepdims=False)
    g.outputs["b"] = e("reduce_sum", view, axes=(0, 1), keepdims=False)
    sched = schedule(g, ["a", "b"], {})
    kinds = {g.op(n): k for n, (k, *_) in zip(sched.nodes, sched.steps)}
    assert isinstance(kinds["add"], np.ufunc)                 # writing into h would corrupt the view
    assert not isinstance(kinds["mul"], np.ufunc)             # wrapped to write into shifted's buffer
    value = np.random.default_rng(0).normal(size=(3, 4))
    a, b = Executable(sched, g, ["x"], []).run([value], [])
    assert a == pytest.approx(((np.exp(value) + 1) * 2).sum())
    assert b == pytest.approx(np.exp(value).sum())


def test_in_place_never_overwrites_inputs_params_or_outputs():
    g = Graph()
    x = leaf(g, "x", (4,))
    w = leaf(g, "w", (4,), op="param")
    e = Emit(g, None)
    g.outputs["y"] = e("tanh", x)                                  # x is an input: never written
    g.outputs["z"] = e("neg", e("mul", w, w))
    g.outputs["kept"] = e("exp", g.outputs["y"])                   # y is an output: never overwritten
    sched = schedule(g, ["y", "z", "kept"], {})
    value, weight = np.linspace(-1, 1, 4), np.arange(4.0)
    y, z, kept = Executable(sched, g, ["x"], ["w"]).run([value.copy()], [weight])
    np.testing.assert_array_equal(y, np.tanh(value))
    np.testing.assert_array_equal(kept, np.exp(np.tanh(value)))
    np.testing.assert_array_equal(z, -weight * weight)
    np.testing.assert_array_equal(weight, np.arange(4.0))


def kernels_by_op(g, sched):
    return {g.op(n): k for n, (k, *_) in zip(sched.nodes, sched.steps)}


def test_a_sum_of_products_is_scheduled_as_one_dot_product():
    g = Graph()
    x, y = leaf(g, "x", ("N",)), leaf(g, "y", ("N",))
    e = Emit(g, None)
    r = e("sub", e("tanh", x), y)
    g.outputs["sq"] = e("reduce_sum", e("mul", r, r), axes=(0,), keepdims=False)
    g.outputs["cross"] = e("reduce_sum", e("mul", r, x), axes=(0,), keepdims=False)
    sched = schedule(g, ["sq", "cross"], {"N": 7})
    assert [g.op(n) for n in sched.nodes] == ["tanh", "sub", "reduce_sum", "reduce_sum"]   # no mul left
    assert all(k is np.vdot for n, (k, *_) in zip(sched.nodes, sched.steps) if g.op(n) == "reduce_sum")
    a, b = np.random.default_rng(0).normal(size=(2, 7))
    sq, cross = Executable(sched, g, ["x", "y"], []).run([a, b], [])
    assert sq == pytest.approx(((np.tanh(a) - b) ** 2).sum())
    assert cross == pytest.approx(((np.tanh(a) - b) * a).sum())


def test_a_product_read_elsewhere_or_broadcast_is_not_fused():
    g = Graph()
    x = leaf(g, "x", (3, 4))
    w = leaf(g, "w", (4,), op="param")
    e = Emit(g, None)
    product = e("mul", e("exp", x), e("exp", x))
    g.outputs["sum"] = e("reduce_sum", product, axes=(0, 1), keepdims=False)
    g.outputs["product"] = product                       # read by the caller too: must exist
    g.outputs["broadcast"] = e("reduce_sum", e("mul", e("exp", x), w), axes=(0, 1), keepdims=False)
    sched = schedule(g, ["sum", "product", "broadcast"], {})
    assert [g.op(n) for n in sched.nodes].count("mul") == 2


def test_kernels_write_into_a_dead_second_operand_and_relu_into_its_input():
    g = Graph()
    x = leaf(g, "x", (3, 4))
    e = Emit(g, None)
    h = e("relu", e("exp", x))                                   # exp's buffer dies at the relu
    g.outputs["out"] = e("mul", e.const(2.0, "f64"), h)          # the constant is first: write into h
    sched = schedule(g, ["out"], {})
    kinds = kernels_by_op(g, sched)
    assert isinstance(kinds["relu"], InPlace) and kinds["relu"].index == 0
    assert isinstance(kinds["mul"], InPlace) and kinds["mul"].index == 1
    value = np.random.default_rng(0).normal(size=(3, 4))
    (out,) = Executable(sched, g, ["x"], []).run([value], [])
    np.testing.assert_array_equal(out, 2.0 * np.maximum(np.exp(value), 0))


@pytest.mark.parametrize("other", [0.0, -0.0, 2.5])
@pytest.mark.parametrize("cond_is_dead", [True, False])
def test_where_with_a_dead_branch_writes_into_it_and_keeps_where_semantics(cond_is_dead, other):
    g = Graph()
    x, y = leaf(g, "x", (5,)), leaf(g, "y", (5,))
    e = Emit(g, None)
    mask = e("gt", e("exp", y), e.const(1.0, "f64"))
    g.outputs["out"] = e("where", mask, e("tanh", x), e.const(other, "f64"))
    wanted = ["out"] if cond_is_dead else ["out", "mask"]
    if not cond_is_dead:
        g.outputs["mask"] = mask
    sched = schedule(g, wanted, {})
    kind = kernels_by_op(g, sched)["where"]
    assert isinstance(kind, WhereInto) and kind.index == 1 and kind.invert_cond == cond_is_dead
    assert (kind.bits is not None) == (other == 0.0 and not np.signbit(other))   # +0.0: the bitwise AND
    a = np.array([np.nan, 1.0, -2.0, np.inf, 0.5])
    b = np.array([-1.0, 1.0, -1.0, -1.0, 1.0])
    out, *rest = Executable(sched, g, ["x", "y"], []).run([a, b], [])
    expected = np.where(np.exp(b) > 1.0, np.tanh(a), other)   # a NaN masked off gives `other`
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))
    if rest:
        np.testing.assert_array_equal(rest[0], np.exp(b) > 1.0)                        # the mask is intact


def test_matmul_never_writes_into_an_operand_it_reads():
    g = Graph()
    x = leaf(g, "x", (4, 4))
    e = Emit(g, None)
    h = e("exp", x)
    g.outputs["out"] = e("matmul", h, e("tanh", x))     # both operands die here, with the result's shape
    sched = schedule(g, ["out"], {})
    assert kernels_by_op(g, sched)["matmul"] is np.matmul


def test_fresh_outputs_are_the_steps_own_memory_and_nothing_else():
    g = Graph()
    x = leaf(g, "x", (3,))
    w = leaf(g, "w", (3,), op="param")
    e = Emit(g, None)
    h = e("exp", e("mul", x, w))
    g.outputs["fresh"] = e("tanh", h)                              # a kernel's new array
    g.outputs["view"] = e("reshape", h, shape=(3, 1))              # memory h's kernel made: a view
    g.outputs["param"] = w                                         # the caller's own array
    g.outputs["constant"] = e("exp", e.const(np.ones(3), "f64"))   # computed once, preloaded
    g.outputs["twice"] = g.outputs["again"] = e("sin", x)          # one array handed out twice
    sched = schedule(g, ["fresh", "view", "param", "constant", "twice", "again"], {})
    assert sched.fresh_outputs == (True, False, False, False, False, False)


def cross_entropy_step(lead, classes, scale_shape, dtype="f64"):
    """A graph with softmax_cross_entropy, its gradient, and the gradient times a factor."""
    g = Graph()
    z = leaf(g, "z", lead + (classes,), dtype=dtype)
    y = leaf(g, "y", lead, dtype="i64")
    s = leaf(g, "s", scale_shape, dtype=dtype)
    e = Emit(g, None)
    logits = e("tanh", z)
    g.outputs["loss"] = e("softmax_cross_entropy", logits, y)
    g.outputs["grad"] = e("mul", s, e("softmax_cross_entropy_grad", logits, y))
    return g


def softmax_ce_reference(z, y, s):
    logits = np.tanh(z)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    loss = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    one_hot = np.eye(z.shape[-1])[y]
    return loss, s * (np.exp(log_probs) - one_hot)


@pytest.mark.parametrize("lead, classes, scale_shape", [
    ((6,), 4, (6, 1)),           # class-major: few classes, a per-row factor
    ((6,), 4, ()),               # a scalar factor
    ((2, 3), 5, (2, 3, 1)),      # rows over two axes
    ((2, 3), 5, (1, 1, 1)),      # a factor broadcast over every row
    ((5,), 40, (5, 1)),          # many classes: row-major
    ((2, 2), 40, ()),
])
def test_cross_entropy_and_its_gradient_share_the_softmax_and_fold_the_factor(lead, classes, scale_shape):
    g = cross_entropy_step(lead, classes, scale_shape)
    bindings = {}
    sched = schedule(g, ["loss", "grad"], bindings)
    ops = [g.op(n) for n in sched.nodes]
    assert "softmax_cross_entropy_grad" not in ops          # folded into the multiplication
    kinds = kernels_by_op(g, sched)
    assert kinds["softmax_cross_entropy"].__self__ is kinds["mul"].__self__   # one shared softmax
    rng = np.random.default_rng(1)
    z = rng.normal(size=lead + (classes,)) * 3
    y = rng.integers(0, classes, lead)
    s = rng.uniform(0.5, 2.0, scale_shape)
    exe = Executable(sched, g, ["z", "y", "s"], [])
    for _ in range(2):                                       # the shared state is per step
        want_loss, want_grad = softmax_ce_reference(z, y, s)
        loss, grad = exe.run([z, y, s], [])
        np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
        assert grad.shape == lead + (classes,)
        z, y = z[..., ::-1].copy(), (classes - 1) - y


def test_the_gradient_alone_and_a_gradient_read_twice_are_not_folded():
    g = cross_entropy_step((4,), 3, (4, 1))
    grad = g.operands(g.outputs["grad"])[1]
    g.outputs["raw"] = grad                                   # the caller wants the bare gradient too
    sched = schedule(g, ["loss", "grad", "raw"], {})
    assert [g.op(n) for n in sched.nodes].count("softmax_cross_entropy_grad") == 1
    rng = np.random.default_rng(2)
    z, y, s = rng.normal(size=(4, 3)), rng.integers(0, 3, 4), rng.uniform(size=(4, 1))
    loss, scaled, raw = Executable(sched, g, ["z", "y", "s"], []).run([z, y, s], [])
    want_loss, want = softmax_ce_reference(z, y, np.ones((4, 1)))
    np.testing.assert_allclose(raw, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(scaled, s * want, rtol=1e-12, atol=1e-15)
    alone = schedule(g, ["raw"], {})                          # no forward in the step: nothing to share
    (only,) = Executable(alone, g, ["z", "y", "s"], []).run([z, y, s], [])
    np.testing.assert_allclose(only, want, rtol=1e-12, atol=1e-15)


def test_a_label_out_of_range_in_the_shared_softmax_is_a_located_error():
    g = cross_entropy_step((3,), 4, ())
    exe = Executable(schedule(g, ["loss", "grad"], {}), g, ["z", "y", "s"], [])
    with pytest.raises(gradlang.GradError, match="softmax_cross_entropy failed at run time"):
        exe.run([np.zeros((3, 4)), np.array([0, 4, 1]), np.array(1.0)], [])


def test_reused_buffers_hold_large_results_share_memory_between_disjoint_lifetimes_and_give_the_same_values():
    n = REUSE_MIN_BYTES // 8 // 4                              # float64 [4, n]: exactly the threshold
    g = Graph()
    x, w = leaf(g, "x", (4, n)), leaf(g, "w", (n, n), op="param")
    e = Emit(g, None)
    first = e("matmul", x, w)                                  # large: a buffer of its own
    view = e("transpose", first, perm=(1, 0))                  # keeps first's memory live until read
    second = e("matmul", e("tanh", x), w)                      # first is still live: another buffer
    difference = e("sub", second, e("transpose", view, perm=(1, 0)))   # the last read of first
    third = e("matmul", e("sin", difference), w)               # first's memory is free again by now
    g.outputs["out"] = third
    g.outputs["small"] = e("reduce_sum", x, axes=(1,), keepdims=False)
    plain = schedule(g, ["out", "small"], {})
    reused = schedule(g, ["out", "small"], {}, reuse_buffers=True)
    assert not any(isinstance(k, IntoBuffer) for k, *_ in plain.steps)
    matmuls = [k.buffer for node, (k, *_) in zip(reused.nodes, reused.steps) if g.op(node) == "matmul"]
    assert len(matmuls) == 3 and matmuls[2] is matmuls[0] and matmuls[1] is not matmuls[0]
    rng = np.random.default_rng(3)
    a, b = Executable(plain, g, ["x"], ["w"]), Executable(reused, g, ["x"], ["w"])
    weight = rng.normal(size=(n, n)) / n
    for _ in range(3):                                         # each run overwrites the last one's buffers
        value = rng.normal(size=(4, n))
        for want, got in zip(a.run([value], [weight]), b.run([value], [weight])):
            np.testing.assert_array_equal(got, want)


def test_only_the_training_step_reuses_buffers_other_runs_hand_out_fresh_arrays():
    prog = gradlang.compile(EXAMPLES / "mnist_mlp.grad")
    rng = np.random.default_rng(0)
    feed = {"x": rng.random((64, 784), dtype=np.float32), "y": rng.integers(0, 10, 64)}
    names = [f"grad:{n}" for n in prog.param_names]
    first = prog.run(names, feed, prog.gradient_graph())
    again = prog.run(names, feed, prog.gradient_graph())
    assert not any(np.shares_memory(a, b) for a, b in zip(first, again))
    prog.step(feed)
    (exe,) = prog.runner.training_update.executables.values()
    assert sum(isinstance(k, IntoBuffer) for k, *_ in exe.schedule.steps) >= 3   # the large products


def test_a_scaled_cross_entropy_gradient_summed_whole_is_not_taken_for_a_product():
    # the gradient of a broadcast scalar sums the folded `scale · (softmax − one_hot)` over every axis
    prog = gradlang.compile("input x : f64[B, 3]\ninput y : i64[B]\nparam s : f64[] = 0.5\n"
                            "logits = x + s\nloss = cross_entropy(logits, y)\n", dtype="float64")
    feed = {"x": np.random.default_rng(0).normal(size=(4, 3)), "y": np.array([0, 2, 1, 2])}
    assert prog.gradients(feed)["s"] == pytest.approx(0.0, abs=1e-15)   # softmax − one_hot sums to 0
    assert prog.step(feed) == pytest.approx(prog.loss(feed), rel=1e-12)   # a step does not move the loss


def test_no_pass_keeps_its_own_list_of_ops():
    """Which ops a generic rule applies to is a trait on the op record (ops/registry.py), read by every
    pass: a literal collection of three or more primitive names in a pass is a list that will drift
    from the records (per-op tables, dicts keyed by op, are fine)."""
    import ast as python_ast

    from gradlang.ops import all_primitives
    names = set(all_primitives())
    root = Path(gradlang.__file__).parent
    found = []
    for path in [*root.glob("passes/*.py"), *root.glob("runtime/*.py"), *root.glob("ir/*.py"), root / "gradcheck.py"]:
        for node in python_ast.walk(python_ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (python_ast.Set, python_ast.Tuple, python_ast.List)):
                ops = [e.value for e in node.elts if isinstance(e, python_ast.Constant) and e.value in names]
                if len(ops) >= 3:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {ops}")
    assert not found, "\n".join(found)
