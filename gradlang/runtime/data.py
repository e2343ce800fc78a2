"""Data sources a program can name in `data d = source(...)`, and batching.

A source returns a dict of arrays keyed by the program's input names (its first axis indexes the
examples). Synthetic sources take a `seed` of their own, so a data set does not change when the
training seed does. Each source declares the range of every numeric setting, and a generated one the
bytes it will make (`@data_source`): both are checked before it does any work, with the error at the
setting in the program.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import GradError, Span
from ..analysis.index_checks import input_index_checks
from .formats import read_csv, read_idx, read_npz, read_text, refuse_oversize


@dataclass(frozen=True)
class DataContext:
    folder: Path          # the program's folder: relative file paths start here
    span: Span | None     # the data declaration, for errors
    data_dir: Path | None = None   # where named data sets live (see fetch.data_dir)

    def path(self, name: str) -> Path:
        return Path(name) if Path(name).is_absolute() else self.folder / name


# ---- what a source's settings may be --------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    """The numbers a setting may take: finite, from `low` to `high` (None: unbounded; a string names
    another setting, as in `classes ≤ n`), the ends excluded when `above` / `below`."""

    low: float | str | None = None
    high: float | str | None = None
    above: bool = False
    below: bool = False

    def refusal(self, value, settings: dict) -> str | None:
        """What the value must be, in words (the bound it crosses), when `value` is not in the range;
        else None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "a number"
        low, high = (settings[end] if isinstance(end, str) else end for end in (self.low, self.high))
        too_low = low is not None and (value <= low if self.above else _below(value, low))
        too_high = high is not None and (value >= high if self.below else value > high)
        finite = not isinstance(value, float) or math.isfinite(value)
        if finite and not too_low and not too_high:
            return None
        bounds = [f"{sign} {_bound(end, settings)}" for end, sign, crossed in
                  ((self.low, ">" if self.above else "≥", too_low or not finite),
                   (self.high, "<" if self.below else "≤", too_high or not finite)) if end is not None and crossed]
        return " and ".join(bounds) if finite else " ".join(["a finite number", " and ".join(bounds)]).rstrip()


def _below(value: float, low: float) -> bool:
    """value < low, −0.0 counting as below 0.0: NumPy refuses a scale of −0.0 (its sign bit is set)."""
    return value < low or value == low and math.copysign(1, value) < math.copysign(1, low)


@dataclass(frozen=True)
class Choice:
    """The strings a setting may take."""

    options: tuple

    def refusal(self, value, settings: dict) -> str | None:
        return None if value in self.options else " or ".join(f'"{option}"' for option in self.options)


def _bound(end, settings: dict) -> str:
    return f"{end} ({_show(settings[end])})" if isinstance(end, str) else f"{end:,}" if isinstance(end, int) \
        else f"{end:g}"


def _show(value) -> str:
    """A setting's value as the program would write it (a long integer shortened)."""
    if isinstance(value, str):
        return f'"{value}"'
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 24 else f"{text[:12]}… ({len(text)} digits)"


INT64_MAX = 2 ** 63 - 1
COUNT = Range(1, INT64_MAX)                   # a number of examples, classes, dimensions, …
COUNT_OR_0 = Range(0, INT64_MAX)              # 0 meaning "all" or "the default"
SCALE = Range(0)                              # a noise level, standard deviation or spread
POSITIVE = Range(0, above=True)
SEED = Range(0)
HALF_MAX = float(np.finfo(np.float64).max) / 2   # the ends of a uniform draw, whose width must be finite


@dataclass(frozen=True)
class _Declared:
    defaults: dict
    rules: dict               # setting → Range or Choice
    size: Callable | None     # size(**settings): the bytes of the arrays a generated data set is made of


_DECLARED: dict[str, _Declared] = {}


def data_source(size: Callable[..., int] | None = None, **rules):
    """Declare what a source's settings may be (`rules`: setting → Range or Choice) and, for generated
    data, `size(**settings)`: the bytes of the arrays it makes (its named parameters are the settings the
    size depends on). The source checks them before it does any work (see check_settings), and any error
    of its own without a place is placed at the data declaration."""
    def declare(source):
        signature = inspect.signature(source)
        defaults = {p.name: p.default for p in list(signature.parameters.values())[1:]
                    if p.default is not inspect.Parameter.empty}
        _DECLARED[source.__name__] = _Declared(defaults, rules, size)

        @functools.wraps(source)
        def checked(ctx: DataContext, *args, **kwargs):
            settings = signature.bind(ctx, *args, **kwargs).arguments
            check_settings(source.__name__, {k: v for k, v in settings.items() if k != "ctx"}, ctx.span)
            try:
                return source(ctx, *args, **kwargs)
            except GradError as err:
                if err.span is not None:
                    raise
                raise GradError(err.message, ctx.span, err.notes) from None
        return checked
    return declare


