"""A hostile `.grad` file cannot make compiling it run without end, allocate before its sizes are
checked, or crash: compile-time work is bounded in all, sizes are refused before anything is allocated,
every builtin's static settings and every train setting are checked (type, sign, range, NaN) where they
are written, and each refusal is a `file:line:col: error` — the same one from `check`, `run --dry-run`
and `run`.
"""
from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest

import gradlang
from gradlang.analysis.lint import lint
from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.frontend import builtins as bi
from gradlang.frontend import elaborate
from gradlang.frontend.syntax import parse, parse_file
from gradlang.ir.graph import Graph
from gradlang.runtime.optimizers import OPTIMIZERS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ERROR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$")
X = "input x : f32[B, 3]\nparam w : [3]\n"


def refused(source: str, *pieces: str) -> GradError:
    """The GradError compiling `source` raises; it has a place, and its message holds `pieces`."""
    with pytest.raises(GradError) as info:
        gradlang.compile(source)
    assert info.value.span is not None, info.value.message
    for piece in pieces:
        assert piece in info.value.message
    return info.value


def at(err: GradError, source: str) -> tuple[int, int, str]:
    """Where an error points: its line, column, and the text it starts at (to the end of the line)."""
    line = source.split("\n")[err.span.line - 1]
    return err.span.line, err.span.col, line[err.span.col - 1:]


def cli_refuses(tmp_path, capsys, source: str, args: list[str]) -> tuple[int, int, str]:
    """Run `gradlang ARGS prog.grad`: exit 1 with one located error, no traceback; its line, column, message."""
    program = tmp_path / "prog.grad"
    program.write_text(source, encoding="utf-8")
    code = main([args[0], str(program), *args[1:]])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    head = ERROR_LINE.match(err.splitlines()[0])
    assert head and Path(head["file"]).resolve() == program.resolve(), err
    return int(head["line"]), int(head["col"]), head["msg"]


# ---- compile-time work is bounded in all --------------------------------------------------------------

DOUBLING = """
fn f(n) {
  if n > 0 {
    return f(n - 1) + f(n - 1)
  }
  return 1
}
param w : []
loss = (w - f(30)) ** 2
"""


def test_a_recursion_that_doubles_its_calls_runs_out_of_work_not_of_time():
    started = time.monotonic()
    err = refused(DOUBLING, f"more than {elaborate.MAX_WORK:,} steps")
    assert time.monotonic() - started < 60   # 2**31 calls before: it never finished
    assert err.span.line in range(2, 7)      # inside f, where the work ran out


def test_the_tensor_version_is_bounded_too(monkeypatch):
    monkeypatch.setattr(elaborate, "MAX_WORK", 50_000)
    source = ("input x : f32[B]\nfn f(n, t) {\n  if n > 0 {\n    return f(n - 1, t) + f(n - 1, t)\n  }\n"
              "  return t * 2\n}\nparam w : []\nloss = mean((w - f(17, x)) ** 2)\n")
    refused(source, "more than 50,000 steps")


def test_gradients_of_gradients_count_the_nodes_they_differentiate():
    source = ("input x : f32[B]\nparam w : []\nfn h(n, g) {\n  if n > 0 {\n"
              "    return h(n - 1, grad(sum(g * g * w), w))\n  }\n  return g\n}\nloss = mean(h(40, x * w))\n")
    started = time.monotonic()
    err = refused(source, "more than")
    assert time.monotonic() - started < 60   # each grad doubles the graph: 80 s and 2.8 GB before
    assert at(err, source)[2].startswith("grad(")


def work_of(source: str) -> tuple[elaborate.Elaborator, GradError | None]:
    """The elaborator after compiling `source` (and the error that stopped it, if one did)."""
    el = elaborate.Elaborator()
    try:
        el.elaborate_main(parse(source), None)
    except GradError as err:
        return el, err
    return el, None


