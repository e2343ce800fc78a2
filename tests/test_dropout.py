"""Dropout: inverted, drawn from the run's seeded generator, on while training and off when evaluating."""
import numpy as np
import pytest

import gradlang

SOURCE = """
input x : f32[B, 2000]
param w : [] = ones
h = dropout(x * w, 0.25)
loss = mean(h)
metric dropped = mean(h == 0)
train {
  steps = 3
  optimizer = sgd(lr: 0.1)
  seed = 5
}
"""
FEED = {"x": np.ones((8, 2000))}


def test_evaluation_is_the_identity():
    prog = gradlang.compile(SOURCE)
    assert prog.metrics(FEED)["dropped"] == 0.0
    assert prog.loss(FEED) == pytest.approx(1.0)


def test_training_drops_the_rate_and_scales_the_rest():
    prog = gradlang.compile(SOURCE, dtype="float64")
    dropped, mean = prog.run(["metric:dropped", "loss"], FEED, training=True)
    assert dropped == pytest.approx(0.25, abs=0.01)
    assert mean == pytest.approx(1.0, abs=0.02)   # kept values are scaled by 1 / (1 - rate)


def test_the_gradient_sees_the_same_mask_as_the_forward_pass():
    prog = gradlang.compile(SOURCE, dtype="float64")
    graph = prog.gradient_graph()
    loss, grad = prog.run(["loss", "grad:w"], FEED, graph, training=True)
    # loss = mean(x·w·mask) with x = 1, w = 1: d loss / d w = mean(mask) = loss
    assert grad == pytest.approx(loss, rel=1e-12)


def test_two_dropouts_of_one_value_draw_different_masks():
    prog = gradlang.compile("""
        input x : f32[B, 1000]
        loss = mean(x)
        metric same = mean(dropout(x, 0.5) == dropout(x, 0.5))
    """)
    assert prog.run(["metric:same"], {"x": np.ones((2, 1000))}, training=True)[0] < 0.75


def test_same_seed_same_masks():
    runs = []
    for _ in range(2):
        prog = gradlang.compile(SOURCE)
        prog.train(FEED)
        runs.append(prog.params["w"].copy())
    assert runs[0] == runs[1]
