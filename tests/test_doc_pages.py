"""Every fenced block of README.md and of the docs pages is run, checked, or says why it is not.

tests/test_docs.py runs docs/language.md and docs/python-api.md; this file takes every other page, with
the same reader and the same convention: an HTML comment on the line(s) just before a block says how
to check it, directives separated by `;`. Without a directive,

    ```python                  runs, after the page's earlier blocks, in one namespace per page
    a block of `$ COMMAND`     (console) each command runs and must succeed, and the lines shown under it
    lines                      must be lines it prints (stdout and stderr together): the first may come
                               anywhere, each next one right after the one before, unless a line `…`
                               stands for lines left out. The numbers of times and speeds (`0.15 s`,
                               `693.0 steps/s`, `elapsed 0:00`) are not compared, nor the losses of the
                               `step N/M` lines of a run in phases (means since the line before)
    ```sh                      each command runs and must succeed

Every page runs in a fresh temporary folder holding copies of examples/ and stdlib/ (so no block
leaves a file in the repository), with GRADLANG_DATA pointing at ../shared/data where that exists.
`gradlang …` runs in this process (`gradlang.cli.main`); `python`, `pygmentize` and `mpiexec` as
subprocesses. The directives:

    <!-- not run: REASON -->      not run, for this reason (needs a GPU, an editor, the network, …)
    <!-- skip: PREFIX — REASON --> the commands of the block that begin with PREFIX are not run
    <!-- slow -->                 run only with `-m slow` (a full training run), in a second test of the
                                  page that runs all its blocks; a block that uses what a slow one made
                                  is marked slow too
    <!-- quick: ARGS -->          the block's `gradlang run` commands get ARGS (fewer steps) in the default
                                  run; the whole run is made with `-m slow`
    <!-- needs: mnist -->         the real data set (`mnist`, `text`) of ../shared/data; where it is absent
                                  the page is skipped from this block on
    <!-- given: DEST from SRC with "OLD" as "NEW" -->  before the block, copy the repository's SRC (a
                                  file or a folder) to DEST, replacing OLD by NEW (optional); `, ` between
                                  several
    <!-- command: CMD -->         (a text block) its lines are lines that CMD prints, as for a console
                                  block, whatever its exit status; `&&` between several commands (the
                                  last one's output is compared)
    <!-- output -->               (a text block) its lines are lines that the page's last command printed
    <!-- excerpt: PATH -->        code quoted from the repository's PATH: comments and layout aside, each
                                  paragraph of the block (lines between blank lines or `…`) is in PATH,
                                  and they come in this order
    <!-- setting: PATH -->        lines of a train block: each replaces the setting of the same name in
                                  PATH, which must then compile
    <!-- paths -->                every path of the repository the block names exists (a bare `x.py` is
                                  looked for in the folder of the path before it)
    <!-- shapes: PATH -->         (a diagram) every shape `[B, …]` it shows is the shape of a value of
                                  PATH's forward IR
    <!-- mpiexec: N -->           (python) runs as a script under `mpiexec -n N`
    <!-- tested: tests/F.py::T --> run by that test

Blocks other tests check need no directive here: `program:` and `ir:` blocks (tests/test_dl_docs.py),
`command:` blocks of docs/ir.md (tests/test_ir_tools.py) and the ```ipython cells of
docs/notebooks.md (tests/test_notebook.py). ```json and ```toml blocks are parsed, run or not.
`test_every_block_is_run_or_says_why` fails on a block none of these covers.
"""
from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import test_dl_docs
import test_docs
from test_docs import Block, read_blocks

import gradlang
from gradlang.cli import main

try:
    import tomllib
except ModuleNotFoundError:     # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md") if p not in test_docs.PAGES)

KEYS = ("not run", "skip", "slow", "quick", "needs", "given", "command", "output", "excerpt", "setting", "paths",
        "shapes", "mpiexec", "tested",
        "program", "ir")        # read by tests/test_dl_docs.py
DATA_FILES = {"mnist": "mnist/train-images-idx3-ubyte.gz", "text": "text/tinyshakespeare.txt"}
SHELL_LANGS = ("sh", "console", "shell", "bash")


def _blocks(page: Path) -> list[Block]:
    return read_blocks(page, KEYS)


BLOCKS = {page: _blocks(page) for page in PAGES}


# ---- which check covers a block -------------------------------------------------------------------------

def _is_transcript(block: Block) -> bool:
    return block.text.lstrip().startswith("$ ")


