"""`gradlang gradcheck`: every example's and every stdlib layer's gradients, and each op's rule on the
way, agree with central differences in float64; --json; a non-zero exit beyond the tolerance; --per-op
names the op whose VJP rule is wrong (a rule broken on purpose in the registry; every rule in turn:
tests/test_gradcheck_rules.py); kinks are stepped over, or skipped where they lie at the point itself,
never reported as wrong; stop_gradient is respected."""
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.gradcheck import check_op, gradcheck, random_feed
from gradlang.ops import registry
from gradlang.runtime.data import paths

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data"
CASES = [pytest.param(p.stem, marks=pytest.mark.slow) if p.stem == "char_lstm"   # ~40 s: 1287 ops checked one by one
         else p.stem for p in sorted(EXAMPLES.glob("*.grad"))]

# a program per stdlib module, together using every layer, activation and loss it offers
STDLIB_PROGRAMS = {
    "nn_activations_losses": """
import nn
input x : f32[B, 5]
input y : f32[B]
input label : i64[B]
net  = nn.mlp([5, 8, 8, 3], activation: relu)
head = nn.dense(3, 1, activation: tanh)
wide = nn.dense(5, 4, activation: softplus, init: he_normal)
logits = net(x)
score  = head(logits)[:, 0]
h = wide(x)
acts = leaky_relu(h) + elu(h) + gelu(h) + swish(h) + log_sigmoid(h) + log_softmax(h) + identity(h)
fit  = cross_entropy(logits, label) + mse(score, y) + hinge(score, y) + binary_cross_entropy(score, float(y > 0))
loss = fit + mean(acts) + 1e-3 * l2(net.params) + 1e-3 * l1([head.W, wide.W])
""",
    "conv_pooling": """
import nn
import conv
input x : f32[B, 2, 8, 8]
input y : i64[B]
first  = conv.conv2d(2, 4, 3, padding: 1, activation: relu)
second = conv.conv2d(4, 6, 3, stride: 2, padding: 1, activation: tanh)
out    = nn.dense(6, 3)
h = max_pool2d(first(x), 2)
h = avg_pool2d(second(h), 2)
loss = cross_entropy(out(conv.flatten(h)), y)
""",
    "layer_norm": """
import nn
input x : f32[B, 6]
input y : f32[B, 6]
norm = nn.layer_norm(6)
lin  = nn.dense(6, 6)
loss = mse(norm(lin(x)), y)
""",
    "batch_norm": """
import nn
import conv
input x : f32[B, 2, 4, 4]
input y : i64[B]
image = conv.conv2d(2, 3, 3, padding: 1)
norm2 = nn.batch_norm(3)
dense = nn.dense(48, 5)
norm1 = nn.batch_norm(5, momentum: 0.2)
out   = nn.dense(5, 3)
loss = cross_entropy(out(tanh(norm1(dense(conv.flatten(norm2(image(x))))))), y)
""",
    "rnn_cells": """
import rnn
input x : f32[B, 4, 3]
input y : i64[B]
elman = rnn.rnn_cell(3, 5)
lstm  = rnn.lstm_cell(5, 4)
gru   = rnn.gru_cell(4, 3)
a = rnn.unroll(elman, x, elman.zero_state(x))
b = rnn.unroll(lstm, a[0], lstm.zero_state(x))
c = rnn.unroll(gru, b[0], gru.zero_state(x))
loss = cross_entropy(c[1][0], y)
""",
    "attention_embedding_dropout": """
import nn
import attention as att
input x : i64[B, 5]
input y : i64[B, 5]
embed   = nn.embedding(7, 8)
block   = att.transformer_block(8, 2, 16, causal: true, dropout_rate: 0.2)
attend  = att.multi_head_attention(8, 4)
readout = nn.dense(8, 7)
h = block(embed(x))
h = h + attend(h)
loss = cross_entropy(readout(dropout(h, 0.1)), y) + 1e-3 * mean(att.masked_fill(h, h > 0, 0.0) ** 2)
""",
}

