"""Draw the variational autoencoders of examples/vae.grad and examples/vae_2d.grad: a grid of samples
(the decoder's pixel probabilities at points z ~ N(0, I)) and, from the 2-D model, a traversal of its
latent plane (the decoder at a grid of points, evenly spaced in probability under the prior).

    gradlang run examples/vae.grad --out vae.npz
    gradlang run examples/vae_2d.grad --out vae_2d.npz
    python examples/vae.py --params vae.npz --params-2d vae_2d.npz [--out docs/images]

Both pictures decode latent points with the program's `decoded` output, in gradlang. Needs matplotlib
(pip install 'gradlang[plot]').
"""
import argparse
from pathlib import Path
from statistics import NormalDist

import numpy as np

import gradlang

HERE = Path(__file__).resolve().parent
SIDE = 28   # MNIST images are 28 × 28


def load(program: Path, params: Path) -> gradlang.Program:
    """The compiled program with its trained params."""
    prog = gradlang.compile(program)
    prog.load(params)
    return prog


def latent_size(prog: gradlang.Program) -> int:
    return int(prog.inputs["code"].shape[1])


def decode(prog: gradlang.Program, z: np.ndarray) -> np.ndarray:
    """The decoder's pixel probabilities at the latent points z [n, latent], as images [n, 28, 28]."""
    (probs,) = prog.run(["output:decoded"], {"code": np.asarray(z, dtype=np.float32)})
    return np.asarray(probs).reshape(len(z), SIDE, SIDE)


def samples(prog: gradlang.Program, n: int = 100, seed: int = 0) -> np.ndarray:
    """n samples of the model: the decoder's probabilities at n points drawn from the prior N(0, I)."""
    z = np.random.default_rng(seed).standard_normal((n, latent_size(prog)))
    return decode(prog, z)


def traversal(prog: gradlang.Program, steps: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D model decoded at a steps × steps grid of latent points, evenly spaced in probability under
    the prior (the normal quantiles of 0.05 … 0.95 on each axis): the images [steps, steps, 28, 28],
    row 0 at the top (the largest z₂), and the quantiles used."""
    assert latent_size(prog) == 2, "a traversal of the latent plane needs a model with 2 latent dimensions"
    quantiles = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, steps)])
    z1, z2 = np.meshgrid(quantiles, quantiles[::-1])
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)
    return decode(prog, z).reshape(steps, steps, SIDE, SIDE), quantiles


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """Images [n, 28, 28] laid out in rows of `columns`, as one array."""
    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * SIDE, columns * SIDE), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * SIDE:(r + 1) * SIDE, c * SIDE:(c + 1) * SIDE] = image
    return sheet


def draw(sheet: np.ndarray, path: Path, title: str, ticks: np.ndarray | None = None) -> Path:
    """The sheet in grey, white for probability 1. With `ticks` (the latent value of each column, and of each
    row from the bottom), the axes are labelled with them: z₁ across, z₂ up."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 7.4))
    ax.imshow(sheet, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    if ticks is None:
        ax.axis("off")
    else:
        centres = SIDE * (np.arange(len(ticks)) + 0.5)
        ax.set_xticks(centres[::2], [f"{t:.2f}" for t in ticks[::2]], fontsize=8)
        ax.set_yticks(centres[::2], [f"{t:.2f}" for t in ticks[::-1][::2]], fontsize=8)
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="params of examples/vae.grad (gradlang run)")
    parser.add_argument("--params-2d", type=Path, required=True, help="params of examples/vae_2d.grad")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "images", help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the prior draws of the samples")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    prog = load(HERE / "vae.grad", args.params)
    grid = samples(prog, 100, args.seed)
    path = draw(tile(grid, 10), args.out / "vae_samples.png",
                f"100 samples: decoder probabilities at z ~ N(0, I), {latent_size(prog)} latent dimensions")
    print(f"samples drawn in {path}")

    prog_2d = load(HERE / "vae_2d.grad", args.params_2d)
    images, quantiles = traversal(prog_2d)
    steps = len(quantiles)
    sheet = tile(images.reshape(steps * steps, SIDE, SIDE), steps)
    path = draw(sheet, args.out / "vae_traversal.png",
                "the 2-D latent plane: the decoder at the normal quantiles 0.05 … 0.95 of z₁ and z₂", quantiles)
    print(f"latent traversal drawn in {path}")


if __name__ == "__main__":
    main()
