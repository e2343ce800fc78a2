"""L1 against L2: train examples/l1.grad (both penalties side by side), count the weights of the 95
irrelevant inputs that end near zero with each, and draw every weight beside the true ones.

    python examples/l1.py [--plot weights.png] [--epochs N]

Needs matplotlib for --plot (pip install 'gradlang[plot]').
"""
import argparse
from pathlib import Path

import numpy as np

import gradlang
from gradlang.runtime.data import DataContext, sparse_regression

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.001, 0.01)


def train(epochs: int | None = None) -> dict:
    """Train the program; its weights, the true ones, and the test set's numbers."""
    prog = gradlang.compile(HERE / "l1.grad")
    result = prog.train(epochs=epochs)
    spec = prog.plan["data"]
    truth = sparse_regression(DataContext(HERE, spec.span), **dict(spec.kwargs))["weights"]
    return {"l1": np.array(prog.params["w_l1"]), "l2": np.array(prog.params["w_l2"]), "truth": truth,
            "test": result.test}


def near_zero(run: dict) -> dict:
    """How many weights of the irrelevant inputs lie within each threshold of zero, per penalty."""
    irrelevant = run["truth"] == 0
    return {name: {t: int(np.sum(np.abs(run[name][irrelevant]) < t)) for t in THRESHOLDS} for name in ("l1", "l2")}


def plot(run: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4))
    index = np.arange(len(run["truth"]))
    ax.scatter(index, run["l2"], s=14, color="tab:orange", label="L2 (ridge)")
    ax.scatter(index, run["l1"], s=14, color="tab:blue", label="L1 (lasso)")
    ax.scatter(index, run["truth"], s=40, facecolors="none", edgecolors="black", label="true weight")
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_xlabel("input")
    ax.set_ylabel("weight")
    ax.set_title("100 inputs, 5 of which matter: L1 sends the others to about zero, L2 only shrinks them")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="draw the weights into this PNG")
    parser.add_argument("--epochs", type=int, help="override the program's epochs")
    args = parser.parse_args()
    run = train(args.epochs)
    counts = near_zero(run)
    irrelevant = int(np.sum(run["truth"] == 0))
    for name, label in (("l1", "L1"), ("l2", "L2")):
        within = ", ".join(f"{counts[name][t]} within {t:g}" for t in THRESHOLDS)
        print(f"{label}: of the {irrelevant} irrelevant weights, {within}; test mse "
              f"{run['test'][f'mse_{name}']:.3f}")
    if args.plot:
        print(f"weights drawn in {plot(run, args.plot)}")


if __name__ == "__main__":
    main()
