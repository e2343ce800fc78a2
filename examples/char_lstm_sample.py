"""Write text with the character LSTM of examples/char_lstm.grad.

    gradlang run examples/char_lstm.grad --out char_lstm.npz     # train (saves the params)
    python examples/char_lstm_sample.py char_lstm.npz --chars 400 --temperature 0.8

The program's `output next` is the distribution of the character that follows a window of 64
characters; sampling slides that window along the text it writes, one character at a time.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import gradlang

PROGRAM = Path(__file__).with_name("char_lstm.grad")


def sample(prog, vocab: np.ndarray, prompt: str, chars: int, temperature: float = 1.0,
           rng: np.random.Generator | None = None) -> str:
    """`chars` characters following `prompt` (at least the model's window long), drawn one by one."""
    rng = rng or np.random.default_rng(0)
    window = prog.inputs["x"].shape[1]
    if len(prompt) < window:
        raise ValueError(f"the prompt needs at least {window} characters, got {len(prompt)}")
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = [lookup[c] for c in prompt]
    for _ in range(chars):
        probs = prog.predict({"x": np.array([ids[-window:]])})["next"][0].astype(np.float64)
        logits = np.log(np.maximum(probs, 1e-12)) / temperature
        p = np.exp(logits - logits.max())
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return "".join(vocab[i] for i in ids[len(prompt):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", help="the .npz file `gradlang run examples/char_lstm.grad` saved")
    parser.add_argument("--chars", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prog = gradlang.compile(PROGRAM)
    prog.load(args.params)
    valid = prog.load_data("valid_text")
    prompt = "".join(valid["vocab"][valid["x"][0]])     # a window of the held-out text to start from
    print(prompt, end="")
    print(sample(prog, valid["vocab"], prompt, args.chars, args.temperature, np.random.default_rng(args.seed)))


if __name__ == "__main__":
    main()
