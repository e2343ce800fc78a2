"""State (`state NAME : … = init`, `update NAME = …`), `training(a, b)` and `nn.batch_norm`.

Batch norm's values in training and evaluation and its running statistics are checked against NumPy
(after several steps, against a NumPy loop of the same updates from the params each step began with);
its gradients in a training step against float64 central differences; the state against save, load,
checkpoints and exact resuming; evaluation against ever writing it; the mistakes against located errors;
the ONNX export against onnxruntime.
"""
from __future__ import annotations

import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.ir.graph import Graph
from gradlang.lowering.schedule import schedule
from gradlang.ops.registry import RunContext
from gradlang.passes import backprop
from gradlang.runtime.interpreter import Executable

EPS = 1e-5

DENSE_BN = """
import nn
input x : f32[B, 3]
input y : f32[B]
dense = nn.dense(3, 4)
bn    = nn.batch_norm(4, momentum: {momentum})
h     = bn(dense(x))
output h = h
loss = mean((h[:, 0] + 0.5 * h[:, 1] - y) ** 2)
train {{ optimizer = {optimizer} }}
"""


def dense_bn(momentum=0.1, optimizer="adam(lr: 0.05)", dtype="float32"):
    return gradlang.compile(DENSE_BN.format(momentum=momentum, optimizer=optimizer), dtype=dtype)


def feed(rng, batch=8, dtype=np.float32):
    return {"x": rng.normal(1.0, 2.0, (batch, 3)).astype(dtype), "y": rng.normal(size=batch).astype(dtype)}


def batch_norm_reference(h, gamma, beta, mean, var, axes):
    shape = [1] * h.ndim
    shape[1] = -1
    return (h - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS) * gamma.reshape(shape) + beta.reshape(shape)


# ---- state is not a param ------------------------------------------------------------------------

def test_state_is_read_like_a_param_but_is_not_one():
    prog = dense_bn()
    assert prog.param_names == ["dense.W", "dense.b", "bn.gamma", "bn.beta"]
    assert prog.state_names == ["bn.running_mean", "bn.running_var"]
    assert list(prog.state) == prog.state_names and "bn.running_mean" not in prog.params
    np.testing.assert_array_equal(prog.state["bn.running_mean"], np.zeros(4, np.float32))
    np.testing.assert_array_equal(prog.state["bn.running_var"], np.ones(4, np.float32))
    assert set(prog.gradients(feed(np.random.default_rng(0)))) == set(prog.param_names)
    assert not any(name.startswith("grad:bn.running") for name in prog.gradient_graph().outputs)
    assert set(n for n in prog.forward_graph.outputs if n.startswith("update:")) == \
        {"update:bn.running_mean", "update:bn.running_var"}


def test_a_program_without_state_has_no_update_outputs_and_no_state_writes():
    prog = gradlang.compile("input x : f32[B, 2]\nparam w : [2]\nloss = mean((x @ w) ** 2)\n")
    assert prog.state_names == [] and dict(prog.state) == {}
    assert not any(name.startswith("update:") for name in prog.forward_graph.outputs)
    prog.step({"x": np.ones((4, 2), np.float32)})
    (exe,) = prog.runner.training_update.executables.values()
    assert exe.state_writes == () and exe.state_snapshots == ()
    assert prog.runner.leaf_list is prog.runner.param_list


# ---- values against NumPy ------------------------------------------------------------------------

def test_training_normalises_by_the_batch_and_evaluation_by_the_running_statistics():
    prog = dense_bn(dtype="float64")
    rng = np.random.default_rng(1)
    prog.params["bn.gamma"] = rng.uniform(0.5, 2.0, 4)
    prog.params["bn.beta"] = rng.normal(size=4)
    prog.state["bn.running_mean"] = rng.normal(size=4)
    prog.state["bn.running_var"] = rng.uniform(0.5, 2.0, 4)
    f = feed(rng, dtype=np.float64)
    p, s = prog.params, prog.state
    pre = f["x"] @ p["dense.W"] + p["dense.b"]
    trained = prog.run(["output:h"], f, training=True)[0]
    want = batch_norm_reference(pre, p["bn.gamma"], p["bn.beta"], pre.mean(0), pre.var(0), (0,))
    np.testing.assert_allclose(trained, want, rtol=1e-12, atol=1e-12)
    evaluated = prog.predict(f)["h"]
    want = batch_norm_reference(pre, p["bn.gamma"], p["bn.beta"], s["bn.running_mean"], s["bn.running_var"], (0,))
    np.testing.assert_allclose(evaluated, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum, optimizer", [(0.1, "adam(lr: 0.05)"), (0.3, "sgd(lr: 0.1)"),
                                                 (0.5, "sgd(lr: 0.1, momentum: 0.9)")])
