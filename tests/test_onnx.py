"""ONNX export: exported models run in onnxruntime and give the numbers gradlang's interpreter gives.

Every primitive the exporter translates is run once through onnxruntime against the interpreter (one
program uses them all), the examples are exported and compared at batch sizes other than any fixed at
export, and ops without a translation must be named with their source lines. The tests that run models
need the `onnx` extra (onnx and onnxruntime) and say so when it is missing.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.cli import main
from gradlang.export.onnx import (
    NOT_EXPORTED,
    ONNX_OPERATORS,
    REMOVED_FOR_INFERENCE,
    inference_graph,
    resolve_outputs,
    to_onnx,
)
from gradlang.ops import registry
from gradlang.ops.registry import all_primitives

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data"

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime are not installed "
                                                      "(pip install '.[onnx]')")


def onnx_run(model, feed: dict, outputs: list[str]) -> list[np.ndarray]:
    import onnxruntime
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, feed)


def gradlang_values(prog, names: list[str], feed: dict) -> list[np.ndarray]:
    """What the interpreter computes for the values export resolves `names` to, on the forward graph
    as evaluation runs it (dropout off)."""
    graph = prog.forward_graph.copy()
    for name, node in resolve_outputs(prog, graph, names).items():
        graph.outputs[f"exported:{name}"] = node
    return [np.asarray(v) for v in prog.run([f"exported:{n}" for n in names], feed, graph)]


def perturbed(prog, seed: int = 0):
    """The program with every param moved off its initial value (zeros would hide mistakes)."""
    rng = np.random.default_rng(seed)
    prog.set_params({n: v + rng.normal(0, 0.05, v.shape) for n, v in prog.params.items()})
    return prog


def assert_same(got, expected, rtol=1e-5, atol=1e-5):
    assert got.shape == expected.shape and got.dtype == expected.dtype, \
        f"{got.dtype}{list(got.shape)} vs {expected.dtype}{list(expected.shape)}"
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def images(rng, n):
    return {"x": rng.random((n, 1, 28, 28), dtype=np.float32)}


def pixels(rng, n):
    return {"x": rng.random((n, 784), dtype=np.float32)}


# example, values exported (None: its output declarations), a feed of n examples
EXAMPLE_CASES = [
    ("mnist_logreg", ["logits"], pixels),
    ("mnist_mlp", ["logits"], pixels),
    ("moons_mlp", ["scores"], lambda rng, n: {"x": rng.standard_normal((n, 2)).astype(np.float32)}),
    ("mnist_cnn", None, images),
    ("mnist_cnn", ["logits", "label"], images),
    ("attention", ["digits", "logits"], lambda rng, n: {"x": rng.integers(0, 11, (n, 16))}),
    ("char_lstm", None, lambda rng, n: {"x": rng.integers(0, 65, (n, 64))}),
]


@needs_onnx
@pytest.mark.parametrize("example, outputs, make_feed", EXAMPLE_CASES,
                         ids=[f"{c[0]}-{'+'.join(c[1] or ['declared'])}" for c in EXAMPLE_CASES])
def test_exported_examples_compute_what_gradlang_computes(example, outputs, make_feed):
    prog = perturbed(gradlang.compile(EXAMPLES / f"{example}.grad"))
    model = to_onnx(prog, outputs)
    names = outputs or prog.output_names
    assert [o.name for o in model.graph.output] == names
    rng = np.random.default_rng(1)
    for batch in (1, 6):   # symbolic dimensions: any batch size runs
        feed = make_feed(rng, batch)
        for _name, got, expected in zip(names, onnx_run(model, feed, names), gradlang_values(prog, names, feed)):
            assert_same(got, expected)


@needs_onnx
def test_inputs_keep_names_and_types_with_symbolic_dimensions_and_params_become_initializers():
    prog = gradlang.compile(EXAMPLES / "mnist_cnn.grad")
    model = to_onnx(prog)
    (x,) = model.graph.input    # y feeds only the loss and metrics: not an input of the exported graph
    dims = [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim]
    assert (x.name, dims) == ("x", ["B", 1, 28, 28])
    import onnx
    assert x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, value in prog.params.items():
        np.testing.assert_array_equal(initializers[name], value)
    assert {n.op_type for n in model.graph.node} >= {"Conv", "MaxPool", "MatMul", "ArgMax"}


@needs_onnx
def test_a_fixed_batch_size_fixes_the_dimensions():
    prog = perturbed(gradlang.compile(EXAMPLES / "mnist_mlp.grad"))
    model = to_onnx(prog, ["logits"], batch=5)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [5, 784]
    feed = pixels(np.random.default_rng(2), 5)
    assert_same(onnx_run(model, feed, ["logits"])[0], gradlang_values(prog, ["logits"], feed)[0])
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        onnx_run(model, pixels(np.random.default_rng(2), 3), ["logits"])


@needs_onnx
def test_a_symbolic_dimension_no_exported_input_has_needs_a_fixed_batch():
    prog = gradlang.compile("input x : f32[B, 2]\ninput y : f32[N]\nloss = mean(x) + mean(y)\n"
                            "output spread = broadcast_to(reshape(sum(x), [1]), [y.shape[0]])\n")
    with pytest.raises(GradError, match="symbolic dimension N is not a dimension of any exported input"):
        to_onnx(prog)
    model = to_onnx(prog, batch=4)
    assert [i.name for i in model.graph.input] == ["x"]
    feed = {"x": np.arange(8, dtype=np.float32).reshape(4, 2)}
    np.testing.assert_array_equal(onnx_run(model, feed, ["spread"])[0], np.full(4, 28, dtype=np.float32))


@needs_onnx
def test_float64_programs_export_in_float64():
    prog = perturbed(gradlang.compile(EXAMPLES / "moons_mlp.grad", dtype="float64"))
    model = to_onnx(prog, ["scores"])
    feed = {"x": np.random.default_rng(3).standard_normal((9, 2))}
    got = onnx_run(model, feed, ["scores"])[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, gradlang_values(prog, ["scores"], feed)[0], rtol=1e-12)


# One program that uses every primitive the exporter translates, each as a declared output.
EVERY_OP = """
input x : f32[B, 3, 6, 6]
input v : f32[B, 5]
input s : f32[B, T]
input tokens : i64[B, 4]
input labels : i64[B]

