"""Syntax highlighting: the TextMate grammar (editors/textmate, used by the VS Code extension in
editors/vscode) and the Pygments lexer (gradlang.highlight), on every example and library file.

The lists of builtins and library names in both, and the table of primitive builtins in docs/language.md,
are written by scripts/generate_surface.py; the first tests check that it has been run."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradlang import highlight

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR_FILE = ROOT / "editors" / "textmate" / "gradlang.tmLanguage.json"
VSCODE = ROOT / "editors" / "vscode"
SOURCES = sorted((ROOT / "examples").glob("*.grad")) + sorted((ROOT / "stdlib").glob("*.grad"))
IDS = [f"{p.parent.name}/{p.name}" for p in SOURCES]
GENERATOR = ROOT / "scripts" / "generate_surface.py"
RUN_IT = "run python scripts/generate_surface.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_surface", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the shared word lists against the compiler -------------------------------------------------------

def test_keywords_are_the_grammars():
    literals = set(re.findall(r'"([a-z]+)"', (ROOT / "grammar" / "gradlang.lark").read_text()))
    listed = (highlight.KEYWORDS_IMPORT + highlight.KEYWORDS_DECLARATION + highlight.KEYWORDS_CONTROL
              + highlight.CONSTANTS)
    assert sorted(listed) == sorted(literals)


def test_builtins_and_dtypes_are_the_compilers():
    from gradlang.frontend.builtins import BUILTINS
    from gradlang.ops.shapes import DTYPES
    assert sorted(highlight.BUILTINS) == sorted(BUILTINS), \
        f"BUILTINS in gradlang/highlight.py is not the compiler's: {RUN_IT}"
    assert sorted(highlight.DTYPES) == sorted(DTYPES)


def test_stdlib_names_are_the_librarys():
    defined = {m.group(2) for path in (ROOT / "stdlib").glob("*.grad")
               for m in re.finditer(r"^(fn|layer)\s+([A-Za-z_]\w*)", path.read_text(), re.M)}
    assert sorted(highlight.STDLIB) == sorted(defined), \
        f"STDLIB in gradlang/highlight.py is not the standard library's: {RUN_IT}"


def test_the_generated_files_are_what_the_generator_writes():
    """`generate_surface.py --check`: highlight.py, both TextMate grammars and the table in docs/language.md."""
    run = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr or run.stdout


def test_the_generator_checks_without_writing_then_writes_what_it_checks(tmp_path, monkeypatch, capsys):
    """On a copy of the files it writes (the extension's grammar a link where it is one here)."""
    generator = load_generator()
    files = [generator.HIGHLIGHT, *generator.GRAMMARS, generator.LANGUAGE]
    for path in files:
        copy = tmp_path / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            copy.symlink_to(path.readlink())
        else:
            shutil.copyfile(path, copy)
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    monkeypatch.setattr(generator, "HIGHLIGHT", tmp_path / generator.HIGHLIGHT.relative_to(ROOT))
    monkeypatch.setattr(generator, "GRAMMARS", tuple(tmp_path / p.relative_to(ROOT) for p in generator.GRAMMARS))
    monkeypatch.setattr(generator, "LANGUAGE", tmp_path / generator.LANGUAGE.relative_to(ROOT))
    highlight_copy, grammar_copy = tmp_path / "gradlang" / "highlight.py", generator.GRAMMARS[0]
    stale = highlight_copy.read_text().replace(' "abs",', "")
    stale_grammar = grammar_copy.read_text().replace("|abs|", "|")
    highlight_copy.write_text(stale)
    grammar_copy.write_text(stale_grammar)

    assert generator.main(["--check"]) == 1
    assert capsys.readouterr().err == (f"gradlang/highlight.py is stale: {RUN_IT}\n"
                                       f"editors/textmate/gradlang.tmLanguage.json is stale: {RUN_IT}\n")
    assert highlight_copy.read_text() == stale and grammar_copy.read_text() == stale_grammar
    assert generator.main([]) == 0
    assert capsys.readouterr().out == "wrote gradlang/highlight.py\nwrote editors/textmate/gradlang.tmLanguage.json\n"
    assert generator.main(["--check"]) == 0 and generator.main([]) == 0
    assert capsys.readouterr().out == "everything was up to date\n"
    for path in files:
        copy = tmp_path / path.relative_to(ROOT)
        assert copy.read_bytes() == path.read_bytes() and copy.is_symlink() == path.is_symlink()

    highlight_copy.write_text(stale.replace(generator.PY_END, ""))
    assert generator.main(["--check"]) == 2
    assert "markers of its generated part are missing" in capsys.readouterr().err


# ---- the TextMate grammar -----------------------------------------------------------------------------

def load_grammar() -> dict:
    return json.loads(GRAMMAR_FILE.read_text())


def _rules(grammar: dict, patterns: list) -> list[dict]:
    """The grammar's patterns with includes resolved, in order."""
    out = []
    for pattern in patterns:
        if "include" in pattern:
            out += _rules(grammar, [grammar["repository"][pattern["include"].lstrip("#")]])
        elif "match" in pattern or "begin" in pattern:
            out.append(pattern)
        else:
            out += _rules(grammar, pattern["patterns"])
    return out


def tokenize(grammar: dict, text: str) -> list[tuple[str, str]]:
    """A small TextMate engine, line by line: at each position the rule whose match starts first wins
    (the earlier rule on a tie); a begin/end rule scans its inner patterns until its end. Returns
    (text, scope) pairs, scopes innermost last and joined by spaces; unmatched text gets scope ''."""
    rules = [(rule, re.compile(rule.get("match") or rule["begin"])) for rule in _rules(grammar, grammar["patterns"])]
    out = []
    for line in text.split("\n"):
        pos = 0
        while pos < len(line):
            found = [(m.start(), i, rule, m) for i, (rule, rx) in enumerate(rules)
                     if (m := rx.search(line, pos))]
            if not found:
                out.append((line[pos:], ""))
                break
            start, _, rule, m = min(found, key=lambda f: (f[0], f[1]))
            if start > pos:
                out.append((line[pos:start], ""))
            if "match" in rule:
                out += _captured(rule, m, rule.get("captures", {}))
                pos = max(m.end(), pos + 1)
                continue
            out.append((m.group(), rule["name"]))           # begin … end, one line at most (strings)
            pos, end = m.end(), re.compile(rule["end"])
            inner = [(r, re.compile(r["match"])) for r in rule.get("patterns", [])]
            while pos <= len(line):
                stop = end.search(line, pos)
                hits = [(h.start(), j, r, h) for j, (r, rx) in enumerate(inner) if (h := rx.search(line, pos))]
                hits = [h for h in hits if h[0] < stop.start()]
                if hits:
                    start, _, r, h = min(hits, key=lambda f: (f[0], f[1]))
                    if start > pos:
                        out.append((line[pos:start], rule["name"]))
                    out.append((h.group(), rule["name"] + " " + r["name"]))
                    pos = h.end()
                    continue
                if stop.start() > pos:
                    out.append((line[pos:stop.start()], rule["name"]))
                if stop.group():
                    out.append((stop.group(), rule["name"]))
                pos = stop.end()
                break
    return [(t, s) for t, s in out if t]


def _captured(rule: dict, m: re.Match, captures: dict) -> list[tuple[str, str]]:
    """A match split at its numbered captures, each part scoped by the rule and its capture."""
    base = rule.get("name", "")
    parts, pos = [], m.start()
    for number in sorted(captures, key=int):
        g = int(number)
        if m.start(g) < 0:
            continue
        if m.start(g) > pos:
            parts.append((m.string[pos:m.start(g)], base))
        parts.append((m.group(g), (base + " " + captures[number]["name"]).strip()))
        pos = m.end(g)
    if m.end() > pos:
        parts.append((m.string[pos:m.end()], base))
    return parts


def scopes_of(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for token, scope in tokenize(load_grammar(), text):
        found.setdefault(token, set()).add(scope)
    return found


def test_the_grammar_is_json_with_regexes_python_compiles():
    grammar = load_grammar()
    assert grammar["scopeName"] == "source.gradlang" and grammar["fileTypes"] == ["grad"]
    for rule in _rules(grammar, grammar["patterns"]):
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])
        for inner in rule.get("patterns", []):
            re.compile(inner["match"])


