"""`gradlang fmt`: the canonical layout, its idempotence, and that it never changes what a program means."""
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.frontend.syntax import parse
from gradlang.frontend.syntax.format import WIDTH, FormatError, format_source
from gradlang.frontend.syntax.parser import CONTINUES

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "examples").glob("*.grad")) + sorted((ROOT / "stdlib").glob("*.grad"))
IDS = [f"{p.parent.name}/{p.name}" for p in SOURCES]


def comments(text: str) -> list[str]:
    """The comments of a program, found independently of the formatter: `#` outside a string."""
    return [m.group().rstrip() for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*', text)
            if m.group().startswith("#")]


def fmt(text: str) -> str:
    return format_source(text)


# ---- every example and library file ----------------------------------------------------------

@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_formatting_keeps_the_program_and_its_comments(path):
    text = path.read_text()
    out = fmt(text)
    assert parse(out) == parse(text)          # AST nodes compare without their spans
    assert comments(out) == comments(text)
    assert fmt(out) == out                    # idempotent


def test_the_repository_is_formatted(capsys):
    """Every example and library file is in the canonical layout (`gradlang fmt --check` is clean)."""
    code = main(["fmt", "--check", str(ROOT / "examples"), str(ROOT / "stdlib")])
    assert code == 0, "run `gradlang fmt examples stdlib`:\n" + capsys.readouterr().out


def test_the_layout_example_in_the_language_reference_is_formatted():
    page = (ROOT / "docs" / "language.md").read_text()
    section = page[page.index("### Layout"):page.index("\n## Statements")]
    example = re.search(r"```grad\n(.*?)```", section, re.S).group(1)
    assert fmt(example) == example


# ---- the style, rule by rule ----------------------------------------------------------------------

def test_spacing_is_canonical():
    src = "input  x:f32[ B,784 ]\nparam W:[784,10]=normal( std=0.1 )\ny=- x@W [ : , 0 : 2 ]**2+f(a , b)\n"
    assert fmt(src) == ("input x : f32[B, 784]\n"
                        "param W : [784, 10] = normal(std: 0.1)\n"
                        "y = -x @ W[:, 0:2] ** 2 + f(a, b)\n")


def test_keyword_arguments_are_written_with_a_colon_and_defaults_with_equals():
    assert fmt("fn f(a, b=1) = g(a, axis=b)\n") == "fn f(a, b = 1) = g(a, axis: b)\n"


def test_consecutive_statements_of_a_kind_align_their_equals_or_colon():
    src = ("input x : f32[B, 2]\ninput labels : i64[B]\n"
           "h = 1\nlogits = 2\nloss = h + logits\n"
           "metric acc = 1\nmetric top_five = 2\n"
           "train {\n  data = d\n  optimizer = sgd(lr: 0.1)\n}\n")
    assert fmt(src) == ("input x      : f32[B, 2]\ninput labels : i64[B]\n"
                        "h      = 1\nlogits = 2\nloss   = h + logits\n"
                        "metric acc      = 1\nmetric top_five = 2\n"
                        "train {\n  data      = d\n  optimizer = sgd(lr: 0.1)\n}\n")


def test_blank_lines_and_comment_lines_end_an_alignment_run():
    src = "a = 1\nbbb = 2\n\ncc = 3\n# note\nd = 4\neeeee = 5\n"
    assert fmt(src) == "a   = 1\nbbb = 2\n\ncc = 3\n# note\nd     = 4\neeeee = 5\n"


def test_blank_lines_collapse_to_one_and_vanish_at_block_edges():
    src = "\n\n\na = 1\n\n\n\nfn f(x) {\n\n  y = x\n\n\n  return y\n\n}\n\n\n"
    assert fmt(src) == "a = 1\n\nfn f(x) {\n  y = x\n\n  return y\n}\n"


def test_blocks_indent_by_two_and_one_line_blocks_open_up():
    src = "for i in range(3) { t = t + i }\nif t > 2 { k = 1 } else if t > 1 { k = 2 } else { k = 3 }\n"
    assert fmt(src) == ("for i in range(3) {\n  t = t + i\n}\n"
                        "if t > 2 {\n  k = 1\n} else if t > 1 {\n  k = 2\n} else {\n  k = 3\n}\n")


def test_continuation_lines_and_backslashes_are_joined_when_the_statement_fits():
    src = "total = 1 +\n        2 +\n    3\nw = [0.5,\n     0.25]\nscale = 2 \\\n  * total\n"
    assert fmt(src) == "total = 1 + 2 + 3\nw     = [0.5, 0.25]\nscale = 2 * total\n"


def test_trailing_comments_on_consecutive_lines_align_two_spaces_after_the_code():
    src = "x = 1 # one\nlonger_name = 2      # two\n\nz = 3        # alone\n"
    assert fmt(src) == "x           = 1  # one\nlonger_name = 2  # two\n\nz = 3  # alone\n"


