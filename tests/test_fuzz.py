"""Fuzzing the front end: whatever text a .grad file holds, compiling it ends in a program or in a
`GradError` that names a file, line and column — never another exception, never a hang.

Two sources of input:
- programs generated from the grammar (declarations, layers, functions, loops, calls of every builtin
  with plausible and implausible arguments), run as they are and after a small mutation (a token
  dropped, doubled or replaced, two lines swapped) that makes most of them subtly invalid;
- byte-level mutations of every example and standard-library file.

A program that compiles is also differentiated, and its loss and gradients are computed once on a
random feed (unless it is large, which would cost seconds a case): the later stages must hold up too.
Each case runs under a SIGALRM guard, so a hang fails the case instead of stalling the suite.

The default run checks a few hundred cases; `pytest -m fuzz tests/test_fuzz.py` runs tens of thousands.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradlang
from gradlang.errors import GradError
from gradlang.ops import registry

ROOT = Path(__file__).resolve().parent.parent
SEED_FILES = sorted((ROOT / "examples").glob("*.grad")) + sorted((ROOT / "stdlib").glob("*.grad"))
# read once: hypothesis needs the same draws to give the same data for the whole run
SEED_TEXTS = [(path.name, path.read_bytes()) for path in SEED_FILES]
SECONDS_PER_CASE = 20          # generous: the machine is shared; a hang is minutes, not seconds
MAX_NODES_TO_RUN = 600         # larger programs (the unrolled LSTM) are compiled, not differentiated and run
LONG_RUN = int(os.environ.get("GRADLANG_FUZZ_EXAMPLES", "20000"))
PROGRESS = os.environ.get("GRADLANG_FUZZ_PROGRESS")   # a file to append the case count to, to watch a long run

FUZZ_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much])


class CaseTimedOut(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise CaseTimedOut in the main thread after `seconds` (a case that hangs fails, it does not stall)."""
    def expire(signum, frame):
        raise CaseTimedOut(f"the case ran longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_WORK = Path(tempfile.mkdtemp(prefix="gradlang-fuzz-"))
_count = [0]


def compile_and_run(data: bytes, name: str = "fuzz.grad") -> str:
    """Compile `data` as a .grad file, and if that succeeds differentiate it and run one loss and gradient
    computation on a random feed. Returns "ok" or "error"; anything but a located GradError fails."""
    _count[0] += 1
    if PROGRESS and _count[0] % 500 == 0:
        with open(PROGRESS, "a") as f:
            f.write(f"{_count[0]} cases\n")
    path = _WORK / name
    path.write_bytes(data)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))   # as the command line does
    try:
        with time_limit(SECONDS_PER_CASE), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                program = gradlang.compile(path)
                if len(program.forward_graph) > MAX_NODES_TO_RUN:
                    return "ok"
                loss = program.losses[0]   # named: which loss a plan trains is the training loop's question
                program.gradient_graph(loss)
                feed = random_feed(program)
                program.loss(feed, loss)
                program.gradients(feed, loss)
            except GradError as err:
                assert_located(err, path)
                return "error"
        return "ok"
    finally:
        sys.setrecursionlimit(limit)


def random_feed(program, batch: int = 2) -> dict:
    rng = np.random.default_rng(0)
    feed = {}
    for name, info in program.inputs.items():
        shape = tuple(batch if isinstance(d, str) else d for d in info.shape)
        if info.dtype.startswith("f"):
            feed[name] = rng.normal(size=shape).astype(info.dtype.replace("f", "float"))
        elif info.dtype == "bool":
            feed[name] = rng.random(shape) < 0.5
        else:
            feed[name] = rng.integers(0, 3, size=shape).astype(info.dtype.replace("i", "int"))
    return feed


_HEAD = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): error: \S")


def assert_located(err: GradError, path: Path) -> None:
    """The error points at a line and column of a real file, and formats as a compiler error."""
    text = err.format()
    assert err.span is not None, f"an error without a location: {text}"
    head = _HEAD.match(text)
    assert head, text
    assert int(head["line"]) >= 1 and int(head["col"]) >= 1, text
    shown = head["file"]
    assert shown == str(path) or shown.startswith("<stdlib>/") or Path(shown).is_file(), text
    lines = text.split("\n")
    assert len(lines) >= 3 and set(lines[2].split("|", 1)[1].strip()) == {"^"}, text


# ---- programs from the grammar -----------------------------------------------------------------

