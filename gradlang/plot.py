"""`gradlang run --plot PATH`: the training curves as a PNG (needs matplotlib: pip install 'gradlang[plot]')."""
from __future__ import annotations

from pathlib import Path

from .errors import GradError


def plot_curves(result, path: Path, title: str) -> Path:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GradError("--plot needs matplotlib; install it with: pip install 'gradlang[plot]'") from None
    metrics = sorted({k[4:] for r in result.epoch_log for k in r if k.startswith("val_") and k != "val_loss"})
    fig, axes = plt.subplots(1, 1 + bool(metrics), figsize=(11 if metrics else 6, 4), squeeze=False)
    ax = axes[0][0]
    steps, losses = zip(*result.history) if result.history else ((), ())
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="training loss (per step)")
    epochs = result.epoch_log
    ax.plot([r["step"] for r in epochs], [r["loss"] for r in epochs], color="tab:blue",
            label="training loss (epoch mean)")
    if any("val_loss" in r for r in epochs):
        ax.plot([r["step"] for r in epochs], [r["val_loss"] for r in epochs], color="tab:orange",
                label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if min(losses, default=1) > 0 else "linear")
    ax.legend()
    ax.set_title(title)
    if metrics:
        ax = axes[0][1]
        for name in metrics:
            ax.plot([r["step"] for r in epochs], [r[f"val_{name}"] for r in epochs], label=f"validation {name}")
        ax.set_xlabel("step")
        ax.legend()
        ax.set_title("validation metrics")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
