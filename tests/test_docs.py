"""The documentation is tested: every gradlang snippet compiles (or fails as it says it does), every
Python snippet runs, the reference tables list exactly what the compiler provides, and
examples/embed_python.py runs. This file takes docs/language.md and docs/python-api.md;
tests/test_doc_pages.py takes README.md and the other pages, with this reader.

Snippets are fenced code blocks tagged ```grad (or ```python). An HTML comment on the line(s) just
before a block says how to check it; directives are separated by `;`:

    <!-- error: unknown name -->      compiling (or running, see below) fails with a GradError whose
                                      message contains this text
    <!-- fragment -->                 not a whole program: it only has to parse
    <!-- file: models/blocks.grad --> a module: written under that name beside the other snippets of
                                      the page (so programs can import it); not compiled on its own
    <!-- feed: {"x": [1, 2]} -->      a JSON feed for the checks below (default: the train block's data
                                      set if there is one, else no inputs)
    <!-- expect: loss = 0.5, m < 1 --> the loss, metrics and named losses on that feed: `=` (to
                                      1e-4), `<` or `>`
    <!-- params: net.W, net.b -->     the program's params are exactly these, in this order
    <!-- train -->                    train per the train block first; `expect` then checks the final
                                      loss and metrics that training reports
    <!-- dtype: float64 -->           compile with dtype="float64"
    <!-- output -->                   (before a ```text block following an `error` snippet) the exact
                                      text of the error, as `GradError.format()` prints it

Every grad snippet is compiled as the file `model.grad` in a folder holding the page's `file:`
modules, so error locations read `model.grad:LINE:COL`.
"""
from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import gradlang
from gradlang import GradError
from gradlang.frontend.syntax import parse

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "language.md", ROOT / "docs" / "python-api.md"]


@dataclass
class Block:
    page: Path
    line: int            # 1-based line of the opening fence
    lang: str
    text: str
    directives: dict = field(default_factory=dict)
    heading: str = ""

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")[:40]
        return f"{self.page.stem}:{self.line}:{slug}"


_DIRECTIVE = re.compile(r"^\s*<!--(.*?)-->\s*$")


_KEYS = ("error", "fragment", "file", "feed", "expect", "params", "train", "dtype", "output")


def _parse_directives(comments: list[str], keys: tuple[str, ...] = _KEYS) -> dict:
    split = re.compile(rf";\s*(?=(?:{'|'.join(keys)})\b)")
    out: dict = {}
    for comment in comments:
        for part in split.split(comment):
            part = part.strip()
            if not part:
                continue
            key, _, value = part.partition(":")
            key, value = key.strip(), value.strip()
            if key not in keys:
                raise ValueError(f"unknown doc-test directive {key!r}")
            out[key] = value
    return out