param w : [2, 3, 3, 3] = normal(std: 0.5)
param wt : [2, 3, 3, 3] = normal(std: 0.5)
param wg : [6, 1, 3, 3] = normal(std: 0.5)
param E : [7, 5] = normal
param P : [5] = normal

conv = conv2d(x, w, stride: 2, padding: 1)
output convolved = conv
output upsampled = conv2d_transpose(conv, wt, stride: 2, padding: 1, size: [6, 6])
output dilated = conv2d(x, wg, padding: 2, dilation: 2, groups: 3)
output widened = conv2d_transpose(dilated, wg, stride: 2, padding: 1, dilation: [2, 1], groups: 3, size: [14, 12])
output averaged = avg_pool2d(x, 3, stride: 2, padding: 1)
output pooled = max_pool2d(x, 3, stride: 2, padding: 1)
output embedded = take(E, tokens)
output visible = causal_mask(2, s.shape[1])
output hot = one_hot(tokens, 7)
output waves = sin(v) + cos(v) * abs(v) - sign(v) + floor(v) + maximum(v, 0.1) + minimum(v, 0.2)
output squashed = exp(-v * v) + sigmoid(v) + tanh(v) + relu(v) + stop_gradient(v)
output powered = (abs(v) + 1) ** 1.5 + sqrt(abs(v)) + log(abs(v) + 1) / (v * v + 1)
output lse = logsumexp(v, axis: 1)
output soft = softmax(v, axis: 0)
output reversed = v[:, ::-2]
output last = v[:, -1]
output window = x[:, 1, 1:5:2, -3]
output chosen = where((v < 0.5) != (v >= -0.2), v, -v)
output agree = (v <= 0.3) == (v > -0.4)
output counted = sum(v > 0, axis: 1)
output truncated = int(v * 3)
output joined = concat([v, v * 2], axis: 1)
output stacked = stack([v, v], axis: 1)
output moved = transpose(reshape(v, [-1, 5, 1]), [2, 1, 0])
output spread = broadcast_to(reshape(s, [s.shape[0], s.shape[1], 1]), [s.shape[0], s.shape[1], 3])
output averages = mean(s, axis: 1) + mean(s)
output biggest = max(v, axis: 1, keepdims: true)
output best = argmax(v, axis: 1)
output running = cumsum(v, 1) + grad(sum(cumsum(v, 0) * v), v)
output mirrored = flip(s, axis: 1) + flip(s)
output padded = pad(v, [[0, 0], [2, 1]], value: -1.5)
output xent = softmax_cross_entropy(v, labels)
output products = v @ transpose(E)
output slope = grad(mean(softmax_cross_entropy(v * P, labels)), P)

