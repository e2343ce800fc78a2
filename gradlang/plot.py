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


def plot_curves(result, path: Path, title: str, learning_rate=None, watch=None) -> Path:
    """Draw `result` (a TrainResult); `learning_rate(step)` gives the rate the update after `step`
    updates used (None: no learning-rate panel, as with phases); `watch` (a GradientWatch) adds a panel of
    each weight's gradient norm, one line per layer (the biases too where a program has no matrices)."""
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
    constant = len({rate for _, rate in rates}) == 1
    if constant:   # a constant rate is said in the loss panel's title, not drawn
        title = f"{title} (learning rate {rates[0][1]:g})"
        rates = []
    histories = _watched(watch)
    panels = 1 + bool(metrics) + bool(rates) + bool(histories)
    rows, columns = (2, 2) if panels == 4 else (1, panels)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    axes = [ax for row in axes for ax in row]

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
    low, high = min(losses, default=1), max(losses, default=1)
    ax.set_yscale("log" if low > 0 and high / low > 10 else "linear")
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
    if histories:
        ax = axes.pop(0)
        colors = plt.get_cmap("viridis")
        for i, history in enumerate(histories):
            every = max(1, len(history.steps) // MOST_RATE_POINTS)
            ax.plot(history.steps[::every], history.norms[::every], color=colors(i / max(1, len(histories) - 1)),
                    label=history.name, linewidth=1.0, **_style(len(history.steps[::every])))
        ax.set_xlabel("step")
        ax.set_ylabel("‖gradient‖")
        if all(n > 0 for h in histories for n in h.norms):
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize=7, framealpha=0.9)
        ax.set_title("gradient norm per layer")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _watched(watch) -> list:
    """The watched params to draw: those with two or more dimensions (a layer's weights), else all."""
    if watch is None:
        return []
    shown = [h for h in watch.histories.values() if h.norms]
    weights = [h for h in shown if h.dimensions >= 2]
    return weights or shown


def _rates(steps, learning_rate) -> list[tuple[int, float]]:
    """(step, rate) at up to MOST_RATE_POINTS of the steps trained."""
    if learning_rate is None or not steps:
        return []
    stride = max(1, len(steps) // MOST_RATE_POINTS)
    chosen = list(steps[::stride]) + ([steps[-1]] if (len(steps) - 1) % stride else [])
    rates = [(step, learning_rate(step - 1)) for step in chosen]
    return [(step, rate) for step, rate in rates if rate is not None]