NAMES = ["x", "y", "w", "b", "h", "k", "net", "zz", "B", "step", "nn", "self", "i"]
# every primitive that is a builtin by its own name, then the other one-argument functions
UNARY = [*registry.surface(), "sqrt", "float", "int", "softmax", "log_softmax", "softplus", "log_sigmoid", "gelu",
         "swish", "elu", "leaky_relu", "identity", "flatten", "swap_last", "dropout", "len", "range"]
REDUCERS = ["sum", "mean", "max", "min", "logsumexp", "argmax", "softmax"]
BINARY = ["maximum", "minimum", "matmul", "dot", "mse", "hinge", "cross_entropy", "binary_cross_entropy",
          "softmax_cross_entropy", "accuracy", "one_hot", "take", "reshape", "broadcast_to", "transpose",
          "concat", "stack", "split", "attention", "masked_fill", "causal_mask", "dropout_mask",
          "random_normal", "conv2d", "conv2d_transpose", "max_pool2d", "avg_pool2d", "grad", "where"]
OPS = ["+", "-", "*", "/", "@", "**", "==", "!=", "<", "<=", ">", ">="]
NUMBERS = ["0", "1", "2", "3", "4", "-1", "0.5", "1e-3", "1e38", "1e39", "1e999", "2147483648",
           "99999999999999999999", "0.0", "10000", "1.5e-45"]
DIMS = ["1", "2", "3", "4", "B", "T", "0", "-1", "2.5", "n", "100000", "1000000000", "[2]", '"a"']
TYPES = ["f32", "f64", "i32", "i64", "bool", "float", "int", "f16", ""]


def _join(parts):
    return ", ".join(parts)


@st.composite
def expressions(draw, depth: int = 0):
    leaf = st.one_of(st.sampled_from(NAMES), st.sampled_from(NUMBERS),
                     st.sampled_from(["true", "false", '"s"', "[]", "[1, 2]", "[[1, 2], [3, 4]]", "x.shape",
                                      "x.T", "w.shape[0]", "net.params", "range(3)", "len(x.shape)"]))
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        return draw(leaf)
    sub = expressions(depth + 1)
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return f"{draw(sub)} {draw(st.sampled_from(OPS))} {draw(sub)}"
    if kind == 1:
        return f"-{draw(sub)}"
    if kind == 2:
        return f"{draw(st.sampled_from(UNARY))}({draw(sub)})"
    if kind == 3:
        extra = draw(st.sampled_from(["", ", axis: 0", ", axis: 1", ", axis: -1", ", axis: 5", ", keepdims: true",
                                      ", axis: [0, 1]", ", 1"]))
        return f"{draw(st.sampled_from(REDUCERS))}({draw(sub)}{extra})"
    if kind == 4:
        args = draw(st.lists(sub, min_size=1, max_size=3))
        kw = draw(st.sampled_from(["", "axis: 0", "stride: 2", "padding: 1", "rate: 0.5", "size: 2", "causal: true"]))
        return f"{draw(st.sampled_from(BINARY))}({_join(args + ([kw] if kw else []))})"
    if kind == 5:
        index = draw(st.sampled_from(["0", "-1", "1:", ":, 0", ":2", "::2", "::-1", "5", "0, 0, 0", ":, 1:3", "i"]))
        return f"{draw(sub)}[{index}]"
    if kind == 6:
        return f"[{_join(draw(st.lists(sub, min_size=0, max_size=3)))}]"
    if kind == 7:
        return f"[{draw(sub)} for i in {draw(st.sampled_from(['range(3)', 'range(0)', 'x.shape', '[1, 2]', 'x']))}]"
    if kind == 8:
        return f"({draw(sub)})"
    return f"{draw(sub)}.{draw(st.sampled_from(['shape', 'T', 'params', 'W', 'layers', 'zz']))}"


def type_specs():
    return st.builds(lambda t, dims: f"{t}[{_join(dims)}]" if dims is not None else t,
                     st.sampled_from(TYPES), st.one_of(st.none(), st.lists(st.sampled_from(DIMS), max_size=4)))


