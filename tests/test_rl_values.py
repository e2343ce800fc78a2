"""Value functions in reinforcement learning (docs/value_functions.md): TD(0) against Monte-Carlo on the
random walk (examples/td_random_walk.py) and advantage actor-critic on CartPole (examples/actor_critic.py).
Quick checks in the default run; the documented numbers in the slow one."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import gradlang

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def walk():
    return _example("td_random_walk")


@pytest.fixture(scope="module")
def ac():
    return _example("actor_critic")


# ---- the random walk -----------------------------------------------------------------------------------

def test_random_walk_episodes(walk):
    rng = np.random.default_rng(0)
    for _ in range(50):
        e = walk.episode(rng)
        assert e["state"][0] == 2 and set(e["state"]) <= set(range(5))
        steps = np.diff(np.append(e["state"], e["next_state"][-1]))
        assert set(np.abs(steps[:-1])) <= {1}                             # one step left or right
        assert e["done"].tolist() == [0.0] * (len(e["state"]) - 1) + [1.0]
        assert e["state"][-1] in (0, 4) and e["reward"][:-1].sum() == 0
        assert e["reward"][-1] == (e["state"][-1] == 4)                  # it left the row at E, to the right
        np.testing.assert_array_equal(e["ret"], e["reward"][-1])


def test_each_target_makes_the_tabular_update(walk):
    """One `step` of each loss is the textbook update of the one state it was fed, at α = 0.1."""
    start = np.array([0.1, 0.2, 0.3, 0.4, 0.5], dtype=np.float32)
    cases = [("td", {"state": [1], "next_state": [2], "reward": [0.0], "done": [0.0]}, 1, 0.2 + 0.1 * (0.3 - 0.2)),
             ("td", {"state": [4], "next_state": [4], "reward": [1.0], "done": [1.0]}, 4, 0.5 + 0.1 * (1.0 - 0.5)),
             ("td", {"state": [0], "next_state": [0], "reward": [0.0], "done": [1.0]}, 0, 0.1 + 0.1 * (0.0 - 0.1)),
             ("mc", {"state": [3], "ret": [1.0]}, 3, 0.4 + 0.1 * (1.0 - 0.4))]
    for method, feed, state, expected in cases:
        prog = walk.compile_method(method, 0.1)
        prog.set_params({"v": start})
        prog.step(feed)
        changed = start.copy()
        changed[state] = expected
        np.testing.assert_allclose(prog.params["v"], changed, rtol=1e-6, err_msg=f"{method} {feed}")
    # without stop_gradient the step also moves the next state's value, against the TD error
    prog = walk.compile_method("residual", 0.1)
    prog.set_params({"v": start})
    prog.step(cases[0][1])
    np.testing.assert_allclose(prog.params["v"], [0.1, 0.2 + 0.01, 0.3 - 0.01, 0.4, 0.5], rtol=1e-6)


def test_the_semi_gradient_in_the_backward_pass(walk):
    """docs/value_functions.md's excerpt of `gradlang grad`: TD's dv has the one term of one_hot(state)."""
    td = walk.compile_method("td", 0.1).backward_listing()
    assert "dvalue = -dtd_target" in td and "dv = reshape(transpose(t7) @ reshape(dvalue, [B, 1]), [5])" in td
    assert "dnext_value" not in td
    residual = walk.compile_method("residual", 0.1).backward_listing()
    assert "dnext_value = " in residual and "dv = t27 + t31" in residual


def test_rms_error_metric_and_residual_fixed_point(walk):
    prog = gradlang.compile(EXAMPLES / "td_random_walk.grad")
    assert prog.metrics({})["rms_error"] == pytest.approx(walk.rms_errors(np.full(5, 0.5)), rel=1e-6)
    prog.set_params({"v": walk.TRUE_VALUES})
    assert prog.metrics({})["rms_error"] < 1e-7
    np.testing.assert_allclose(walk.residual_fixed_point(), np.array([15, 20, 23, 26, 31]) / 46, atol=1e-12)


def test_td_random_walk_smoke(walk):
    results = walk.experiment(methods=[("td", 0.1), ("mc", 0.02), ("residual", 0.1)], runs=3, episodes=30)
    for (method, _), tables in results.items():
        assert tables.shape == (3, 31, 5)
        np.testing.assert_allclose(tables[:, 0], 0.5)
        error = walk.rms_errors(tables).mean(axis=0)
        assert error[-1] < error[0], method
    text = walk.report(results, 30)
    assert "TD(0)" in text and "residual fixed point" in text


# ---- actor-critic --------------------------------------------------------------------------------------

def test_nstep_target_parts(ac):
    """Each step's discounted rewards to the piece's end or the episode's, and γ^k on the bootstrap value."""
    ended = np.array([[False, False], [True, False], [False, False]])       # [steps, envs]
    rewards, discount = ac.nstep_parts(ended, 0.5)
    np.testing.assert_allclose(rewards, [[1.5, 1.75], [1.0, 1.5], [1.0, 1.0]])
    np.testing.assert_allclose(discount, [[0.0, 0.125], [0.0, 0.25], [0.5, 0.5]])


def _feed(ac, updates=3):
    prog = gradlang.compile(EXAMPLES / "actor_critic.grad", dtype="float64")
    rollouts = ac.Rollouts(np.random.default_rng(0), envs=4)
    for _ in range(updates):
        prog.step(rollouts.piece(prog))
    return prog, rollouts.piece(prog)


