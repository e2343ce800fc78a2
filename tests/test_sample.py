"""`gradlang sample`: text from a character model, checked on a tiny model trained in a moment on a text
whose every character has one successor (so the trained model's most likely path is known)."""
import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.cli import main
from gradlang.sample import char_model, sample_text

TEXT = "abcdefg hij\n" * 40          # each character is always followed by the same one
VOCAB = sorted(set(TEXT))

MODEL = """
import nn
data letters = text_chars(file: "letters.txt", length: 8, valid_fraction: 0.2)
input x : i64[B, {window}]
input y : i64[B, {window}]
embed = nn.embedding({vocab}, 8)
readout = nn.dense(8, {vocab})
logits = readout(embed(x))                     # a bigram model: each character predicts the next
loss = cross_entropy(logits, y)
output next = logits[:, -1]
{extra}
train {{
  data = letters
  batch = 16
  steps = 60
  optimizer = adam(lr: 0.1)
}}
"""


def program(folder, window="8", extra="", train=True):
    (folder / "letters.txt").write_text(TEXT)
    path = folder / "model.grad"
    path.write_text(MODEL.format(window=window, vocab=len(VOCAB), extra=extra))
    prog = gradlang.compile(path)
    if train:
        prog.train()
    return prog


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return program(tmp_path_factory.mktemp("sample"))


def test_the_same_seed_writes_the_same_text_within_the_vocabulary(trained):
    text = sample_text(trained, 80, prime="abc", temperature=3.0, seed=1)
    assert text.startswith("abc") and len(text) == 83 and set(text) <= set(VOCAB)
    assert sample_text(trained, 80, prime="abc", temperature=3.0, seed=1) == text
    assert sample_text(trained, 80, prime="abc", temperature=3.0, seed=2) != text


def test_temperature_zero_follows_the_most_likely_path(trained):
    greedy = sample_text(trained, 30, prime="ab", temperature=0)
    assert greedy == "ab" + ("cdefg hij\nab" * 3)[:30]          # what the text always does
    assert sample_text(trained, 30, prime="ab", temperature=1e-3, seed=5) == greedy
    model = char_model(trained)
    ids = model.encode("ab")
    for _ in range(30):     # the argmax of the output itself, step by step
        ids.append(int(np.argmax(trained.predict({"x": model.context(ids)})["next"][0])))
    assert "".join(model.vocab[ids]) == greedy


def test_a_short_prime_is_padded_and_a_long_one_cut_to_the_window(trained):
    model = char_model(trained)
    assert model.window == 8
    np.testing.assert_array_equal(model.context(model.encode("ab")), [model.encode("\n" * 6 + "ab")])
    np.testing.assert_array_equal(model.context(model.encode("abcdefg hij")), [model.encode("defg hij")])
    assert sample_text(trained, 5, prime="", temperature=0) == "abcde"     # after a newline comes "a"


def test_a_model_of_any_length_reads_the_whole_text(tmp_path):
    prog = program(tmp_path, window="T")
    assert char_model(prog).window is None
    assert sample_text(prog, 12, prime="h", temperature=0) == "hij\nabcdefg h"


def test_logits_and_their_softmax_sample_the_same_text(tmp_path):
    prog = program(tmp_path, extra="output probs = softmax(logits[:, -1])")
    with pytest.raises(GradError, match="needs one `output` .* name it with --output"):
        sample_text(prog, 5)
    assert char_model(prog, "probs").probabilities and not char_model(prog, "next").probabilities
    assert sample_text(prog, 60, "a", 1.5, 3, output="probs") == sample_text(prog, 60, "a", 1.5, 3, output="next")


def test_the_command_prints_the_prime_and_what_follows(tmp_path, capsys):
    prog = program(tmp_path)
    prog.save(tmp_path / "p.npz")
    args = ["sample", str(tmp_path / "model.grad"), "--params", str(tmp_path / "p.npz"), "--prime", "hij",
            "--length", "40", "--seed", "7", "--temperature", "0.5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out == sample_text(prog, 40, "hij", 0.5, 7) + "\n"
    assert main(args[:-2] + ["--temperature", "0"]) == 0
    assert capsys.readouterr().out == "hij" + ("\nabcdefg hij" * 4)[:40] + "\n"


@pytest.mark.parametrize("change, message", [
    (lambda m: m.replace('text_chars(file: "letters.txt", length: 8, valid_fraction: 0.2)',
                         'npz(path: "letters.npz")'), "needs a character model: a `data NAME = text_chars"),
    (lambda m: m.replace("output next = logits[:, -1]", "output next = logits"), "needs an `output` of the next"),
    (lambda m: m.replace("input x : i64[B, 8]", "input x : f32[B, 8]").replace("embed(x)", "embed(int(x))"),
     "needs an input `x : i64[B, T]`"),
])
def test_a_program_that_is_not_a_character_model_is_told_why(tmp_path, capsys, change, message):
    (tmp_path / "letters.txt").write_text(TEXT)
    np.savez(tmp_path / "letters.npz", x=np.zeros((4, 8), dtype=np.int64), y=np.zeros((4, 8), dtype=np.int64))
    path = tmp_path / "model.grad"
    path.write_text(change(MODEL.format(window="8", vocab=len(VOCAB), extra="")))
    gradlang.compile(path).save(tmp_path / "p.npz")
    assert main(["sample", str(path), "--params", str(tmp_path / "p.npz")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_prime_outside_the_vocabulary_and_a_negative_temperature_are_errors(trained):
    with pytest.raises(GradError, match="not in the model's vocabulary: 'z', 'é'"):
        sample_text(trained, 5, prime="zaé")
    with pytest.raises(GradError, match="temperature must be ≥ 0"):
        sample_text(trained, 5, temperature=-1)
