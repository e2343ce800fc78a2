"""The data sources' generators and readers, and batching.

A source returns a dict of arrays keyed by the program's input names (its first axis indexes the
examples). Synthetic sources take a `seed` of their own, so a data set does not change when the
training seed does. What each source's settings may be, and the bytes a generated one will make, are
declared with its signature in frontend/sources.py and checked before it does any work, with the
error at the setting in the program.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.index_checks import input_index_checks
from ..errors import GradError, Span
from ..frontend.settings import at_setting, setting_span
from ..frontend.sources import DATA_SOURCES as SIGNATURES
from ..frontend.sources import check_kinds, check_settings
from ..ir.graph import refuse_oversize
from .formats import read_cifar10_batch, read_csv, read_idx, read_npz, read_text

DATA_SOURCES: dict = {}   # name → generator, each checking its settings as a program's call is checked


@dataclass(frozen=True)
class DataContext:
    folder: Path          # the program's folder: relative file paths start here
    span: Span | None     # the data declaration, for errors
    data_dir: Path | None = None   # where named data sets live (see fetch.data_dir)

    def path(self, name: str) -> Path:
        return Path(name) if Path(name).is_absolute() else self.folder / name


def generates(generator):
    """Register `generator` as the maker of the data source of its name, declared in
    frontend/sources.py, whose settings it takes in the same order. Called from Python, the source fills
    in its defaults and checks its settings before it does any work, as a program's call is checked where
    it compiles; any error of its own without a place is placed at the data declaration."""
    declared = SIGNATURES[generator.__name__]
    taken = list(inspect.signature(generator).parameters)[1:]
    if taken != list(declared.signature.parameters):
        raise TypeError(f"data source {generator.__name__} takes {taken}, but its signature declares "
                        f"{list(declared.signature.parameters)}")

    def checked(ctx: DataContext, *args, **kwargs):
        kwargs = dict(declared.signature.bind_partial(*args, **kwargs).arguments)
        check_kinds(declared.name, kwargs, ctx.span)
        settings = check_settings(declared.name, kwargs, ctx.span)
        try:
            return generator(ctx, **settings)
        except GradError as err:
            if err.span is not None:
                raise
            raise GradError(err.message, ctx.span, err.notes) from None
    checked.__name__ = checked.__qualname__ = declared.name
    checked.__doc__ = declared.doc
    checked.__signature__ = declared.signature.replace(
        parameters=[inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                    *declared.signature.parameters.values()])
    DATA_SOURCES[declared.name] = checked
    return checked


# ---- generated data sets --------------------------------------------------------------------------

@generates
def two_moons(ctx, n, noise, seed) -> dict:
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


@generates
def line(ctx, n, slope, intercept, noise, low, high, seed) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=n)
    return {"x": x, "y": intercept + slope * x + rng.normal(0.0, noise, size=n)}


@generates
def xor(ctx, n, noise, seed) -> dict:
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    pick = np.arange(n) % 4
    x = corners[pick] + rng.normal(0.0, noise, size=(n, 2)) if noise else corners[pick]
    return {"x": x, "y": (corners[pick, 0] != corners[pick, 1]).astype(np.float64)}


@generates
def spirals(ctx, n, classes, noise, seed) -> dict:
    rng = np.random.default_rng(seed)
    y = np.sort(np.arange(n) % classes)            # arm k has n // classes points, or one more
    counts = np.bincount(y, minlength=classes)[y]
    along = np.arange(n) - np.searchsorted(y, y)   # each point's place on its arm
    # np.linspace(0, 1, count) on each arm, computed as linspace does: place · (1 / (count − 1)), the last 1
    last = (along == counts - 1) & (counts > 1)
    r = np.where(last, 1.0, along * (1.0 / np.maximum(counts - 1, 1)))
    theta = y * (2 * np.pi / classes) + r * 4.0 + rng.normal(0.0, noise, size=n)
    x = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    order = rng.permutation(n)
    return {"x": x[order], "y": y[order].astype(np.int64)}


@generates
def blobs(ctx, n, centers, dim, std, spread, seed) -> dict:
    rng = np.random.default_rng(seed)
    means = rng.uniform(-spread, spread, size=(centers, dim))
    y = rng.integers(0, centers, size=n)
    return {"x": means[y] + rng.normal(0.0, std, size=(n, dim)), "y": y.astype(np.int64)}


@generates
def sparse_regression(ctx, n, features, informative, noise, seed) -> dict:
    rng = np.random.default_rng(seed)
    weights = np.zeros(features)
    weights[:informative] = rng.uniform(1.0, 3.0, informative) * rng.choice([-1.0, 1.0], informative)
    x = rng.standard_normal((n, features))
    return {"x": x, "y": x @ weights + rng.normal(0.0, noise, size=n), "weights": weights}


# ---- data files -----------------------------------------------------------------------------------

@generates
def npz(ctx, path) -> dict:
    return read_npz(ctx.path(path))


@generates
def csv(ctx, path, target, features, header, delimiter, standardize) -> dict:
    """The columns as read: `standardize` is applied by whoever holds the training set's statistics
    (`Standardization`: a program scales every standardized set with its training data's)."""
    return read_csv(ctx.path(path), target, header, delimiter, features)


def standardizes(spec) -> bool:
    """Whether a data source's features are to be scaled with the training set's statistics."""
    return spec is not None and spec.source == "csv" and bool(dict(spec.kwargs).get("standardize", False))


@dataclass(frozen=True)
class Standardization:
    """The mean and standard deviation of each feature column of the training data (field `x`), which
    scale that set and every other standardized one alike (validation, test, predict inputs). A column
    that does not vary is shifted only. Saved beside the params under `KEYS`."""

    mean: np.ndarray
    std: np.ndarray
    KEYS = ("standardize:x:mean", "standardize:x:std")

    @classmethod
    def of(cls, arrays: dict) -> Standardization:
        x = np.asarray(arrays["x"], dtype=np.float64)
        spread = x.std(0)
        return cls(x.mean(0), np.where(spread > 0, spread, 1.0))

    def apply(self, arrays: dict, origin: str, span: Span | None = None) -> dict:
        x = np.asarray(arrays["x"])
        if x.shape[1:] != self.mean.shape:
            raise GradError(f"{origin}: field 'x' has {x.shape[1:] and x.shape[1]} columns, but the training data "
                            f"that set the standardization had {len(self.mean)}", span)
        return {**arrays, "x": (x - self.mean) / self.std}

    def arrays(self) -> dict:
        return dict(zip(self.KEYS, (self.mean, self.std)))

    @classmethod
    def split(cls, arrays: dict, origin: str) -> tuple[dict, Standardization | None]:
        """A params file's arrays without the statistics, and the statistics (None if it has none)."""
        found = {k: arrays[k] for k in cls.KEYS if k in arrays}
        rest = {k: v for k, v in arrays.items() if k not in cls.KEYS}
        if not found:
            return rest, None
        mean, std = (np.asarray(found.get(k, np.zeros(0)), dtype=np.float64) for k in cls.KEYS)
        if len(found) != 2 or mean.ndim != 1 or mean.shape != std.shape or not np.isfinite(mean).all() \
                or not (np.isfinite(std) & (std > 0)).all():
            raise GradError(f"{origin}: the standardization statistics ({', '.join(cls.KEYS)}) are damaged: "
                            "they must be two vectors of one length, finite, the std above 0")
        return rest, cls(mean, std)


@generates
def idx(ctx, x, y, normalize) -> dict:
    features = read_idx(ctx.path(x)).astype(np.float64)
    features /= normalize
    out = {"x": features}
    if y:
        labels = read_idx(ctx.path(y))
        if labels.dtype.kind not in "iu":
            raise GradError(f"{ctx.path(y)}: the labels (y) must be integers, but this IDX file holds "
                            f"{labels.dtype} values")
        out["y"] = labels.astype(np.int64)
    return out


MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_mnist(ctx, split) -> tuple[np.ndarray, np.ndarray]:
    """The images [n, 28, 28] and labels [n] of an MNIST split as bytes, checked."""
    from .fetch import data_dir
    folder = (ctx.data_dir or data_dir()) / "mnist"
    paths = [folder / name for name in MNIST_FILES[split]]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise GradError(f"MNIST is not in {folder} (missing {missing[0].name}); run `gradlang data fetch mnist`, "
                        "or point --data-dir / GRADLANG_DATA at a folder holding mnist/", ctx.span)
    images, labels = (read_idx(p) for p in paths)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise GradError(f"{paths[0]}: not MNIST images (expected bytes of shape [n, 28, 28], found "
                        f"{images.dtype} of shape {list(images.shape)})")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise GradError(f"{paths[1]}: not MNIST labels (expected bytes of shape [n], found {labels.dtype} of "
                        f"shape {list(labels.shape)})")
    if len(images) != len(labels):
        raise GradError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels", ctx.span)
    if labels.max(initial=0) > 9:
        bad = int(np.argmax(labels > 9))
        raise GradError(f"{paths[1]}: label {labels[bad]} of example {bad} is out of range 0..9", ctx.span)
    return images, labels


@generates
def mnist(ctx, split, flatten, limit) -> dict:
    images, labels = read_mnist(ctx, split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = images.astype(np.float32)
    x /= 255.0            # in place: a second 188 MB array for the training set would double the peak
    x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, 28, 28)
    return {"x": x, "y": labels.astype(np.int64)}


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in]: how much of each input pixel each output pixel covers when a row of size_in
    pixels is stretched or shrunk to size_out (area resampling; the rows sum to 1)."""
    edges = np.arange(size_out + 1) * (size_in / size_out)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixel = np.arange(size_in)[None, :]
    return np.maximum(0.0, np.minimum(ends, pixel + 1) - np.maximum(starts, pixel)) * (size_out / size_in)


@generates
def mnist_boxes(ctx, split, n, canvas, min_size, max_size, seed) -> dict:
    images, labels = read_mnist(ctx, split)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(images))[:n] if n <= len(images) else rng.integers(0, len(images), size=n)
    sizes = rng.integers(min_size, max_size + 1, size=n)     # the longer side of each digit's ink, in pixels
    corner = rng.random((n, 2))                              # where it goes, as a fraction of the room left
    x = np.zeros((n, 1, canvas, canvas), np.float32)
    box = np.empty((n, 4), np.float32)
    for k, (i, size) in enumerate(zip(pick, sizes)):
        digit = images[i].astype(np.float32) / 255.0
        rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
        if not len(rows):       # a blank image (none in MNIST): a one-pixel box of nothing, in the corner
            box[k] = (0.5 / canvas, 0.5 / canvas, 1 / canvas, 1 / canvas)
            continue
        ink = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        scale = size / max(ink.shape)
        h, w = (max(1, min(size, round(side * scale))) for side in ink.shape)
        top, left = (int(f * (canvas - side + 1)) for f, side in zip(corner[k], (h, w)))
        x[k, 0, top:top + h, left:left + w] = _area_weights(ink.shape[0], h) @ ink @ _area_weights(ink.shape[1], w).T
        box[k] = ((left + w / 2) / canvas, (top + h / 2) / canvas, w / canvas, h / canvas)
    np.clip(x, 0.0, 1.0, out=x)
    return {"x": x, "y": labels[pick].astype(np.int64), "box": box}


CIFAR10_FOLDER = "cifar10/cifar-10-batches-bin"     # in the data directory, as `gradlang data fetch cifar10` unpacks it
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}


@generates
def cifar10(ctx, split, limit, flatten) -> dict:
    from .fetch import data_dir
    folder = (ctx.data_dir or data_dir()) / CIFAR10_FOLDER
    paths = [folder / name for name in CIFAR10_FILES[split]]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise GradError(f"CIFAR-10 is not in {folder} (missing {missing[0].name}); run `gradlang data fetch cifar10`, "
                        f"or point --data-dir / GRADLANG_DATA at a folder holding {CIFAR10_FOLDER}/", ctx.span)
    images, labels = [], []
    for path in paths:       # whole files, in order, until `limit` examples are read
        wanted = limit - sum(map(len, labels)) if limit else 0
        batch_images, batch_labels = read_cifar10_batch(path, most=wanted)
        images.append(batch_images)
        labels.append(batch_labels)
        if limit and sum(map(len, labels)) >= limit:
            break
    n = sum(map(len, labels))
    refuse_oversize(4 * n * 3 * 32 * 32, f"cifar10(split: \"{split}\"): {n:,} images as float32", ctx.span)
    x = np.empty((n, 3, 32, 32), np.float32)
    start = 0
    for batch in images:     # each file's bytes converted straight into x: no second float array of the whole set
        np.divide(batch, 255.0, out=x[start:start + len(batch)], dtype=np.float32)
        start += len(batch)
    return {"x": x.reshape(n, -1) if flatten else x, "y": np.concatenate(labels).astype(np.int64)}


# ---- sequences, text and generative-model data (deep-learning examples) ---------------------------



@generates
def digit_sequences(ctx, task, n, length, digits, split, seed) -> dict:
    # digits ** length, capped: 2 ** 64 already exceeds 50·n for any n that passed the size check
    sequences = digits ** min(length, 64)
    if split == "test" and sequences < 50 * n or split == "train" and sequences < 2 * n:
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


@generates
def text_chars(ctx, file, length, split, valid_fraction, stride) -> dict:
    path = _text_file(ctx, file)
    text = read_text(path)
    # the characters' code points (4 bytes each, where a list of one-character strings takes 8 or more)
    codes, ids = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype="<u4"), return_inverse=True)
    vocab = np.array([chr(code) for code in codes])
    cut = int(len(ids) * (1 - valid_fraction))
    part = ids[:cut] if split == "train" else ids[cut:]
    if len(part) <= length:
        raise GradError(f"the {split} text of {path} has fewer than {length + 1} characters",
                        setting_span(ctx.span, "length"))
    starts = np.arange(0, len(part) - length, stride or length)
    with at_setting(ctx.span, "length", "stride"):
        refuse_oversize(3 * 8 * len(starts) * length, f"text_chars(length: {length}, stride: {stride}) on {path}")
    window = starts[:, None] + np.arange(length)
    return {"x": part[window].astype(np.int64), "y": part[window + 1].astype(np.int64), "vocab": vocab}


def text_words(text: str) -> list[str]:
    """The words of a text as `skipgrams` reads them: lower-cased runs of letters and apostrophes."""
    import re
    return re.findall(r"[a-z]+(?:'[a-z]+)*", text.lower())


@generates
def skipgrams(ctx, file, vocab_size, window, negatives, subsample, seed) -> dict:
    from collections import Counter
    path = _text_file(ctx, file)
    words = text_words(read_text(path))
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
    if window >= len(ids):
        raise GradError(f"skipgrams(window: {window}): the window must be narrower than the text, which has "
                        f"{len(ids)} words (of the vocabulary, after subsampling) in {path}",
                        setting_span(ctx.span, "window"))
    reach = rng.integers(1, window + 1, size=len(ids))      # each centre's window size
    pos = np.arange(len(ids))
    pairs = int(np.minimum(reach, pos).sum() + np.minimum(reach, len(ids) - 1 - pos).sum())
    with at_setting(ctx.span, "negatives", "window"):
        refuse_oversize(8 * (2 + negatives) * pairs,
                        f"skipgrams(window: {window}, negatives: {negatives}) on {path}, {pairs:,} pairs,")
    centers, contexts = [], []
    for offset in range(1, window + 1):
        for sign in (-1, 1):
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


@generates
def gaussian_ring(ctx, n, modes, radius, std, seed) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, modes, size=n)
    angle = 2 * np.pi * y / modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return {"x": centres + rng.normal(0.0, std, size=(n, 2)), "y": y.astype(np.int64)}


def paths(spec, folder: Path, data_dir: Path | None = None) -> list[Path]:
    """The files a data source would read, found without reading any (`gradlang run --dry-run`)."""
    from .fetch import data_dir as default_data_dir
    ctx = DataContext(folder, spec.span, data_dir)
    declared = SIGNATURES[spec.source]
    kwargs = {**declared.defaults, **dict(spec.kwargs)}
    if spec.source in ("mnist", "mnist_boxes"):
        split = kwargs.get("split", "train")
        return [(data_dir or default_data_dir()) / "mnist" / name for name in MNIST_FILES.get(split, ())]
    if spec.source == "cifar10":
        split = kwargs.get("split", "train")
        return [(data_dir or default_data_dir()) / CIFAR10_FOLDER / name for name in CIFAR10_FILES.get(split, ())]
    found = []
    for key in declared.files:
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
    each field the program declares as an input has one entry per example along its first dimension,
    the declared rank and fixed dimensions, and no NaN or infinity; the fields have as many examples as
    each other; and every label or index that reaches one_hot, softmax_cross_entropy or take is in range."""
    from ..ops.shapes import fmt_shape, fmt_type
    notes = (f"the data is declared at {span}",) if span is not None else ()
    for name, spec in inputs.items():
        if name not in arrays:
            continue
        values = np.asarray(arrays[name])
        shape = values.shape
        if not shape:
            raise GradError(f"input {name}: field {name!r} of {origin} is a single value, but a data field holds one "
                            "entry per example along its first dimension"
                            + ("" if spec.shape else f" (and input {name} : {fmt_type((), spec.dtype)} has none: "
                                                     f"declare it {fmt_type(('B',), spec.dtype)})"), spec.span, notes)
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int)]
        bad = len(shape) != len(spec.shape) or any(shape[i] != d for i, d in fixed)
        if bad:
            why = (f"{len(shape)} dimensions instead of {len(spec.shape)}" if len(shape) != len(spec.shape) else
                   "; ".join(f"dimension {i + 1} is {shape[i]}, not {d}" for i, d in fixed if shape[i] != d))
            raise GradError(f"input {name}: expected {fmt_type(spec.shape, spec.dtype)}, but field {name!r} of "
                            f"{origin} has shape {fmt_shape(shape)} ({why})", spec.span, notes)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            position = int(np.argmin(np.isfinite(values.reshape(-1))))
            example = position // max(1, math.prod(shape[1:]))
            raise GradError(f"{origin}: field {name!r}, example {example} (counting from 0) holds "
                            f"{values.reshape(-1)[position]}: NaN and infinity are not allowed in data",
                            spec.span, notes)
    count_examples(arrays, [name for name in inputs if name in arrays], span, origin)
    for name, checks in input_index_checks(graph).items():
        if name in arrays:
            for check in checks:
                check.check(np.asarray(arrays[name]), origin, notes)


def count_examples(arrays: dict, names: list[str], span: Span | None = None, origin: str | None = None) -> int:
    """The number of examples in fields `names`, which must agree (`origin`: the file, for errors)."""
    where = f"{origin}: " if origin else ""
    single = [name for name in names if np.ndim(arrays[name]) == 0]
    if single:
        raise GradError(f"{where}data field {single[0]!r} is a single value, but a data field holds one entry per "
                        "example along its first dimension", span)
    sizes = {name: len(arrays[name]) for name in names}
    if len(set(sizes.values())) > 1:
        raise GradError(f"{where}data fields have different numbers of examples: "
                        + ", ".join(f"{k}: {v}" for k, v in sizes.items()), span)
    return next(iter(sizes.values())) if sizes else 0


def batches(n: int, batch_size: int, rng: np.random.Generator | None):
    """Index arrays of successive mini-batches of one epoch (shuffled when `rng` is given)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