def test_folding_a_long_list_is_counted_before_its_nodes_are_made(monkeypatch):
    build = X + "xs = [x for i in range(20000)]\nloss = sum(w)\n"
    el, _ = work_of(build)
    monkeypatch.setattr(elaborate, "MAX_WORK", el.work + len(el.graph) + 10_000)   # not enough for 20,000 more
    source = build.replace("loss = sum(w)", "loss = mean(sum(xs)) * sum(w)")
    el, err = work_of(source)
    assert err is not None and at(err, source)[2].startswith("sum(xs)")
    assert len(el.graph) < 100   # refused before its 20,000 nodes were made


@pytest.mark.parametrize("use", ["mean(x) * sum(w) + mean(c)", "mean(x) * sum(w)\nparam q : [2] = c"])
def test_a_list_that_repeats_one_list_is_counted_by_its_numbers_before_it_becomes_an_array(use):
    source = X + ("a = range(1000)\nb = [a for i in range(1000)]\nc = [b for i in range(1000)]\n"
                  f"loss = {use}\n")   # 3,000 items to build, 10⁹ numbers (8 GB) as an array
    started = time.monotonic()
    refused(source, "more than")
    assert time.monotonic() - started < 20


def test_a_long_list_bound_again_and_again_counts_its_items_each_time(monkeypatch):
    monkeypatch.setattr(elaborate, "MAX_WORK", 100_000)
    source = X + "xs = range(100000)\nfor i in range(1000) {\n  ys = xs\n  m = max(xs)\n}\nloss = sum(w)\n"
    err = refused(source, "more than 100,000 steps")
    assert err.span.line in (5, 6)


def test_a_list_that_holds_one_list_many_times_over_is_walked_once_when_bound():
    source = X + ("a = range(1000)\nb = [a for i in range(1000)]\nc = [b for i in range(1000)]\n"
                  "d = [c for i in range(1000)]\ne = d\nloss = sum(w)\n")   # 10¹² items, seen through
    started = time.monotonic()
    gradlang.compile(source)
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.grad")), ids=lambda p: p.stem)
def test_every_example_compiles_well_within_the_work_limit(path):
    el = elaborate.Elaborator()
    el.elaborate_main(parse_file(path), path.resolve().parent)
    assert el.work + len(el.graph) < elaborate.MAX_WORK // 10


# ---- nothing quadratic in the number of params ---------------------------------------------------------

def test_lint_scans_the_params_a_fixed_number_of_times_however_many_there_are(monkeypatch):
    source = ("layer one() {\n  param p : [3]\n}\nps = [one() for i in range(300)]\n"
              "input x : f32[B]\nparam w : []\nloss = mean(floor(x * w) + x * w)\n")
    prog = gradlang.compile(source)
    prog.gradient_graph()
    scans = []
    real = Graph.leaves
    monkeypatch.setattr(Graph, "leaves", lambda self, op: scans.append(op) or real(self, op))
    warnings = lint(prog)
    assert sum(w.kind == "no-gradient" for w in warnings) == 300
    assert len(scans) <= 10   # once per param before: 300


def test_a_function_that_makes_a_layer_names_each_call_s_layer_without_quadratic_search():
    source = ("layer one() {\n  param p : [1]\n}\nfn make() {\n  l = one()\n  return l\n}\n"
              "ls = [make() for i in range(20000)]\nparam w : []\nloss = w * w\n")
    started = time.monotonic()
    prog = gradlang.compile(source)
    assert time.monotonic() - started < 60   # 20,000 layers: about 200 s before, quadratic
    assert len(prog.params) == 20001 and "l.p" in prog.params and "l_20000.p" in prog.params


# ---- sizes are checked before anything is allocated -----------------------------------------------------

@pytest.mark.parametrize("n", ["2 ** 40", "10 ** 12", "2 ** 63", "2 ** 64"])
def test_a_huge_causal_mask_is_refused_at_the_call(n):
    source = X + f"m = causal_mask({n})\nloss = sum(w)\n"
    err = refused(source, "causal_mask", "bytes")
    assert at(err, source)[:2] == (3, 5)


