"""Gradients as values, nested: the second-order examples against finite differences of gradients.

- examples/hvp.grad: its Hessian-vector product against (∇L(W + εv) − ∇L(W − εv)) / 2ε, and its
  power-iteration sharpness against the same iteration run on the finite-difference Hessian;
- examples/gradient_penalty.grad: the input gradient in its loss against differences of the critic's
  score, and the loss's gradient (a second derivative) against differences of the loss;
- examples/newton.grad: Newton's iterate is the minimiser, the loss's gradient through six Newton steps
  (third derivatives) against differences of the loss, and training lands c where it must.
"""
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.gradcheck import check_params

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EPS = 1e-5


def compile64(name):
    return gradlang.compile(EXAMPLES / f"{name}.grad", dtype="float64")


def batch(prog, n):
    data = prog.load_data()
    return {k: data[k][:n] for k in prog.input_names}


def central(f, x: np.ndarray, direction: np.ndarray):
    """(f(x + εd) − f(x − εd)) / 2ε, moving the array x in place and restoring it."""
    original = x.copy()
    try:
        x[...] = original + EPS * direction
        up = f()
        x[...] = original - EPS * direction
        down = f()
    finally:
        x[...] = original
    return (up - down) / (2 * EPS)


def test_hessian_vector_product_matches_differences_of_gradients():
    prog = compile64("hvp")
    feed = batch(prog, 16)
    direction, hv = prog.run(["output:direction", "output:hv"], feed)
    W = prog.params["hidden.W"]
    numeric = central(lambda: prog.gradients(feed)["hidden.W"], W, direction)
    np.testing.assert_allclose(hv, numeric, rtol=1e-6, atol=1e-9)


def test_sharpness_is_the_power_iteration_on_the_finite_difference_hessian():
    prog = compile64("hvp")
    feed = batch(prog, 16)
    W = prog.params["hidden.W"]
    basis = np.eye(W.size).reshape(W.size, *W.shape)
    hessian = np.stack([central(lambda: prog.gradients(feed)["hidden.W"], W, e).reshape(-1) for e in basis])
    hessian = (hessian + hessian.T) / 2
    v = np.full(W.size, 0.25)
    for _ in range(12):
        hv = hessian @ v
        v = hv / np.linalg.norm(hv)
    sharpness = prog.metrics(feed)["sharpness"]
    assert sharpness == pytest.approx(v @ hessian @ v, rel=1e-6)
    assert sharpness == pytest.approx(np.linalg.eigvalsh(hessian)[-1], rel=1e-3)


def test_gradient_penalty_input_gradient_matches_differences_of_the_score():
    prog = compile64("gradient_penalty")
    feed = batch(prog, 8)
    slopes = prog.run(["output:slopes"], feed)[0]
    x = feed["x"].astype(np.float64)
    for axis in range(2):
        direction = np.zeros_like(x)
        direction[:, axis] = 1.0    # each row's score depends on that row only: one pass does every row
        numeric = central(lambda: prog.run(["output:score"], {**feed, "x": x})[0], x, direction)
        np.testing.assert_allclose(slopes[:, axis], numeric, rtol=1e-6, atol=1e-9)


def test_gradient_penalty_loss_gradient_matches_differences_of_the_loss():
    prog = compile64("gradient_penalty")
    results = check_params(prog, batch(prog, 8), np.random.default_rng(0))
    assert all(r.error < 1e-6 for r in results), results


def test_newton_iterate_is_the_minimiser_and_its_gradient_matches_differences():
    prog = compile64("newton")
    metrics = prog.metrics({})
    c = float(prog.params["c"])
    root = [r.real for r in np.roots([1.0, 0.0, c, -3.0]) if abs(r.imag) < 1e-12][0]   # x³ + c·x − 3 = 0
    assert metrics["x_star"] == pytest.approx(root, rel=1e-12)
    assert abs(metrics["residual"]) < 1e-12
    analytic = float(prog.gradients({})["c"])
    numeric = central(lambda: prog.loss({}), prog.params["c"], np.ones(()))
    assert analytic == pytest.approx(numeric, rel=1e-7)
    # and the implicit-function theorem's answer, d x*/dc = −x*/f''(x*), through the loss 2(x* − 1)
    assert analytic == pytest.approx(2 * (root - 1) * -root / (3 * root ** 2 + c), rel=1e-7)


def test_newton_training_tunes_c_so_that_the_minimiser_is_one():
    prog = gradlang.compile(EXAMPLES / "newton.grad")
    result = prog.train()
    assert float(prog.params["c"]) == pytest.approx(2.0, abs=1e-4)
    assert result.metrics["x_star"] == pytest.approx(1.0, abs=1e-4)