def check_settings(source: str, kwargs: dict, span: Span | None = None) -> None:
    """Refuse a setting of data source `source` outside its declared range, and settings that would
    make more bytes of data than the memory limit, before anything is made; `span` is the source's call
    in the program, and each error points at the setting there."""
    declared = _DECLARED[source]
    settings = {**declared.defaults, **kwargs}
    for name, rule in declared.rules.items():
        requirement = rule.refusal(settings[name], settings)
        if requirement is not None:
            raise GradError(f"{source}({name}: {_show(settings[name])}): {name} must be {requirement}",
                            setting_span(span, name))
    if declared.size is not None:
        used = [p.name for p in inspect.signature(declared.size).parameters.values() if p.kind != p.VAR_KEYWORD]
        call = f"{source}({', '.join(f'{k}: {_show(settings[k])}' for k in used)})"
        with at_setting(span, *used):
            refuse_oversize(declared.size(**settings), call)


@contextmanager
def at_setting(call: Span | None, *names: str):
    """Place a GradError raised inside at the first of `names` set in the call at `call` (see setting_span)."""
    try:
        yield
    except GradError as err:
        raise GradError(err.message, setting_span(call, *names), err.notes) from None


def setting_span(call: Span | None, *names: str) -> Span | None:
    """Where the first of `names` that the call at `call` sets is written (`name: value`), else the call.
    A DataSpec keeps only its call's span, so the call is found again in its source, parsed anew; this
    runs only for an error."""
    if call is None:
        return None
    from ..frontend.syntax import ast
    from ..frontend.syntax.parser import parse
    try:
        pending = [parse(call.source.text, call.source.name)]
    except GradError:
        return call
    where = (call.line, call.col, call.end_line, call.end_col)
    while pending:
        node = pending.pop()
        if isinstance(node, (list, tuple)):
            pending.extend(node)
        elif isinstance(node, ast.Call) and (node.span.line, node.span.col, node.span.end_line,
                                             node.span.end_col) == where:
            written = {keyword.name: keyword.span for keyword in node.kwargs}
            return next((written[name] for name in names if name in written), call)
        elif isinstance(node, ast.Node):
            pending.extend(getattr(node, f.name) for f in dataclasses.fields(node))
    return call


# ---- generated data sets --------------------------------------------------------------------------

@data_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, noise=SCALE, seed=SEED)
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


@data_source(size=lambda n, **_: 8 * 2 * n, n=COUNT, slope=Range(), intercept=Range(), noise=SCALE,
             low=Range(-HALF_MAX, "high"), high=Range(-HALF_MAX, HALF_MAX), seed=SEED)
def line(ctx: DataContext, n: int = 100, slope: float = 1.0, intercept: float = 0.0, noise: float = 0.1,
         low: float = -1.0, high: float = 1.0, seed: int = 0) -> dict:
    """Points on y = intercept + slope·x plus Gaussian noise (x, y: [n])."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=n)
    return {"x": x, "y": intercept + slope * x + rng.normal(0.0, noise, size=n)}


@data_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, noise=SCALE, seed=SEED)
def xor(ctx: DataContext, n: int = 4, noise: float = 0.0, seed: int = 0) -> dict:
    """The XOR truth table (x: [n, 2] in {0,1}², y: [n] = x0 xor x1); n > 4 repeats it with noise."""
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    pick = np.arange(n) % 4
    x = corners[pick] + rng.normal(0.0, noise, size=(n, 2)) if noise else corners[pick]
    return {"x": x, "y": (corners[pick, 0] != corners[pick, 1]).astype(np.float64)}


@data_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, classes=Range(1, "n"), noise=SCALE, seed=SEED)
def spirals(ctx: DataContext, n: int = 300, classes: int = 3, noise: float = 0.2, seed: int = 0) -> dict:
    """`classes` interleaved spiral arms (x: [n, 2]; y: [n] integer class), as in CS231n."""
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


@data_source(size=lambda n, centers, dim, **_: 8 * (centers * dim + n * (2 * dim + 1)), n=COUNT, centers=COUNT,
             dim=COUNT, std=SCALE, spread=Range(0, HALF_MAX), seed=SEED)
def blobs(ctx: DataContext, n: int = 300, centers: int = 3, dim: int = 2, std: float = 1.0,
          spread: float = 5.0, seed: int = 0) -> dict:
    """Gaussian clusters around `centers` random centres (x: [n, dim]; y: [n] integer cluster)."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-spread, spread, size=(centers, dim))
    y = rng.integers(0, centers, size=n)
    return {"x": means[y] + rng.normal(0.0, std, size=(n, dim)), "y": y.astype(np.int64)}


