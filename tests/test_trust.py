"""No silent wrong answers: values changed from Python are seen everywhere, values out of range are
refused where they enter, and mistakes made through the API are gradlang errors, not Python ones."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.ops import all_primitives
from gradlang.ops.registry import RunContext

ROOT = Path(__file__).resolve().parents[1]

LINEAR = """input x : f32[B, 3]
input y : f32[B]
param w : [3] = 0
param c : [] = 0
loss = mean((x @ w + c - y) ** 2)
train {
  steps = 1
  optimizer = sgd(lr: 0.1)
}
"""


def linear_feed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    return {"x": x, "y": x @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 0.3}


# ---- 1. assigning a param from Python writes through --------------------------------------------

def test_assigning_a_param_is_seen_by_loss_step_save_and_set_params(tmp_path):
    prog, feed = gradlang.compile(LINEAR), linear_feed()
    live = prog.params["w"]
    before = prog.loss(feed)
    prog.params["w"] = prog.params["w"] - 0.5 * prog.gradients(feed)["w"]
    assert prog.params["w"] is live                      # the same array, new values
    after = prog.loss(feed)
    assert after < before
    prog.step(feed)                                      # updates the array the program computes with
    assert prog.loss(feed) < after
    np.testing.assert_array_equal(np.load(prog.save(tmp_path / "p.npz"))["w"], prog.params["w"])
    prog.set_params({"w": [0.0, 0.0, 0.0], "c": 0.0})
    assert prog.loss(feed) == pytest.approx(before)


def test_assigning_a_scalar_param_keeps_it_settable():
    prog, feed = gradlang.compile(LINEAR), linear_feed()
    prog.params["c"] = 2.0
    assert prog.params["c"].shape == () and prog.params["c"] == 2.0
    assert prog.loss(feed) != pytest.approx(gradlang.compile(LINEAR).loss(feed))
    prog.set_params({"c": 1.0})
    assert prog.params["c"] == 1.0
    prog.params["c"] -= 0.5                              # in place, as before
    assert prog.params["c"] == 0.5


@pytest.mark.parametrize("value, message", [
    ([1.0, 2.0], r"param w: expected shape \[3\], got \[2\]"),
    ([1j, 0, 0], "expected real numbers"),
    (["a", "b", "c"], "expected real numbers"),
    ([1e300, 0.0, 0.0], "does not fit in float32"),
])
def test_assigning_a_param_checks_shape_and_values(value, message):
    prog = gradlang.compile(LINEAR)
    with pytest.raises(GradError, match=message):
        prog.params["w"] = value
    np.testing.assert_array_equal(prog.params["w"], [0, 0, 0])   # nothing written


def test_params_cannot_be_added_or_removed():
    prog = gradlang.compile(LINEAR)
    with pytest.raises(KeyError, match="no param named 'v'"):
        prog.params["v"] = 1.0
    with pytest.raises(TypeError):
        del prog.params["w"]
    assert list(prog.params) == ["w", "c"] and dict(prog.params).keys() == {"w", "c"}


def test_set_params_writes_nothing_when_one_value_is_wrong():
    prog = gradlang.compile(LINEAR)
    with pytest.raises(GradError):
        prog.set_params({"c": 5.0, "w": [1.0]})
    assert prog.params["c"] == 0.0


# ---- 3. values out of range are refused where they enter ----------------------------------------

CROSS_ENTROPY = """input x : f32[B, 3]
input y : i32[B]
loss = mean(cross_entropy(x, y))
"""
TAKE = """input i : i32[B]
param E : [5, 2] = 1
loss = sum(take(E, i))
"""
ONE_HOT = """input t : i32[B]
param w : [3] = 1
loss = sum(one_hot(t, 3) * w)
"""


@pytest.mark.parametrize("source, feed, message", [
    (CROSS_ENTROPY, {"x": np.ones((2, 3)), "y": [0, -1]},
     r"<string>:3:13: error: input y: label -1 is negative for softmax_cross_entropy, which needs 0 ≤ label < 3"),
    (CROSS_ENTROPY, {"x": np.ones((2, 3)), "y": [0, 3]}, "input y: label 3 is too large"),
    (TAKE, {"i": [0, -1]}, r"<string>:3:12: error: input i: index -1 is negative for take, which needs 0 ≤ index < 5"),
    (TAKE, {"i": [5]}, "input i: index 5 is too large for take"),
    (ONE_HOT, {"t": [0, 5]}, "input t: label 5 is too large for one_hot, which needs 0 ≤ label < 3"),
    (ONE_HOT, {"t": [-1]}, "input t: label -1 is negative for one_hot"),
])
def test_indices_out_of_range_are_errors_at_the_op(source, feed, message):
    prog = gradlang.compile(source)
    for call in (prog.loss, prog.gradients, prog.step):
        with pytest.raises(GradError, match=message):
            call(feed)


def test_indices_computed_in_the_program_are_checked_by_their_kernel():
    prog = gradlang.compile("input t : i32[B]\nparam w : [3] = 1\nloss = sum(one_hot(t - 1, 3) * w)\n")
    assert prog.loss({"t": [1, 3]}) == 2.0
    with pytest.raises(GradError, match=r"<string>:3:12: error: one_hot failed at run time: label -1 is out of range"):
        prog.loss({"t": [0, 1]})


@pytest.mark.parametrize("feed, message", [
    ({"x": np.ones((1, 3)), "y": [2 ** 40]}, r"input y: 1099511627776 does not fit in i32"),
    ({"x": np.ones((1, 3)), "y": [np.nan]}, "input y: expected integers .* NaN"),
    ({"x": np.ones((1, 3)), "y": [0.5]}, "fractional"),
    ({"x": np.ones((1, 3)) + 1j, "y": [0]}, "input x: expected f32 numbers, got complex numbers"),
    ({"x": [["a", "b", "c"]], "y": [0]}, "input x: expected f32 numbers, got strings"),
    ({"x": [[1.0, 2.0, 3.0], [1.0]], "y": [0, 1]}, "input x: cannot make an array of the value fed"),
    ({"x": np.full((1, 3), 1e300), "y": [0]}, "input x: 1e.300 does not fit in f32"),
    ({"x": np.zeros((0, 3)), "y": np.zeros(0, int)}, "dimension B is 0 .an empty batch"),
])
def test_feeds_are_never_cast_silently(feed, message):
    prog = gradlang.compile(CROSS_ENTROPY)
    with pytest.raises(GradError, match=message):
        prog.loss(feed)


def test_a_data_file_with_a_negative_label_names_the_file_and_example(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3), np.float32), y=np.array([0, 1, -1, 2], np.int32))
    (tmp_path / "m.grad").write_text(CROSS_ENTROPY + 'data d = npz(path: "d.npz")\ntrain {\n  data = d\n}\n')
    prog = gradlang.compile(tmp_path / "m.grad")
    with pytest.raises(GradError,
                       match=r"d.npz: field 'y', example 2 \(counting from 0\): value -1 is out of range 0..2"):
        prog.load_data()


# ---- 4. dropout with dropout off ------------------------------------------------------------------

def test_dropout_evaluated_with_dropout_off_computes():
    prog = gradlang.compile("input x : f32[B, 3]\nloss = sum(dropout(x, 0.5) * 2)\n")
    assert prog.loss({"x": np.ones((2, 3))}) == 12.0
    prog = gradlang.compile("input x : f32[B, 3]\nparam w : [3] = 1\nloss = sum(dropout(x * w, 0.5) * 2)\n")
    np.testing.assert_array_equal(prog.gradients({"x": np.ones((2, 3))})["w"], [4, 4, 4])


def test_transformer_block_with_dropout_evaluates():
    prog = gradlang.compile("""import attention as att
