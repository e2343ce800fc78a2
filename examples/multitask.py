"""Multi-task learning against one task at a time: train examples/multitask.grad on its weighted loss
`both` and, with the same network, on `digit_only` and `parity_only` (the `loss` train setting, as
`gradlang run examples/multitask.grad --set loss=digit_only` does), over a few seeds, and print each
task's test accuracy (mean ± standard deviation).

    python examples/multitask.py [--seeds 3]      # needs MNIST: gradlang data fetch mnist
"""
import argparse
from pathlib import Path

import numpy as np

import gradlang

PROGRAM = Path(__file__).with_name("multitask.grad")
LOSSES = ("both", "digit_only", "parity_only")


def accuracies(seeds: int = 3, **settings) -> dict:
    """loss → [(digit accuracy, parity accuracy) on the test set, one per seed]."""
    found = {}
    for loss in LOSSES:
        for seed in range(seeds):
            prog = gradlang.compile(PROGRAM, settings={"loss": loss, "seed": seed, **settings})
            test = prog.train().test
            found.setdefault(loss, []).append((test["digit_accuracy"], test["parity_accuracy"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    found = accuracies(args.seeds)
    print(f"test accuracy over {args.seeds} seeds (mean ± std); the untrained head's number is chance")
    print(f"{'trained on':<12} {'digit':>16} {'odd or even':>16}")
    for loss, values in found.items():
        a = np.array(values) * 100
        print(f"{loss:<12} {a[:, 0].mean():>9.2f} ± {a[:, 0].std():.2f} {a[:, 1].mean():>9.2f} ± {a[:, 1].std():.2f}")


if __name__ == "__main__":
    main()