def test_running_statistics_after_several_steps_are_a_numpy_loop_of_the_same_updates(momentum, optimizer):
    """Each step's update is computed from the forward values of that step: the params before its update
    (plain SGD runs the gradients scaled by the rate, adam does not; both write the state alike)."""
    prog = dense_bn(momentum, optimizer, dtype="float64")
    rng = np.random.default_rng(2)
    mean, var = np.zeros(4), np.ones(4)
    for _ in range(6):
        f = feed(rng, batch=int(rng.integers(5, 12)), dtype=np.float64)
        pre = f["x"] @ prog.params["dense.W"] + prog.params["dense.b"]   # the params this step begins with
        before = prog.params["dense.W"].copy()
        prog.step(f)
        assert not np.array_equal(before, prog.params["dense.W"])   # the params did move
        mean = (1 - momentum) * mean + momentum * pre.mean(0)
        var = (1 - momentum) * var + momentum * pre.var(0, ddof=1)
        np.testing.assert_allclose(prog.state["bn.running_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(prog.state["bn.running_var"], var, rtol=1e-12)


def test_a_batch_of_one_example_moves_the_running_mean_and_leaves_the_running_variance():
    """One value per channel has no unbiased variance (PyTorch refuses the batch); the last batch of an
    epoch can be that small, and must not make the running variance NaN."""
    prog = dense_bn(momentum=0.5, dtype="float64")
    f = feed(np.random.default_rng(10), batch=1, dtype=np.float64)
    pre = f["x"] @ prog.params["dense.W"] + prog.params["dense.b"]
    prog.step(f)
    np.testing.assert_allclose(prog.state["bn.running_mean"], 0.5 * pre[0], rtol=1e-12)
    np.testing.assert_array_equal(prog.state["bn.running_var"], np.ones(4))


def test_four_dimensional_batch_norm_normalises_over_batch_height_and_width():
    prog = gradlang.compile("""
        import nn
        input x : f32[B, 3, 4, 5]
        bn = nn.batch_norm(3, momentum: 0.2)
        h = bn(x)
        output h = h
        loss = mean(h * h * x)
    """, dtype="float64")
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (6, 3, 4, 5))
    prog.params["bn.gamma"] = [0.5, 1.0, 2.0]
    prog.params["bn.beta"] = [1.0, 0.0, -1.0]
    g, b = prog.params["bn.gamma"], prog.params["bn.beta"]
    trained = prog.run(["output:h"], {"x": x}, training=True)[0]
    want = batch_norm_reference(x, g, b, x.mean((0, 2, 3)), x.var((0, 2, 3)), (0, 2, 3))
    np.testing.assert_allclose(trained, want, rtol=1e-12, atol=1e-12)
    prog.step({"x": x})
    np.testing.assert_allclose(prog.state["bn.running_mean"], 0.2 * x.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(prog.state["bn.running_var"], 0.8 + 0.2 * x.var((0, 2, 3), ddof=1), rtol=1e-12)
    want = batch_norm_reference(x, prog.params["bn.gamma"], prog.params["bn.beta"], prog.state["bn.running_mean"],
                                prog.state["bn.running_var"], (0, 2, 3))
    np.testing.assert_allclose(prog.predict({"x": x})["h"], want, rtol=1e-12, atol=1e-12)


def test_batch_norm_refuses_other_ranks_and_channel_counts():
    with pytest.raises(GradError, match=r"batch_norm: x must be \[B, c\] or \[B, c, H, W\]") as info:
        gradlang.compile("import nn\ninput x : f32[B, 3, 4]\nbn = nn.batch_norm(3)\nloss = mean(bn(x))\n")
    assert (info.value.span.line, info.value.span.col) == (4, 13)
    with pytest.raises(GradError, match="axis 1 must hold its c channels"):
        gradlang.compile("import nn\ninput x : f32[B, 3]\nbn = nn.batch_norm(4)\nloss = mean(bn(x))\n")


# ---- gradients --------------------------------------------------------------------------------------

def test_gradients_of_a_training_step_match_central_differences():
    """In a training step the loss depends on the params also through the batch's mean and variance."""
    prog = dense_bn(dtype="float64")
    rng = np.random.default_rng(4)
    prog.params["bn.gamma"] = rng.uniform(0.5, 2.0, 4)
    prog.params["bn.beta"] = rng.normal(size=4)
    f = feed(rng, dtype=np.float64)
    grads = prog.gradients(f, training=True)

    def loss():
        return float(prog.run(["loss"], f, training=True)[0])
    h = 1e-6
    for name, value in prog.params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            keep = value[index]
            value[index] = keep + h
            up = loss()
            value[index] = keep - h
            down = loss()
            value[index] = keep
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    # the gradients of evaluation differ: the running statistics are constants there
    assert not np.allclose(prog.gradients(f)["dense.W"], grads["dense.W"])


def test_the_gradcheck_tool_checks_a_batch_norm_program_in_training_mode(tmp_path):
    from gradlang.gradcheck import gradcheck
    (tmp_path / "bn.grad").write_text(DENSE_BN.format(momentum=0.1, optimizer="adam(lr: 0.05)"))
    report = gradcheck(tmp_path / "bn.grad", per_op=True)
    assert report.ok and report.ops_checked > 10, report


def training_graph(shape=(3, 4)):
    g = Graph()
    a = g.add("input", (), {"name": "a", "shape": shape, "dtype": "f64"})
    b = g.add("input", (), {"name": "b", "shape": shape, "dtype": "f64"})
    w = g.add("input", (), {"name": "w", "shape": shape, "dtype": "f64"})
    chosen = g.add("training", (a, b))
    out = g.add("reduce_sum", (g.add("mul", (g.add("mul", (chosen, chosen)), w)),), {"axes": None})
    return g, out, [a, b]


@pytest.mark.parametrize("training", [True, False])
def test_the_training_primitive_sends_the_gradient_and_its_gradient_to_the_chosen_branch(training):
    """sum(w · t²) for t = training(a, b): the gradient is 2·w·t on the chosen side and 0 on the other, and
    its own gradient (the Hessian-vector product along v) is 2·w·v there, built from `training` again."""
    g, out, (a, b) = training_graph()
    da, db = backprop(g, out, [a, b])
    v = g.add("input", (), {"name": "v", "shape": (3, 4), "dtype": "f64"})
    along = g.add("reduce_sum", (g.add("add", (g.add("mul", (da, v)), g.add("mul", (db, v)))),), {"axes": None})
    hva, hvb = backprop(g, along, [a, b])
    g.outputs.update({"da": da, "db": db, "hva": hva, "hvb": hvb, "out": out})
    names = ["a", "b", "w", "v"]
    rng = np.random.default_rng(6)
    values = {n: rng.normal(size=(3, 4)) for n in names}
    context = RunContext(None, training)
    exe = Executable(schedule(g, ["out", "da", "db", "hva", "hvb"], {}, context), g, names, [])
    result, ga, gb, ha, hb = exe.run([values[n] for n in names], [])
    chosen = values["a"] if training else values["b"]
    assert result == pytest.approx(np.sum(values["w"] * chosen ** 2))
    grad, hvp, zero = 2 * values["w"] * chosen, 2 * values["w"] * values["v"], np.zeros((3, 4))
    np.testing.assert_allclose(ga, grad if training else zero)
    np.testing.assert_allclose(gb, zero if training else grad)
    np.testing.assert_allclose(ha, hvp if training else zero)
    np.testing.assert_allclose(hb, zero if training else hvp)


def test_only_the_chosen_branch_is_computed():
    prog = gradlang.compile("input x : f32[B, 2]\nloss = sum(training(exp(x), log(x)))\n")
    train = prog.runner.executable(prog.forward_graph, ("loss",), prog.runner.feed({"x": np.ones((2, 2))}), True)
    evaluate = prog.runner.executable(prog.forward_graph, ("loss",), prog.runner.feed({"x": np.ones((2, 2))}))
    ops = [[prog.forward_graph.op(n) for n in exe.schedule.nodes] for exe in (train, evaluate)]
    assert "exp" in ops[0] and "log" not in ops[0] and "log" in ops[1] and "exp" not in ops[1]
    assert prog.loss({"x": np.full((2, 2), np.e)}) == pytest.approx(4.0)


def test_training_broadcasts_and_promotes_its_branches():
    prog = gradlang.compile("input x : f32[B, 2]\nmetric m = sum(training(x, 1))\nloss = sum(training(1, x))\n")
    f = {"x": np.array([[2.0, 3.0]], np.float32)}
    assert prog.metrics(f)["m"] == 2.0 and prog.loss(f) == 5.0
    assert prog.run(["metric:m"], f, training=True)[0] == 5.0


# ---- evaluation never writes the state ---------------------------------------------------------------

def test_evaluation_never_changes_the_state(tmp_path):
    prog = dense_bn()
    rng = np.random.default_rng(7)
    f = feed(rng)
    prog.step(f)
    before = {k: v.copy() for k, v in prog.state.items()}
    prog.evaluate(f)
    prog.loss(f)
    prog.metrics(f)
    prog.predict(f)
    prog.gradients(f)
    prog.gradients(f, training=True)
    prog.run(["output:h"], f, training=True)
    prog.export_onnx(tmp_path / "m.onnx") if _has_onnx() else None
    for name, value in before.items():
        np.testing.assert_array_equal(prog.state[name], value)
    prog.step(f)
    assert not np.array_equal(prog.state["bn.running_mean"], before["bn.running_mean"])


def test_a_skipped_step_leaves_the_state_as_it_was():
    prog = gradlang.compile("""
        input x : f32[B]
        param w : [] = 1.0
        state seen : [] = 0.0
        update seen = seen + mean(x)
        loss = mean(w * x) / sum(x)       # 0 / 0 on a batch of zeros
        train { on_nonfinite = "skip"
                steps = 2 }
    """)
    result = prog.train({"x": np.zeros(4, np.float32)})
    assert len(result.skipped) == 2 and float(prog.state["seen"]) == 0.0


# ---- the update: order, aliasing and where it may be written -----------------------------------------

def test_top_level_state_and_updates_read_the_values_before_the_step():
    """`update s = w` takes w as the step found it, though the optimizer changes w before the state is
    written; two states swapping values see each other's old value."""
    prog = gradlang.compile("""
        input x : f32[B]
        param w : [] = 2.0
        state before_w : [] = 0.0
        state a : [] = 1.0
        state b : [] = 5.0
        state count : [] = 0.0
        update before_w = w
        update a = b
        update b = a
        update count = count + 1
        loss = mean((w * x - a) ** 2)
        train { optimizer = sgd(lr: 0.1) }
    """)
    f = {"x": np.array([1.0, 2.0], np.float32)}
    prog.step(f)
    assert float(prog.state["before_w"]) == 2.0 and float(prog.params["w"]) != 2.0
    assert (float(prog.state["a"]), float(prog.state["b"])) == (5.0, 1.0)
    prog.step(f)
    assert (float(prog.state["a"]), float(prog.state["b"]), float(prog.state["count"])) == (1.0, 5.0, 2.0)


def test_state_and_update_are_names_where_no_statement_starts_with_them():
    prog = gradlang.compile("""
        input x : f32[B, 2]
        fn step_of(update, state) = update * state
        state = x
        update = 2
        loss = mean(step_of(update, state))
    """)
    assert prog.state_names == [] and prog.loss({"x": np.ones((1, 2), np.float32)}) == 2.0


def test_the_formatter_aligns_state_declarations_and_updates():
    from gradlang.frontend.syntax.format import format_source
    text = "state   s : [2]=zeros\nstate longer:[2]\nupdate s=s*2\nupdate  longer = s\nstate = 3\n"
    assert format_source(text) == ("state s      : [2] = zeros\nstate longer : [2]\nupdate s      = s * 2\n"
                                   "update longer = s\nstate = 3\n")


@pytest.mark.parametrize("source, message, line, col", [
    ("input x : f32[B, 2]\nparam w : [2]\nupdate w = w * 2\nloss = mean(x @ w)",
     "`update` writes a state (declared `state w : [shape] = init`), but w is the param 'w'", 3, 8),
    ("input x : f32[B, 2]\nupdate x = x\nloss = mean(x)",
     "but x is a tensor f32[B,2]", 2, 8),
    ("input x : f32[B, 2]\nstate s : [2]\nupdate t = x\nloss = mean(x)",
     "unknown name 't'", 3, 8),
    ("input x : f32[B, 2]\nstate s : [2]\nupdate s = mean(x, axis: 0)\nupdate s = s\nloss = mean(x)",
     "state 's' is updated twice (first at <string>:3:1)", 4, 1),
    ("import nn\ninput x : f32[B, 4]\nbn = nn.batch_norm(4)\nloss = mean(bn(bn(x)))",
     "state 'bn.running_mean' is updated twice", 4, 13),
    ("input x : f32[B, 2]\nstate s : [2]\nupdate s = x\nloss = mean(x)",
     "state 's' is f32[2], but its new value is f32[B,2]; reduce it over the batch", 3, 12),
    ("input x : f32[B, 2]\nstate s : [3]\nupdate s = x[0]\nloss = mean(x)",
     "state 's' is f32[3], but its new value is f32[2]", 3, 12),
    ("input x : f32[B, 2]\nstate s : [2]\nupdate s = x[0] > 0\nloss = mean(x)",
     "state 's' is f32[2], but its new value is bool[2]; convert it with float(...)", 3, 12),
    ("input x : f32[B, 2]\nstate s : [2]\nupdate s = \"no\"\nloss = mean(x)",
     "the new value of state 's' must be a tensor or a number", 3, 12),
    ("fn f(v) {\n  state s : [2]\n  return v\n}\ninput x : f32[B, 2]\nloss = mean(f(x))",
     "a state declaration is not allowed in a function body", 2, 3),
    ("input x : f32[B, 2]\nstate s : i64[2]\nloss = mean(x)", "a state must be a float, got i64", 2, 11),
    ("input x : f32[B, 2]\nparam w : [2]\nstate w : [2]\nloss = mean(x @ w)",
     "state 'w': the name is already a param's", 3, 1),
    ("input x : f32[B, 2]\nstate s : [2] = \"zeros\"\nloss = mean(x)", "a state's initialiser must be one of", 2, 17),
    ("input x : f32[B, 2]\nparam w : [2]\nstate s : [2]\nloss a = mean(x @ w)\n"
     "train { phases = [phase(loss: a, params: [w])] }",
     "a program with state (batch norm's running statistics, say) cannot train in phases", 5, 18),
    ("input x : f32[B, 2]\nloss = mean(x)\nmetric m = mean(training(x, [1, 2, 3]))",
     "training(a, b): shapes [B,2] and [3] do not broadcast", 3, 17),
])
def test_mistakes_are_located_errors(source, message, line, col):
    with pytest.raises(GradError) as info:
        gradlang.compile(source)
    err = info.value
    assert message in err.message, err.format()
    assert (err.span.line, err.span.col) == (line, col), err.format()
    assert err.format().startswith(f"<string>:{line}:{col}: error: ")


def test_a_state_declared_in_an_imported_module_is_refused(tmp_path):
    (tmp_path / "lib.grad").write_text("state s : [2]\n")
    (tmp_path / "model.grad").write_text("import lib\ninput x : f32[B, 2]\nloss = mean(x)\n")
    with pytest.raises(GradError, match="a state declaration is not allowed in an imported module"):
        gradlang.compile(tmp_path / "model.grad")


def test_state_assignment_is_checked_like_a_params():
    prog = dense_bn()
    live = prog.state["bn.running_var"]
    prog.state["bn.running_var"] = [1.0, 2.0, 3.0, 4.0]
    assert prog.state["bn.running_var"] is live and live[3] == 4.0
    with pytest.raises(GradError, match=r"state bn.running_var: expected shape \[4\], got \[2\]"):
        prog.state["bn.running_var"] = [1.0, 2.0]
    with pytest.raises(KeyError, match="no state named 'bn.gamma'"):
        prog.state["bn.gamma"] = np.ones(4)


def test_distributed_training_refuses_a_program_with_state():
    from gradlang.runtime.distributed import DataParallel
    with pytest.raises(GradError, match=r"data-parallel training of a program with state \(bn.running_mean, "
                                        r"bn.running_var\) is not supported"):
        DataParallel.start(None, dense_bn().runner, 10, 5)


# ---- saving, loading, checkpoints --------------------------------------------------------------------

def test_save_and_load_round_trip_the_state(tmp_path):
    prog = dense_bn()
    rng = np.random.default_rng(8)
    for _ in range(3):
        prog.step(feed(rng))
    path = prog.save(tmp_path / "bn.npz")
    with np.load(path) as saved:
        assert sorted(saved.files) == sorted(prog.param_names + prog.state_names)
        np.testing.assert_array_equal(saved["bn.running_var"], prog.state["bn.running_var"])
    fresh = dense_bn()
    fresh.load(path)
    for name in prog.state_names:
        np.testing.assert_array_equal(fresh.state[name], prog.state[name])
    f = feed(rng)
    np.testing.assert_array_equal(fresh.predict(f)["h"], prog.predict(f)["h"])


def test_a_params_file_with_a_bad_state_changes_nothing(tmp_path):
    prog = dense_bn()
    values = {**{k: v + 1 for k, v in prog.params.items()}, "bn.running_mean": np.ones(3, np.float32)}
    np.savez(tmp_path / "bad.npz", **values)
    before = {k: v.copy() for k, v in prog.params.items()}
    with pytest.raises(GradError, match=r"state bn.running_mean: expected shape \[4\], got \[3\]"):
        prog.load(tmp_path / "bad.npz")
    for name, value in before.items():
        np.testing.assert_array_equal(prog.params[name], value)


def test_gradlang_run_saves_the_state_in_the_params_file_and_eval_reads_it(tmp_path, capsys):
    from gradlang.cli import main
    (tmp_path / "bn.grad").write_text(SPIRALS.replace("EXTRA", "").replace("epochs = 6", "epochs = 2"))
    assert main(["run", str(tmp_path / "bn.grad"), "--out", str(tmp_path / "p.npz"), "--json"]) == 0
    with np.load(tmp_path / "p.npz") as saved:
        assert "norm.running_mean" in saved.files and np.any(saved["norm.running_mean"] != 0)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "bn.grad"), "--params", str(tmp_path / "p.npz"), "--json"]) == 0