def _checked_elsewhere(block: Block) -> str | None:
    """The test that runs this block, when it is another file's (and knows it)."""
    d = block.directives
    if "tested" in d:
        return d["tested"]
    if "program" in d or "ir" in d:
        assert block.page in test_dl_docs.PAGES, f"{block.id}: tests/test_dl_docs.py does not read {block.page.name}"
        return "tests/test_dl_docs.py"
    if "command" in d and block.page.name == "ir.md":
        return "tests/test_ir_tools.py::test_docs_show_what_the_compiler_prints"
    if block.lang == "ipython" and block.page.name == "notebooks.md":
        return "tests/test_notebook.py::test_the_cells_of_the_notebooks_page_run_in_order"
    return None


def _runs_here(block: Block) -> bool:
    d = block.directives
    if "not run" in d or _checked_elsewhere(block):
        return False
    return (block.lang == "python" or _is_transcript(block) or block.lang in SHELL_LANGS
            or any(k in d for k in ("command", "output", "excerpt", "setting", "paths", "shapes")))


def how_checked(block: Block) -> str | None:
    """How the block is checked, in words; None when nothing checks it."""
    d = block.directives
    if "not run" in d:
        return f"not run: {d['not run']}" if d["not run"] else None
    elsewhere = _checked_elsewhere(block)
    if elsewhere:
        return f"by {elsewhere}"
    return "here" if _runs_here(block) else None


def test_every_block_is_run_or_says_why():
    missing = [b.id for page in PAGES for b in BLOCKS[page] if how_checked(b) is None]
    assert not missing, ("blocks that no test runs and that give no reason (`<!-- not run: REASON -->`; see "
                         f"tests/test_doc_pages.py): {missing}")


def test_every_page_is_read_by_a_doc_test():
    assert set(PAGES) | set(test_docs.PAGES) == {ROOT / "README.md", *(ROOT / "docs").glob("*.md")}
    assert len([b for page in PAGES for b in BLOCKS[page]]) > 60


def test_the_tests_named_exist():
    for page in PAGES:
        for block in BLOCKS[page]:
            elsewhere = _checked_elsewhere(block)
            if elsewhere and "::" in elsewhere:
                file, name = elsewhere.split("::")
                assert re.search(rf"^def {name}\(", (ROOT / file).read_text(), re.M), f"{block.id}: no test {elsewhere}"


def test_structured_blocks_parse():
    """Configuration files shown for editors are at least well-formed."""
    for page in PAGES:
        for block in BLOCKS[page]:
            if block.lang == "json":
                json.loads(block.text)
            elif block.lang == "toml" and tomllib is not None:
                tomllib.loads(block.text)


# ---- comparing what a command prints -------------------------------------------------------------------

_TIMES = [(re.compile(r"[\d,]+(\.\d+)? steps/s"), "N steps/s"),
          (re.compile(r"\b(elapsed|eta) \d+(:\d\d)+"), r"\1 T"),
          (re.compile(r" in \d+(\.\d+)? s\b"), " in T s")]
# a line now and then of a run in phases: each phase's mean loss since the line before, which the clock picks
_PHASE_LINE = re.compile(r"^(step \d+/\d+)((?:\s+\w+ \S+)+)$")


def _normal(line: str) -> str:
    for pattern, replacement in _TIMES:
        line = pattern.sub(replacement, line)
    phases = _PHASE_LINE.match(line.strip())
    if phases:
        line = phases.group(1) + re.sub(r"(\w+) \S+", r"\1 N", phases.group(2))
    return line.rstrip()


def _assert_prints(shown: list[str], printed: str, what: str) -> None:
    """`shown` (a page's lines) are lines of `printed`: the first anywhere, each next one on the line after
    the one before, unless a `…` line stands between them (then anywhere after it); times aside."""
    lines = [_normal(line) for line in printed.splitlines()]
    position, anywhere = 0, True
    for line in shown:
        if line.strip() == "…":
            anywhere = True
            continue
        want = _normal(line)
        found = want in lines[position:] if anywhere else lines[position:position + 1] == [want]
        assert found, (f"{what} does not print this line{'' if anywhere else ' next'} (write `…` for lines left "
                       f"out):\n{line}\n---- it printed ----\n{printed}")
        position, anywhere = lines.index(want, position) + 1, False


# ---- running a page ------------------------------------------------------------------------------------

def _strip_comment(line: str) -> str:
    return re.sub(r'("(?:[^"\\]|\\.)*")|#.*', lambda m: m.group(1) or "", line).rstrip()


