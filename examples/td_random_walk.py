"""TD(0) against Monte-Carlo value prediction on the random walk, through gradlang's Python API.

The random walk of Sutton & Barto (Reinforcement Learning: An Introduction, 2nd ed., Example 6.2):
five states A … E in a row, every episode starts at C and steps left or right with equal probability
until it leaves the row; leaving E to the right pays 1, every other step 0; γ = 1. The true value of
each state is the probability of leaving to the right from it: 1/6, 2/6, … 5/6.

The value table, the TD and Monte-Carlo targets and the update are the gradlang program
examples/td_random_walk.grad; this script draws the episodes and makes the updates with
`Program.step`, online for TD(0) (one transition per step, as it happens), at the end of each episode
for Monte-Carlo (one visited state per step, with the return observed from it). Every run starts
from V = 0.5 everywhere; the error is the RMS error over the five states, averaged over the runs,
after each episode (the protocol of the book's figure). Every method and step size sees the same
episodes.

    python examples/td_random_walk.py                 # 100 runs of 100 episodes: the tables below
    python examples/td_random_walk.py --runs 10       # quicker
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import gradlang

PROGRAM = Path(__file__).with_name("td_random_walk.grad")
STATES = "ABCDE"
TRUE_VALUES = np.arange(1, 6) / 6
# the step sizes of the book's figure, and the residual gradient at TD's middle one
METHODS = [("td", 0.05), ("td", 0.1), ("td", 0.15), ("mc", 0.01), ("mc", 0.02), ("mc", 0.03), ("mc", 0.04),
           ("residual", 0.1)]
NAMES = {"td": "TD(0)", "mc": "Monte-Carlo", "residual": "residual gradient"}


def episode(rng: np.random.Generator) -> dict:
    """One walk from C: the transitions as arrays (the program's inputs), states 0 … 4 for A … E."""
    states, next_states = [], []
    state = 2
    while 0 <= state <= 4:
        states.append(state)
        state += 1 if rng.random() < 0.5 else -1
        next_states.append(state)
    done = np.zeros(len(states))
    done[-1] = 1.0
    reward = np.zeros(len(states))
    reward[-1] = 1.0 if state == 5 else 0.0
    return {"state": np.array(states), "next_state": np.clip(next_states, 0, 4), "reward": reward, "done": done,
            "ret": np.full(len(states), reward[-1])}     # γ = 1 and only the last reward: every return is it


def compile_method(method: str, alpha: float) -> gradlang.Program:
    """The program with the loss of `method` (td, mc or residual) trained by SGD at step size alpha."""
    return gradlang.compile(PROGRAM, settings={"loss": method, "optimizer": f"sgd(lr: {alpha})"})


def learn(prog: gradlang.Program, method: str, episodes: list[dict]) -> np.ndarray:
    """Start from V = 0.5 and learn from the episodes in turn; the value table before the first episode
    and after each one, [len(episodes) + 1, 5]."""
    prog.set_params({"v": np.full(5, 0.5)})
    tables = [prog.params["v"].copy()]
    for walk in episodes:
        names = ("state", "ret") if method == "mc" else ("state", "next_state", "reward", "done")
        for t in range(len(walk["state"])):             # one update per transition / visited state, in order
            prog.step({name: walk[name][t:t + 1] for name in names})
        tables.append(prog.params["v"].copy())
    return np.array(tables)


def residual_fixed_point() -> np.ndarray:
    """Where the residual gradient settles (on average): the values that minimise the expected squared TD
    error, Σ_s visits(s) · E[(r + V(s′) − V(s))²], a weighted least-squares problem. On this walk the
    next state is random, and the squared error counts its spread as error to remove: the minimiser
    pulls the values together, 15/46, 20/46, 23/46, 26/46, 31/46, where TD's fixed point is the truth."""
    moves = np.zeros((5, 5))                         # the walk among A … E: half a chance each way
    for s in range(5):
        for n in (s - 1, s + 1):
            if 0 <= n <= 4:
                moves[s, n] = 0.5
    visits = np.linalg.inv(np.eye(5) - moves)[2]      # expected visits per episode from C: 1, 2, 3, 2, 1
    rows, rhs, weights = [], [], []
    for s in range(5):
        for n in (s - 1, s + 1):                     # r + V(s′) − V(s) = 0, in the least-squares sense
            row = np.zeros(5)
            row[s] -= 1.0
            if 0 <= n <= 4:
                row[n] += 1.0
            rows.append(row)
            rhs.append(-1.0 if n == 5 else 0.0)
            weights.append(np.sqrt(0.5 * visits[s]))
    weights = np.array(weights)[:, None]
    return np.linalg.lstsq(np.array(rows) * weights, np.array(rhs) * weights[:, 0], rcond=None)[0]


def rms_errors(tables: np.ndarray) -> np.ndarray:
    """The RMS error over the five states of each value table."""
    return np.sqrt(np.mean((tables - TRUE_VALUES) ** 2, axis=-1))


def experiment(methods=METHODS, runs: int = 100, episodes: int = 100, seed: int = 0) -> dict:
    """{(method, alpha): value tables [runs, episodes + 1, 5]}; run r's episodes are the same for every
    method and step size (drawn from the generator seeded by (seed, r))."""
    walks = [[episode(rng) for _ in range(episodes)]
             for rng in (np.random.default_rng([seed, r]) for r in range(runs))]
    results = {}
    for method, alpha in methods:
        prog = compile_method(method, alpha)
        results[method, alpha] = np.array([learn(prog, method, run) for run in walks])
    return results


def report(results: dict, episodes: int) -> str:
    runs = len(next(iter(results.values())))
    marks = [e for e in (0, 1, 10, 25, 50, 100, episodes) if e <= episodes]
    marks = sorted(set(marks))
    lines = [f"RMS error over the 5 states, averaged over {runs} runs, after n episodes:",
             f"{'method':<20}{'alpha':>6}" + "".join(f"{f'n={e}':>9}" for e in marks)]
    for (method, alpha), tables in results.items():
        error = rms_errors(tables).mean(axis=0)
        lines.append(f"{NAMES[method]:<20}{alpha:>6}" + "".join(f"{error[e]:>9.4f}" for e in marks))
    lines += ["", f"values after {episodes} episodes (mean over the runs):",
              f"{'method':<20}{'alpha':>6}" + "".join(f"{s:>8}" for s in STATES)]
    for (method, alpha), tables in results.items():
        lines.append(f"{NAMES[method]:<20}{alpha:>6}" + "".join(f"{v:>8.3f}" for v in tables[:, episodes].mean(0)))
    lines.append(f"{'true values':<26}" + "".join(f"{v:>8.3f}" for v in TRUE_VALUES))
    if any(method == "residual" for method, _ in results):
        lines.append(f"{'residual fixed point':<26}" + "".join(f"{v:>8.3f}" for v in residual_fixed_point())
                     + f"   (RMS error {rms_errors(residual_fixed_point()):.4f})")
    if ("td", 0.1) in results:
        tables = results["td", 0.1][0]
        lines += ["", "one run (the first) of TD(0) at alpha 0.1, as in the book's left figure:",
                  f"{'episodes':<26}" + "".join(f"{s:>8}" for s in STATES)]
        lines += [f"{e:<26}" + "".join(f"{v:>8.3f}" for v in tables[e]) for e in (0, 1, 10, 100) if e <= episodes]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="independent runs to average over (default 100)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per run (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the episodes")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = experiment(runs=args.runs, episodes=args.episodes, seed=args.seed)
    print(report(results, args.episodes))
    print(f"\nran {len(results)} methods in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