@st.composite
def statements(draw, depth: int = 0):
    kind = draw(st.integers(0, 11 if depth == 0 else 6))
    e = expressions()
    if kind <= 2:
        return f"{draw(st.sampled_from(NAMES))} = {draw(e)}"
    if kind == 3:
        return f"param {draw(st.sampled_from(NAMES))} : {draw(type_specs())}" + draw(
            st.sampled_from(["", " = zeros", " = ones", " = normal(std: 0.1)", " = 0.5", " = [1, 2]", " = he_normal",
                             " = x"]))
    if kind == 4:
        body = draw(st.lists(statements(depth + 1), min_size=1, max_size=3))
        return f"for i in {draw(st.sampled_from(['range(2)', '[1, 2]', 'range(3)', 'x', '3']))} {{\n  " \
               + "\n  ".join(body) + "\n}"
    if kind == 5:
        body = draw(st.lists(statements(depth + 1), min_size=1, max_size=2))
        return f"if {draw(e)} {{\n  " + "\n  ".join(body) + "\n} else {\n  k = 1\n}"
    if kind == 6:
        return f"fn f{draw(st.integers(0, 2))}(a, b = 2) = {draw(e)}"
    if kind == 7:
        return f"input {draw(st.sampled_from(NAMES))} : {draw(type_specs())}"
    if kind == 8:
        body = draw(st.lists(statements(depth + 1), min_size=0, max_size=2))
        forward = draw(e)
        args = draw(st.sampled_from(["3", "2, 3", "-1", "0", "x", "2.5"]))
        return ("layer lay(n, m = 2) {\n  param W : [n, m]\n  " + "\n  ".join(body)
                + f"\n  forward(v) = {forward}\n}}\nnet = lay({args})")
    if kind == 9:
        return draw(st.sampled_from(["import nn", "import rnn", "import attention as at", "from losses import mse",
                                     "import nosuch", "net = nn.mlp([3, 4, 2])", "net = nn.dense(3, 2)",
                                     "net = nn.mlp([3, 4, 2], activation: tanh)", "cell = nn.lstm_cell(3, 4)",
                                     "emb = nn.embedding(5, 3)", "ln = nn.layer_norm(3)"]))
    if kind == 10:
        return f"{draw(st.sampled_from(['metric', 'output']))} {draw(st.sampled_from(NAMES))} = {draw(e)}"
    settings_ = draw(st.lists(st.sampled_from([
        "steps = 3", "epochs = 2", "batch = 2", "optimizer = sgd(lr: 0.1)", "optimizer = adam(lr: 1e-3 * step)",
        "optimizer = sgd(lr: cosine_decay(step, 10, 0.1))", "seed = 1", "data = d", "validation = 0.5",
        "loss = loss", "steps = 0", "optimizer = 3", "stesp = 2", "checkpoint = \"c.npz\""]), max_size=4))
    return "train {\n  " + "\n  ".join(settings_) + "\n}"


@st.composite
def programs(draw) -> str:
    head = draw(st.lists(st.sampled_from([
        "input x : f32[B, 3]", "input y : i32[B]", "input x : f32[B, 2, 4, 4]", "param w : [3, 4]",
        "param b : [4] = zeros", "import nn", "data d = two_moons(n: 8)", "input t : f32[B]"]),
        min_size=0, max_size=4, unique=True))
    body = draw(st.lists(statements(), min_size=0, max_size=6))
    tail = draw(st.sampled_from(["loss = mean(x)", f"loss = {draw(expressions())}", "loss = sum(h)", "",
                                 f"loss = mean({draw(expressions())})"]))
    return "\n".join(head + body + [tail]) + "\n"


_TOKENS = re.compile(r'"[^"\n]*"|\d+\.?\d*(?:[eE][+-]?\d+)?|\w+|\*\*|[=!<>]=|\S|\n')


@st.composite
def token_mutations(draw, text: str) -> str:
    """A small edit at the level of tokens: what a typo or a half-finished edit leaves."""
    tokens = _TOKENS.findall(text)
    if not tokens:
        return text
    i = draw(st.integers(0, len(tokens) - 1))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        del tokens[i]
    elif kind == 1:
        tokens.insert(i, tokens[i])
    elif kind == 2:
        tokens[i] = draw(st.sampled_from(["(", ")", "[", "]", "{", "}", ",", ":", "=", "\n", "for", "in", "if",
                                          "return", "param", "layer", "-", "@", ".", "1e999", '"', "#", "\\"]))
    elif kind == 3:
        j = draw(st.integers(0, len(tokens) - 1))
        tokens[i], tokens[j] = tokens[j], tokens[i]
    else:
        lines = " ".join(tokens).split("\n")
        a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[a], lines[b] = lines[b], lines[a]
        return "\n".join(lines)
    return " ".join(tokens).replace(" \n ", "\n")


@st.composite
def generated(draw) -> str:
    text = draw(programs())
    return draw(token_mutations(text)) if draw(st.booleans()) else text


