"""Single-object detection: train examples/detection.grad (or load the params `gradlang run` saved), print
the test set's classification accuracy and mean IoU, and draw test digits with their true and predicted boxes.

    python examples/detection.py [--params detection.npz] [--plot detection.png] [--show 12]

Needs MNIST (gradlang data fetch mnist), and matplotlib for --plot (pip install 'gradlang[plot]').
"""
import argparse
from pathlib import Path

import numpy as np

import gradlang

HERE = Path(__file__).resolve().parent
BANDS = ((16, 23), (24, 31), (32, 40))     # the digits' longer side, in pixels


def trained(params: Path | None = None, **settings) -> gradlang.Program:
    """The program, with the params read from `params`, or trained per its train block (with `settings`)."""
    prog = gradlang.compile(HERE / "detection.grad", settings=settings)
    if params is not None:
        prog.load(params)
    else:
        prog.train()
    return prog


def iou(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes [n, 4] given as (centre x, centre y, width, height): NumPy's
    version of the program's `iou`, to check it."""
    lo = np.maximum(p[:, :2] - p[:, 2:] / 2, t[:, :2] - t[:, 2:] / 2)
    hi = np.minimum(p[:, :2] + p[:, 2:] / 2, t[:, :2] + t[:, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    return inter / (np.prod(p[:, 2:], axis=1) + np.prod(t[:, 2:], axis=1) - inter)


def results(prog: gradlang.Program, test: dict) -> dict:
    """The program's metrics on the test set, and its predictions (digit, box) for every test image."""
    return {"metrics": prog.evaluate(test), **prog.predict(test, batch_size=1000)}


def plot(test: dict, found: dict, path: Path, show: int = 12) -> Path:
    """The first `show` test images, each with its true box (green) and the predicted one (red, dashed),
    titled with the predicted digit and the IoU."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    canvas = test["x"].shape[-1]
    columns = min(show, 6)
    rows = -(-show // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.35 * rows), squeeze=False)
    overlaps = iou(found["boxes"], test["box"])
    for k, ax in enumerate(axes.flat):
        if k >= show:
            ax.axis("off")
            continue
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():     # the canvas's edge
            spine.set_edgecolor("0.75")
        ax.imshow(test["x"][k, 0], cmap="gray_r", vmin=0, vmax=1, extent=(0, canvas, canvas, 0))
        for box, colour, style in ((test["box"][k], "tab:green", "-"), (found["boxes"][k], "tab:red", "--")):
            cx, cy, w, h = np.asarray(box, dtype=float) * canvas
            ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, edgecolor=colour, linestyle=style,
                                   linewidth=1.6))
        guess, truth = found["digit"][k], test["y"][k]
        ax.set_title(f"{guess}{'' if guess == truth else f' (is {truth})'}  IoU {overlaps[k]:.2f}",
                     fontsize=9, color="black" if guess == truth else "tab:red")
        ax.set_xlim(0, canvas)
        ax.set_ylim(canvas, 0)
    fig.suptitle("test digits: true box green, predicted box red (dashed); title: predicted digit, IoU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, help="read these params (from gradlang run) instead of training")
    parser.add_argument("--plot", type=Path, help="draw test predictions into this PNG")
    parser.add_argument("--show", type=int, default=12, help="how many test digits to draw")
    args = parser.parse_args()
    prog = trained(args.params)
    test = prog.load_data(setting="test")
    found = results(prog, test)
    m = found["metrics"]
    print(f"test set ({len(test['y']):,} digits): accuracy {100 * m['accuracy']:.2f}%, mean IoU {m['mean_iou']:.3f}, "
          f"detected (right digit and IoU ≥ 0.5) {100 * m['detected']:.2f}%")
    overlaps = iou(found["boxes"], test["box"])
    print(f"IoU quartiles {np.percentile(overlaps, 25):.3f} / {np.median(overlaps):.3f} / "
          f"{np.percentile(overlaps, 75):.3f}; IoU ≥ 0.75 for {100 * np.mean(overlaps >= 0.75):.1f}% of the boxes")
    canvas = test["x"].shape[-1]
    longer = np.round(np.max(test["box"][:, 2:], axis=1) * canvas)
    for low, high in BANDS:
        band = (longer >= low) & (longer <= high)
        print(f"longer side {low}-{high} px: {band.sum():>5,} digits, accuracy "
              f"{100 * np.mean(found['digit'][band] == test['y'][band]):.2f}%, mean IoU {overlaps[band].mean():.3f}")
    if args.plot:
        print(f"test predictions drawn in {plot(test, found, args.plot, args.show)}")


if __name__ == "__main__":
    main()