def test_a_causal_mask_over_the_memory_limit_is_refused_before_it_is_made(monkeypatch):
    monkeypatch.setenv("GRADLANG_MAX_BYTES", str(10 ** 6))
    tracemalloc.start()
    try:
        refused(X + "m = causal_mask(3000)\nloss = sum(w)\n", "9,000,000 bytes")   # 9 MB, twice, before
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 ** 6


def test_a_causal_mask_is_still_lower_triangular():
    prog = gradlang.compile("param w : []\nloss = w * w + sum(where(causal_mask(3), 1.0, 0.0))\n")
    assert prog.loss({}) == pytest.approx(6.0)


# ---- what crashed the compiler is a located error ------------------------------------------------------

def test_a_nul_character_in_a_string_is_refused_at_the_string(tmp_path, capsys):
    source = 'data d = csv(path: "a\x00b.csv")\ninput x : f32[B, 2]\ninput y : f32[B]\nparam w : [2]\n' \
             "loss = mean(x @ w - y)\ntrain {\n  data = d\n}\n"
    for args in (["check"], ["run", "--dry-run"], ["run", "--quiet"]):
        line, col, message = cli_refuses(tmp_path, capsys, source, args)
        assert (line, col) == (1, 20) and "NUL" in message


@pytest.mark.parametrize("slicing", ["xs[::0]", "xs[1:2:0]", "x[:, ::0]", "x[::2 - 2]"])
def test_a_slice_step_of_zero_is_refused_at_the_step(slicing):
    source = X + f"xs = [1, 2, 3]\nv = {slicing}\nloss = sum(w)\n"
    err = refused(source, "step cannot be zero")
    assert err.span.line == 4 and at(err, source)[2].startswith(slicing.rsplit(":", 1)[1][:-1])


@pytest.mark.parametrize("call", ["param q : [[2], 3]", "v = broadcast_to(w, [[2], 3])", "v = reshape(x, [[3], -1])",
                                  "v = random_normal([[2]])", "v = random_normal([2.5])", "v = broadcast_to(w, 3)"])
def test_a_list_or_a_fraction_as_a_dimension_is_refused(call):
    refused(X + call + "\nloss = sum(w)\n", "dimension")


@pytest.mark.parametrize("value", ["1e400", "-1e400", "0.0 * 1e400"])
def test_int_of_a_number_that_is_not_finite_is_refused(value):
    refused(X + f"k = int({value})\nloss = sum(w)\n", "finite")


@pytest.mark.parametrize("expression, message", [
    ("float(10 ** 400)", "float() needs a number that fits in a float"),
    ("(-8) ** (1 / 3)", "is not a real number"),
    ("10 ** 400 * 1.0", "cannot compute"),
])
def test_static_arithmetic_that_python_cannot_do_is_refused(expression, message):
    source = X + f"k = {expression}\nloss = sum(w)\n"
    assert at(refused(source, message), source)[:2] == (3, 5)


ONES_65 = ", ".join(["1"] * 65)


@pytest.mark.parametrize("declaration", [f"param q : [{ONES_65}]", f"input q : f32[{ONES_65}]",
                                         "v = broadcast_to(w, range(65))"])
def test_more_dimensions_than_numpy_allows_are_refused(declaration):
    refused(X + declaration + "\nloss = sum(w)\n", "at most 64 dimensions")


@pytest.mark.parametrize("shape", ["[0, 3]", "[0, 0]", "[3, 0]", "[0, 0, 2, 2]"])
def test_a_param_without_values_takes_the_default_initialiser(shape):
    prog = gradlang.compile(f"param q : {shape}\nparam w : []\nloss = w * w + sum(q)\n")
    assert prog.params["q"].size == 0


