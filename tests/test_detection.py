"""Single-object detection (examples/detection.grad, docs/detection.md): the `mnist_boxes` data source, the
example's training and its IoU metric, and the documented result (slow)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from shared_data import SHARED_DATA, needs_mnist

import gradlang
from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.runtime.data import DATA_SOURCES, DataContext, paths

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "detection.grad"



def boxes(**settings) -> dict:
    return DATA_SOURCES["mnist_boxes"](DataContext(ROOT, None, SHARED_DATA), **settings)


def edges(box: np.ndarray, canvas: int) -> np.ndarray:
    """[n, 4] (left, top, right, bottom) in pixels, from (centre x, centre y, width, height) / canvas."""
    centre, size = box[:, :2] * canvas, box[:, 2:] * canvas
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def _script():
    spec = importlib.util.spec_from_file_location("detection_example", ROOT / "examples" / "detection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the data source ---------------------------------------------------------------------------------

@needs_mnist
def test_same_seed_same_data_another_seed_other_data():
    a, b, c = boxes(n=64, seed=3), boxes(n=64, seed=3), boxes(n=64, seed=4)
    assert a["x"].shape == (64, 1, 64, 64) and a["x"].dtype == np.float32
    assert a["y"].shape == (64,) and a["y"].dtype == np.int64 and a["box"].shape == (64, 4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["box"], c["box"]) and not np.array_equal(a["y"], c["y"])


@needs_mnist
@pytest.mark.parametrize("canvas, low, high", [(64, 16, 40), (40, 10, 40), (28, 5, 9), (64, 30, 30)])
def test_each_box_is_inside_the_canvas_and_tight_around_the_digit(canvas, low, high):
    data = boxes(n=300, canvas=canvas, min_size=low, max_size=high, seed=1)
    x, box = data["x"], data["box"]
    assert x.shape == (300, 1, canvas, canvas) and x.min() == 0 and x.max() <= 1
    pixels = edges(box.astype(np.float64), canvas)
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)     # whole pixels
    pixels = np.round(pixels).astype(int)
    assert (pixels[:, :2] >= 0).all() and (pixels[:, 2:] <= canvas).all()
    longer = np.maximum(pixels[:, 2] - pixels[:, 0], pixels[:, 3] - pixels[:, 1])
    assert longer.min() >= low and longer.max() <= high
    for image, (left, top, right, bottom) in zip(x[:, 0], pixels):
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (top, bottom, left, right)   # ink fills the box
    assert len(np.unique(data["y"])) == 10


@needs_mnist
def test_the_whole_test_split_places_each_digit_once():
    labels = DATA_SOURCES["mnist"](DataContext(ROOT, None, SHARED_DATA), split="test")["y"]
    data = boxes(split="test", n=len(labels), canvas=32, min_size=20, max_size=28, seed=0)
    np.testing.assert_array_equal(np.bincount(data["y"], minlength=10), np.bincount(labels, minlength=10))


@pytest.mark.parametrize("call, message", [
    ("mnist_boxes(min_size: 50, max_size: 40)", "min_size must be ≤ max_size (40)"),
    ("mnist_boxes(canvas: 32)", "max_size must be ≤ canvas (32)"),
    ("mnist_boxes(n: 0)", "n must be ≥ 1"),
    ('mnist_boxes(split: "valid")', 'split must be "train" or "test"'),
])
def test_settings_out_of_range_are_refused_where_the_program_compiles(call, message):
    with pytest.raises(GradError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gradlang.compile(f"data d = {call}\ninput x : f32[B, 1, 64, 64]\nloss = mean(x)\n")


def test_without_mnist_the_error_says_how_to_get_it(tmp_path):
    with pytest.raises(GradError, match="gradlang data fetch mnist"):
        DATA_SOURCES["mnist_boxes"](DataContext(tmp_path, None, tmp_path / "nowhere"), n=4)
    prog = gradlang.compile(EXAMPLE)
    found = paths(prog.plan["data"], tmp_path, tmp_path / "data")    # what --dry-run lists
    assert [p.name for p in found] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


# ---- the example ---------------------------------------------------------------------------------------

@needs_mnist
def test_a_few_steps_keep_the_loss_finite_and_the_iou_metric_is_iou(monkeypatch):
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    prog = gradlang.compile(EXAMPLE, settings={"data": "mnist_boxes(n: 320, seed: 5)"})
    data = prog.load_data()
    first = prog.loss(data)
    for start in range(0, 320, 32):
        prog.step({k: v[start:start + 32] for k, v in data.items()})
    numbers = prog.evaluate(data)
    assert np.isfinite(first) and np.isfinite(numbers["loss"]) and numbers["loss"] < first
    predicted = prog.predict(data)
    assert predicted["boxes"].shape == (320, 4) and predicted["digit"].shape == (320,)
    script = _script()
    truth = script.iou(predicted["boxes"].astype(np.float64), data["box"].astype(np.float64))
    assert numbers["mean_iou"] == pytest.approx(truth.mean(), abs=1e-5)
    assert numbers["detected"] == pytest.approx(np.mean((predicted["digit"] == data["y"]) & (truth >= 0.5)), abs=1e-6)
    np.testing.assert_allclose(script.iou(data["box"], data["box"]), 1, rtol=1e-6)   # a box on itself


@needs_mnist
def test_the_script_draws_predictions(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="pip install -e '.[plot]'")
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    script = _script()
    prog = gradlang.compile(EXAMPLE, settings={"test": 'mnist_boxes(split: "test", n: 8, seed: 1)'})
    test = prog.load_data(setting="test")
    found = script.results(prog, test)
    assert set(found["metrics"]) >= {"accuracy", "mean_iou", "detected"}
    path = script.plot(test, found, tmp_path / "boxes.png", show=8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_mnist
@pytest.mark.slow
def test_detection_reaches_its_documented_accuracy_and_mean_iou(tmp_path, capsys, monkeypatch):
    """docs/detection.md: ≥ 95% test accuracy and a mean IoU ≥ 0.75 on the 10,000 test digits."""
    monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    status = main(["run", str(EXAMPLE), "--json", "--out", str(tmp_path / "detection.npz")])
    out = capsys.readouterr()
    assert status == 0, out.err
    test = json.loads(out.out)["test"]
    assert test["accuracy"] >= 0.95 and test["mean_iou"] >= 0.75
