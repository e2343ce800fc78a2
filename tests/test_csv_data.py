"""CSV data that behaves: columns chosen by name or index, the same column → input mapping for run, eval
and predict, and standardization with the training set's statistics, saved with the params."""
import json

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.runtime.formats import read_csv

PROGRAM = """
data train_set = csv(path: "train.csv", target: "passed", standardize: true)
data test_set = csv(path: "test.csv", target: "passed", standardize: true)
input x : f32[B, 2]
input y : i64[B]
param W : [2, 2] = zeros
param b : [2] = zeros
logits = x @ W + b
loss = cross_entropy(logits, y)
metric accuracy = accuracy(logits, y)
output p = softmax(logits)
train {
  data = train_set
  test = test_set
  epochs = 20
  optimizer = sgd(lr: 0.5)
}
"""


def _table(rng, n, shift=0.0):
    hours, score = rng.normal(5, 2, n) + shift, rng.normal(50, 10, n)
    passed = ((hours - 5) / 2 + (score - 50) / 10 + rng.normal(0, 0.5, n) > 0).astype(int)
    return hours, score, passed


def _write(path, header, columns):
    rows = zip(*columns)
    path.write_text((header + "\n" if header else "") + "".join(",".join(f"{v:g}" for v in r) + "\n" for r in rows))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    hours, score, passed = _table(rng, 120)
    _write(tmp_path / "train.csv", "hours,score,passed", (hours, score, passed))
    t_hours, t_score, t_passed = _table(rng, 40, shift=1.0)   # a test set whose mean differs
    _write(tmp_path / "test.csv", "hours,score,passed", (t_hours, t_score, t_passed))
    _write(tmp_path / "new.csv", "hours,score", (t_hours, t_score))
    _write(tmp_path / "new_headerless.csv", "", (t_hours, t_score))
    _write(tmp_path / "reordered.csv", "passed,score,hours", (t_passed, t_score, t_hours))
    (tmp_path / "model.grad").write_text(PROGRAM)
    return tmp_path


# ---- choosing columns --------------------------------------------------------------------------------

def test_features_by_name_or_index_in_the_order_given(folder):
    table = np.loadtxt(folder / "train.csv", delimiter=",", skiprows=1)
    by_name = read_csv(folder / "train.csv", target="passed", features=["score", "hours"])
    by_index = read_csv(folder / "train.csv", target=-1, features=[1, -3])
    np.testing.assert_array_equal(by_name["x"], table[:, [1, 0]])
    np.testing.assert_array_equal(by_index["x"], table[:, [1, 0]])
    np.testing.assert_array_equal(by_name["y"], table[:, 2].astype(np.int64))
    assert read_csv(folder / "train.csv", target=0)["x"].shape == (120, 2)   # all but the target


@pytest.mark.parametrize("kw, message", [
    ({"features": ["hours", "age"]}, "no column named 'age' for the features; columns: hours, score, passed"),
    ({"features": ["passed"]}, "column 'passed' is both the target and a feature"),
    ({"features": ["hours", 0]}, "column 'hours' is named twice among the features"),
    ({"features": [5]}, "feature column 5 is out of range for 3 columns"),
])
def test_wrong_feature_columns_are_named(folder, kw, message):
    with pytest.raises(GradError, match=message):
        read_csv(folder / "train.csv", target="passed", **kw)


def test_features_in_a_program_and_a_wrong_kind_located(folder):
    source = PROGRAM.replace('target: "passed", standardize', 'target: "passed", features: ["hours"], standardize')
    source = source.replace("f32[B, 2]", "f32[B, 1]").replace("[2, 2]", "[1, 2]")
    (folder / "one.grad").write_text(source)
    prog = gradlang.compile(folder / "one.grad")
    assert prog.load_data()["x"].shape == (120, 1)
    (folder / "bad.grad").write_text(PROGRAM.replace('target: "passed", standardize', 'features: 3, standardize'))
    with pytest.raises(GradError, match="must be a list of column names or indices") as caught:
        gradlang.compile(folder / "bad.grad")
    assert caught.value.span.line == 2


def test_inputs_that_are_not_fields_are_a_located_error_naming_both(folder):
    (folder / "named.grad").write_text(PROGRAM.replace("input x :", "input features :").replace("x @", "features @"))
    prog = gradlang.compile(folder / "named.grad")
    with pytest.raises(GradError, match="missing input 'features': its fields are x, y") as caught:
        prog.train()
    assert caught.value.span.line == 4


# ---- standardization ---------------------------------------------------------------------------------

def _raw(folder, name):
    return read_csv(folder / name, target="passed")


