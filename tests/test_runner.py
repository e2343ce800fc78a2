"""The parts behind `Program`: the runner that holds the run-time state (runtime/runner.py) and the
initialiser registry (runtime/initializers.py)."""
from __future__ import annotations

import numpy as np
import pytest

import gradlang
from gradlang.frontend.builtins import INITIALIZERS as COMPILED_KINDS
from gradlang.runtime.initializers import INITIALIZERS

REGRESSION = """
input x : f32[B, 2]
input y : f32[B]
param w : [2]
param b : [] = 0.5
loss = mean((x @ w + b - y) ** 2)
train { optimizer = sgd(lr: 0.1) }
"""


def test_every_initialiser_the_compiler_makes_has_an_entry():
    made = {kind.replace("xavier", "glorot") for kind in COMPILED_KINDS} | {"values"}   # values: a literal list
    assert made == set(INITIALIZERS)


def test_a_param_without_values_draws_nothing():
    plain = gradlang.compile("param w : [3, 4] = normal\nparam v : [5] = uniform\nloss = sum(w) + sum(v)\n")
    empty = gradlang.compile("param w : [3, 4] = normal\nparam e : [0, 4] = normal\nparam v : [5] = uniform\n"
                             "loss = sum(w) + sum(v) + sum(e)\n")
    assert empty.params["e"].shape == (0, 4)
    for name in ("w", "v"):
        np.testing.assert_array_equal(plain.params[name], empty.params[name])


def test_the_program_reads_and_writes_the_runners_state_and_keeps_no_copy():
    prog = gradlang.compile(REGRESSION)
    prog.step({"x": np.ones((4, 2), np.float32), "y": np.zeros(4, np.float32)})
    assert prog.steps_taken == prog.runner.steps_taken == 1
    prog.steps_taken = 5
    prog.check_numerics = True
    assert prog.runner.steps_taken == 5 and prog.runner.check_numerics
    assert prog.rng is prog.runner.rng and prog.params is prog.runner.params
    assert prog.forward_graph is prog.graphs.forward_graph and prog.stats is prog.graphs.stats
    with pytest.raises(AttributeError, match="Program.step cannot be replaced"):
        prog.step = None


def test_a_step_runs_the_update_compiled_for_its_feed_shapes():
    prog = gradlang.compile(REGRESSION)
    runner = prog.runner
    for batch in (4, 4, 8):
        prog.step({"x": np.ones((batch, 2), np.float32), "y": np.zeros(batch, np.float32)})
    update = runner.training_update
    assert len(update.executables) == 2 and update.optimizer.folded_lr == pytest.approx(0.1)
    arrays = runner.feed({"x": np.ones((8, 2)), "y": np.zeros(8)})
    assert arrays[0].dtype == np.float32 and update.executable(arrays) in update.executables.values()