def read_blocks(page: Path, keys: tuple[str, ...] = _KEYS) -> list[Block]:
    """The page's fenced blocks, each with the directives (of `keys`) in the comments just before it. A
    fence may be indented (a block in a list item): the body loses that indentation."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, heading, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = re.match(r"^( *)```(\w*)\s*$", line)
        if fence:
            indent, lang, start = fence.group(1), fence.group(2), i
            comments, j = [], i - 1
            while j >= 0 and _DIRECTIVE.match(lines[j]):
                comments.insert(0, _DIRECTIVE.match(lines[j]).group(1))
                j -= 1
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith(indent + "```"):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            blocks.append(Block(page, start + 1, lang, "\n".join(body) + "\n", _parse_directives(comments, keys),
                                heading))
        i += 1
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in read_blocks(page)]
GRAD_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "grad" and "file" not in b.directives]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python" and b.page.name == "python-api.md"]


def test_the_pages_have_snippets():
    assert len(GRAD_BLOCKS) > 50 and len(PYTHON_BLOCKS) >= 3
    untagged = [b.id for b in ALL_BLOCKS if b.lang == ""]
    assert not untagged, f"fenced blocks without a language tag: {untagged}"


@pytest.fixture
def module_folder(tmp_path, monkeypatch):
    """A folder holding every `file:` module of every page; the current directory while compiling."""
    for block in ALL_BLOCKS:
        if "file" in block.directives:
            path = tmp_path / block.directives["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(name: str, op: str, want: float, got: dict) -> None:
    assert name in got, f"no value named {name!r}; have {sorted(got)}"
    value = got[name]
    if op == "=":
        assert value == pytest.approx(want, rel=1e-4, abs=1e-6), f"{name} = {value}, expected {want}"
    elif op == "<":
        assert value < want, f"{name} = {value}, expected < {want}"
    else:
        assert value > want, f"{name} = {value}, expected > {want}"


def _run(block: Block, folder: Path):
    """Compile the snippet and run the checks its directives ask for."""
    d = block.directives
    (folder / "model.grad").write_text(block.text, encoding="utf-8")
    prog = gradlang.compile("model.grad", dtype=d.get("dtype", "float32"))
    if "params" in d:
        assert list(prog.params) == [s.strip() for s in d["params"].split(",")]
    if "train" in d:
        result = prog.train()
        got = {"loss": result.loss, **result.metrics}
    elif "expect" in d or "feed" in d:
        if "feed" in d:
            feed = json.loads(d["feed"])
        elif prog.plan.get("data") is not None:
            feed = prog.load_data()
        else:
            feed = {}
        got = {"loss": prog.loss(feed), **prog.metrics(feed)}
        got.update({name: prog.loss(feed, name) for name in prog.losses if name != "loss"})
    else:
        return
    for item in filter(None, (s.strip() for s in d.get("expect", "").split(","))):
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*([=<>])\s*(\S+)", item)
        assert m, f"bad expectation {item!r}"
        _check(m.group(1), m.group(2), float(m.group(3)), got)


@pytest.mark.parametrize("block", GRAD_BLOCKS, ids=lambda b: b.id)
def test_grad_snippet(block: Block, module_folder):
    d = block.directives
    if "fragment" in d:
        parse(block.text)
        return
    if "error" in d:
        with pytest.raises(GradError) as info:
            _run(block, module_folder)
        assert d["error"] in info.value.message, info.value.format()
        following = _next_block(block)
        if following is not None and "output" in following.directives:
            assert info.value.format() + "\n" == following.text
        return
    _run(block, module_folder)


def _next_block(block: Block) -> Block | None:
    blocks = [b for b in ALL_BLOCKS if b.page == block.page]
    i = blocks.index(block)
    return blocks[i + 1] if i + 1 < len(blocks) else None


def test_every_output_block_follows_an_error_snippet():
    for page in PAGES:
        blocks = read_blocks(page)
        for before, block in zip(blocks, blocks[1:]):
            if "output" in block.directives:
                assert before.lang == "grad" and "error" in before.directives, block.id


# ---- Python snippets (docs/python-api.md): each runs after the ones before it, in one namespace, ----
# ---- from the repository root, as a reader would run them ------------------------------------------

# the namespace after the first `done` snippets; a snippet run alone (or after a failure) replays the
# ones before it in a fresh namespace, so no case depends on another having run
_SNIPPETS_RUN = {"done": 0, "namespace": {"__name__": "__docs__"}}


def _run_snippet(block: Block, namespace: dict) -> None:
    exec(compile(block.text, f"{block.page.name}:{block.line}", "exec"), namespace)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_snippet(block: Block, monkeypatch):
    monkeypatch.chdir(ROOT)
    position = PYTHON_BLOCKS.index(block)
    if _SNIPPETS_RUN["done"] != position:
        _SNIPPETS_RUN.update(done=0, namespace={"__name__": "__docs__"})
        for earlier in PYTHON_BLOCKS[:position]:
            _run_snippet(earlier, _SNIPPETS_RUN["namespace"])
    _SNIPPETS_RUN["done"] = -1          # until this one succeeds
    _run_snippet(block, _SNIPPETS_RUN["namespace"])
    _SNIPPETS_RUN["done"] = position + 1


def test_embed_python_example_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "embed_python.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "%dW" in proc.stdout or "grad:" in proc.stdout   # it printed the gradient IR


# ---- the reference tables list exactly what the compiler provides ----------------------------------

LANGUAGE = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text of the section whose heading is `title`, up to the next heading of the same level."""
    m = re.search(rf"^(#+) {re.escape(title)}\s*$", LANGUAGE, re.M)
    assert m, f"no section {title!r} in docs/language.md"
    level = len(m.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(LANGUAGE, m.end())
    return LANGUAGE[m.end(): end.start() if end else len(LANGUAGE)]


def _table_signatures(text: str) -> dict[str, list[str]]:
    """`name(a, b: …)` in the first column of the tables → {name: [parameter names]}."""
    out = {}
    for row in re.findall(r"^\|\s*`([^`]+)`", text, re.M):
        m = re.fullmatch(r"(\w+)(?:\((.*)\))?", row.strip())
        if not m:
            continue
        params = [re.split(r"[:=]", p)[0].strip() for p in (m.group(2) or "").split(",") if p.strip()]
        out[m.group(1)] = [p for p in params if p not in ("…", "...")]
    return out


def test_builtin_function_table_matches_the_compiler():
    from gradlang.frontend.builtins import BUILTINS, INITIALIZERS
    from gradlang.runtime.data import DATA_SOURCES
    from gradlang.runtime.optimizers import OPTIMIZERS
    documented = _table_signatures(_section("Builtin functions"))
    functions = {n: b for n, b in BUILTINS.items()
                 if n not in INITIALIZERS and n not in DATA_SOURCES and n not in OPTIMIZERS}
    assert set(documented) == set(functions), (
        f"undocumented: {sorted(set(functions) - set(documented))}; "
        f"not builtins: {sorted(set(documented) - set(functions))}")
    for name, params in documented.items():
        actual = list(inspect.signature(functions[name].impl).parameters)[2:]
        assert params == actual, f"{name}: documented ({', '.join(params)}), actual ({', '.join(actual)})"


def _stdlib_functions(module: str) -> dict[str, list[str]]:
    text = (ROOT / "stdlib" / f"{module}.grad").read_text(encoding="utf-8")
    return {m.group(2): [p.split("=")[0].strip() for p in m.group(3).split(",") if p.strip()]
            for m in re.finditer(r"^(fn|layer)\s+(\w+)\s*\(([^)]*)\)", text, re.M)}


@pytest.mark.parametrize("module, section", [("activations", "Activations (prelude)"),
                                             ("losses", "Losses and regularisers (prelude)"),
                                             ("nn", "Layers: `import nn`")])
def test_standard_library_tables_match_the_library(module, section):
    documented = _table_signatures(_section(section))
    assert documented == _stdlib_functions(module)


def test_initialiser_table_matches_the_compiler():
    from gradlang.frontend.builtins import INITIALIZERS
    documented = _table_signatures(_section("Initialisers"))
    assert set(documented) == set(INITIALIZERS)


def _documented_default(row: str, key: str):
    """The default written as `key: VALUE` in a table row, as a Python value."""
    m = re.search(rf"`{key}: ([^`]+)`", row)
    assert m, f"no default for {key} in: {row}"
    text = m.group(1).strip()
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("["):
        return tuple(json.loads(text))
    return float(text)


def _same_default(documented, actual) -> bool:
    if isinstance(actual, (bool, str, tuple)) or isinstance(documented, (bool, str, tuple)):
        return documented == actual
    return documented == pytest.approx(actual)


def test_data_source_table_matches_the_runtime():
    from gradlang.runtime.data import DATA_SOURCES
    text = _section("Data sources")
    documented = _table_signatures(text)
    assert set(documented) == set(DATA_SOURCES)
    for name, source in DATA_SOURCES.items():
        params = list(inspect.signature(source).parameters.values())[1:]
        assert documented[name] == [p.name for p in params], name
        row = next(r for r in text.splitlines() if r.startswith(f"| `{name}("))
        for p in params:   # every default is written as `name: default` in the row
            if p.default is not inspect.Parameter.empty:
                assert _same_default(_documented_default(row, p.name), p.default), f"{name}: default of {p.name}"


def test_optimizer_table_matches_the_runtime():
    from gradlang.runtime.optimizers import OPTIMIZERS
    text = _section("Optimizers")
    documented = _table_signatures(text)
    assert set(documented) == set(OPTIMIZERS)
    for name, spec in OPTIMIZERS.items():
        row = next(r for r in text.splitlines() if r.startswith(f"| `{name}("))
        own = [k for k in spec.settings if k not in ("clip_norm", "weight_decay")] + ["clip_norm", "weight_decay"]
        assert documented[name] == own, name
        for key, default in spec.settings.items():
            if default is None:
                assert f"`{key}` required" in row, f"{name}: {key} is required"
            else:
                assert _same_default(_documented_default(row, key), default), f"{name}: default of {key}"


def test_train_settings_table_matches_the_compiler():
    from gradlang.frontend.plan import TRAIN_SETTINGS
    documented = set(re.findall(r"^\|\s*`(\w+)`", _section("Train settings"), re.M))
    assert documented == set(TRAIN_SETTINGS)
