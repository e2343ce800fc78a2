"""The data sources a program can name in `data d = source(…)`: each one's settings, their defaults,
kinds and ranges, the bytes a generated data set will take, and what it makes.

These are the sources' signatures, the language's side of them: the front end checks a call against
them where the program compiles, and `runtime/data.py` makes the data, one generator per signature
(it checks that the two agree when it is imported). A signature is written as a Python function
without a body so that its parameters, defaults and doc read as the call does.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import GradError, Span
from ..ir.graph import refuse_oversize
from .settings import (
    COUNT,
    COUNT_OR_0,
    HALF_MAX,
    INT64_MAX,
    POSITIVE,
    SCALE,
    SEED,
    Choice,
    Range,
    at_setting,
    setting_span,
)
from .values import describe, show

MNIST_SPLITS = ("train", "test")
SEQUENCE_TASKS = ("reverse", "sort", "copy")
TOKEN_MAX = 2 ** 31 - 1        # the largest token id a sequence source makes, so that ids fit an i32
DEFAULT_TEXT = "text/tinyshakespeare.txt"


@dataclass(frozen=True)
class SourceSignature:
    name: str
    signature: inspect.Signature      # the settings (after the context), with their defaults and kinds
    rules: dict                       # setting → Range or Choice
    size: Callable | None             # size(**settings): the bytes of the arrays a generated data set is made of
    files: tuple[str, ...]            # the settings that name files it reads
    doc: str

    @property
    def defaults(self) -> dict:
        return {name: p.default for name, p in self.signature.parameters.items()
                if p.default is not inspect.Parameter.empty}


DATA_SOURCES: dict[str, SourceSignature] = {}


def _source(size: Callable[..., int] | None = None, files: tuple[str, ...] = (), **rules):
    """Declare a source: `rules` (setting → Range or Choice), `size(**settings)` for generated data (its
    named parameters are the settings the size depends on), and the settings that name files."""
    def declare(signature_of):
        signature = inspect.signature(signature_of)
        settings = signature.replace(parameters=list(signature.parameters.values())[1:])
        DATA_SOURCES[signature_of.__name__] = SourceSignature(
            signature_of.__name__, settings, rules, size, files, inspect.getdoc(signature_of) or "")
        return signature_of
    return declare


# ---- generated data sets --------------------------------------------------------------------------

@_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, noise=SCALE, seed=SEED)
def two_moons(ctx, n: int = 100, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles (x: [n, 2]; y: +1 for the upper moon, −1 for the lower)."""


@_source(size=lambda n, **_: 8 * 2 * n, n=COUNT, slope=Range(), intercept=Range(), noise=SCALE,
         low=Range(-HALF_MAX, "high"), high=Range(-HALF_MAX, HALF_MAX), seed=SEED)
def line(ctx, n: int = 100, slope: float = 1.0, intercept: float = 0.0, noise: float = 0.1, low: float = -1.0,
         high: float = 1.0, seed: int = 0):
    """Points on y = intercept + slope·x plus Gaussian noise (x, y: [n])."""


@_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, noise=SCALE, seed=SEED)
def xor(ctx, n: int = 4, noise: float = 0.0, seed: int = 0):
    """The XOR truth table (x: [n, 2] in {0,1}², y: [n] = x0 xor x1); n > 4 repeats it with noise."""


