"""Data sources a program can name in `data d = source(...)`, and batching.

A source returns a dict of arrays keyed by the program's input names (its first axis indexes the
examples). Synthetic sources take a `seed` of their own, so a data set does not change when the
training seed does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GradError, Span


@dataclass(frozen=True)
class DataContext:
    folder: Path          # the program's folder: relative file paths start here
    span: Span | None     # the data declaration, for errors


def two_moons(ctx: DataContext, n: int = 100, noise: float = 0.1, seed: int = 0) -> dict:
    """Two interleaving half circles (x: [n, 2]; y: +1 for the upper moon, −1 for the lower)."""
    rng = np.random.default_rng(seed)
    n_upper = n // 2
    n_lower = n - n_upper
    t_upper = np.linspace(0, np.pi, n_upper)
    t_lower = np.linspace(0, np.pi, n_lower)
    x = np.concatenate([np.stack([np.cos(t_upper), np.sin(t_upper)], 1),
                        np.stack([1 - np.cos(t_lower), 0.5 - np.sin(t_lower)], 1)])
    y = np.concatenate([np.ones(n_upper), -np.ones(n_lower)])
    x += rng.normal(0.0, noise, size=x.shape)
    order = rng.permutation(n)
    return {"x": x[order], "y": y[order]}


def line(ctx: DataContext, n: int = 100, slope: float = 1.0, intercept: float = 0.0, noise: float = 0.1,
         low: float = -1.0, high: float = 1.0, seed: int = 0) -> dict:
    """Points on y = intercept + slope·x plus Gaussian noise (x, y: [n])."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=n)
    return {"x": x, "y": intercept + slope * x + rng.normal(0.0, noise, size=n)}


def xor(ctx: DataContext, n: int = 4, noise: float = 0.0, seed: int = 0) -> dict:
    """The XOR truth table (x: [n, 2] in {0,1}², y: [n] = x0 xor x1); n > 4 repeats it with noise."""
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    pick = np.arange(n) % 4
    x = corners[pick] + rng.normal(0.0, noise, size=(n, 2)) if noise else corners[pick]
    return {"x": x, "y": (corners[pick, 0] != corners[pick, 1]).astype(np.float64)}


def npz(ctx: DataContext, path: str) -> dict:
    """Arrays from a NumPy .npz file (one per input name); pickled objects are refused."""
    file = (ctx.folder / path) if not Path(path).is_absolute() else Path(path)
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as err:
        raise GradError(f"cannot load {file}: {err}", ctx.span) from None


DATA_SOURCES = {"two_moons": two_moons, "line": line, "xor": xor, "npz": npz}


def load(spec, folder: Path) -> dict:
    return DATA_SOURCES[spec.source](DataContext(folder, spec.span), **dict(spec.kwargs))


def count_examples(arrays: dict, names: list[str], span: Span | None = None) -> int:
    sizes = {name: len(arrays[name]) for name in names}
    if len(set(sizes.values())) > 1:
        raise GradError("data fields have different numbers of examples: "
                        + ", ".join(f"{k}: {v}" for k, v in sizes.items()), span)
    return next(iter(sizes.values())) if sizes else 0


def batches(n: int, batch_size: int, rng: np.random.Generator | None):
    """Index arrays of successive mini-batches of one epoch (shuffled when `rng` is given)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
