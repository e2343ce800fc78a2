"""What the compiler reports beyond errors: lints (warnings at the source line), numerical-stability
rewrites (each listed where it fires, each keeping the value and curing an overflow or a NaN), and the
cost of a training step (FLOPs and peak memory) computed before anything runs."""
import json

import numpy as np
import pytest

import gradlang
from gradlang.analysis import verify
from gradlang.analysis.lint import lint
from gradlang.cli import main
from gradlang.gradcheck import random_feed
from gradlang.lowering.cost import node_flops, training_step_cost
from gradlang.passes import differentiate, simplify
from gradlang.passes.stability import stabilize

LINTS = """input x : f32[B, 2]
input unused : f32[B]
input y : f32[B]
param W : [2, 1] = glorot_uniform
param forgotten : [3] = zeros
param q : [] = ones
h = x @ W
steps = floor(h * q)
loss = mean((h[:, 0] + steps[:, 0] - y) ** 2)
"""
QUIET = """import nn
input x : f32[B, 2]
input y : f32[B]
net = nn.dense(2, 1)
out = net(x)[:, 0]
leaky = where(out > 0, out, 0.1 * out)                 # a piecewise function: its condition is not a path
target = stop_gradient(y * 2)
loss = mean((leaky - target) ** 2) + mean(dropout(out, 0.1))
metric hits = mean((out > 0) == (y > 0))
output label = argmax(reshape(out, [-1, 1]), axis: 1)
"""


def cli(capsys, *args, code=0):
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    assert status == code, out.err
    return out.out, out.err


# ---- lints ------------------------------------------------------------------------------------------

def test_lints_find_unused_inputs_params_without_gradient_and_dead_paths(tmp_path):
    path = tmp_path / "lints.grad"
    path.write_text(LINTS)
    found = [(w.kind, str(w.span), w.message) for w in lint(gradlang.compile(path))]
    assert found == [
        ("unused-input", f"{path}:2:1", "input unused is declared but never used"),
        ("no-gradient", f"{path}:5:1",
         "param forgotten receives no gradient: the loss does not depend on it, so training leaves it unchanged"),
        ("no-gradient", f"{path}:6:1", "param q receives no gradient: the loss depends on it only through ops "
                                       "that pass no gradient, so training leaves it unchanged"),
        ("non-differentiable", f"{path}:8:9",
         "floor passes no gradient, but the loss depends on W, q through it: their gradient ignores this path"),
    ]


def test_deliberate_non_differentiable_uses_stay_quiet():
    assert lint(gradlang.compile(QUIET)) == []


def test_lints_read_like_errors_and_check_prints_them(tmp_path, capsys):
    path = tmp_path / "lints.grad"
    path.write_text(LINTS)
    _, err = cli(capsys, "check", path)
    assert err.splitlines()[:3] == [f"{path}:2:1: warning: input unused is declared but never used",
                                    " 2 | input unused : f32[B]", "   | ^^^^^^^^^^^^^^^^^^^^^"]
    report = json.loads(cli(capsys, "check", path, "--json")[0])
    assert [w["kind"] for w in report["warnings"]] == ["unused-input", "no-gradient", "no-gradient",
                                                       "non-differentiable"]
    assert report["stability_rewrites"] == []


def test_run_warns_before_training_unless_quiet(tmp_path, capsys):
    path = tmp_path / "forgetful.grad"
    path.write_text("data d = line(n: 8)\ninput x : f32[N]\ninput y : f32[N]\nparam a : []\nparam forgotten : []\n"
                    "loss = mean((a * x - y) ** 2)\ntrain {\n  data = d\n  steps = 1\n}\n")
    _, err = cli(capsys, "run", path, "--out", tmp_path / "p.npz", "--quiet")
    assert err == ""
    _, err = cli(capsys, "run", path, "--out", tmp_path / "p.npz", "--json")
    assert err.startswith(f"{path}:5:1: warning: param forgotten receives no gradient")


def test_a_program_without_a_chosen_loss_is_only_checked_for_unused_inputs():
    prog = gradlang.compile("input x : f32[3]\ninput z : f32\nparam w : [3]\nloss a = sum(x * w)\n"
                            "loss b = sum(x)\n")
    assert [w.kind for w in lint(prog)] == ["unused-input"]


