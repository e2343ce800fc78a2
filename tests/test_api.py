"""The Python embedding surface: gradlang.compile → Program."""
import networkx as nx
import numpy as np
import pytest

import gradlang
from gradlang import GradError

REGRESSION = """
input x : f32[B, 3]
input y : f32[B]
param w : [3] = normal(0, 1)
param b : [] = constant(0.5)
pred = x @ w + b
loss = mean((pred - y) ** 2)
metric mae = mean(abs(pred - y))
train {
  steps = 50
  batch = 8
  optimizer = sgd(lr: 0.1)
  seed = 3
}
"""


def feed(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return {"x": x, "y": x @ np.array([1.0, -2.0, 0.5]) + 0.25}


def test_declarations_are_visible():
    prog = gradlang.compile(REGRESSION)
    assert {k: (v.shape, v.dtype) for k, v in prog.inputs.items()} == {"x": (("B", 3), "f32"), "y": (("B",), "f32")}
    assert list(prog.params) == ["w", "b"]
    assert prog.params["w"].shape == (3,) and prog.params["w"].dtype == np.float32
    assert prog.params["b"].shape == () and float(prog.params["b"]) == 0.5
    assert prog.metric_names == ["mae"]
    assert prog.losses == ["loss"]


def test_loss_and_gradients_match_numpy():
    prog = gradlang.compile(REGRESSION, dtype="float64")
    f = feed()
    w, b = prog.params["w"], float(prog.params["b"])
    residual = f["x"] @ w + b - f["y"]
    assert prog.loss(f) == pytest.approx(np.mean(residual ** 2), rel=1e-12)
    grads = prog.gradients(f)
    np.testing.assert_allclose(grads["w"], 2 * f["x"].T @ residual / len(residual), rtol=1e-10)
    np.testing.assert_allclose(grads["b"], 2 * residual.mean(), rtol=1e-10)
    assert grads["b"].shape == () and grads["w"].dtype == np.float64
    assert prog.metrics(f)["mae"] == pytest.approx(np.mean(np.abs(residual)))


def test_step_applies_sgd_and_returns_the_loss_before_the_update():
    prog = gradlang.compile(REGRESSION, dtype="float64")
    f = feed()
    before = {k: v.copy() for k, v in prog.params.items()}
    grads = prog.gradients(f)
    loss = prog.step(f)
    assert loss == pytest.approx(gradlang.compile(REGRESSION, dtype="float64").loss(f))
    for name in before:
        np.testing.assert_allclose(prog.params[name], before[name] - 0.1 * grads[name], rtol=1e-12)


def test_train_uses_the_plan_and_arguments_override_it():
    prog = gradlang.compile(REGRESSION)
    data = feed(64)
    result = prog.train(data)
    assert result.steps == 50 and result.loss < 0.01
    assert len(result.history) == 50
    again = gradlang.compile(REGRESSION).train(data, epochs=2, batch_size=16)
    assert again.steps == 8 and again.epochs == 2


def test_executables_are_compiled_once_per_feed_shape():
    prog = gradlang.compile(REGRESSION)
    prog.loss(feed(8))
    prog.loss(feed(8, seed=1))
    assert len(prog.runner.executables) == 1
    small, large = feed(4), feed(32)
    # the batch dimension is symbolic: one program serves every batch size, and mean divides by the right count
    residual = small["x"] @ prog.params["w"] + prog.params["b"] - small["y"]
    assert prog.loss(small) == pytest.approx(np.mean(residual ** 2), rel=1e-5)
    prog.loss(large)
    assert len(prog.runner.executables) == 3


def test_float64_on_request_and_float32_by_default():
    assert gradlang.compile(REGRESSION).gradients(feed())["w"].dtype == np.float32
    assert gradlang.compile(REGRESSION, dtype="float64").inputs["x"].dtype == "f64"
    with pytest.raises(ValueError):
        gradlang.compile(REGRESSION, dtype="float16")


def test_same_seed_same_params_and_seed_override():
    a, b = gradlang.compile(REGRESSION), gradlang.compile(REGRESSION)
    np.testing.assert_array_equal(a.params["w"], b.params["w"])
    c = gradlang.compile(REGRESSION, seed=4)
    assert not np.array_equal(a.params["w"], c.params["w"])


def test_ir_text_and_networkx_graph():
    prog = gradlang.compile(REGRESSION)
    assert "%pred" in prog.ir and "backward" not in prog.ir
    assert "%dw" in prog.gradient_ir and "grad:w" in prog.gradient_ir
    graph = prog.graph
    assert isinstance(graph, nx.MultiDiGraph) and nx.is_directed_acyclic_graph(graph)
    ops = {d["op"] for _, d in graph.nodes(data=True)}
    assert {"matmul", "param", "input"} <= ops


def test_save_and_load_round_trip(tmp_path):
    prog = gradlang.compile(REGRESSION)
    prog.train(feed(64))
    path = prog.save(tmp_path / "params.npz")
    fresh = gradlang.compile(REGRESSION, seed=99)
    fresh.load(path)
    for name, value in prog.params.items():
        np.testing.assert_array_equal(fresh.params[name], value)


def test_set_params_checks_names_and_shapes():
    prog = gradlang.compile(REGRESSION)
    prog.set_params({"w": [1.0, 2.0, 3.0]})
    np.testing.assert_array_equal(prog.params["w"], [1, 2, 3])
    with pytest.raises(KeyError):
        prog.set_params({"nope": 1.0})
    with pytest.raises(GradError, match=r"param w: expected shape \[3\], got \[1\]"):
        prog.set_params({"w": [1.0]})


def test_feed_errors_point_at_the_input_declaration():
    prog = gradlang.compile(REGRESSION)
    with pytest.raises(GradError) as err:
        prog.loss({"x": np.zeros((4, 2)), "y": np.zeros(4)})
    assert err.value.span.line == 2 and "expected f32[B,3]" in err.value.message
    with pytest.raises(GradError) as err:
        prog.loss({"x": np.zeros((4, 3)), "y": np.zeros(5)})
    assert "dimension B is 4" in err.value.message
    with pytest.raises(GradError, match="missing input 'y'"):
        prog.loss({"x": np.zeros((4, 3))})
    with pytest.raises(GradError, match="unknown input"):
        prog.loss({"x": np.zeros((4, 3)), "y": np.zeros(4), "z": 1})


def test_compile_from_path_resolves_imports_next_to_the_file(tmp_path):
    (tmp_path / "blocks.grad").write_text("layer affine(n) {\n  param W : [n, n] = ones\n  forward(x) = x @ W\n}\n")
    (tmp_path / "model.grad").write_text(
        "import blocks\nfrom blocks import affine\ninput x : f32[B, 2]\n"
        "first = blocks.affine(2)\nsecond = affine(2)\nloss = sum(second(first(x)))\n")
    prog = gradlang.compile(tmp_path / "model.grad")
    assert list(prog.params) == ["first.W", "second.W"]
    assert prog.loss({"x": np.ones((1, 2))}) == pytest.approx(8.0)


def test_layers_lists_and_sublayers_get_qualified_names():
    prog = gradlang.compile("""
        import nn
        layer block(n) {
          inner = nn.dense(n, n, activation: tanh)
          param scale : [] = ones
          forward(x) = scale * inner(x)
        }
        input x : f32[B, 2]
        stack = [block(2) for i in range(2)]
        loss = sum(stack[1](stack[0](x)))
    """)
    assert list(prog.params) == ["stack.0.inner.W", "stack.0.inner.b", "stack.0.scale",
                                 "stack.1.inner.W", "stack.1.inner.b", "stack.1.scale"]


def test_gradients_are_values_in_the_language_hessian_vector_product():
    prog = gradlang.compile("""
        param w : [3] = normal(0, 1)
        input A : f32[4, 3]
        input v : f32[3]
        f = sum(tanh(A @ w) ** 2)
        hvp = grad(dot(grad(f, w), v), w)
        loss = f
        metric hvp0 = hvp[0]
    """, dtype="float64")
    rng = np.random.default_rng(0)
    A, v = rng.normal(size=(4, 3)), rng.normal(size=3)
    w = prog.params["w"].copy()

    def gradient(w):
        t = np.tanh(A @ w)
        return A.T @ (2 * t * (1 - t ** 2))
    eps = 1e-6
    expected = (gradient(w + eps * v) - gradient(w - eps * v)) / (2 * eps)
    assert prog.metrics({"A": A, "v": v})["hvp0"] == pytest.approx(expected[0], rel=1e-6)


def test_train_checks_on_nonfinite_as_the_train_block_does():
    prog = gradlang.compile("input x : f32[B]\nparam w : f32[]\nloss = mean(x * w)\n")
    with pytest.raises(GradError, match='on_nonfinite must be "stop" or "skip", got \'bogus\''):
        prog.train({"x": np.ones(4, np.float32)}, steps=1, on_nonfinite="bogus")


def test_a_train_result_shows_its_numbers_not_its_history():
    prog = gradlang.compile("input x : f32[B]\nparam w : f32[]\nloss = mean((x * w - 1.0) ** 2)\n")
    result = prog.train({"x": np.ones(4, np.float32)}, steps=100)
    text = repr(result)
    assert text.startswith("TrainResult(loss=") and "steps=100" in text and text.endswith("history of 100 steps)")
    assert len(text) < 200 and len(result.history) == 100


def test_train_eval_limit_is_checked_and_bounds_the_final_numbers():
    prog = gradlang.compile("input x : f32[B]\nparam w : f32[]\nloss = mean((x * w - 1.0) ** 2)\n")
    data = {"x": np.arange(1, 9, dtype=np.float32)}
    first = prog.train(data, steps=1, eval_limit=2)
    assert first.evaluated == 2 and first.loss == pytest.approx(prog.loss({"x": data["x"][:2]}))
    none = prog.train(data, steps=1, eval_limit=0)
    assert none.evaluated == 0 and none.loss == none.epoch_log[-1]["loss"]
    with pytest.raises(GradError, match="eval_limit must be a whole number of examples"):
        prog.train(data, steps=1, eval_limit=-3)
