"""What users write from what the tools print, and the limits they meet: a param named as it is printed
(`deep.layers.0.W`), and a recurrence over a symbolic length refused with the reason."""
import numpy as np
import pytest

import gradlang
from gradlang.errors import GradError


def test_a_param_is_written_as_it_is_printed():
    source = """
import nn
input x : f32[B, 2]
deep = nn.mlp([2, 4, 1])
loss = mean(deep(x) ** 2) + 0.5 * sum(deep.layers.1.W ** 2) + sum(deep.layers[0].b)
"""
    prog = gradlang.compile(source)
    feed = {"x": np.ones((3, 2), np.float32)}
    reference = gradlang.compile(source.replace("deep.layers.1.W", "deep.layers[1].W"))
    reference.set_params(dict(prog.params))
    assert prog.loss(feed) == reference.loss(feed)


@pytest.mark.parametrize("expression, message", [
    ("sum(deep.layers.5.W)", "`.5` is past the end of a list of 2"),
    ("sum(x.0)", "`.0` picks an item of a list (as param names print a layer's position), but this is a tensor"),
])
def test_a_position_on_what_is_not_a_list_is_located(expression, message):
    source = f"import nn\ninput x : f32[B, 2]\ndeep = nn.mlp([2, 4, 1])\nloss = {expression}\n"
    with pytest.raises(GradError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        gradlang.compile(source)
    assert caught.value.span.line == 4


def test_unroll_over_a_symbolic_length_names_the_dimension():
    source = """
import rnn
input xs : f32[B, T, 3]
cell = rnn.lstm_cell(3, 8)
hs = rnn.unroll(cell, xs, rnn.zeros_state(xs, 8, 2))
loss = mean(hs[1][0] ** 2)
"""
    with pytest.raises(GradError, match="T is a symbolic dimension .* needs the length in the input's type") as caught:
        gradlang.compile(source)
    assert caught.value.span.line == 5
    gradlang.compile(source.replace("[B, T, 3]", "[B, 6, 3]"))