# ---- data files -----------------------------------------------------------------------------------

@data_source()
def npz(ctx: DataContext, path: str) -> dict:
    """Arrays from a NumPy .npz file (one per input name); pickled objects are refused."""
    return read_npz(ctx.path(path))


@data_source()
def csv(ctx: DataContext, path: str, target: int | str = -1, header: bool = True, delimiter: str = ",",
        standardize: bool = False) -> dict:
    """A numeric CSV file: x = the other columns [n, k], y = the `target` column (name or index) [n]."""
    out = read_csv(ctx.path(path), target, header, delimiter)
    if standardize:
        spread = out["x"].std(0)
        out["x"] = (out["x"] - out["x"].mean(0)) / np.where(spread > 0, spread, 1.0)
    return out


@data_source(normalize=POSITIVE)
def idx(ctx: DataContext, x: str, y: str = "", normalize: float = 1.0) -> dict:
    """IDX files (gzipped or not): x = the array in file `x` divided by `normalize`, y = file `y`."""
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


@data_source(split=Choice(tuple(MNIST_FILES)), limit=COUNT_OR_0)
def mnist(ctx: DataContext, split: str = "train", flatten: bool = True, limit: int = 0) -> dict:
    """MNIST digits from the data directory: x = pixels in [0, 1] ([n, 784], or [n, 1, 28, 28] with
    flatten: false), y = labels 0..9 ([n], integers). `limit` keeps the first examples only."""
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
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = images.astype(np.float32)
    x /= 255.0            # in place: a second 188 MB array for the training set would double the peak
    x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, 28, 28)
    return {"x": x, "y": labels.astype(np.int64)}


# ---- sequences, text and generative-model data (deep-learning examples) ---------------------------

SEQUENCE_TASKS = ("reverse", "sort", "copy")
TOKEN_MAX = 2 ** 31 - 1        # the largest token id a sequence source makes, so that ids fit an i32


@data_source(size=lambda n, length, **_: 8 * 7 * n * length,   # x, y and the 4n sequences drawn at a time
             task=Choice(SEQUENCE_TASKS), n=COUNT, length=COUNT, digits=Range(2, TOKEN_MAX),
             split=Choice(("train", "test")), seed=SEED)
def digit_sequences(ctx: DataContext, task: str = "reverse", n: int = 10000, length: int = 8, digits: int = 10,
                    split: str = "train", seed: int = 0) -> dict:
    """Digit-sequence tasks for sequence models, as teacher-forced decoder input: x = the digits, a
    separator (token `digits`), then the answer without its last token ([n, 2·length]); y = the answer
    ([n, length]): the digits reversed, sorted or copied (`task`). A sequence belongs to split "test"
    when a fixed hash of it is 0 mod 5, else to "train", so the two splits never share a sequence."""
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


@data_source(length=COUNT, split=Choice(("train", "valid")), valid_fraction=Range(0, 1, above=True, below=True),
             stride=COUNT_OR_0)
def text_chars(ctx: DataContext, file: str = "text/tinyshakespeare.txt", length: int = 64, split: str = "train",
               valid_fraction: float = 0.1, stride: int = 0) -> dict:
    """A text file as character sequences for a language model: x = [n, length] character ids, y = the
    next character at each position; the vocabulary is the file's distinct characters, sorted (field
    `vocab`). "train" is the first 1 − valid_fraction of the text, "valid" the rest; sequences start
    every `stride` characters (0: every `length`, no overlap)."""
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


@data_source(vocab_size=Range(2, INT64_MAX), window=COUNT, negatives=Range(1, "vocab_size"), subsample=SCALE,
             seed=SEED)
def skipgrams(ctx: DataContext, file: str = "text/tinyshakespeare.txt", vocab_size: int = 4000, window: int = 3,
              negatives: int = 5, subsample: float = 1e-3, seed: int = 0) -> dict:
    """Skip-gram pairs with negative samples for word2vec: the `vocab_size` most frequent words of a
    text (others are dropped), frequent words subsampled (keep probability √(t/f) + t/f for frequency
    f, t = `subsample`; 0: keep all); each word paired with every word within a random window of 1 to
    `window` on each side. center, context: [n] word ids; negatives: [n, negatives] ids drawn from the
    unigram distribution to the power 3/4; vocab: the words, most frequent first."""
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


@data_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, modes=COUNT, radius=POSITIVE, std=SCALE, seed=SEED)
def gaussian_ring(ctx: DataContext, n: int = 20000, modes: int = 8, radius: float = 2.0, std: float = 0.02,
                  seed: int = 0) -> dict:
    """A mixture of `modes` Gaussians (std `std`) evenly spaced on a circle of `radius` (x: [n, 2]; y: [n]
    the mode, integers): the usual test of whether a GAN's generator covers every mode."""
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