class PageRun:
    """The blocks of one page, run in order in one folder, as a reader would run them."""

    def __init__(self, page: Path, folder: Path, full: bool):
        self.page, self.folder, self.full = page, folder, full
        self.namespace: dict = {"__name__": "__docs__"}
        self.last_output: str | None = None
        for name in ("examples", "stdlib"):
            shutil.copytree(ROOT / name, folder / name)

    # -- commands

    def run_command(self, line: str, block: Block, quick: bool) -> tuple[int, str]:
        words = shlex.split(line, comments=True)
        stdin = None
        if "<" in words:
            at = words.index("<")
            stdin = (self.folder / words[at + 1]).read_text(encoding="utf-8")
            words = words[:at] + words[at + 2:]
        if quick:
            words += shlex.split(block.directives["quick"])
        program, args = words[0], words[1:]
        if program == "gradlang":
            return self._gradlang(args, stdin)
        if program == "python":
            return self._subprocess([sys.executable, *args], stdin)
        if program == "pygmentize":
            return self._subprocess([sys.executable, "-m", "pygments", *args], stdin)
        if program in ("mpiexec", "mpirun"):
            launcher = shutil.which(program)
            try:
                import mpi4py  # noqa: F401
            except ImportError:
                launcher = None
            if launcher is None:
                pytest.skip(f"{block.id}: needs {program} and mpi4py (pip install -e '.[mpi]')")
            at = next(i for i, w in enumerate(args) if w in ("gradlang", "python"))
            command = [sys.executable, "-m", "gradlang.cli"] if args[at] == "gradlang" else [sys.executable]
            return self._subprocess([launcher, *args[:at], *command, *args[at + 1:]], stdin)
        raise AssertionError(f"{block.id}: the doc test does not know how to run `{program}`; teach "
                             "PageRun.run_command, or say why the block is not run (`<!-- not run: REASON -->`)")

    def _gradlang(self, args: list[str], stdin: str | None) -> tuple[int, str]:
        out = io.StringIO()
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin or "")
        try:
            with redirect_stdout(out), redirect_stderr(out):
                try:
                    status = main(args)
                except SystemExit as exit:
                    status = exit.code
        finally:
            sys.stdin = saved
        return status or 0, out.getvalue()

    def _subprocess(self, argv: list[str], stdin: str | None) -> tuple[int, str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(argv, cwd=self.folder, input=stdin, capture_output=True, text=True, env=env,
                              timeout=3600)
        return proc.returncode, proc.stdout + proc.stderr

    def commands(self, block: Block):
        """(command line, the lines shown as its output) for each command of a console or sh block."""
        found: list[tuple[str, list[str]]] = []
        if _is_transcript(block):
            for line in block.text.splitlines():
                if line.startswith("$ "):
                    found.append((line[2:], []))
                elif found:
                    found[-1][1].append(line)
            return found
        pending = ""
        for line in block.text.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line, pending = pending + line, ""
            if line.strip() and not line.lstrip().startswith("#"):
                found.append((line.strip(), []))
        return found

    def run_shell_block(self, block: Block) -> None:
        skip = block.directives.get("skip", "")
        prefix = skip.partition(" — ")[0].strip()
        assert not skip or (prefix and skip.partition(" — ")[2]), f"{block.id}: write `skip: PREFIX — REASON`"
        ran = 0
        for line, shown in self.commands(block):
            if prefix and line.startswith(prefix):
                continue
            quick = "quick" in block.directives and not self.full and line.split()[:2] == ["gradlang", "run"]
            status, printed = self.run_command(line, block, quick)
            self.last_output = printed
            assert status == 0, f"{block.id}: `{line}` exited with status {status}:\n{printed}"
            if not quick:       # a shortened run prints other numbers
                _assert_prints(shown, printed, f"{block.id}: `{line}`")
            ran += 1
        assert ran, f"{block.id}: every command is skipped; say `not run: REASON` instead"

    # -- the other kinds of block

    def given(self, block: Block) -> None:
        spec = block.directives["given"]
        found = re.findall(r'([^\s,]+) from ([^\s,]+)(?: with "([^"]*)" as "([^"]*)")?', spec)
        assert found, f"{block.id}: write `given: DEST from SRC` or `given: DEST from SRC with \"OLD\" as \"NEW\"`"
        for dest, source, old, new in found:
            target, source = self.folder / dest, ROOT / source
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
                continue
            text = source.read_text(encoding="utf-8")
            if old:
                assert old in text, f"{block.id}: {source.name} has no {old!r} to replace"
                text = text.replace(old, new)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")

    def python(self, block: Block) -> None:
        if "mpiexec" in block.directives:
            script = self.folder / f"snippet_{block.line}.py"
            script.write_text(block.text, encoding="utf-8")
            status, printed = self.run_command(f"mpiexec -n {block.directives['mpiexec']} python {script.name}",
                                               block, quick=False)
            assert status == 0, f"{block.id} under mpiexec exited with status {status}:\n{printed}"
            return
        out = io.StringIO()
        with redirect_stdout(out):
            exec(compile(block.text, f"{block.page.name}:{block.line}", "exec"), self.namespace)
        self.last_output = out.getvalue()

    def command_output(self, block: Block) -> None:
        printed = ""
        for line in block.directives["command"].split("&&"):
            _, printed = self.run_command(line.strip(), block, quick=False)
        _assert_prints(block.text.splitlines(), printed, f"{block.id}: `{block.directives['command']}`")

    def run(self, block: Block) -> None:
        d = block.directives
        if "given" in d:
            self.given(block)
        if "excerpt" in d:
            check_excerpt(block)
        if "setting" in d:
            check_setting(block, self.folder)
        if "paths" in d:
            check_paths(block)
        if "shapes" in d:
            check_shapes(block)
        if any(k in d for k in ("not run", "excerpt", "setting", "paths", "shapes")) or _checked_elsewhere(block):
            return
        if block.lang == "python":
            self.python(block)
        elif "command" in d:
            self.command_output(block)
        elif "output" in d:
            assert self.last_output is not None, f"{block.id}: `output`, but no command ran before it"
            _assert_prints(block.text.splitlines(), self.last_output, f"{block.id}: the command before it")
        elif _is_transcript(block) or block.lang in SHELL_LANGS:
            self.run_shell_block(block)


def check_excerpt(block: Block) -> None:
    path = ROOT / block.directives["excerpt"]

    def code(lines) -> str:     # comments, spacing and trailing commas aside: the layout may differ
        return re.sub(r",(?=[)\]}])", "", "".join("".join(_strip_comment(line).split()) for line in lines))

    source = code(path.read_text(encoding="utf-8").splitlines())
    paragraphs, current = [], []
    for line in block.text.splitlines() + [""]:
        if not line.strip() or line.strip() == "…":
            if code(current):
                paragraphs.append(current)
            current = []
        else:
            current.append(line)
    position = 0
    for paragraph in paragraphs:
        at = source.find(code(paragraph), position)
        assert at >= 0, (f"{block.id}: these lines are not (or not in this order) in {block.directives['excerpt']}, "
                         "comments aside:\n" + "\n".join(paragraph))
        position = at + len(code(paragraph))


def check_setting(block: Block, folder: Path) -> None:
    path = block.directives["setting"]
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    for setting in filter(None, map(_strip_comment, block.text.splitlines())):
        name = re.match(r"\s*(\w+)\s*=", setting)
        assert name, f"{block.id}: not a setting: {setting}"
        at = [i for i, line in enumerate(lines) if re.match(rf"\s*{name.group(1)}\s*=", line)]
        assert at, f"{block.id}: {path} has no setting {name.group(1)}"
        indent = re.match(r"\s*", lines[at[-1]]).group(0)
        lines[at[-1]] = indent + setting.strip()
    target = folder / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    gradlang.compile(target)


def check_paths(block: Block) -> None:
    folder = None
    named = re.findall(r"[\w.-]+(?:/[\w.-]+)+/?|(?<![\w/.-])[\w-]+\.py\b", block.text)
    assert named, f"{block.id}: `paths`, but it names no path"
    for name in named:
        if "/" in name:
            path = ROOT / name
            folder = path if name.endswith("/") else path.parent
        else:
            assert folder is not None, f"{block.id}: {name} comes before any folder"
            path = folder / name
        assert path.exists(), f"{block.id} names {name}, which is not in the repository"


def check_shapes(block: Block) -> None:
    prog = gradlang.compile(ROOT / block.directives["shapes"])
    shapes = set(re.findall(r"\w+\[([^\]]*)\]", prog.ir))
    shown = re.findall(r"\[(B[^\]]*)\]", block.text)
    assert shown, f"{block.id}: `shapes`, but it shows no shape [B, …]"
    for shape in shown:
        assert shape.replace(" ", "") in shapes, f"{block.id}: no value of {block.directives['shapes']} is [{shape}]"


def _cases():
    for page in PAGES:
        yield pytest.param(page, False, id=page.stem)
        if any("slow" in b.directives or "quick" in b.directives for b in BLOCKS[page]):
            yield pytest.param(page, True, id=f"{page.stem}-full", marks=pytest.mark.slow)


@pytest.mark.parametrize("page, full", list(_cases()))
def test_page(page, full, tmp_path, monkeypatch):
    """The page's blocks, in order; in the default run, all but the slow ones."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("GRADLANG_DATA", str(SHARED_DATA))
    runner = PageRun(page, folder, full)
    for block in BLOCKS[page]:
        d = block.directives
        if "slow" in d and not full:
            continue
        needs = d.get("needs")
        if needs:
            assert needs in DATA_FILES, f"{block.id}: needs one of {sorted(DATA_FILES)}"
            if not (SHARED_DATA / DATA_FILES[needs]).exists():
                pytest.skip(f"{block.id} on: needs the real {needs} files in {SHARED_DATA}")
        runner.run(block)
