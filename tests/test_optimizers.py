"""Each optimizer's update against a hand computation of a few steps, in float64."""
import numpy as np
import pytest

import gradlang
from gradlang.runtime.optimizers import OPTIMIZERS

P0 = np.array([1.0, -2.0, 0.5])
GRADS = [np.array([0.1, -0.3, 0.2]), np.array([-0.2, 0.1, 0.4]), np.array([0.05, 0.05, -0.1])]


def run(name, **settings):
    spec = OPTIMIZERS[name]
    full = {k: v for k, v in spec.settings.items() if v is not None}
    full.update(settings)
    p = P0.copy()
    opt = spec.make([p])
    trajectory = []
    for g in GRADS:
        opt.update([p], [g.copy()], **full)
        trajectory.append(p.copy())
    return trajectory


def test_sgd():
    p, lr = P0.copy(), 0.1
    for g, got in zip(GRADS, run("sgd", lr=lr)):
        p = p - lr * g
        np.testing.assert_allclose(got, p)


def test_sgd_momentum_and_nesterov():
    lr, mu = 0.1, 0.9
    for nesterov in (False, True):
        p, v = P0.copy(), np.zeros(3)
        for g, got in zip(GRADS, run("sgd", lr=lr, momentum=mu, nesterov=nesterov)):
            v = mu * v + g
            p = p - lr * ((g + mu * v) if nesterov else v)
            np.testing.assert_allclose(got, p)