def test_actor_critic_target_is_held_constant(ac):
    """stop_gradient: the gradients are those of a fixed target (the same target fed as plain rewards),
    and the actor's loss sends nothing to the critic, nor the critic's to the actor."""
    prog, feed = _feed(ac)
    assert feed["obs"].shape == (4 * ac.PIECE, 4) and np.all(feed["discount"] <= ac.GAMMA)
    (target,) = prog.run(["target"], feed)
    fixed = {**feed, "rewards": target, "discount": np.zeros_like(target), "boot_obs": np.zeros_like(feed["obs"])}
    full, held = prog.gradients(feed), prog.gradients(fixed)
    assert set(full) == {p for p in prog.params}
    for name in full:
        np.testing.assert_allclose(full[name], held[name], rtol=1e-10, atol=1e-12, err_msg=name)
    source = (EXAMPLES / "actor_critic.grad").read_text()
    assert "loss        = actor_loss + 0.5 * critic_loss" in source
    for part, own in (("actor_loss", "policy."), ("0.5 * critic_loss", "critic.")):
        alone = gradlang.compile(source.replace("actor_loss + 0.5 * critic_loss", part), dtype="float64")
        alone.set_params({k: v for k, v in prog.params.items()})
        grads = alone.gradients(feed)
        for name in full:
            if name.startswith(own):
                np.testing.assert_allclose(grads[name], full[name], rtol=1e-10, atol=1e-12, err_msg=name)
            else:
                assert not np.any(grads[name]), name


def test_actor_critic_smoke(ac):
    pg = _example("policy_gradient")
    prog = gradlang.compile(EXAMPLES / "actor_critic.grad")
    lengths = ac.train(prog, updates=60)
    assert lengths and all(1 <= n <= pg.MAX_STEPS for n in lengths)
    assert np.mean(lengths[-8:]) > np.mean(lengths[:8])              # it already balances longer
    result = ac.evaluate(prog, episodes=5)
    assert result["average_return"] == pg.evaluate(prog, episodes=5)  # the same episodes as REINFORCE's
    assert np.isfinite(result["value_mse"]) and result["steps"] == 5 * result["average_return"]


# ---- the documented numbers ----------------------------------------------------------------------------

@pytest.mark.slow
def test_td_random_walk_reproduces_the_documented_table(walk):
    """docs/value_functions.md's table, as `python examples/td_random_walk.py` prints it: the RMS error
    averaged over 100 runs after 10, 25, 50 and 100 episodes, and what the page concludes from it."""
    results = walk.experiment()
    errors = {key: walk.rms_errors(tables).mean(axis=0)[[10, 25, 50, 100]] for key, tables in results.items()}
    documented = {("td", 0.05): [0.1750, 0.1120, 0.0539, 0.0375], ("td", 0.1): [0.1299, 0.0636, 0.0476, 0.0584],
                  ("td", 0.15): [0.0984, 0.0629, 0.0649, 0.0741], ("mc", 0.01): [0.2122, 0.1837, 0.1416, 0.0973],
                  ("mc", 0.02): [0.1983, 0.1572, 0.1065, 0.0819], ("mc", 0.03): [0.1907, 0.1439, 0.0998, 0.0943],
                  ("mc", 0.04): [0.1871, 0.1386, 0.1049, 0.1092], ("residual", 0.1): [0.1504, 0.1217, 0.1104, 0.1092]}
    report = {key: np.round(value, 4).tolist() for key, value in errors.items()}
    for key, want in documented.items():
        np.testing.assert_allclose(errors[key], want, atol=6e-5, err_msg=f"{key}: {report}")
    best_td = np.min([errors["td", a] for a in (0.05, 0.1, 0.15)], axis=0)
    best_mc = np.min([errors["mc", a] for a in (0.01, 0.02, 0.03, 0.04)], axis=0)
    assert np.all(best_td < 0.6 * best_mc), report                    # TD: about half Monte-Carlo's error
    residual = results["residual", 0.1][:, 100].mean(axis=0)          # on its way to its fixed point
    assert np.abs(residual - walk.residual_fixed_point()).max() < 0.04
    assert np.abs(residual - walk.TRUE_VALUES).max() > 0.1
    td = results["td", 0.1][0]                                        # the first run, as the page shows it
    np.testing.assert_allclose(td[1], [0.45, 0.5, 0.5, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(td[100], [0.092, 0.257, 0.441, 0.591, 0.797], atol=6e-4)


@pytest.mark.slow
def test_actor_critic_solves_cartpole(ac):
    """docs/value_functions.md's claim, as `python examples/actor_critic.py --seed S` computes it: the average
    return of 100 episodes with sampled actions is ≥ 195 at each of seeds 0, 1 and 2 (the table's numbers),
    and the critic's error against the observed discounted returns is the table's, largest at the end."""
    documented = {0: (196.2, 34.92), 1: (200.0, 37.70), 2: (200.0, 28.79)}    # sampled return, value mse
    measured = {}
    for seed in documented:                  # each seeds the initial weights and the training episodes
        prog = gradlang.compile(EXAMPLES / "actor_critic.grad", seed=seed)
        ac.train(prog, seed=seed)
        sampled, greedy = ac.evaluate(prog), ac.evaluate(prog, greedy=True)
        measured[seed] = (sampled["average_return"], greedy["average_return"], round(sampled["value_mse"], 2),
                          [round(e, 2) for e in sampled["rmse_by_quarter"]])
    report = f"seed: (sampled, greedy, value mse, rmse by quarter) {measured}"
    for seed, (average, mse) in documented.items():
        sampled, greedy, value_mse, quarters = measured[seed]
        assert sampled >= 195 and greedy == 200, report
        assert sampled == pytest.approx(average, abs=0.051) and value_mse == pytest.approx(mse, abs=0.011), report
        assert value_mse < 0.1 * 577 and quarters[3] == max(quarters), report
