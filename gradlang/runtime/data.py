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
from ..passes.index_checks import input_index_checks


@dataclass(frozen=True)
class DataContext:
    folder: Path          # the program's folder: relative file paths start here
    span: Span | None     # the data declaration, for errors
    data_dir: Path | None = None   # where named data sets live (see fetch.data_dir)

    def path(self, name: str) -> Path:
        return Path(name) if Path(name).is_absolute() else self.folder / name


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


def spirals(ctx: DataContext, n: int = 300, classes: int = 3, noise: float = 0.2, seed: int = 0) -> dict:
    """`classes` interleaved spiral arms (x: [n, 2]; y: [n] integer class), as in CS231n."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    r = np.concatenate([np.linspace(0.0, 1.0, (y == k).sum()) for k in range(classes)])
    y = np.sort(y)
    theta = y * (2 * np.pi / classes) + r * 4.0 + rng.normal(0.0, noise, size=n)
    x = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    order = rng.permutation(n)
    return {"x": x[order], "y": y[order].astype(np.int64)}


def blobs(ctx: DataContext, n: int = 300, centers: int = 3, dim: int = 2, std: float = 1.0,
          spread: float = 5.0, seed: int = 0) -> dict:
    """Gaussian clusters around `centers` random centres (x: [n, dim]; y: [n] integer cluster)."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-spread, spread, size=(centers, dim))
    y = rng.integers(0, centers, size=n)
    return {"x": means[y] + rng.normal(0.0, std, size=(n, dim)), "y": y.astype(np.int64)}


def npz(ctx: DataContext, path: str) -> dict:
    """Arrays from a NumPy .npz file (one per input name); pickled objects are refused."""
    from .formats import read_npz
    try:
        return read_npz(ctx.path(path))
    except GradError as err:
        raise GradError(err.message, ctx.span) from None


def csv(ctx: DataContext, path: str, target: int | str = -1, header: bool = True, delimiter: str = ",",
        standardize: bool = False) -> dict:
    """A numeric CSV file: x = the other columns [n, k], y = the `target` column (name or index) [n]."""
    from .formats import read_csv
    out = read_csv(ctx.path(path), target, header, delimiter)
    if standardize:
        out["x"] = (out["x"] - out["x"].mean(0)) / np.where(out["x"].std(0) > 0, out["x"].std(0), 1.0)
    return out


def idx(ctx: DataContext, x: str, y: str = "", normalize: float = 1.0) -> dict:
    """IDX files (gzipped or not): x = the array in file `x` divided by `normalize`, y = file `y`."""
    from .formats import read_idx
    out = {"x": read_idx(ctx.path(x)).astype(np.float64) / normalize}
    if y:
        out["y"] = read_idx(ctx.path(y)).astype(np.int64)
    return out


MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def mnist(ctx: DataContext, split: str = "train", flatten: bool = True, limit: int = 0) -> dict:
    """MNIST digits from the data directory: x = pixels in [0, 1] ([n, 784], or [n, 1, 28, 28] with
    flatten: false), y = labels 0..9 ([n], integers). `limit` keeps the first examples only."""
    from .fetch import data_dir
    from .formats import read_idx
    if split not in MNIST_FILES:
        raise GradError(f"mnist split must be \"train\" or \"test\", got {split!r}", ctx.span)
    folder = (ctx.data_dir or data_dir()) / "mnist"
    paths = [folder / name for name in MNIST_FILES[split]]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise GradError(f"MNIST is not in {folder} (missing {missing[0].name}); run `gradlang data fetch mnist`, "
                        "or point --data-dir / GRADLANG_DATA at a folder holding mnist/", ctx.span)
    images, labels = (read_idx(p) for p in paths)
    if len(images) != len(labels):
        raise GradError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels", ctx.span)
    if labels.max(initial=0) > 9:
        bad = int(np.argmax(labels > 9))
        raise GradError(f"{paths[1]}: label {labels[bad]} of example {bad} is out of range 0..9", ctx.span)
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = images.astype(np.float32)
    x /= 255.0            # in place: a second 188 MB array for the training set would double the peak
    x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, 28, 28)
    return {"x": x, "y": labels.astype(np.int64)}


# ---- sequences, text and generative-model data (deep-learning examples) ---------------------------

SEQUENCE_TASKS = ("reverse", "sort", "copy")