def test_check_says_so_when_there_is_nothing_to_report(tmp_path, capsys):
    path = tmp_path / "clean.grad"
    path.write_text("input x : f32[3]\nparam w : [3]\nloss = sum(x * w)\n")
    assert cli(capsys, "check", path)[0] == f"{path}: no warnings\n"


# ---- numerical stability --------------------------------------------------------------------------------

def stable_and_plain(source, feed, dtype="float32"):
    """(loss and gradients of the rewritten program, of the original one, the rewrites)."""
    prog = gradlang.compile(source, dtype=dtype)
    stable, rewrites = stabilize(prog.elaborated.graph)
    verify(stable)
    outputs = ["loss"] + [f"grad:{p}" for p in prog.param_names]
    with np.errstate(all="ignore"):
        results = [prog.run(outputs, feed, simplify(differentiate(g, "loss"))) for g in (stable, prog.elaborated.graph)]
    return results[0], results[1], rewrites


def test_log_softmax_rewrite_keeps_large_logits_finite():
    source = "input x : f32[2, 3]\nparam w : [3] = ones\nloss = -sum(log(softmax(x * w)))\n"
    x = np.array([[0.0, 1.0, 2.0], [0.0, 200.0, -200.0]], dtype=np.float32)
    (loss, grad), (plain_loss, _), rewrites = stable_and_plain(source, {"x": x})
    assert [r.rule for r in rewrites] == ["log(softmax(x)) → log_softmax(x) = x − logsumexp(x)"]
    assert str(rewrites[0].span) == "<string>:3:13"
    assert "note: rewritten for numerical stability" in rewrites[0].format()
    assert np.isinf(plain_loss) and np.isfinite(loss) and np.all(np.isfinite(grad))
    small = {"x": x[[0, 0]]}
    (loss, grad), (plain_loss, plain_grad), _ = stable_and_plain(source, small)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-5)


@pytest.mark.parametrize("expression, rule", [("log(sigmoid(x * w))", "log(sigmoid(x)) → −softplus(−x)"),
                                              ("log(1 - sigmoid(x * w))", "log(1 − sigmoid(x)) → −softplus(x)")])
def test_log_sigmoid_rewrites_keep_saturated_values_finite_and_the_derivative_right_at_zero(expression, rule):
    source = f"input x : f32[4]\nparam w : [] = ones\nloss = sum({expression})\n"
    x = np.array([-120.0, 120.0, 0.0, 1.5], dtype=np.float32)
    (loss, grad), (plain_loss, _), rewrites = stable_and_plain(source, {"x": x})
    assert [r.rule for r in rewrites] == [rule]
    assert np.isinf(plain_loss) and np.isfinite(loss)
    sign = 1 if "1 -" not in expression else -1
    exact = -np.sum(np.log1p(np.exp(-sign * x.astype(np.float64))))
    assert loss == pytest.approx(exact, rel=1e-5)
    at_zero = source.replace("x * w", "x + w - 1")               # w = 1: the argument is exactly 0
    (_, grad), _, _ = stable_and_plain(at_zero, {"x": np.zeros(4, dtype=np.float32)})
    assert float(grad) == pytest.approx(4 * sign * 0.5)           # ±1/2 at 0, not the 0 of relu'(0) + abs'(0)


def test_safe_where_removes_the_nan_from_the_branch_not_taken():
    source = ("input x : f32[3]\nparam w : [] = ones\nv = x * w\n"
              "loss = sum(where(v > 0, log(v), 0)) + sum(where(v >= 0, 0, sqrt(-v)))\n")
    x = np.array([0.0, 2.0, -4.0], dtype=np.float32)
    (loss, grad), (plain_loss, plain_grad), rewrites = stable_and_plain(source, {"x": x})
    assert len(rewrites) == 2 and all("where(c, " in r.rule for r in rewrites)
    assert "log(where(c, x, 1))" in rewrites[0].rule and "pow(where(c, x, 1))" in rewrites[1].rule
    assert loss == pytest.approx(plain_loss)
    assert np.isnan(plain_grad) and float(grad) == pytest.approx(1.0 + 0.5 * 4 / 2)   # d/dw: x/v + x/(2√−v) terms


def test_stabilize_is_pure_and_quiet_when_nothing_applies():
    prog = gradlang.compile("input x : f32[3]\nparam w : [3]\nloss = sum(where(x > 0, x * w, 0))\n")
    size = len(prog.elaborated.graph)
    stable, rewrites = stabilize(prog.elaborated.graph)
    assert rewrites == [] and len(stable) == size == len(prog.elaborated.graph)