def test_the_grammars_word_lists_are_the_shared_ones():
    text = GRAMMAR_FILE.read_text()
    for name in ("BUILTINS", "STDLIB", "DTYPES", "KEYWORDS_CONTROL", "KEYWORDS_IMPORT", "CONSTANTS",
                 "SPECIAL_NAMES"):
        for word in getattr(highlight, name):
            assert re.search(rf"[(:|]{word}[)|]", text), f"{word} ({name}) is not in the TextMate grammar: {RUN_IT}"


@pytest.mark.parametrize("token, scope", [
    ("import", "keyword.control.import.gradlang"),
    ("nn", "entity.name.namespace.gradlang"),
    ("data", "keyword.other.declaration.gradlang"),
    ("input", "keyword.other.declaration.gradlang"),
    ("param", "keyword.other.declaration.gradlang"),
    ("metric", "keyword.other.declaration.gradlang"),
    ("train", "keyword.other.declaration.gradlang"),
    ("i64", "storage.type.dtype.gradlang"),
    ("for", "keyword.control.flow.gradlang"),
    ("in", "keyword.control.flow.gradlang"),
    ("true", "constant.language.boolean.gradlang"),
    ("20000", "constant.numeric.integer.gradlang"),
    ("0.0001", "constant.numeric.float.gradlang"),
    ('"', "string.quoted.double.gradlang"),
    ("reverse", "string.quoted.double.gradlang"),
    ("mean", "support.function.builtin.gradlang"),
    ("argmax", "support.function.builtin.gradlang"),
    ("cross_entropy", "support.function.stdlib.gradlang"),
    ("cosine_decay", "support.function.stdlib.gradlang"),
    ("step", "variable.language.gradlang"),
    ("logits", "variable.other.gradlang"),
    ("==", "keyword.operator.comparison.gradlang"),
    ("=", "keyword.operator.assignment.gradlang"),
    ("{", "punctuation.section.block.gradlang"),
    (" A small causal transformer (GPT-style) learns to reverse a string of digits.",
     "comment.line.number-sign.gradlang"),
])
def test_tokens_of_an_example_get_their_scopes(token, scope):
    assert scope in scopes_of((ROOT / "examples" / "attention.grad").read_text())[token]