TANH_NET = """
input x : f32[B, 3]
input y : f32[B]
param W : [3, 4] = glorot_uniform
param v : [4] = glorot_uniform
h = tanh(x @ W)
loss = mean((h @ v - y) ** 2)
"""


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _files_missing(program) -> list[str]:
    """The files of the program's training data that are not in SHARED_DATA."""
    spec = program.plan.get("data")
    return [] if spec is None else [str(p) for p in paths(spec, program.folder, SHARED_DATA) if not p.exists()]


@pytest.mark.parametrize("name", CASES)
def test_every_example_passes_both_checks_on_its_own_data(name, capsys):
    path = EXAMPLES / f"{name}.grad"
    program = gradlang.compile(path)
    missing = _files_missing(program)
    if missing:
        pytest.skip(f"{name} is checked on its training data, and {', '.join(missing)} is absent "
                    "(CI puts shared/ beside the clone)")
    code, out, err = cli(capsys, "gradcheck", path, "--per-op", "--data-dir", SHARED_DATA)
    assert code == 0, out + err
    assert "agrees with central differences" in out and "has a correct rule here" in out
    assert ("of the program's data" in out) == (program.plan.get("data") is not None), out


def test_the_stdlib_programs_use_every_layer_activation_and_loss():
    text = "\n".join(STDLIB_PROGRAMS.values())
    defined = {name for module in ("nn", "conv", "rnn", "attention", "activations", "losses")
               for name in re.findall(r"^(?:layer|fn) (\w+)", (ROOT / "stdlib" / f"{module}.grad").read_text(), re.M)}
    # used inside the layers and losses themselves, or not differentiable (accuracy: argmax)
    helpers = {"zeros_state", "swap_last", "attention", "sum_of_squares", "accuracy"}
    assert {name for name in defined - helpers if not re.search(rf"\b{name}\b", text)} == set()


@pytest.mark.parametrize("name", STDLIB_PROGRAMS)
def test_every_stdlib_layer_passes_both_checks(name, tmp_path):
    path = tmp_path / f"{name}.grad"
    path.write_text(STDLIB_PROGRAMS[name])
    report = gradcheck(path, per_op=True)
    assert report.ok, report.format()
    assert all(p.compared for p in report.params), report.format()


def test_a_kink_within_the_step_is_stepped_over_not_reported(tmp_path):
    """relu's kink 6e-6 below w = 1 changes the slope on one side by 1%: a fixed step of 1e-5 put the
    central difference 0.2% off (the kink too faint for a left-right test); a smaller step misses it."""
    path = tmp_path / "near.grad"
    path.write_text("param w : [] = ones\nloss = 100 * w + relu(w - 0.999994)\n")
    report = gradcheck(path)
    assert report.ok and report.params[0].compared > 0 and report.params[0].error < 1e-6, report.format()


def test_a_kink_at_the_point_is_not_compared_and_not_failed(tmp_path, capsys):
    path = tmp_path / "at.grad"
    path.write_text("param w : [] = ones\nparam v : [] = ones\nloss = 100 * w + relu(w - 1) + v * v\n")
    code, out, _ = cli(capsys, "gradcheck", path)
    assert code == 0
    assert re.search(r"^  w +— +not compared: a kink at this point along each of its \d+ probes$", out, re.M), out
    assert re.search(r"^  v +\S+  ok$", out, re.M), out


def test_the_report_lists_each_param_and_json_says_the_same(tmp_path, capsys):
    path = tmp_path / "net.grad"
    path.write_text(TANH_NET)
    code, out, _ = cli(capsys, "gradcheck", path)
    assert code == 0
    assert "random inputs of the declared shapes, batch 8" in out
    assert [line.split()[0] for line in out.splitlines()[2:4]] == ["W", "v"]
    code, out, _ = cli(capsys, "gradcheck", path, "--json", "--per-op")
    report = json.loads(out)
    assert code == 0 and report["ok"] and set(report["params"]) == {"W", "v"}
    assert all(p["max_relative_error"] < 1e-6 and p["compared"] >= 3 for p in report["params"].values())
    assert report["per_op"]["checked"] >= 4 and report["per_op"]["failures"] == []


