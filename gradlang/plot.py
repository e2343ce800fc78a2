"""`gradlang run --plot PATH`: the training curves as a PNG (needs matplotlib: pip install 'gradlang[plot]').

Three panels: the loss (every step, the epoch means, the validation set's), the metrics (each epoch's
mean over the batches it trained on, and the validation set's), and the learning rate of every step.
Lines with few points get markers, so that a run of three epochs shows three points, not a segment."""
from __future__ import annotations

from pathlib import Path

from .errors import GradError

FEW_POINTS = 30        # a line with at most this many points is drawn with markers
MOST_RATE_POINTS = 2000  # the learning rate is drawn at up to this many steps


def _style(count: int) -> dict:
    return {"marker": "o", "markersize": 4} if count <= FEW_POINTS else {}


def plot_curves(result, path: Path, title: str, learning_rate=None) -> Path:
    """Draw `result` (a TrainResult); `learning_rate(step)` gives the rate the update after `step`
    updates used (None: no learning-rate panel, as with phases)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GradError("--plot needs matplotlib; install it with: pip install 'gradlang[plot]'") from None
    epochs = result.epoch_log
    reserved = ("epoch", "step", "loss")
    metrics = sorted({k.removeprefix("val_") for r in epochs for k in r
                      if k not in reserved and k != "val_loss"})
    steps, losses = zip(*result.history) if result.history else ((), ())
    rates = _rates(steps, learning_rate)
    panels = 1 + bool(metrics) + bool(rates)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    axes = list(axes[0])

    ax = axes.pop(0)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=0.8, zorder=1, label="training loss (each step)",
            **_style(len(steps)))
    epoch_steps = [r["step"] for r in epochs]
    ax.plot(epoch_steps, [r["loss"] for r in epochs], color="tab:blue", zorder=2,
            label="training loss (epoch mean)", **_style(len(epochs)))
    if any("val_loss" in r for r in epochs):
        ax.plot(epoch_steps, [r.get("val_loss", float("nan")) for r in epochs], color="tab:orange", zorder=3,
                label="validation loss", **_style(len(epochs)))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if min(losses, default=1) > 0 else "linear")
    ax.legend(loc="upper right", framealpha=0.9)
    ax.set_title(title)

    if metrics:
        ax = axes.pop(0)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, name in enumerate(metrics):
            color = colors[(i + 2) % len(colors)]
            if any(name in r for r in epochs):
                ax.plot(epoch_steps, [r.get(name, float("nan")) for r in epochs], color=color,
                        label=f"training {name} (epoch mean)", **_style(len(epochs)))
            if any(f"val_{name}" in r for r in epochs):
                ax.plot(epoch_steps, [r.get(f"val_{name}", float("nan")) for r in epochs], color=color,
                        linestyle="--", label=f"validation {name}", **_style(len(epochs)))
        ax.set_xlabel("step")
        ax.legend(loc="best", framealpha=0.9)
        ax.set_title("metrics")

    if rates:
        ax = axes.pop(0)
        at, values = zip(*rates)
        ax.plot(at, values, color="tab:purple", **_style(len(at)))
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.set_title("learning rate")
        if min(values) > 0 and max(values) / min(values) > 50:
            ax.set_yscale("log")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rates(steps, learning_rate) -> list[tuple[int, float]]:
    """(step, rate) at up to MOST_RATE_POINTS of the steps trained."""
    if learning_rate is None or not steps:
        return []
    stride = max(1, len(steps) // MOST_RATE_POINTS)
    chosen = list(steps[::stride]) + ([steps[-1]] if (len(steps) - 1) % stride else [])
    rates = [(step, learning_rate(step - 1)) for step in chosen]
    return [(step, rate) for step, rate in rates if rate is not None]
