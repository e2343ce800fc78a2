"""Advantage actor-critic on CartPole, through gradlang's Python API.

The environment is examples/policy_gradient.py's NumPy cart-pole (Gym's CartPole-v0: reward 1 a step,
at most 200 steps), imported from there, as are its episode runner and its evaluation, so that the
numbers compare with REINFORCE's. The actor, the critic, the n-step TD target and the loss are the
gradlang program examples/actor_critic.grad. This script keeps 16 cart-poles running (each starts a
new episode when its last one ends), samples actions with `Program.predict`, and every 16 steps makes
one update with `Program.step` on those 16 × 16 transitions: each step's target is the discounted
rewards to the end of the piece plus the critic's value of the state there (none past an episode's
end), so the actor learns from pieces of episodes before they end. The train block's `steps` is the
number of updates, over which the learning rate decays to 0.

    python examples/actor_critic.py             # trains, then reports 100 evaluation episodes
    python examples/actor_critic.py --seed 1    # another seed for the weights and the training episodes

CartPole-v0 counts as solved at an average return of 195 over 100 episodes.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

import gradlang


def _neighbour(name: str):
    """examples/NAME.py, imported by its path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


policy_gradient = _neighbour("policy_gradient")
CartPole, run_episodes, discounted_returns = (policy_gradient.CartPole, policy_gradient.run_episodes,
                                              policy_gradient.discounted_returns)
MAX_STEPS = policy_gradient.MAX_STEPS
PROGRAM = Path(__file__).with_name("actor_critic.grad")
ENVS, PIECE, GAMMA = 16, 16, 0.99


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def nstep_parts(ended: np.ndarray, gamma: float = GAMMA) -> tuple[np.ndarray, np.ndarray]:
    """The parts of each step's n-step target r_t + γ r_t+1 + … + γ^k V(s_t+k), for a piece of steps
    [steps, envs] where `ended[t]` says that step t ended its episode: the discounted rewards (1 a
    step) up to the piece's end or the episode's, whichever comes first, and γ^k, the factor on the
    critic's value of the state at the piece's end (0 where the episode ends first)."""
    rewards, discount = np.zeros(ended.shape), np.zeros(ended.shape)
    following, factor = np.zeros(ended.shape[1]), np.ones(ended.shape[1])
    for t in range(len(ended) - 1, -1, -1):          # from the piece's end backwards
        following = 1.0 + gamma * following * ~ended[t]
        factor = gamma * factor * ~ended[t]
        rewards[t], discount[t] = following, factor
    return rewards, discount


class Rollouts:
    """ENVS cart-poles kept running; `piece(prog)` steps them PIECE times and returns the feed of one
    update, with the n-step targets' parts (the program adds the critic's bootstrap value)."""

    def __init__(self, rng: np.random.Generator, envs: int = ENVS):
        self.rng, self.envs = rng, envs
        self.env = CartPole(envs, rng)
        self.t = np.zeros(envs, dtype=int)           # steps taken in each cart-pole's current episode
        self.lengths: list[int] = []                 # every finished episode's length (its return)

    def time_left(self, t: np.ndarray) -> np.ndarray:
        return f32((MAX_STEPS - t) / MAX_STEPS)

    def piece(self, prog, piece: int = PIECE, gamma: float = GAMMA) -> dict:
        obs, times, actions, ended = [], [], [], []
        for _ in range(piece):
            state = self.env.state.copy()
            probs = prog.predict({"obs": f32(state)})["probs"]
            action = (self.rng.random(self.envs) < probs[:, 1]).astype(np.int64)
            obs.append(state)
            times.append(self.time_left(self.t))
            actions.append(action)
            fell = self.env.step(action)
            self.t += 1
            done = fell | (self.t >= MAX_STEPS)      # at the limit: time_left 0, a terminal state for the critic
            ended.append(done)
            for i in np.flatnonzero(done):           # a new episode where one ended
                self.lengths.append(int(self.t[i]))
                self.env.state[i] = self.rng.uniform(-0.05, 0.05, size=4)
                self.t[i] = 0
        rewards, discount = nstep_parts(np.array(ended), gamma)
        boot_obs = np.repeat(self.env.state[None], piece, axis=0)
        boot_time = np.repeat(self.time_left(self.t)[None], piece, axis=0)
        return {"obs": f32(obs).reshape(-1, 4), "time_left": f32(times).reshape(-1),
                "action": np.array(actions).reshape(-1), "rewards": f32(rewards).reshape(-1),
                "boot_obs": f32(boot_obs).reshape(-1, 4), "boot_time": boot_time.reshape(-1),
                "discount": f32(discount).reshape(-1)}


