"""Matrix-product plans: a split inner dimension computes the same product, and the planner picks a
split only when it measures faster by a margin, once per shape."""
import json

import numpy as np
import pytest

from gradlang.ir.graph import Emit, Graph
from gradlang.ops import gemm
from gradlang.ops.gemm import MARGIN, SplitK, plan_matmul
from gradlang.passes.schedule import IntoBuffer, schedule
from gradlang.runtime.interpreter import Executable

BIG = ((128, 784), (784, 128))     # 12.8 M multiply-adds: over the planning threshold


@pytest.fixture(autouse=True)
def fresh_plans(monkeypatch, tmp_path):
    monkeypatch.setattr(gemm, "_plans", {})
    monkeypatch.delenv("GRADLANG_MATMUL_TUNING", raising=False)
    monkeypatch.setenv("GRADLANG_MATMUL_PLANS", str(tmp_path / "plans.json"))


@pytest.mark.parametrize("parts", [2, 3, 4])
@pytest.mark.parametrize("a_transposed, b_transposed", [(False, False), (True, False), (False, True)])
def test_a_split_inner_dimension_gives_the_product(parts, a_transposed, b_transposed):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 7)).T if a_transposed else rng.normal(size=(7, 300))
    b = rng.normal(size=(5, 300)).T if b_transposed else rng.normal(size=(300, 5))
    split = SplitK(300, parts)
    assert split.bounds[0] == 0 and split.bounds[-1] == 300 and len(split.bounds) == parts + 1
    np.testing.assert_allclose(split(a, b), a @ b, rtol=1e-12)
    out = np.empty((7, 5))
    assert split(a, b, out=out) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def fake_timer(seconds_by_parts: dict):
    """A clock that says each candidate takes the time given for its number of parts (1: one call)."""
    calls = []

    def timer(kernel, a, b):
        calls.append(kernel)
        return seconds_by_parts[1 if kernel is np.matmul else len(kernel.bounds) - 1]
    timer.calls = calls
    return timer


def test_a_split_that_measures_faster_by_the_margin_is_chosen_once_per_shape():
    timer = fake_timer({1: 2.0, 2: 1.0, 4: 1.5})
    kernel = plan_matmul(*BIG, np.float32, False, False, timer=timer)
    assert isinstance(kernel, SplitK) and len(kernel.bounds) == 3
    measured = len(timer.calls)
    assert measured > 0
    assert plan_matmul(*BIG, np.float32, False, False, timer=timer) is kernel   # remembered
    assert len(timer.calls) == measured
    other = plan_matmul(*BIG, np.float32, True, False, timer=fake_timer({1: 1.0, 2: 2.0, 4: 2.0}))
    assert other is np.matmul                                      # another layout: measured apart


def test_a_split_within_the_margin_keeps_one_call():
    timer = fake_timer({1: 1.0, 2: 1.0 / MARGIN * 1.01, 4: 1.0})
    assert plan_matmul(*BIG, np.float32, False, False, timer=timer) is np.matmul


def test_small_products_and_short_inner_dimensions_are_not_measured(monkeypatch):
    timer = fake_timer({1: 2.0, 2: 1.0, 4: 1.0})
    assert plan_matmul((8, 784), (784, 8), np.float32, False, False, timer=timer) is np.matmul
    assert plan_matmul((4096, 128), (128, 4096), np.float32, False, False, timer=timer) is np.matmul
    assert plan_matmul((10000, 784), (784, 512), np.float32, False, False, timer=timer) is np.matmul
    assert plan_matmul((1, 512), (512, 50000), np.float32, False, False, timer=timer) is np.matmul   # skinny
    monkeypatch.setenv("GRADLANG_MATMUL_TUNING", "0")
    assert plan_matmul(*BIG, np.float32, False, False, timer=timer) is np.matmul
    assert timer.calls == []


def test_the_scheduler_runs_a_planned_split_into_a_reused_buffer():
    timer = fake_timer({1: 2.0, 2: 1.0, 4: 1.5})
    gemm._plans[(BIG[0], BIG[1], np.dtype(np.float32).str, False, False)] = \
        plan_matmul(*BIG, np.float32, False, False, timer=timer)
    g = Graph()
    x = g.add("input", (), {"name": "x", "shape": BIG[0], "dtype": "f32"})
    w = g.add("param", (), {"name": "w", "shape": BIG[1], "dtype": "f32"})
    e = Emit(g, None)
    g.outputs["y"] = e("tanh", e("matmul", x, w))
    sched = schedule(g, ["y"], {}, reuse_buffers=True)
    (kernel, *_), _ = sched.steps
    assert isinstance(kernel, IntoBuffer) and isinstance(kernel.kernel, SplitK)
    rng = np.random.default_rng(1)
    a, b = rng.random(BIG[0], dtype=np.float32), rng.random(BIG[1], dtype=np.float32) / 100
    (y,) = Executable(sched, g, ["x"], ["w"]).run([a], [b])
    np.testing.assert_allclose(y, np.tanh(a @ b), rtol=1e-5)


def test_a_measured_plan_is_kept_in_the_file_and_a_later_process_makes_the_same_choice_without_measuring(
        monkeypatch, tmp_path):
    first = plan_matmul(*BIG, np.float32, False, False, timer=fake_timer({1: 2.0, 2: 1.5, 4: 1.0}))
    assert isinstance(first, SplitK) and len(first.bounds) == 5
    kept = json.loads((tmp_path / "plans.json").read_text())
    (machine,) = kept
    assert "numpy" in machine and kept[machine] == {"128x784 @ 784x128 float32 NN": 4}
    monkeypatch.setattr(gemm, "_plans", {})                       # a new process
    timer = fake_timer({1: 1.0, 2: 9.0, 4: 9.0})                  # would now choose one call
    again = plan_matmul(*BIG, np.float32, False, False, timer=timer)
    assert isinstance(again, SplitK) and again.bounds == first.bounds and timer.calls == []
    one = plan_matmul(*BIG, np.float64, False, False, timer=timer)   # another dtype: measured, added
    assert one is np.matmul and len(json.loads((tmp_path / "plans.json").read_text())[machine]) == 2


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"x": 3}', None])
def test_a_damaged_or_unwritable_plan_file_only_costs_a_measurement(monkeypatch, tmp_path, content):
    path = tmp_path / "plans.json"
    if content is None:                                           # a folder where the file should be
        path.mkdir()
    else:
        path.write_text(content)
    timer = fake_timer({1: 2.0, 2: 1.0, 4: 1.5})
    assert isinstance(plan_matmul(*BIG, np.float32, False, False, timer=timer), SplitK)
    assert timer.calls