@_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, classes=Range(1, "n"), noise=SCALE, seed=SEED)
def spirals(ctx, n: int = 300, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """`classes` interleaved spiral arms (x: [n, 2]; y: [n] integer class), as in CS231n."""


@_source(size=lambda n, centers, dim, **_: 8 * (centers * dim + n * (2 * dim + 1)), n=COUNT, centers=COUNT,
         dim=COUNT, std=SCALE, spread=Range(0, HALF_MAX), seed=SEED)
def blobs(ctx, n: int = 300, centers: int = 3, dim: int = 2, std: float = 1.0, spread: float = 5.0, seed: int = 0):
    """Gaussian clusters around `centers` random centres (x: [n, dim]; y: [n] integer cluster)."""


@_source(size=lambda n, features, **_: 8 * (n * (features + 1) + features), n=COUNT, features=COUNT,
         informative=Range(0, "features"), noise=SCALE, seed=SEED)
def sparse_regression(ctx, n: int = 500, features: int = 100, informative: int = 5, noise: float = 0.5,
                      seed: int = 0):
    """A linear regression where few inputs matter: x: [n, features] standard normal, y: [n] = x·w + noise,
    w zero but for its first `informative` entries (±1…3); `weights` is w (for comparison)."""


# ---- data files -----------------------------------------------------------------------------------

@_source(files=("path",))
def npz(ctx, path: str):
    """Arrays from a NumPy .npz file (one per input name); pickled objects are refused."""


@_source(files=("path",))
def csv(ctx, path: str, target: int | str = -1, features: list = (), header: bool = True, delimiter: str = ",",
        standardize: bool = False):
    """A numeric CSV file: x = the `features` columns [n, k] (names or indices; default: all but the
    target), y = the `target` column (name or index) [n]; `standardize` scales x with the training set's
    mean and std."""


@_source(files=("x", "y"), normalize=POSITIVE)
def idx(ctx, x: str, y: str = "", normalize: float = 1.0):
    """IDX files (gzipped or not): x = the array in file `x` divided by `normalize`, y = file `y`."""


@_source(split=Choice(MNIST_SPLITS), limit=COUNT_OR_0)
def mnist(ctx, split: str = "train", flatten: bool = True, limit: int = 0):
    """MNIST digits from the data directory: x = pixels in [0, 1] ([n, 784], or [n, 1, 28, 28] with
    flatten: false), y = labels 0..9 ([n], integers). `limit` keeps the first examples only."""


@_source(size=lambda n, canvas, **_: 4 * n * (canvas * canvas + 5) + 8 * n, split=Choice(MNIST_SPLITS), n=COUNT,
         canvas=Range(1, 1024), min_size=Range(1, "max_size"), max_size=Range(1, "canvas"), seed=SEED)
def mnist_boxes(ctx, split: str = "train", n: int = 10000, canvas: int = 64, min_size: int = 16, max_size: int = 40,
                seed: int = 0):
    """Single-object detection made from MNIST: each of n digits of the split (drawn at random, distinct
    while n allows) is cropped to its ink, scaled so that its longer side is an integer in [min_size,
    max_size] pixels, and placed at a random position wholly inside a blank canvas × canvas image. x =
    the images [n, 1, canvas, canvas] in [0, 1], y = the digits 0..9 ([n], integers), box = the digit's
    box [n, 4] as (centre x, centre y, width, height) / canvas, the tightest box around its ink."""


@_source(split=Choice(MNIST_SPLITS), limit=COUNT_OR_0)
def cifar10(ctx, split: str = "train", limit: int = 0, flatten: bool = False):
    """CIFAR-10 colour images (the binary version) from the data directory: x = pixels in [0, 1]
    ([n, 3, 32, 32], red, green, blue planes; [n, 3072] with flatten: true), y = labels 0..9 ([n],
    integers; the class names are in batches.meta.txt). `limit` keeps the first examples only."""


# ---- sequences, text and generative-model data (deep-learning examples) ---------------------------

@_source(size=lambda n, length, **_: 8 * 7 * n * length,   # x, y and the 4n sequences drawn at a time
         task=Choice(SEQUENCE_TASKS), n=COUNT, length=COUNT, digits=Range(2, TOKEN_MAX),
         split=Choice(("train", "test")), seed=SEED)
def digit_sequences(ctx, task: str = "reverse", n: int = 10000, length: int = 8, digits: int = 10,
                    split: str = "train", seed: int = 0):
    """Digit-sequence tasks for sequence models, as teacher-forced decoder input: x = the digits, a
    separator (token `digits`), then the answer without its last token ([n, 2·length]); y = the answer
    ([n, length]): the digits reversed, sorted or copied (`task`). A sequence belongs to split "test"
    when a fixed hash of it is 0 mod 5, else to "train", so the two splits never share a sequence."""


@_source(files=("file",), length=COUNT, split=Choice(("train", "valid")),
         valid_fraction=Range(0, 1, above=True, below=True), stride=COUNT_OR_0)
def text_chars(ctx, file: str = DEFAULT_TEXT, length: int = 64, split: str = "train", valid_fraction: float = 0.1,
               stride: int = 0):
    """A text file as character sequences for a language model: x = [n, length] character ids, y = the
    next character at each position; the vocabulary is the file's distinct characters, sorted (field
    `vocab`). "train" is the first 1 − valid_fraction of the text, "valid" the rest; sequences start
    every `stride` characters (0: every `length`, no overlap)."""


@_source(files=("file",), vocab_size=Range(2, INT64_MAX), window=COUNT, negatives=Range(1, "vocab_size"),
         subsample=SCALE, seed=SEED)
def skipgrams(ctx, file: str = DEFAULT_TEXT, vocab_size: int = 4000, window: int = 3, negatives: int = 5,
              subsample: float = 1e-3, seed: int = 0):
    """Skip-gram pairs with negative samples for word2vec: the `vocab_size` most frequent words of a
    text (others are dropped), frequent words subsampled (keep probability √(t/f) + t/f for frequency
    f, t = `subsample`; 0: keep all); each word paired with every word within a random window of 1 to
    `window` on each side. center, context: [n] word ids; negatives: [n, negatives] ids drawn from the
    unigram distribution to the power 3/4; vocab: the words, most frequent first."""


@_source(size=lambda n, **_: 8 * 3 * n, n=COUNT, modes=COUNT, radius=POSITIVE, std=SCALE, seed=SEED)
def gaussian_ring(ctx, n: int = 20000, modes: int = 8, radius: float = 2.0, std: float = 0.02, seed: int = 0):
    """A mixture of `modes` Gaussians (std `std`) evenly spaced on a circle of `radius` (x: [n, 2]; y: [n]
    the mode, integers): the usual test of whether a GAN's generator covers every mode."""


# ---- checking a call ------------------------------------------------------------------------------

_SETTING_TYPES = {"int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
                  "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
                  "bool": (lambda v: isinstance(v, bool), "true or false"),
                  "str": (lambda v: isinstance(v, str), "a string"),
                  "list": (lambda v: isinstance(v, (list, tuple)) and all(
                      isinstance(i, str) or (isinstance(i, int) and not isinstance(i, bool)) for i in v),
                      "a list of column names or indices")}


def check_kinds(source: str, kwargs: dict, span: Span | None) -> None:
    """Each setting must be one the source has, of its declared kind (`target: int | str`): a program's
    `two_moons(n: "a")` is refused at the call; required settings must be given."""
    parameters = DATA_SOURCES[source].signature.parameters
    for p in parameters.values():
        if p.default is inspect.Parameter.empty and p.name not in kwargs:
            raise GradError(f"{source}() needs {p.name}: …", span)
    for name, value in kwargs.items():
        if name not in parameters:
            raise GradError(f"{source}() has no setting {name!r}; known: {', '.join(sorted(parameters))}", span)
        kinds = [k.strip() for k in str(parameters[name].annotation).split("|")]
        checks = [_SETTING_TYPES[k] for k in kinds if k in _SETTING_TYPES]
        if not any(ok(value) for ok, _ in checks):
            want = " or ".join(noun for _, noun in checks)
            raise GradError(f"{source}({name}: …) must be {want} known at compile time, got {describe(value)}",
                            span)


def check_settings(source: str, kwargs: dict, span: Span | None = None) -> dict:
    """Refuse a setting of data source `source` outside its declared range, and settings that would
    make more bytes of data than the memory limit, before anything is made; `span` is the source's call
    in the program, and each error points at the setting there. Returns every setting, defaults filled."""
    declared = DATA_SOURCES[source]
    settings = {**declared.defaults, **kwargs}
    for name, rule in declared.rules.items():
        requirement = rule.refusal(settings[name], settings)
        if requirement is not None:
            raise GradError(f"{source}({name}: {show(settings[name])}): {name} must be {requirement}",
                            setting_span(span, name))
    if declared.size is not None:
        used = [p.name for p in inspect.signature(declared.size).parameters.values() if p.kind != p.VAR_KEYWORD]
        call = f"{source}({', '.join(f'{k}: {show(settings[k])}' for k in used)})"
        with at_setting(span, *used):
            refuse_oversize(declared.size(**settings), call)
    return settings