def digit_sequences(ctx: DataContext, task: str = "reverse", n: int = 10000, length: int = 8, digits: int = 10,
                    split: str = "train", seed: int = 0) -> dict:
    """Digit-sequence tasks for sequence models, as teacher-forced decoder input: x = the digits, a
    separator (token `digits`), then the answer without its last token ([n, 2·length]); y = the answer
    ([n, length]): the digits reversed, sorted or copied (`task`). A sequence belongs to split "test"
    when a fixed hash of it is 0 mod 5, else to "train", so the two splits never share a sequence."""
    if task not in SEQUENCE_TASKS:
        raise GradError(f"digit_sequences task must be one of {', '.join(SEQUENCE_TASKS)}, got {task!r}", ctx.span)
    if split not in ("train", "test"):
        raise GradError(f"digit_sequences split must be \"train\" or \"test\", got {split!r}", ctx.span)
    if n < 1 or length < 1 or digits < 2:
        raise GradError("digit_sequences needs n ≥ 1, length ≥ 1 and digits ≥ 2", ctx.span)
    if split == "test" and digits ** length < 50 * n or split == "train" and digits ** length < 2 * n:
        raise GradError(f"there are too few sequences of {length} digits for {n} distinct-split examples", ctx.span)
    rng = np.random.default_rng(seed)
    weights = np.array([2 * k + 3 for k in range(length)])
    found, have = [], 0
    while have < n:
        draw = rng.integers(0, digits, size=(4 * n, length))
        held_out = (draw @ weights) % 5 == 0
        keep = draw[held_out if split == "test" else ~held_out]
        found.append(keep)
        have += len(keep)
    seqs = np.concatenate(found)[:n]
    answer = {"reverse": seqs[:, ::-1], "sort": np.sort(seqs, axis=1), "copy": seqs}[task]
    separator = np.full((n, 1), digits)
    x = np.concatenate([seqs, separator, answer[:, :-1]], axis=1)
    return {"x": x.astype(np.int64), "y": np.ascontiguousarray(answer).astype(np.int64)}


def _text_file(ctx: DataContext, file: str) -> Path:
    """A text file: an absolute path, a path relative to the program's folder, or one in the data directory."""
    from .fetch import data_dir
    candidates = [Path(file)] if Path(file).is_absolute() else [ctx.folder / file, (ctx.data_dir or data_dir()) / file]
    for path in candidates:
        if path.is_file():
            return path
    raise GradError(f"no text file {file!r} (looked in {' and '.join(str(p.parent) for p in candidates)}); point "
                    "--data-dir / GRADLANG_DATA at a folder holding it", ctx.span)


def text_chars(ctx: DataContext, file: str = "text/tinyshakespeare.txt", length: int = 64, split: str = "train",
               valid_fraction: float = 0.1, stride: int = 0) -> dict:
    """A text file as character sequences for a language model: x = [n, length] character ids, y = the
    next character at each position; the vocabulary is the file's distinct characters, sorted (field
    `vocab`). "train" is the first 1 − valid_fraction of the text, "valid" the rest; sequences start
    every `stride` characters (0: every `length`, no overlap)."""
    if split not in ("train", "valid"):
        raise GradError(f"text_chars split must be \"train\" or \"valid\", got {split!r}", ctx.span)
    if length < 1 or stride < 0 or not 0 < valid_fraction < 1:
        raise GradError("text_chars needs length ≥ 1, stride ≥ 0 and 0 < valid_fraction < 1", ctx.span)
    text = _text_file(ctx, file).read_text(encoding="utf-8")
    vocab = np.array(sorted(set(text)))
    ids = np.searchsorted(vocab, np.array(list(text)))
    cut = int(len(ids) * (1 - valid_fraction))
    part = ids[:cut] if split == "train" else ids[cut:]
    starts = np.arange(0, len(part) - length, stride or length)
    if len(starts) == 0:
        raise GradError(f"the {split} text has fewer than {length + 1} characters", ctx.span)
    window = starts[:, None] + np.arange(length)
    return {"x": part[window].astype(np.int64), "y": part[window + 1].astype(np.int64), "vocab": vocab}


def text_words(text: str) -> list[str]:
    """The words of a text as `skipgrams` reads them: lower-cased runs of letters and apostrophes."""
    import re
    return re.findall(r"[a-z]+(?:'[a-z]+)*", text.lower())


def skipgrams(ctx: DataContext, file: str = "text/tinyshakespeare.txt", vocab_size: int = 4000, window: int = 3,
              negatives: int = 5, subsample: float = 1e-3, seed: int = 0) -> dict:
    """Skip-gram pairs with negative samples for word2vec: the `vocab_size` most frequent words of a
    text (others are dropped), frequent words subsampled (keep probability √(t/f) + t/f for frequency
    f, t = `subsample`; 0: keep all); each word paired with every word within a random window of 1 to
    `window` on each side. center, context: [n] word ids; negatives: [n, negatives] ids drawn from the
    unigram distribution to the power 3/4; vocab: the words, most frequent first."""
    from collections import Counter
    if vocab_size < 2 or window < 1 or negatives < 1 or subsample < 0:
        raise GradError("skipgrams needs vocab_size ≥ 2, window ≥ 1, negatives ≥ 1 and subsample ≥ 0", ctx.span)
    words = text_words(_text_file(ctx, file).read_text(encoding="utf-8"))
    counts = Counter(words)
    vocab = [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:vocab_size]]
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.array([index[w] for w in words if w in index], dtype=np.int64)
    freq = np.array([counts[w] for w in vocab], dtype=np.float64)
    rng = np.random.default_rng(seed)
    if subsample > 0:
        f = freq / freq.sum()
        keep = np.minimum(1.0, np.sqrt(subsample / f) + subsample / f)
        ids = ids[rng.random(len(ids)) < keep[ids]]
    reach = rng.integers(1, window + 1, size=len(ids))      # each centre's window size
    centers, contexts = [], []
    for offset in range(1, window + 1):
        for sign in (-1, 1):
            pos = np.arange(len(ids))
            other = pos + sign * offset
            ok = (reach >= offset) & (other >= 0) & (other < len(ids))
            centers.append(ids[pos[ok]])
            contexts.append(ids[other[ok]])
    center, context = np.concatenate(centers), np.concatenate(contexts)
    order = rng.permutation(len(center))
    noise = freq ** 0.75
    drawn = rng.choice(len(vocab), size=(len(center), negatives), p=noise / noise.sum())
    return {"center": center[order], "context": context[order], "negatives": drawn.astype(np.int64),
            "vocab": np.array(vocab)}