def test_scopes_in_detail():
    found = tokenize(load_grammar(), 'fn f(x) = x @ W ** 2 + nn.dense(1e-4, .5, 3., 2E-1, "a\\"b") # c')
    assert ("fn", "storage.type.function.gradlang") in found
    assert ("f", "entity.name.function.gradlang") in found
    assert ("@", "keyword.operator.matrix.gradlang") in found
    assert ("**", "keyword.operator.arithmetic.gradlang") in found
    assert ("dense", "variable.other.gradlang") in found              # a module's member, not the stdlib name
    for number in ("1e-4", ".5", "3.", "2E-1"):
        assert (number, "constant.numeric.float.gradlang") in found
    assert ('\\"', "string.quoted.double.gradlang constant.character.escape.gradlang") in found
    assert ("#", "comment.line.number-sign.gradlang punctuation.definition.comment.gradlang") in found
    assert tokenize(load_grammar(), "f32[B, 784]")[:2] == [("f32", "storage.type.dtype.gradlang"),
                                                          ("[", "punctuation.section.brackets.gradlang")]


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_the_grammar_scopes_every_character_of_the_sources(path):
    unscoped = [t for t, scope in tokenize(load_grammar(), path.read_text()) if not scope and t.strip()]
    assert unscoped == []


def test_the_vscode_extension_uses_the_grammar():
    package = json.loads((VSCODE / "package.json").read_text())
    language, = package["contributes"]["languages"]
    assert language["id"] == "gradlang" and language["extensions"] == [".grad"]
    grammar, = package["contributes"]["grammars"]
    assert grammar["scopeName"] == load_grammar()["scopeName"]
    assert (VSCODE / grammar["path"]).read_text() == GRAMMAR_FILE.read_text()
    configuration = json.loads((VSCODE / language["configuration"]).read_text())
    assert configuration["comments"]["lineComment"] == "#"
    re.compile(configuration["wordPattern"])


# ---- the Pygments lexer -------------------------------------------------------------------------------

def _lex(text: str):
    pytest.importorskip("pygments", reason="the Pygments lexer needs pygments (pip install -e '.[docs]')")
    from pygments import lex
    return list(lex(text, highlight.GradlangLexer()))


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_pygments_lexes_every_source_without_errors_and_round_trips(path):
    from pygments.token import Error
    text = path.read_text()
    tokens = _lex(text)
    assert [v for t, v in tokens if t in Error] == []
    assert "".join(v for _, v in tokens) == text


def test_pygments_token_types():
    from pygments.token import Comment, Keyword, Name, Number, Operator, String
    tokens = [(t, v) for t, v in _lex('import nn\nfn f(x) = mean(x @ W) ** 2 + nn.dense(1.5, "a\\n") # c\n'
                                      'input t : f32\nfor i in range(3) { k = true }\n') if v.strip()]
    expected = [(Keyword.Namespace, "import"), (Name.Namespace, "nn"), (Keyword.Declaration, "fn"),
                (Name.Function, "f"), (Name.Builtin, "mean"), (Operator, "@"), (Operator, "**"),
                (Name, "dense"), (Number.Float, "1.5"), (String.Escape, "\\n"), (Comment.Single, "# c"),
                (Keyword.Declaration, "input"), (Keyword.Type, "f32"), (Keyword, "for"), (Keyword, "in"),
                (Name.Builtin, "range"), (Number.Integer, "3"), (Keyword.Constant, "true")]
    for pair in expected:
        assert pair in tokens


def test_pygments_finds_the_lexer_by_name():
    """`pygmentize -l gradlang` works through the entry point in pyproject.toml."""
    pytest.importorskip("pygments", reason="needs pygments")
    if sys.version_info >= (3, 11):
        import tomllib
        entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pygments.lexers"]
        assert entry == {"gradlang": "gradlang.highlight:GradlangLexer"}
    from importlib.metadata import entry_points
    if not any(e.name == "gradlang" for e in entry_points(group="pygments.lexers")):
        pytest.skip("the installed gradlang predates its pygments entry point: reinstall (pip install -e .)")
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
    assert isinstance(get_lexer_by_name("gradlang"), highlight.GradlangLexer)
    assert isinstance(get_lexer_for_filename("model.grad"), highlight.GradlangLexer)