def test_adam():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, m, v = P0.copy(), np.zeros(3), np.zeros(3)
    for t, (g, got) in enumerate(zip(GRADS, run("adam", lr=lr)), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(got, p, rtol=1e-12)


def test_adamw_decays_the_params_apart_from_the_gradient():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    p, m, v = P0.copy(), np.zeros(3), np.zeros(3)
    for t, (g, got) in enumerate(zip(GRADS, run("adamw", lr=lr, weight_decay=wd)), start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(got, p, rtol=1e-12)


def test_rmsprop_with_and_without_momentum():
    lr, alpha, eps = 0.01, 0.99, 1e-8
    for mu in (0.0, 0.5):
        p, s, b = P0.copy(), np.zeros(3), np.zeros(3)
        for g, got in zip(GRADS, run("rmsprop", lr=lr, momentum=mu)):
            s = alpha * s + (1 - alpha) * g * g
            d = g / (np.sqrt(s) + eps)
            b = mu * b + d
            p = p - lr * (b if mu else d)
            np.testing.assert_allclose(got, p, rtol=1e-12)


def test_adagrad():
    lr, eps = 0.1, 1e-10
    p, s = P0.copy(), np.zeros(3)
    for g, got in zip(GRADS, run("adagrad", lr=lr)):
        s = s + g * g
        p = p - lr * g / (np.sqrt(s) + eps)
        np.testing.assert_allclose(got, p, rtol=1e-12)


def test_weight_decay_adds_an_l2_gradient():
    lr, wd = 0.1, 0.5
    p = P0.copy()
    for g, got in zip(GRADS, run("sgd", lr=lr, weight_decay=wd)):
        p = p - lr * (g + wd * p)
        np.testing.assert_allclose(got, p)


def test_clip_norm_rescales_the_global_gradient_norm():
    lr, clip = 1.0, 0.1
    p = P0.copy()
    for g, got in zip(GRADS, run("sgd", lr=lr, clip_norm=clip)):
        norm = np.linalg.norm(g)
        p = p - lr * (g * clip / norm if norm > clip else g)
        np.testing.assert_allclose(got, p)


def test_optimizer_state_round_trips():
    spec = OPTIMIZERS["adam"]
    p = P0.copy()
    opt = spec.make([p])
    opt.update([p], [GRADS[0]], lr=0.01)
    clone = spec.make([p.copy()])
    clone.load_state(opt.state())
    assert clone.t == 1
    np.testing.assert_array_equal(clone.state_arrays["m"][0], opt.state_arrays["m"][0])


PROGRAM = """
input x : f32[B, 2]
input y : f32[B]
param w : [2] = zeros
loss = mean((x @ w - y) ** 2)
train {{
  steps = 5
  optimizer = {optimizer}
}}
"""


@pytest.mark.parametrize("optimizer", ["sgd(lr: 0.1)", "sgd(lr: 0.1, momentum: 0.9, nesterov: true)",
                                       "adam(lr: 0.01)", "adamw(lr: 0.01, weight_decay: 0.1)",
                                       "rmsprop(lr: 0.01)", "adagrad(lr: 0.1)", "adam(clip_norm: 1.0)"])
def test_every_optimizer_trains_from_a_program(optimizer):
    prog = gradlang.compile(PROGRAM.format(optimizer=optimizer), dtype="float64")
    x = np.random.default_rng(0).normal(size=(32, 2))
    data = {"x": x, "y": x @ np.array([1.0, -1.0])}
    first = prog.loss(data)
    assert prog.train(data).loss < first


def test_a_learning_rate_schedule_is_an_expression_of_the_step():
    prog = gradlang.compile(PROGRAM.format(optimizer="sgd(lr: 0.5 * 0.5 ** step)"), dtype="float64")
    data = {"x": np.eye(2), "y": np.array([1.0, 0.0])}
    grads = []
    w = prog.params["w"].copy()
    for step in range(3):
        grads.append(prog.gradients(data)["w"])
        prog.step(data)
        w = w - 0.5 * 0.5 ** step * grads[-1]
        np.testing.assert_allclose(prog.params["w"], w)


@pytest.mark.parametrize("optimizer, folded", [
    ("sgd(lr: 0.1)", 0.1),                                 # plain SGD: the step computes lr · gradient
    ("sgd(lr: 0.1, momentum: 0.9)", None),                 # the velocity needs the gradient itself
    ("sgd(lr: 0.1, clip_norm: 0.5)", None),                # so does the norm
    ("sgd(lr: 0.1, weight_decay: 0.01)", None),
    ("sgd(lr: 0.5 * 0.5 ** step)", None),                  # a rate that changes every step
    ("adam(lr: 0.01)", None),
])
def test_plain_sgd_folds_its_rate_into_the_backward_pass_and_takes_the_same_steps(optimizer, folded):
    prog = gradlang.compile(PROGRAM.format(optimizer=optimizer), dtype="float64")
    twin = gradlang.compile(PROGRAM.format(optimizer=optimizer), dtype="float64")
    x = np.random.default_rng(1).normal(size=(16, 2))
    data = {"x": x, "y": x @ np.array([1.0, -1.0]) + 0.3}
    for _ in range(4):
        assert prog.step(data) == pytest.approx(twin.loss(data), rel=1e-12)
        grads = twin.gradients(data)
        twin.optimizer().update(twin.runner.param_list, [grads[n] for n in twin.param_names],
                                **twin.runner.training_update.optimizer.settings(twin.steps_taken))
        twin.steps_taken += 1
        for name in prog.param_names:
            np.testing.assert_allclose(prog.params[name], twin.params[name], rtol=1e-12, atol=1e-15)
    assert prog.runner.training_update.optimizer.folded_lr == folded
    assert prog.gradients(data)["w"] == pytest.approx(twin.gradients(data)["w"], rel=1e-12)   # unscaled


def test_unknown_optimizer_setting_is_an_error():
    with pytest.raises(gradlang.GradError, match="no setting 'betas'"):
        gradlang.compile(PROGRAM.format(optimizer="adam(betas: 0.9)"))


SCHEDULES = [
    ("0.1", lambda k: 0.1),
    ("step_decay(step, 0.1, 3, 0.5)", lambda k: 0.1 * 0.5 ** (k // 3)),
    ("exponential_decay(step, 0.1, 4, 0.5)", lambda k: 0.1 * 0.5 ** (k / 4)),
    ("cosine_decay(step, 6, 0.1, 0.01)", lambda k: 0.01 + 0.045 * (1 + np.cos(np.pi * min(k / 6, 1)))),
    ("0.1 * warmup(step, 4)", lambda k: 0.1 * min((k + 1) / 4, 1)),
    ("linear_decay(step, 5, 0.1, 0.02)", lambda k: 0.1 + (0.02 - 0.1) * min(k / 5, 1)),
    ("where(step < 4, 0.1, 0.01)", lambda k: 0.1 if k < 4 else 0.01),
]


@pytest.mark.parametrize("expression, expected", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_learning_rate_schedules_give_the_documented_rate_at_every_step(expression, expected):
    prog = gradlang.compile(PROGRAM.format(optimizer=f"sgd(lr: {expression})"), dtype="float64")
    data = {"x": np.eye(2), "y": np.array([1.0, -1.0])}
    for k in range(8):
        before = prog.params["w"].copy()
        grad = prog.gradients(data)["w"]
        prog.step(data)
        np.testing.assert_allclose(prog.params["w"], before - expected(k) * grad, rtol=1e-12, atol=1e-15)