INITIALISER_CASES = [
    ("normal(std: -1)", 24, "normal(std: -1): std must be ≥ 0"),
    ("uniform(1, -1)", 17, "uniform(high: -1): high must be ≥ low (1)"),
    ("uniform(high: -2)", 25, "high must be ≥ low"),
    ("uniform(-1e400, 1)", 17, "low must be a finite number"),
    ("uniform(-1e30, 1e30)", 17, None),
    ("uniform(-1e300, 1e300)", 17, "does not fit in f32"),
    ("normal(0.0 * 1e400)", 17, "mean must be a finite number"),
    ("constant(0.0 * 1e400)", 17, "value must be a finite number"),
    ("he_normal(gain: -1)", 27, "gain must be ≥ 0"),
    ("glorot_uniform(1e400)", 17, "gain must be a finite number"),
    ("normal(std: x)", 24, "std must be a number"),
    ('constant("s")', 17, "value must be a number"),
    ("normal(std: 1e39)", 17, "does not fit in f32"),
    ("1e39", 17, "does not fit in f32"),
    ("0.0 * 1e400", 17, "nan does not fit"),
    ("[1.0, 0.0 * 1e400]", 17, "nan does not fit"),
]


@pytest.mark.parametrize("init, col, message", INITIALISER_CASES, ids=[c[0] for c in INITIALISER_CASES])
def test_an_initialiser_setting_is_checked_where_it_is_written(init, col, message):
    source = X + f"param q : [2] = {init}\nloss = sum(w) + sum(q)\n"
    if message is None:
        gradlang.compile(source)
        return
    assert at(refused(source, message), source)[:2] == (3, col)


HOSTILE = ["-1", "0", "0.5", "10 ** 12", "2 ** 63", "2 ** 64", "1e400", "-1e400", "0.0 * 1e400", "[]", "[[2], 3]",
           '"s"', "true", "x", "mean(x)"]


@pytest.mark.parametrize("kind", sorted(set(bi.INITIALIZERS) - {"zeros", "ones"}))
@pytest.mark.parametrize("value", HOSTILE)
def test_any_value_of_an_initialiser_setting_compiles_or_is_a_located_error(kind, value):
    source = X + f"param q : [2, 3] = {kind}({value})\nloss = sum(w) + sum(q)\n"
    try:
        prog = gradlang.compile(source)
    except GradError as err:
        assert err.span is not None and err.span.line == 3, err.message
    else:
        assert all(abs(v) < float("inf") for v in prog.params["q"].flat)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_setting_has_a_declared_range(optimizer):
    assert set(OPTIMIZERS[optimizer].settings) <= set(bi.OPTIMIZER_SETTINGS)


@pytest.mark.parametrize("setting", sorted(bi.OPTIMIZER_SETTINGS))
@pytest.mark.parametrize("value", HOSTILE)
def test_any_value_of_an_optimizer_setting_compiles_or_is_a_located_error(setting, value):
    optimizer = next(name for name, spec in sorted(OPTIMIZERS.items()) if setting in spec.settings)
    source = X + f"loss = sum(w)\ntrain {{\n  optimizer = {optimizer}(lr: 0.1, {setting}: {value})\n}}\n" \
        if setting != "lr" else X + f"loss = sum(w)\ntrain {{\n  optimizer = {optimizer}(lr: {value})\n}}\n"
    try:
        gradlang.compile(source)
    except GradError as err:
        assert err.span is not None and err.span.line == 5, err.message


@pytest.mark.parametrize("optimizer, setting, message", [
    ("sgd(lr: -0.1)", "lr", "lr must be ≥ 0"), ("sgd(lr: 0.0 * 1e400)", "lr", "lr must be a finite number"),
    ("sgd(lr: 0.1, momentum: 1)", "momentum", "momentum must be < 1"),
    ("sgd(lr: 0.1, nesterov: 1)", "nesterov", "nesterov must be true or false"),
    ("adam(beta1: 1)", "beta1", "beta1 must be < 1"), ("adam(beta2: -0.5)", "beta2", "beta2 must be ≥ 0"),
    ("adam(eps: -1e-8)", "eps", "eps must be ≥ 0"), ("rmsprop(alpha: 2)", "alpha", "alpha must be ≤ 1"),
    ("adagrad(clip_norm: -1)", "clip_norm", "clip_norm must be ≥ 0"),
    ("adamw(weight_decay: 1e400)", "weight_decay", "weight_decay must be a finite number"),
])
def test_an_optimizer_setting_out_of_range_is_refused_at_the_setting(optimizer, setting, message):
    source = X + f"loss = sum(w)\ntrain {{\n  optimizer = {optimizer}\n}}\n"
    err = refused(source, message)
    assert err.span.line == 5 and at(err, source)[2].startswith(f"{setting}:")