def test_comments_stay_where_they_are_written():
    src = ("# header\n\nimport nn   # the layers\n\n# before f\nfn f(x) {   # opens\n  # inside\n"
           "  return x\n  # last inside\n}  # closes\n# at the end\n")
    assert fmt(src) == ("# header\n\nimport nn  # the layers\n\n# before f\nfn f(x) {  # opens\n  # inside\n"
                        "  return x\n  # last inside\n}  # closes\n# at the end\n")


def test_a_comment_inside_an_argument_list_breaks_it_there():
    src = "y = sgd(lr: 0.1,   # fast\n        momentum: 0.9)\n"
    out = fmt(src)
    assert out == "y = sgd(\n    lr: 0.1,  # fast\n    momentum: 0.9,\n)\n"
    assert fmt(out) == out


def test_a_comment_line_inside_brackets_keeps_its_own_line():
    src = "x = [1,\n  # the second\n  2]\n"
    assert fmt(src) == "x = [\n    1,\n    # the second\n    2,\n]\n"


def test_a_comment_after_a_continuing_token_stays_there():
    assert fmt("x = 1 +   # why\n  2\n") == "x = 1 +  # why\n    2\n"
    assert fmt("x =   # why\n  2\n") == "x =  # why\n    2\n"
    assert fmt("fn f(x) =   # why\n  2 * x\n") == "fn f(x) =  # why\n    2 * x\n"


def test_long_argument_lists_go_on_one_indented_line_then_one_per_line():
    args = ", ".join(f"argument_{i}" for i in range(8))
    out = fmt(f"result = function({args})\n")
    assert out == f"result = function(\n    {args}\n)\n"
    args = ", ".join(f"argument_{i}" for i in range(14))
    out = fmt(f"result = function({args})\n")
    assert out == "result = function(\n" + "".join(f"    argument_{i},\n" for i in range(14)) + ")\n"
    assert all(len(line) <= WIDTH for line in out.splitlines())


def test_long_operator_chains_break_after_each_operator_aligned():
    left, right = "mean(" + "a" * 40 + ")", "mean(" + "b" * 40 + ")"
    out = fmt(f"loss = {left} + {right} - c\n")
    assert out == f"loss = {left} +\n       {right} -\n       c\n"


def test_a_long_function_body_moves_after_the_equals():
    body = " + ".join(f"term_{i}(x)" for i in range(7))
    out = fmt(f"fn long_function_name(x) = {body}\n")
    assert out == f"fn long_function_name(x) =\n    {body}\n"


def test_the_width_can_be_chosen():
    assert format_source("x = f(aaaa, bbbb)\n", width=12) == "x = f(\n    aaaa,\n    bbbb,\n)\n"


def test_tokens_that_would_run_together_keep_a_space():
    assert fmt("q = 1 .real + - -x\n") == "q = 1 .real + - -x\n"


def test_empty_blocks_and_lists():
    assert fmt("train {\n}\nfn f() {\n\n}\nz = [ ]\n") == "train {}\nfn f() {}\nz = []\n"
    assert fmt("if a {  # why\n}\n") == "if a {  # why\n}\n"


def test_trailing_commas_go_when_the_list_fits_on_one_line():
    assert fmt("fn g(a,) = h(a,)[0,] + [1, 2,]\n") == "fn g(a) = h(a)[0] + [1, 2]\n"


def test_empty_and_comment_only_files():
    assert fmt("") == ""
    assert fmt("\n\n  \n") == ""
    assert fmt("   # only a comment   \n\n\n") == "# only a comment\n"


def test_windows_line_endings_and_a_missing_final_newline():
    assert fmt("a = 1\r\nb = 2") == "a = 1\nb = 2\n"


def test_a_syntax_error_is_reported_as_the_compiler_does():
    with pytest.raises(GradError, match="syntax error"):
        fmt("x = (1 +\n")


def test_the_result_is_checked_before_it_is_returned(monkeypatch):
    """A formatter bug that changes the program is caught, never written."""
    import gradlang.frontend.syntax.format as format_module
    real = format_module._Formatter.file
    monkeypatch.setattr(format_module._Formatter, "file", lambda self: real(self).replace("+", "-"))
    with pytest.raises(FormatError, match="meaning"):
        fmt("x = 1 + 2\n")
    monkeypatch.setattr(format_module._Formatter, "file", lambda self: real(self).replace("# a", "# b"))
    with pytest.raises(FormatError, match="comments"):
        fmt("x = 1  # a\n")


# ---- the command ----------------------------------------------------------------------------------

