"""REINFORCE with a baseline on CartPole, through gradlang's Python API.

The environment is the classic cart-pole of Barto, Sutton & Anderson (1983) with the constants and
termination rule of Gym's CartPole-v0, written here in NumPy and stepped for many episodes at once.
The policy and value networks, the loss and the optimizer are the gradlang program
examples/policy_gradient.grad; this script runs episodes with `Program.predict` and makes one update
per batch of episodes with `Program.step`, as many updates as the train block's `steps` (over which
its learning rate decays to 0).

    python examples/policy_gradient.py            # trains, then reports the average return of 100 episodes
    python examples/policy_gradient.py --seed 1   # another seed for the initial weights and the episodes

CartPole-v0 counts as solved at an average return of 195 over 100 episodes (an episode ends after
200 steps at most).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import gradlang

PROGRAM = Path(__file__).with_name("policy_gradient.grad")
MAX_STEPS = 200


class CartPole:
    """`n` independent cart-poles, stepped together."""

    gravity, cart_mass, pole_mass, half_length, force, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    x_limit, angle_limit = 2.4, 12 * 2 * np.pi / 360

    def __init__(self, n: int, rng: np.random.Generator):
        self.rng = rng
        self.state = rng.uniform(-0.05, 0.05, size=(n, 4))

    def step(self, action: np.ndarray) -> np.ndarray:
        """Advance every cart-pole by one step; return which ones fell or left the track."""
        x, x_dot, theta, theta_dot = self.state.T
        force = np.where(action == 1, self.force, -self.force)
        total = self.cart_mass + self.pole_mass
        pole_moment = self.pole_mass * self.half_length
        cos, sin = np.cos(theta), np.sin(theta)
        temp = (force + pole_moment * theta_dot ** 2 * sin) / total
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.half_length * (4.0 / 3.0 - self.pole_mass * cos ** 2 / total))
        x_acc = temp - pole_moment * theta_acc * cos / total
        self.state = np.stack([x + self.tau * x_dot, x_dot + self.tau * x_acc,
                               theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc], axis=1)
        return (np.abs(self.state[:, 0]) > self.x_limit) | (np.abs(self.state[:, 2]) > self.angle_limit)


def run_episodes(prog, n: int, rng: np.random.Generator, greedy: bool = False):
    """n episodes at once. Returns (observations, actions, rewards, alive) as arrays [steps, n, …];
    `alive[t, i]` says whether episode i was still running at step t (it earned reward 1 there)."""
    env = CartPole(n, rng)
    running = np.ones(n, dtype=bool)
    obs, actions, alive = [], [], []
    for _ in range(MAX_STEPS):
        probs = prog.predict({"obs": env.state.astype(np.float32)})["probs"]
        if greedy:
            action = probs.argmax(axis=1)
        else:
            action = (rng.random(n) < probs[:, 1]).astype(np.int64)
        obs.append(env.state.copy())
        actions.append(action)
        alive.append(running.copy())
        running &= ~env.step(action)
        if not running.any():
            break
    return np.array(obs), np.array(actions), np.array(alive)


def discounted_returns(alive: np.ndarray, gamma: float) -> np.ndarray:
    """Σ_k γ^k r_{t+k} per step, with reward 1 at every step an episode is alive."""
    returns = np.zeros(alive.shape)
    following = np.zeros(alive.shape[1])
    for t in range(len(alive) - 1, -1, -1):
        following = alive[t] * (1.0 + gamma * following)
        returns[t] = following
    return returns


def train(prog, updates: int | None = None, episodes: int = 16, gamma: float = 0.99, seed: int = 0, log=None):
    """`updates` REINFORCE updates (by default the train block's `steps`), each on a batch of `episodes`
    episodes. Returns the episode lengths."""
    rng = np.random.default_rng(seed)
    updates = prog.plan["steps"] if updates is None else updates
    lengths = []
    for update in range(updates):
        obs, actions, alive = run_episodes(prog, episodes, rng)
        returns = discounted_returns(alive, gamma)
        keep = alive.reshape(-1)
        prog.step({"obs": obs.reshape(-1, 4)[keep].astype(np.float32), "action": actions.reshape(-1)[keep],
                   "ret": returns.reshape(-1)[keep].astype(np.float32)})
        lengths.extend(alive.sum(axis=0).tolist())
        if log is not None:
            log(update, float(np.mean(lengths[-episodes:])))
    return lengths


def evaluate(prog, episodes: int = 100, seed: int = 1, greedy: bool = False) -> float:
    """The average return over `episodes` new episodes (sampling actions, unless greedy); the same
    episodes (initial states and random numbers) whatever the training seed."""
    _, _, alive = run_episodes(prog, episodes, np.random.default_rng(seed), greedy)
    return float(alive.sum(axis=0).mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=None,
                        help="updates to make (default: the train block's steps, over which the learning rate decays)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the training episodes")
    args = parser.parse_args(argv)
    prog = gradlang.compile(PROGRAM, seed=args.seed)
    train(prog, args.updates, seed=args.seed,
          log=lambda u, avg: print(f"update {u + 1:4d}: average return {avg:6.1f}") if (u + 1) % 10 == 0 else None)
    print(f"average return over 100 episodes: {evaluate(prog):.1f} (sampled actions), "
          f"{evaluate(prog, greedy=True):.1f} (greedy)")


if __name__ == "__main__":
    main()