def train(prog, updates: int | None = None, seed: int = 0, log=None) -> list[int]:
    """`updates` actor-critic updates (by default the train block's `steps`), each on one piece of
    ENVS × PIECE transitions. Returns the lengths of the training episodes that ended."""
    rollouts = Rollouts(np.random.default_rng(seed))
    updates = prog.plan["steps"] if updates is None else updates
    for update in range(updates):
        prog.step(rollouts.piece(prog))
        if log is not None:
            log(update, rollouts.lengths)
    return rollouts.lengths


def evaluate(prog, episodes: int = 100, seed: int = 1, greedy: bool = False, gamma: float = GAMMA) -> dict:
    """`episodes` new episodes (the same as policy_gradient.evaluate's: sampled actions unless greedy):
    the average return, and the critic's error: the mean squared difference between V(s) and the
    discounted return that followed s, over every step of every episode, beside the variance of those
    returns (the error of the best constant guess), and its root in each quarter of the 200 steps."""
    obs, _, alive = run_episodes(prog, episodes, np.random.default_rng(seed), greedy)
    returns = discounted_returns(alive, gamma)
    t = np.broadcast_to(np.arange(len(alive))[:, None], alive.shape)
    (values,) = prog.run(["value"], {"obs": f32(obs[alive]), "time_left": f32((MAX_STEPS - t[alive]) / MAX_STEPS)})
    error = values - returns[alive]
    quarter = t[alive] * 4 // MAX_STEPS                # steps 0-49, 50-99, 100-149, 150-199
    return {"average_return": float(alive.sum(axis=0).mean()), "value_mse": float(np.mean(error ** 2)),
            "value_rmse": float(np.sqrt(np.mean(error ** 2))), "return_variance": float(np.var(returns[alive])),
            "steps": int(alive.sum()),
            "rmse_by_quarter": [float(np.sqrt(np.mean(error[quarter == q] ** 2))) if np.any(quarter == q) else None
                                for q in range(4)]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=None,
                        help="updates to make (default: the train block's steps, over which the learning rate decays)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the training episodes")
    args = parser.parse_args(argv)
    prog = gradlang.compile(PROGRAM, seed=args.seed)
    start = time.perf_counter()

    def log(update, lengths):
        if (update + 1) % 1000 == 0:
            recent = lengths[-20:]
            print(f"update {update + 1:5d}: {len(lengths):5d} episodes, the last 20 average "
                  f"{np.mean(recent) if recent else 0:6.1f}", flush=True)
    train(prog, args.updates, seed=args.seed, log=log)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    for greedy in (False, True):
        result = evaluate(prog, greedy=greedy)
        quarters = ", ".join("-" if e is None else f"{e:.2f}" for e in result["rmse_by_quarter"])
        print(f"100 episodes, {'greedy' if greedy else 'sampled'} actions: "
              f"average return {result['average_return']:.1f}\n"
              f"  critic: mean squared error {result['value_mse']:.2f} against the discounted returns "
              f"(RMS {result['value_rmse']:.2f}; the returns' variance {result['return_variance']:.1f})\n"
              f"  RMS error by quarter of the 200 steps: {quarters}")

if __name__ == "__main__":
    main()