def test_every_set_is_scaled_with_the_training_statistics(folder):
    prog = gradlang.compile(folder / "model.grad")
    train, test = _raw(folder, "train.csv"), _raw(folder, "test.csv")
    mean, std = train["x"].mean(0), train["x"].std(0)
    test_loaded = prog.load_data("test_set")   # before training: the training set is read for its statistics
    np.testing.assert_allclose(test_loaded["x"], (test["x"] - mean) / std, rtol=1e-12)
    assert abs(test_loaded["x"][:, 0].mean()) > 0.3          # the test set's shift survives
    np.testing.assert_allclose(prog.load_data()["x"].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(prog.standardization.mean, mean)


def test_the_statistics_are_saved_with_the_params_and_used_by_predict_and_eval(folder, capsys):
    assert main(["run", str(folder / "model.grad"), "--quiet", "--out", str(folder / "p.npz"), "--json"]) == 0
    trained = capsys.readouterr().out
    with np.load(folder / "p.npz") as saved:
        assert {"standardize:x:mean", "standardize:x:std"} <= set(saved.files)
        np.testing.assert_allclose(saved["standardize:x:mean"], _raw(folder, "train.csv")["x"].mean(0))
    predictions = {}
    for name in ("test.csv", "new.csv"):
        out = folder / f"out_{name}.npz"
        assert main(["predict", str(folder / "model.grad"), "--params", str(folder / "p.npz"),
                     "--input", str(folder / name), "--out", str(out)]) == 0, capsys.readouterr().err
        with np.load(out) as result:
            predictions[name] = result["p"]
    expected = predictions["test.csv"]
    for name in ("new.csv",):   # the label left out
        np.testing.assert_allclose(predictions[name], expected, rtol=1e-6, err_msg=name)
    prog = gradlang.compile(folder / "model.grad")
    prog.load(folder / "p.npz")
    np.testing.assert_allclose(prog.predict(prog.load_data("test_set"))["p"], expected, rtol=1e-6)
    capsys.readouterr()
    assert main(["eval", str(folder / "model.grad"), "--params", str(folder / "p.npz"), "--json"]) == 0
    evaluated = capsys.readouterr().out
    assert json.loads(evaluated)["accuracy"] == pytest.approx(json.loads(trained)["test"]["accuracy"])


def test_features_named_map_the_columns_of_any_order(folder, capsys):
    named = PROGRAM.replace('target: "passed", standardize',
                            'target: "passed", features: ["hours", "score"], standardize')
    (folder / "named.grad").write_text(named)
    assert main(["run", str(folder / "named.grad"), "--quiet", "--out", str(folder / "n.npz"),
                 "--eval-limit", "0"]) == 0
    outputs = []
    for name in ("test.csv", "reordered.csv"):
        assert main(["predict", str(folder / "named.grad"), "--params", str(folder / "n.npz"),
                     "--input", str(folder / name), "--out", str(folder / "o.npz")]) == 0, capsys.readouterr().err
        with np.load(folder / "o.npz") as result:
            outputs.append(result["p"])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_without_a_header_a_file_as_wide_as_the_features_has_no_target(folder, capsys):
    table = np.loadtxt(folder / "train.csv", delimiter=",", skiprows=1)
    _write(folder / "plain.csv", "", table.T)
    (folder / "plain.grad").write_text(PROGRAM.replace('path: "train.csv", target: "passed", standardize: true',
                                                       'path: "plain.csv", header: false'))
    assert main(["run", str(folder / "plain.grad"), "--quiet", "--out", str(folder / "q.npz"),
                 "--eval-limit", "0"]) == 0
    outputs = []
    for name in ("plain.csv", "new_headerless.csv"):
        _write(folder / "new_headerless.csv", "", table[:, :2].T)
        assert main(["predict", str(folder / "plain.grad"), "--params", str(folder / "q.npz"),
                     "--input", str(folder / name), "--out", str(folder / "o.npz")]) == 0, capsys.readouterr().err
        with np.load(folder / "o.npz") as result:
            outputs.append(result["p"])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    _write(folder / "wide.csv", "", np.hstack([table, table]).T)
    assert main(["predict", str(folder / "plain.grad"), "--params", str(folder / "q.npz"),
                 "--input", str(folder / "wide.csv")]) == 1
    assert "expected f32[B,2], but field 'x'" in capsys.readouterr().err


def test_predict_refuses_params_without_the_statistics(folder, capsys):
    prog = gradlang.compile(folder / "model.grad")
    np.savez(folder / "bare.npz", **prog.params)
    assert main(["predict", str(folder / "model.grad"), "--params", str(folder / "bare.npz"),
                 "--input", str(folder / "new.csv")]) == 1
    assert "holds no standardization statistics" in capsys.readouterr().err


def test_damaged_statistics_are_refused(folder):
    prog = gradlang.compile(folder / "model.grad")
    np.savez(folder / "bad.npz", **prog.params, **{"standardize:x:mean": np.zeros(2), "standardize:x:std": -np.ones(2)})
    with pytest.raises(GradError, match="standardization statistics .* are damaged"):
        prog.load(folder / "bad.npz")


def test_a_standardized_test_set_needs_a_standardized_training_set(folder):
    source = PROGRAM.replace('data train_set = csv(path: "train.csv", target: "passed", standardize: true)',
                             'data train_set = csv(path: "train.csv", target: "passed")')
    (folder / "mixed.grad").write_text(source)
    prog = gradlang.compile(folder / "mixed.grad")
    with pytest.raises(GradError, match="the train block's data is not a csv") as caught:
        prog.load_data("test_set")
    assert caught.value.span.line == 3