SPIRALS = """
import nn
data points = spirals(n: 150, classes: 3, noise: 0.2, seed: 0)
input x : f32[B, 2]
input y : i64[B]
dense = nn.dense(2, 16)
norm  = nn.batch_norm(16)
head  = nn.dense(16, 3)
logits = head(relu(norm(dense(x))))
loss = cross_entropy(logits, y)
metric accuracy = accuracy(logits, y)
train {
  data = points
  batch = 32
  epochs = 6
  optimizer = adam(lr: 0.01)
  seed = 3
  EXTRA
}
"""


class Interrupt(Exception):
    """Stands for a run killed in the middle."""


class StopAfterEpoch(gradlang.api.Reporter):
    def __init__(self, epoch: int):
        self.at = epoch

    def epoch(self, record):
        if record["epoch"] == self.at:
            raise Interrupt


def spirals_program(extra=""):
    return gradlang.compile(SPIRALS.replace("EXTRA", extra))


def test_an_interrupted_and_resumed_run_ends_with_the_same_params_and_state(tmp_path):
    straight = spirals_program()
    straight.train()
    ckpt = tmp_path / "run.ckpt.npz"
    first = spirals_program()
    with pytest.raises(Interrupt):
        first.train(checkpoint=ckpt, reporter=StopAfterEpoch(3))
    with np.load(ckpt) as saved:
        assert {"state/norm.running_mean", "state/norm.running_var"} <= set(saved.files)
    resumed = spirals_program()
    resumed.train(checkpoint=ckpt, resume=True)
    for name in straight.param_names:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name])
    for name in straight.state_names:
        np.testing.assert_array_equal(resumed.state[name], straight.state[name])