def test_the_program_s_own_data_is_used_when_it_has_some(capsys):
    code, out, _ = cli(capsys, "gradcheck", EXAMPLES / "moons_mlp.grad", "--batch", 5)
    assert code == 0 and "the first 5 examples of the program's data" in out
    code, out, _ = cli(capsys, "gradcheck", EXAMPLES / "moons_mlp.grad", "--batch", 5, "--random")
    assert code == 0 and "random inputs" in out


def test_beyond_the_tolerance_the_exit_status_is_one(tmp_path, capsys):
    path = tmp_path / "net.grad"
    path.write_text(TANH_NET)
    code, out, _ = cli(capsys, "gradcheck", path, "--tolerance", "1e-30")
    assert code == 1 and "WRONG" in out and "beyond the tolerance 1e-30" in out


def _broken_tanh(e, n, g):
    """d tanh = 1 − tanh², here wrongly 1 − tanh."""
    return [lambda: e("mul", g, e("sub", e.const(1, n.dtype), n.id))]


def test_per_op_names_the_op_whose_rule_is_broken_and_its_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "net.grad"
    path.write_text(TANH_NET)
    monkeypatch.setitem(registry._REGISTRY, "tanh", dataclasses.replace(registry.get("tanh"), vjp=_broken_tanh))
    code, out, _ = cli(capsys, "gradcheck", path, "--per-op")
    assert code == 1
    assert f"first wrong gradient rule: {path}:6:5: the gradient rule of tanh is wrong for operand 0" in out
    report = gradcheck(path, per_op=True)
    assert [(f.op, f.location) for f in report.op_failures] == [("tanh", f"{path}:6:5")]


def test_per_op_finds_the_rule_even_where_the_whole_gradient_looks_right(tmp_path, monkeypatch):
    """Another term dominates W's gradient: the broken tanh path changes it too little for the
    whole-program check to notice, but the per-op check, at tanh's own values, does."""
    path = tmp_path / "dominated.grad"
    path.write_text(TANH_NET.replace("loss = mean((h @ v - y) ** 2)",
                                     "loss = 1e-6 * mean((h @ v - y) ** 2) + sum((W - 1) ** 2)"))
    monkeypatch.setitem(registry._REGISTRY, "tanh", dataclasses.replace(registry.get("tanh"), vjp=_broken_tanh))
    report = gradcheck(path, per_op=True)
    assert all(p.error <= report.tolerance for p in report.params)
    assert [f.op for f in report.op_failures] == ["tanh"] and not report.ok


def test_per_op_skips_kinks_instead_of_failing_them():
    prog = gradlang.compile("input x : f32[4]\nparam w : [4] = ones\nloss = sum(relu(x * w) + abs(x - x * w))\n",
                            dtype="float64")
    graph = prog.elaborated.graph
    x = np.array([0.0, 1.0, -1.0, 2.0])       # relu at 0, abs at 0 everywhere: kinks
    for node in graph.order():
        if graph.op(node) in ("relu", "abs"):
            values = {}
            for n in (node, *graph.operands(node)):
                graph.outputs[f"v{n}"] = n
            values = dict(zip([node, *graph.operands(node)],
                              prog.run([f"v{n}" for n in (node, *graph.operands(node))], {"x": x}, graph)))
            assert check_op(graph, node, values, np.random.default_rng(0)) == []


def test_stop_gradient_is_held_fixed_as_the_compiler_holds_it(tmp_path, capsys):
    path = tmp_path / "baseline.grad"
    path.write_text("input x : f32[B]\nparam b : [] = ones\nparam w : [] = ones\n"
                    "advantage = stop_gradient(x - b)\nloss = mean(advantage * w * x) + mean((x - b) ** 2)\n")
    code, out, _ = cli(capsys, "gradcheck", path)
    assert code == 0, out


def test_random_feed_has_the_declared_shapes_and_valid_labels():
    prog = gradlang.compile("input x : f32[B, 3]\ninput y : i64[B]\ninput m : bool[2]\nloss = mean(x)\n")
    feed = random_feed(prog, 5, np.random.default_rng(0))
    assert feed["x"].shape == (5, 3) and feed["x"].dtype == np.float32
    assert feed["y"].dtype == np.int64 and set(np.unique(feed["y"])) <= {0, 1}
    assert feed["m"].shape == (2,) and feed["m"].dtype == np.bool_