# ---- byte-level mutations of real files ---------------------------------------------------------

_INTERESTING = [b"(", b")", b"[", b"]", b"{", b"}", b"\n", b",", b":", b"=", b"-", b"**", b"@", b"1e999", b"0",
                b"-1", b"99999999999", b'"', b"#", b"\\\n", b"\xff", b"\xc3", b"\x00", b"for i in range(3) {",
                b"import nn\n", b"grad(", b"\t", b"\r", b"\xe2\x80\xa8", b"1000000000"]


@st.composite
def byte_mutations(draw) -> tuple[str, bytes]:
    name, text = draw(st.sampled_from(SEED_TEXTS))
    data = bytearray(text)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 4))
        if kind == 0 and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == 1:
            del data[at:at + draw(st.integers(1, 24))]
        elif kind == 2:
            data[at:at] = draw(st.sampled_from(_INTERESTING))
        elif kind == 3 and data:
            start = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[start:start + draw(st.integers(1, 60))]
        else:
            data[at:at] = bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=4)))
    return name, bytes(data)


# ---- the properties ---------------------------------------------------------------------------------

@settings(max_examples=120, **FUZZ_SETTINGS)
@given(generated())
def test_generated_programs_compile_or_fail_with_a_located_error(text):
    compile_and_run(text.encode())


@settings(max_examples=120, **FUZZ_SETTINGS)
@given(byte_mutations())
def test_mutated_example_and_stdlib_files_compile_or_fail_with_a_located_error(case):
    name, data = case
    compile_and_run(data, name)


def test_the_generator_reaches_both_outcomes():
    """A generator whose programs all fail (or all compile) would test little: check it makes both."""
    outcomes = []

    @settings(max_examples=40, **FUZZ_SETTINGS)
    @given(programs())
    def collect(text):
        outcomes.append(compile_and_run(text.encode()))

    collect()
    assert outcomes.count("ok") >= 3 and outcomes.count("error") >= 3, outcomes


# Inputs the fuzzer found crashing the compiler, each fixed; kept as plain cases (with where they now fail).
FOUND = [
    ("x = min([i for i in range(3)])\nloss = mean(x)\n", "ok"),          # KeyError 'min' folding a list
    ("input x : f32[B, 3]\nx = max([x for i in range(3)])\nloss = mean(x)\n", "ok"),
    ("x = " + "9" * 5000 + "\nloss = 1.0\n", "1:5"),                     # ValueError: int of > 4300 digits
    ("x = 2 ** 2 ** 2 ** 2 ** 2 ** 2\nloss = 1.0\n", "1:10"),           # a hang: 2 ** 65536 ** …
    ("x = [[0 for i in range(100000)] for j in range(100000)]\nloss = 1.0\n", "1:18"),   # a hang
    ("x = range(-99999999999999999999999, 99999999999999999999999)\nloss = 1.0\n", "1:5"),  # OverflowError
    ("# nothing but a comment\n", "1:1"),                                # an error without a location
    ("loss loss = 0\n", "1:1"),                                          # a loss named `loss`: lost
]


@pytest.mark.parametrize("text, outcome", FOUND)
def test_inputs_the_fuzzer_found(text, outcome):
    if outcome == "ok":
        assert compile_and_run(text.encode()) == "ok"
        return
    with pytest.raises(GradError) as info:
        gradlang.compile(text)
    assert f"{info.value.span.line}:{info.value.span.col}" == outcome


def test_bytes_that_are_not_utf8_are_located():
    (_WORK / "bad.grad").write_bytes(b"loss = 1.0\nx = \xff\xfe\n")
    with pytest.raises(GradError) as info:
        gradlang.compile(_WORK / "bad.grad")
    assert info.value.format().splitlines()[0] == f"{_WORK / 'bad.grad'}:2:5: error: not a UTF-8 text file " \
                                                  "(invalid start byte at byte 15)"


def test_every_seed_file_compiles_unmutated():
    for path in SEED_FILES:
        if path.parent.name == "examples":
            gradlang.compile(path)


def test_the_guard_stops_a_hang():
    with pytest.raises(CaseTimedOut):
        with time_limit(1):
            while True:
                pass


@pytest.mark.fuzz
@settings(max_examples=LONG_RUN, **{**FUZZ_SETTINGS, "derandomize": False})
@given(st.one_of(generated().map(lambda t: ("fuzz.grad", t.encode())), byte_mutations()))
def test_long_fuzz_run(case):
    name, data = case
    compile_and_run(data, name)
