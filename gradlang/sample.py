"""Text from a trained character-level language model: `gradlang sample` and `sample_text`.

A program can be sampled from when it is a character model in this sense:
- a data declaration made by `text_chars(…)` supplies the vocabulary (the text's distinct characters,
  sorted; a character's id is its index) — the train block's data if it is one, else the first;
- its input `x`, integers `[B, T]`, takes character ids: T a number is the window the model reads
  (a shorter text is padded on the left with newlines), T a symbolic dimension reads the whole text;
- an `output` of shape `[B, V]`, V the vocabulary's size, scores the character after x's last one:
  logits, or probabilities when the output is computed by `softmax` (read as their logarithms).

Each new character is drawn from softmax(logits / temperature) with a generator of its own seed; a
temperature of 0 takes the most likely character every time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GradError
from .frontend.values import DataSpec
from .ops.shapes import INTS, fmt_type

PAD = "\n"   # what a short text is padded with on the left (else a space, else the first character)


@dataclass
class CharModel:
    """How to feed a program characters and read its next-character scores."""

    vocab: np.ndarray        # the characters, by id
    window: int | None       # characters the input holds; None: any number
    output: str              # the output of next-character scores
    probabilities: bool      # the output is a softmax: log it to get logits

    def encode(self, text: str) -> list[int]:
        lookup = {c: i for i, c in enumerate(self.vocab)}
        unknown = sorted({c for c in text if c not in lookup})
        if unknown:
            raise GradError(f"the prime has characters that are not in the model's vocabulary: "
                            f"{', '.join(repr(c) for c in unknown)}")
        return [lookup[c] for c in text]

    def context(self, ids: list[int]) -> np.ndarray:
        """The input for the text so far: its last `window` ids (padded on the left), as a batch of one."""
        pad = self.encode(next((c for c in (PAD, " ") if c in self.vocab), self.vocab[0]))
        if self.window is None:
            return np.array([ids or pad], dtype=np.int64)
        recent = ids[-self.window:]
        return np.array([pad * (self.window - len(recent)) + recent], dtype=np.int64)


def char_model(program, output: str | None = None) -> CharModel:
    """Check that `program` is a character model (see the module's docstring) and say how to feed it."""
    data, trained = program.elaborated.data, program.plan.get("data")
    texts = sorted((name for name, spec in data.items() if spec.source == "text_chars"),
                   key=lambda name: data[name] != trained)          # the training data's first
    if texts:
        vocab = program.load_data(texts[0])["vocab"]
    elif isinstance(trained, DataSpec) and trained.source == "text_chars":
        vocab = program.load_data()["vocab"]
    else:
        raise GradError("sampling text needs a character model: a `data NAME = text_chars(…)` declaration "
                        "gives its vocabulary, and this program has none")
    spec = program.elaborated.inputs.get("x")
    if spec is None or spec.dtype not in INTS or len(spec.shape) != 2:
        raise GradError("sampling text needs an input `x : i64[B, T]` of character ids (what text_chars feeds), got "
                        + (fmt_type(spec.shape, spec.dtype) if spec else "no input x"), spec.span if spec else None)
    graph = program.elaborated.graph
    types = {name: (graph.shape(graph.outputs[f"output:{name}"]), graph.dtype(graph.outputs[f"output:{name}"]))
             for name in program.output_names}
    fitting = [name for name, (shape, _) in types.items() if len(shape) == 2 and shape[1] == len(vocab)]
    if output is None:
        if len(fitting) != 1:
            have = ", ".join(f"{name} {fmt_type(*t)}" for name, t in types.items()) or "none"
            raise GradError(f"sampling text needs {'one' if fitting else 'an'} `output` of the next character's "
                            f"logits, shape [B, {len(vocab)}] (such as `output next = logits[:, -1]`)"
                            f"{'; name it with --output' if fitting else ''}; the program's outputs: {have}")
        output = fitting[0]
    elif output not in fitting:
        raise GradError(f"output {output!r} is not one of the program's outputs of shape [B, {len(vocab)}] "
                        f"({', '.join(fitting) or 'it has none'})")
    window = spec.shape[1] if isinstance(spec.shape[1], int) else None
    probabilities = graph.op(graph.outputs[f"output:{output}"]) == "softmax"
    return CharModel(vocab, window, output, probabilities)


def sample_text(program, length: int, prime: str = "", temperature: float = 1.0, seed: int = 0,
                output: str | None = None) -> str:
    """`prime` followed by `length` characters drawn one at a time from the program's output (dropout
    off); the same seed gives the same text."""
    if temperature < 0:
        raise GradError(f"the temperature must be ≥ 0, got {temperature}")
    model = char_model(program, output)
    rng = np.random.default_rng(seed)
    ids = model.encode(prime)
    start = len(ids)
    wanted = [f"output:{model.output}"]
    for _ in range(length):
        scores = np.asarray(program.run(wanted, {"x": model.context(ids)})[0][0], dtype=np.float64)
        if model.probabilities:
            with np.errstate(divide="ignore"):
                scores = np.log(scores)
        ids.append(next_char(scores, temperature, rng))
    return prime + "".join(model.vocab[ids[start:]])


def next_char(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A character id drawn from softmax(logits / temperature); the most likely one at temperature 0."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))