def gaussian_ring(ctx: DataContext, n: int = 20000, modes: int = 8, radius: float = 2.0, std: float = 0.02,
                  seed: int = 0) -> dict:
    """A mixture of `modes` Gaussians (std `std`) evenly spaced on a circle of `radius` (x: [n, 2]; y: [n]
    the mode, integers): the usual test of whether a GAN's generator covers every mode."""
    if n < 1 or modes < 1 or radius <= 0 or std < 0:
        raise GradError("gaussian_ring needs n ≥ 1, modes ≥ 1, radius > 0 and std ≥ 0", ctx.span)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, modes, size=n)
    angle = 2 * np.pi * y / modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return {"x": centres + rng.normal(0.0, std, size=(n, 2)), "y": y.astype(np.int64)}


DATA_SOURCES = {"two_moons": two_moons, "line": line, "xor": xor, "spirals": spirals, "blobs": blobs,
                "npz": npz, "csv": csv, "idx": idx, "mnist": mnist,
                "digit_sequences": digit_sequences, "text_chars": text_chars, "skipgrams": skipgrams,
                "gaussian_ring": gaussian_ring}


# the arguments of each file-reading source that name files (the rest generate their data)
_FILE_ARGUMENTS = {"npz": ("path",), "csv": ("path",), "idx": ("x", "y"), "text_chars": ("file",),
                   "skipgrams": ("file",)}
_FILE_DEFAULTS = {"text_chars": {"file": "text/tinyshakespeare.txt"}, "skipgrams": {"file": "text/tinyshakespeare.txt"}}


def paths(spec, folder: Path, data_dir: Path | None = None) -> list[Path]:
    """The files a data source would read, found without reading any (`gradlang run --dry-run`)."""
    from .fetch import data_dir as default_data_dir
    ctx = DataContext(folder, spec.span, data_dir)
    kwargs = {**_FILE_DEFAULTS.get(spec.source, {}), **dict(spec.kwargs)}
    if spec.source == "mnist":
        split = kwargs.get("split", "train")
        return [(data_dir or default_data_dir()) / "mnist" / name for name in MNIST_FILES.get(split, ())]
    found = []
    for key in _FILE_ARGUMENTS.get(spec.source, ()):
        name = kwargs.get(key)
        if not isinstance(name, str) or not name:
            continue
        if spec.source in ("text_chars", "skipgrams") and not Path(name).is_absolute() \
                and not ctx.path(name).is_file():
            found.append((data_dir or default_data_dir()) / name)   # where _text_file looks next
        else:
            found.append(ctx.path(name))
    return found


def load(spec, folder: Path, data_dir: Path | None = None) -> dict:
    return DATA_SOURCES[spec.source](DataContext(folder, spec.span, data_dir), **dict(spec.kwargs))


def check_fields(arrays: dict, inputs: dict, graph, origin: str, span: Span | None = None) -> None:
    """Check data against the program before training on it, naming `origin` (the file) and the field:
    each field the program declares as an input has the declared rank and fixed dimensions, and every
    label or index that reaches one_hot, softmax_cross_entropy or take is in range."""
    from ..ops.shapes import fmt_shape, fmt_type
    notes = (f"the data is declared at {span}",) if span is not None else ()
    for name, spec in inputs.items():
        if name not in arrays:
            continue
        shape = np.shape(arrays[name])
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int)]
        bad = len(shape) != len(spec.shape) or any(shape[i] != d for i, d in fixed)
        if bad:
            why = (f"{len(shape)} dimensions instead of {len(spec.shape)}" if len(shape) != len(spec.shape) else
                   "; ".join(f"dimension {i + 1} is {shape[i]}, not {d}" for i, d in fixed if shape[i] != d))
            raise GradError(f"input {name}: expected {fmt_type(spec.shape, spec.dtype)}, but field {name!r} of "
                            f"{origin} has shape {fmt_shape(shape)} ({why})", spec.span, notes)
    for name, checks in input_index_checks(graph).items():
        if name in arrays:
            for check in checks:
                check.check(np.asarray(arrays[name]), origin, notes)


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