def test_a_checkpoint_without_the_state_is_refused(tmp_path):
    ckpt = tmp_path / "run.ckpt.npz"
    spirals_program().train(checkpoint=ckpt, epochs=1)
    with np.load(ckpt) as saved:
        arrays = {k: saved[k] for k in saved.files if not k.startswith("state/")}
    np.savez(ckpt, **arrays)
    with pytest.raises(GradError, match="lacks state 'norm.running_mean'"):
        spirals_program().train(checkpoint=ckpt, resume=True)


def test_early_stopping_restores_the_state_of_the_best_params():
    prog = gradlang.compile(SPIRALS.replace("EXTRA", "validation = 0.3\n  early_stopping = 1")
                            .replace("epochs = 6", "epochs = 200").replace("batch = 32", "batch = 8"))
    result = prog.train()
    assert result.stopped_early
    best = min(r["val_loss"] for r in result.epoch_log)
    assert result.validation["loss"] == pytest.approx(best, rel=1e-5)   # needs the best state as well


# ---- the example: an MLP with batch norm on the spirals -----------------------------------------------

def test_the_documented_mlp_with_batch_norm_classifies_held_out_spirals():
    """docs/language.md's example (under "Batch normalisation"): 97.7% of a held-out set of spirals."""
    import re
    from pathlib import Path
    page = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    section = page.split("### Batch normalisation: `nn.batch_norm`", 1)[1]
    source = re.search(r"<!-- train; expect: accuracy > 0.95 -->\n```grad\n(.*?)```", section, re.S).group(1)
    prog = gradlang.compile(source)
    result = prog.train()
    assert result.test["accuracy"] >= 0.97, result
    assert "blocks.0.norm.running_var" in prog.state