def test_fmt_check_lists_the_files_that_would_change_and_changes_nothing(tmp_path, capsys):
    messy, tidy = tmp_path / "messy.grad", tmp_path / "tidy.grad"
    messy.write_text("x=1\n")
    tidy.write_text("x = 1\n")
    assert main(["fmt", "--check", str(messy), str(tidy)]) == 1
    assert capsys.readouterr().out == f"would reformat {messy}\n"
    assert messy.read_text() == "x=1\n"
    assert main(["fmt", "--check", str(tidy)]) == 0


def test_fmt_rewrites_files_in_place_and_walks_folders(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    model = tmp_path / "sub" / "model.grad"
    model.write_text("y=2*x\n")
    assert main(["fmt", str(tmp_path)]) == 0
    assert model.read_text() == "y = 2 * x\n"
    assert capsys.readouterr().out == f"reformatted {model}\n"
    assert main(["fmt", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""


def test_fmt_diff_prints_a_unified_diff(tmp_path, capsys):
    model = tmp_path / "model.grad"
    model.write_text("y=2*x\n")
    assert main(["fmt", "--diff", str(model)]) == 0
    out = capsys.readouterr().out
    assert "-y=2*x\n" in out and "+y = 2 * x\n" in out
    assert model.read_text() == "y=2*x\n"


def test_fmt_reads_standard_input(monkeypatch, capsys):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("y=2*x # c\n"))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == "y = 2 * x  # c\n"


def test_fmt_reports_a_syntax_error_and_goes_on(tmp_path, capsys):
    bad, good = tmp_path / "bad.grad", tmp_path / "good.grad"
    bad.write_text("x = = 1\n")
    good.write_text("x=1\n")
    assert main(["fmt", str(bad), str(good)]) == 1
    assert "bad.grad:1:5: error: syntax error" in capsys.readouterr().err
    assert good.read_text() == "x = 1\n"


# ---- perturbations of the examples ----------------------------------------------------------------

def _tokens(text: str):
    from gradlang.frontend.syntax.format import _leaves, _parse_with_comments
    return _leaves(_parse_with_comments(text)[0])


_OPERATOR_CHARS = set("=<>!*+-/@")


def _may_touch(left: str, right: str) -> bool:
    """Can two tokens be written with no space between them and still lex as two?"""
    def word(ch: str) -> bool:
        return ch.isalnum() or ch in "_."

    return not (word(left[-1]) and word(right[0])) and not (left[-1] in _OPERATOR_CHARS
                                                              and right[0] in _OPERATOR_CHARS)


@st.composite
def perturbed(draw, with_comments: bool):
    """An example or library file with the space between its tokens redrawn: spaces and tabs anywhere,
    line breaks (with odd indentation, blank lines, backslashes) where the language allows them, and,
    if asked, comments on those line breaks and on the lines between statements."""
    path = draw(st.sampled_from(SOURCES))
    text = path.read_text()
    tokens = _tokens(text)
    out, depth = [text[:tokens[0].start_pos]], 0
    for left, right in zip(tokens, tokens[1:]):
        depth += {"LPAR": 1, "LSQB": 1, "RPAR": -1, "RSQB": -1}.get(left.type, 0)
        gap = text[left.end_pos:right.start_pos]
        continues = depth > 0 or (str(left) in CONTINUES and left.type not in ("NAME", "NUMBER", "STRING"))
        if "\n" in gap and not continues or "#" in gap:
            # a statement boundary (or a gap holding a comment): keep it, maybe adding a comment
            if with_comments and "\n" in gap and draw(st.booleans()):
                at = gap.index("\n")
                gap = gap[:at] + draw(st.sampled_from(["  # trailing", "#t", "\n# a line of its own",
                                                       "\n\n   # indented oddly\n"])) + gap[at:]
            out += [str(left), gap]
            continue
        spaces = draw(st.sampled_from(["", " ", "  ", "\t", "   "]))
        if not spaces and not _may_touch(str(left), str(right)):
            spaces = " "
        if continues and draw(st.integers(0, 4)) == 0:
            comment = draw(st.sampled_from(["", "", "  # why", "\n  # a note"])) if with_comments else ""
            spaces = spaces + comment + "\n" + draw(st.sampled_from(["", "\n", "\t", "        "]))
        elif depth == 0 and draw(st.integers(0, 15)) == 0:
            spaces = " \\\n" + draw(st.sampled_from(["", "   "]))
        out += [str(left), spaces]
    out += [str(tokens[-1]), text[tokens[-1].end_pos:]]
    return path, "".join(out)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(perturbed(with_comments=False))
def test_the_layout_does_not_depend_on_the_spacing_of_the_input(case):
    path, text = case
    assert parse(text) == parse(path.read_text())      # the perturbation itself is sound
    assert fmt(text) == fmt(path.read_text())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(perturbed(with_comments=True))
def test_formatting_perturbed_files_keeps_meaning_and_comments_and_is_idempotent(case):
    path, text = case
    out = fmt(text)
    assert parse(out) == parse(path.read_text())
    assert comments(out) == comments(text)
    assert fmt(out) == out