def test_a_schedule_is_not_a_number_to_check():
    gradlang.compile(X + "loss = sum(w)\ntrain {\n  optimizer = sgd(lr: 0.1 / (1 + step))\n}\n")


# ---- train settings: checked at compile time, refused alike by check, --dry-run and run -----------------

SETTING_CASES = [
    ("steps = -5", "steps must be ≥ 1, got -5"),
    ("steps = 0", "steps must be ≥ 1"),
    ("epochs = 2.5", "epochs must be an integer, got 2.5"),
    ("batch = 2 ** 64", "batch must be ≤"),
    ("early_stopping = -1", "early_stopping must be ≥ 0"),
    ("seed = -1", "seed must be ≥ 0, got -1"),
    ("seed = true", "seed must be an integer"),
    ("validation = 1.5", "validation must be a fraction"),
    ("validation = 0.0 * 1e400", "validation must be a fraction"),
    ('validation = "x"', "validation must be a fraction"),
    ("test = 3", "train setting test must be a data source"),
    ("optimizer = 3", "optimizer must be an optimizer"),
    ("loss = foo", "no loss named 'foo'"),
]


@pytest.mark.parametrize("setting, message", SETTING_CASES, ids=[c[0] for c in SETTING_CASES])
@pytest.mark.parametrize("args", [["check"], ["run", "--dry-run"], ["run", "--quiet"]], ids=" ".join)
def test_a_train_setting_is_refused_at_its_line_by_check_dry_run_and_run(setting, message, args, tmp_path,
                                                                         capsys):
    source = ("data d = two_moons(n: 20)\ninput x : f32[B, 2]\ninput y : f32[B]\nparam w : [2]\n"
              f"loss = mean((x @ w - y) ** 2)\ntrain {{\n  data = d\n  {setting}\n}}\n")
    line, col, found = cli_refuses(tmp_path, capsys, source,
                                   args + (["--out", str(tmp_path / "p.npz")] if "--quiet" in args else []))
    assert (line, col) == (8, setting.index("=") + 5) and message in found


def test_the_trained_loss_may_be_declared_after_the_train_block():
    prog = gradlang.compile("param w : []\ntrain {\n  loss = fit\n}\nloss fit = (w - 1) ** 2\nloss other = w * w\n")
    assert prog.loss_output() == "loss:fit"


# ---- a metric may not take a name training reports -----------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("loss", "training reports its loss under that name"), ("step", "its step"), ("epoch", "its epoch"),
    ("val_accuracy", "val_<name>"), ("fit", "the program has a loss of that name"),
])
def test_a_metric_with_a_reported_name_is_refused_at_its_name(name, message, tmp_path, capsys):
    source = f"input x : f32[B]\nparam w : []\nloss fit = mean(x * w)\nmetric  {name} = mean(x)\n"
    for args in (["check"], ["run", "--dry-run"]):
        line, col, found = cli_refuses(tmp_path, capsys, source, args)
        assert (line, col) == (4, 9) and f"a metric cannot be named {name!r}" in found and message in found


def test_a_loss_named_as_a_metric_is_refused_at_its_name():
    source = "input x : f32[B]\nparam w : []\nmetric fit = mean(x)\nloss fit = mean(x * w)\n"
    err = refused(source, "'fit' is already a metric")
    assert at(err, source)[:2] == (4, 6)


def test_other_metric_names_are_fine():
    prog = gradlang.compile("input x : f32[B]\nparam w : []\nloss = mean(x * w)\nmetric losses = mean(x)\n"
                            "metric validation = mean(x)\nmetric steps = mean(x)\n")
    assert prog.metric_names == ["losses", "validation", "steps"]