# ---- ONNX ------------------------------------------------------------------------------------------------

def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_onnx(), reason="needs the onnx extra (onnx and onnxruntime)")
def test_onnx_export_normalises_by_the_running_statistics(tmp_path):
    import onnxruntime
    prog = gradlang.compile("""
        import nn
        import conv
        input x : f32[B, 2, 5, 5]
        c  = conv.conv2d(2, 3, 3, padding: 1)
        b2 = nn.batch_norm(3)
        d  = nn.dense(75, 4)
        b1 = nn.batch_norm(4)
        out = b1(d(conv.flatten(b2(c(x)))))
        output out = out
        loss = mean(out ** 2)
        train { optimizer = adam(lr: 0.01) }
    """)
    rng = np.random.default_rng(9)
    for _ in range(4):
        prog.step({"x": rng.normal(size=(6, 2, 5, 5)).astype(np.float32)})
    path = prog.export_onnx(tmp_path / "bn.onnx")
    import onnx
    model = onnx.load(path)
    assert {"b1.running_mean", "b2.running_var"} <= {t.name for t in model.graph.initializer}
    x = rng.normal(size=(7, 2, 5, 5)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["out"], {"x": x})
    np.testing.assert_allclose(out, prog.predict({"x": x})["out"], rtol=1e-5, atol=1e-5)


# ---- highlighting: `state` and `update` are keywords only where a statement starts with them -----------

SOFT = "layer l(c) {\n  state running : [c] = zeros\n  forward(x, state) {\n    update running = x\n" \
       "    state = 3\n    return state\n  }\n}\n"


def test_the_textmate_grammar_highlights_state_and_update_only_as_statements():
    from test_highlight import load_grammar, tokenize
    found = [(text, scope) for text, scope in tokenize(load_grammar(), SOFT) if text.strip() in ("state", "update")]
    assert [scope.endswith("keyword.other.declaration.gradlang") for _, scope in found] == \
        [True, False, True, False, False]


def test_pygments_highlights_state_and_update_only_as_statements():
    pytest.importorskip("pygments")
    from pygments.token import Keyword

    from gradlang.highlight import GradlangLexer
    found = [(text, kind) for kind, text in GradlangLexer().get_tokens(SOFT) if text in ("state", "update")]
    assert [kind is Keyword.Declaration for _, kind in found] == [True, False, True, False, False]