def test_check_lists_the_rewrites_that_would_fire(tmp_path, capsys):
    path = tmp_path / "unstable.grad"
    path.write_text("input x : f32[B, 3]\nparam W : [3, 3]\nloss = -mean(log(softmax(x @ W)))\n")
    out, _ = cli(capsys, "check", path)
    assert out == (f"{path}:3:14: note: rewritten for numerical stability: "
                   "log(softmax(x)) → log_softmax(x) = x − logsumexp(x)\n")


# ---- cost -------------------------------------------------------------------------------------------------

MLP = """import nn
input x : f32[B, 4]
input y : f32[B]
net = nn.mlp([4, 8, 3, 1])
loss = mean((net(x)[:, 0] - y) ** 2)
"""


def test_matmul_flops_of_a_training_step_are_the_textbook_count():
    cost = training_step_cost(gradlang.compile(MLP), 16)
    macs = 4 * 8 + 8 * 3 + 3 * 1
    assert cost.forward.flops_by_op["matmul"] == 2 * 16 * macs
    # backward: dW for every layer, dh for all but the first (no gradient for the input x)
    assert cost.backward.flops_by_op["matmul"] == 2 * 16 * (macs + 8 * 3 + 3 * 1)
    assert cost.step_flops == cost.forward.flops + cost.backward.flops
    assert cost.param_bytes == 4 * (4 * 8 + 8 + 8 * 3 + 3 + 3 + 1) and cost.input_bytes == 4 * 16 * 5


def test_peak_memory_follows_liveness_and_views_share_buffers():
    prog = gradlang.compile("input x : f32[B, 10]\nloss = sum(tanh(exp(x)))\n")
    cost = training_step_cost(prog, 100)
    assert cost.forward.peak_bytes == 2 * 100 * 10 * 4       # exp's buffer is alive while tanh writes its own
    viewed = gradlang.compile("input x : f32[100, 10]\nloss = sum(tanh(reshape(transpose(exp(x)), [1000])))\n")
    assert training_step_cost(viewed, None).forward.peak_bytes == 2 * 100 * 10 * 4


def test_flops_of_each_kind_of_op():
    prog = gradlang.compile("input x : f32[2, 3]\nparam W : [3, 5]\nloss = sum(softmax(x @ W)) + sum(exp(x))\n")
    graph = prog.forward_graph
    flops = {graph.op(n): node_flops(graph, n, {}) for n in graph.nx.nodes}
    assert flops["matmul"] == 2 * 2 * 3 * 5 and flops["softmax"] == 5 * 10 and flops["exp"] == 6
    assert flops["reduce_sum"] in (6, 10) and flops["input"] == flops["param"] == 0


def test_cost_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "mlp.grad"
    path.write_text(MLP)
    out, _ = cli(capsys, "ir", path, "--cost", "--batch", "16")
    assert out.splitlines()[0] == f"one training step of {path} at batch 16 (f32):"
    assert "forward (loss)" in out and "training step" in out and "matmul" in out
    data = json.loads(cli(capsys, "ir", path, "--cost", "--batch", "16", "--format", "json")[0])
    assert data["training_step_flops"] == data["forward"]["flops"] + data["backward"]["flops"]
    _, err = cli(capsys, "ir", path, "--cost", code=1)
    assert "say --batch N" in err


def test_every_example_has_a_cost():
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.grad")):
        prog = gradlang.compile(path)
        cost = training_step_cost(prog, 4)
        assert cost.step_flops > 0 and cost.backward.peak_bytes >= cost.forward.peak_bytes > 0, path.name
        assert random_feed(prog, 4, np.random.default_rng(0)).keys() == prog.inputs.keys()


def test_cost_sizes_are_never_written_in_exponent_notation():
    from gradlang.lowering.cost import _binary, _si
    assert _binary(1020 * 1024) == "1,020 KiB" and _binary(1000 * 1024) == "1,000 KiB"
    assert _binary(999 * 1024) == "999 KiB" and _binary(3 * 2 ** 20) == "3 MiB"
    assert _si(101e6, "FLOP") == "101 MFLOP" and _si(2.5e15, "FLOP") == "2,500 TFLOP"