input x : f32[B, 4, 8]
block = att.transformer_block(8, 2, 16, dropout_rate: 0.5)
loss = mean(block(x) ** 2)
""")
    feed = {"x": np.random.default_rng(0).standard_normal((2, 4, 8))}
    assert np.isfinite(prog.loss(feed))
    assert all(np.isfinite(g).all() for g in prog.gradients(feed).values())


@pytest.mark.parametrize("training", [False, True])
def test_random_kernels_return_writable_arrays(training):
    """The schedule may let a later kernel write into a kernel's result: it must never be read-only."""
    for prim in all_primitives().values():
        if prim.random and prim.arity == 1:
            kernel = prim.kernel({"rate": 0.5, "key": 0}, [(2, 3)], (2, 3), "f32",
                                 RunContext(np.random.default_rng(0), training))
            assert kernel(np.ones((2, 3), np.float32)).flags.writeable, prim.name


def test_gradlang_run_with_dropout_saves_its_params(tmp_path):
    (tmp_path / "m.grad").write_text("""import nn
data d = two_moons(n: 32, noise: 0.1, seed: 1)
input x : f32[B, 2]
input y : f32[B]
net = nn.mlp([2, 8, 1])
loss = mean((dropout(net(x), 0.5)[:, 0] - y) ** 2)
train {
  data = d
  steps = 3
}
""")
    run = subprocess.run([sys.executable, "-m", "gradlang.cli", "run", "m.grad", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "m.npz").exists()


# ---- 5. API and CLI mistakes are gradlang errors ---------------------------------------------------

MOONS = ROOT / "examples" / "moons_mlp.grad"


def test_every_named_value_can_be_run():
    prog = gradlang.compile(MOONS)
    data = prog.load_data()
    scores, data_loss, loss = prog.run(["scores", "data_loss", "loss"], data)
    assert scores.shape == (100,) and np.ndim(data_loss) == 0
    assert float(loss) == pytest.approx(prog.loss(data))


@pytest.mark.parametrize("name", ["metric:nope", "logits"])
def test_running_an_unknown_name_lists_the_names_that_exist(name):
    prog = gradlang.compile(MOONS)
    with pytest.raises(GradError, match=rf"no output or named value '{name}'; the program's outputs are "
                                        r"loss, metric:accuracy, and its named values .*scores"):
        prog.run([name], prog.load_data())


def test_data_dir_takes_a_string(tmp_path):
    prog = gradlang.compile(MOONS)
    prog.data_dir = str(tmp_path)
    assert prog.data_dir == tmp_path
    with pytest.raises(TypeError, match="data_dir must be a path"):
        prog.data_dir = 3


MISNAMED = """data d = two_moons(n: 20, noise: 0.1, seed: 1)
input a : f32[B, 2]
input b : f32[B]
param w : [2] = 0
loss = mean((a @ w - b) ** 2)
train {
  data = d
  steps = 3
}
"""


def test_inputs_not_named_like_the_datas_fields(tmp_path):
    (tmp_path / "m.grad").write_text(MISNAMED)
    expected = "the data two_moons(…) is missing input 'a': its fields are x, y"
    with pytest.raises(GradError, match=r"the data two_moons\(…\) is missing input 'a': its fields are x, y"):
        gradlang.compile(tmp_path / "m.grad").train()
    run = subprocess.run([sys.executable, "-m", "gradlang.cli", "run", "m.grad"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 1 and "internal error" not in run.stderr
    assert run.stderr.startswith(f"m.grad:2:1: error: {expected}")


def test_a_feed_missing_an_input_is_named_before_anything_is_compiled():
    prog = gradlang.compile(MISNAMED)
    with pytest.raises(GradError, match=r"the feed is missing input 'b' \(it has a\)"):
        prog.loss({"a": np.ones((2, 2))})


def test_reshape_to_negative_dimensions_is_a_compile_time_error():
    with pytest.raises(GradError, match=r"<string>:2:12: error: reshape: dimension -3 in \[-3,-3\] is negative"):
        gradlang.compile("param W : [9] = 1\nloss = sum(reshape(W, [-3, -3]))\n")


@pytest.mark.parametrize("heads, message", [(3, "heads must divide d_model"), (0, "needs at least one head")])
def test_attention_heads_that_do_not_divide_d_model(heads, message):
    with pytest.raises(GradError, match=rf"<string>:3:9: error: multi_head_attention.*{message}"):
        gradlang.compile("import attention as att\ninput x : f32[B, 4, 16]\n"
                         f"block = att.multi_head_attention(16, {heads})\nloss = sum(block(x))\n")


def test_csv_target_by_column_name(tmp_path):
    """docs/language.md: `csv(path: "train.csv", target: "passed")` — the target named by its header."""
    (tmp_path / "train.csv").write_text("hours,passed,score\n1,0,3\n2,1,4\n3,1,5\n")
    (tmp_path / "m.grad").write_text('data d = csv(path: "train.csv", target: "passed")\ninput x : f32[B, 2]\n'
                                     'input y : i32[B]\nparam w : [2, 2] = 0\nloss = mean(cross_entropy(x @ w, y))\n'
                                     'train {\n  data = d\n}\n')
    data = gradlang.compile(tmp_path / "m.grad").load_data()
    np.testing.assert_array_equal(data["y"], [0, 1, 1])
    np.testing.assert_array_equal(data["x"], [[1, 3], [2, 4], [3, 5]])
    (tmp_path / "m.grad").write_text((tmp_path / "m.grad").read_text().replace('"passed"', "1.5"))
    with pytest.raises(GradError, match=r"csv\(target: …\) must be an integer or a string"):
        gradlang.compile(tmp_path / "m.grad")