loss = mean(conv * conv)
"""
# and each builtin that is a primitive of its own name (`surface` in its record), so that a new one is run
# through onnxruntime with no line to add here: on positive values, which all of them take
EVERY_OP += "".join(f"output {name}_of_v = {name}(abs(v) + 0.5)\n" for name in registry.surface())


def every_op_feed(batch: int, steps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 3, 6, 6)).astype(np.float32),
            "v": rng.standard_normal((batch, 5)).astype(np.float32),
            "s": rng.standard_normal((batch, steps)).astype(np.float32),
            "tokens": rng.integers(0, 7, (batch, 4)), "labels": rng.integers(0, 5, batch)}


def test_the_every_op_program_uses_every_translation():
    prog = gradlang.compile(EVERY_OP)
    graph = inference_graph(prog)
    used = {graph.op(n) for n in graph.order(list(resolve_outputs(prog, graph).values()))}
    assert set(ONNX_OPERATORS) <= used, f"not exercised: {sorted(set(ONNX_OPERATORS) - used)}"


@needs_onnx
@pytest.mark.parametrize("batch, steps", [(3, 4), (1, 7)])
def test_every_translation_computes_what_the_interpreter_computes(batch, steps):
    prog = gradlang.compile(EVERY_OP)
    model = to_onnx(prog)
    feed = every_op_feed(batch, steps)
    names = prog.output_names
    expected = prog.predict(feed)
    for name, got in zip(names, onnx_run(model, feed, names)):
        assert_same(got, expected[name])


DROPOUT = """
import nn
input x : f32[B, 4]
hidden = nn.dense(4, 8, activation: relu)
out = nn.dense(8, 3)
output scores = out(dropout(hidden(x), 0.5))
loss = mean(scores * scores)
"""


@needs_onnx
def test_dropout_is_off_and_leaves_no_trace_in_the_model():
    with_dropout = gradlang.compile(DROPOUT)
    without = gradlang.compile(DROPOUT.replace("dropout(hidden(x), 0.5)", "hidden(x)"))
    assert with_dropout.forward_graph.nodes_with_op("dropout_mask")
    model = to_onnx(with_dropout)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in to_onnx(without).graph.node]
    feed = {"x": np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)}
    assert_same(onnx_run(model, feed, ["scores"])[0], with_dropout.predict(feed)["scores"])


UNSUPPORTED = """input x : f32[B, 1, 4, 4]
param w : [1, 1, 4, 4] = ones
h = max_pool2d(x * w, 2)
loss = mean(h * h)
noise = random_normal([x.shape[0], 1, 4, 4])
output g = grad(loss, w) * noise
output doubled = noise * 2
"""


def test_ops_without_a_translation_are_all_named_with_their_lines():
    prog = gradlang.compile(UNSUPPORTED)
    with pytest.raises(GradError) as caught:
        to_onnx(prog)
    err = caught.value
    assert "random_normal, max_pool2d_grad" in err.message
    assert str(err.span) == "<string>:5:9"
    assert len(err.notes) == 2
    assert err.notes[0].startswith("random_normal (") and err.notes[0].endswith("at <string>:5:9")
    assert err.notes[1].startswith("max_pool2d_grad (") and err.notes[1].endswith("at <string>:3:5")


def test_the_cli_reports_an_unsupported_op_at_its_line(tmp_path, capsys):
    prog = gradlang.compile(EXAMPLES / "gan.grad")
    prog.save(tmp_path / "gan.npz")
    status = main(["export", str(EXAMPLES / "gan.grad"), "--params", str(tmp_path / "gan.npz"),
                   "--onnx", str(tmp_path / "gan.onnx")])
    err = capsys.readouterr().err
    assert status == 1
    lines = (EXAMPLES / "gan.grad").read_text(encoding="utf-8").split("\n")
    line = next(i for i, text in enumerate(lines, 1) if "random_normal(" in text)
    col = lines[line - 1].index("random_normal(") + 1
    assert f"gan.grad:{line}:{col}: error: cannot export to ONNX: no ONNX translation for random_normal" in err
    assert f" {line} | {lines[line - 1]}" in err
    assert not (tmp_path / "gan.onnx").exists()


def test_outputs_must_exist_and_default_to_the_declarations():
    prog = gradlang.compile(EXAMPLES / "mnist_logreg.grad")
    with pytest.raises(GradError, match="declares no outputs.*--output logits"):
        resolve_outputs(prog, prog.forward_graph)
    with pytest.raises(GradError, match="no output or named value 'probs'"):
        resolve_outputs(prog, prog.forward_graph, ["probs"])
    graph = prog.forward_graph
    found = resolve_outputs(prog, graph, ["logits", "accuracy", "loss"])
    assert found == {"logits": max(n for n in graph.nx if graph.data(n)["name"] == "logits"),
                     "accuracy": graph.outputs["metric:accuracy"], "loss": graph.outputs["loss"]}
    shadowing = gradlang.compile("input x : f32[B, 2]\nloss = mean(x)\noutput x = x * 2\n")
    with pytest.raises(GradError, match="output name.* x are also input or param names"):
        resolve_outputs(shadowing, shadowing.forward_graph)


def test_a_missing_onnx_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # makes `import onnx` fail
    with pytest.raises(GradError, match=r"pip install 'gradlang\[onnx\]'"):
        to_onnx(gradlang.compile(EXAMPLES / "mnist_cnn.grad"))


@needs_onnx
def test_cli_and_api_export_the_trained_params(tmp_path, capsys):
    prog = perturbed(gradlang.compile(EXAMPLES / "mnist_cnn.grad"), seed=5)
    prog.save(tmp_path / "cnn.npz")
    status = main(["export", str(EXAMPLES / "mnist_cnn.grad"), "--params", str(tmp_path / "cnn.npz"),
                   "--onnx", str(tmp_path / "out" / "cnn.onnx"), "--output", "label", "--output", "logits"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.splitlines() == [f"ONNX model (opset 18) written to {tmp_path / 'out' / 'cnn.onnx'}",
                                "  input  x: f32[B,1,28,28]", "  output label: i64[B]", "  output logits: f32[B,10]"]
    import onnx
    from_cli = onnx.load(str(tmp_path / "out" / "cnn.onnx"))
    from_api = onnx.load(str(prog.export_onnx(tmp_path / "api.onnx", ["label", "logits"])))
    feed = images(np.random.default_rng(6), 4)
    expected = gradlang_values(prog, ["label", "logits"], feed)
    for model in (from_cli, from_api):
        for got, want in zip(onnx_run(model, feed, ["label", "logits"]), expected):
            assert_same(got, want)


# ---- docs/onnx.md's tables are the exporter's ------------------------------------------------

def _doc_rows(heading: str) -> dict[str, list[str]]:
    """The first column (a primitive in backticks) → the backticked names of the second, for the table
    under `heading` in docs/onnx.md."""
    text = (ROOT / "docs" / "onnx.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows[cells[0].strip("`")] = re.findall(r"`([^`]+)`", cells[1])
    return rows


def test_the_docs_mapping_table_is_the_code_mapping_table():
    documented = _doc_rows("Op mapping")
    assert documented == {prim: list(ops) for prim, ops in ONNX_OPERATORS.items()}


def test_the_docs_list_every_primitive_not_translated():
    documented = set(_doc_rows("What is not exported"))
    assert documented == set(NOT_EXPORTED) | set(REMOVED_FOR_INFERENCE)


def test_every_primitive_is_translated_or_listed_as_not_exported():
    leaves = {"input", "param", "state", "const"}
    accounted = set(ONNX_OPERATORS) | set(NOT_EXPORTED) | set(REMOVED_FOR_INFERENCE) | leaves
    assert set(all_primitives()) == accounted


# ---- the real test set (slow) ----------------------------------------------------------------

@needs_onnx
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists(),
                    reason=f"the real MNIST files are not in {SHARED_DATA / 'mnist'}")
@pytest.mark.parametrize("example, steps", [("mnist_logreg", 2000), ("mnist_mlp", 500), ("mnist_cnn", 100)])
def test_exported_trained_mnist_models_predict_like_gradlang_on_the_test_set(example, steps, monkeypatch):
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    prog = gradlang.compile(EXAMPLES / f"{example}.grad")
    prog.train(steps=steps)
    test = prog.load_data(setting="test")
    model = to_onnx(prog, ["logits"])
    got = np.concatenate([onnx_run(model, {"x": test["x"][i:i + 1000]}, ["logits"])[0]
                          for i in range(0, len(test["x"]), 1000)])
    expected = np.concatenate([gradlang_values(prog, ["logits"], {"x": test["x"][i:i + 1000]})[0]
                               for i in range(0, len(test["x"]), 1000)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    differ = got.argmax(1) != expected.argmax(1)
    top2 = np.sort(expected, axis=1)[:, -2:]
    assert np.all(top2[differ, 1] - top2[differ, 0] < 1e-4), "a prediction differs that is not a near tie"
    assert np.mean(expected.argmax(1) == test["y"]) > 0.85
