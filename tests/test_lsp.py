"""The language server: the analysis behind it (diagnostics, hover, definition, completion) tested
directly, and the server itself driven over stdio through the Language Server Protocol."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gradlang.lsp.analysis import Range, analyze, from_units, to_units
from gradlang.resources import stdlib_dir

ROOT = Path(__file__).resolve().parent.parent
# the program of examples/moons_mlp.grad, kept here so that the positions the tests use do not depend on
# the example's layout
MOONS = """\
# micrograd's demo: a 2-16-16-1 ReLU network separates two moons with an SVM max-margin loss.
import nn

data moons = two_moons(n: 100, noise: 0.1, seed: 1)

input x : f32[B, 2]
input y : f32[B]

net = nn.mlp([2, 16, 16, 1], activation: relu)

scores    = net(x)[:, 0]
data_loss = mean(relu(1 - y * scores))                # SVM max-margin
reg_loss  = 1e-4 * sum_of_squares(net.params)
loss      = data_loss + reg_loss
metric accuracy = mean((scores > 0) == (y > 0))

train {
  data      = moons
  steps     = 100
  optimizer = sgd(lr: 1.0 - 0.9 * step / 100)
}
"""
MOONS_PATH = ROOT / "examples" / "moons_mlp.grad"   # analysed as if it were that file

# A program with a layer and a function of its own, each used twice with different shapes.
TWICE = """\
import nn
input x : f32[B, 4]
input y : f32[B]

fn first(h, n) {
  wide = h * 2
  return wide[:, 0:n]
}

layer block(n_in, n_out) {
  param W : [n_in, n_out]
  forward(h) = relu(h @ W)
}

a = block(4, 8)
b = block(8, 3)
h1 = a(x)
h2 = b(h1)
z = first(h2, 2)
w = first(h1, 5)
loss = mean((sum(z, axis: 1) + sum(w, axis: 1) - y) ** 2)
"""


def at(text: str, needle: str, occurrence: int = 0, offset: int = 0) -> tuple[int, int]:
    """The 0-based (line, column) of the `occurrence`-th `needle` in `text`, plus `offset` columns."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index)
    return line, index - (text.rfind("\n", 0, index) + 1) + offset


# ---- diagnostics ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.grad")) + sorted(stdlib_dir().glob("*.grad")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_examples_and_the_library_have_no_diagnostics(path):
    analysis = analyze(path.read_text(), path)
    assert analysis.diagnostics == [] and analysis.index.seen


def test_a_shape_error_covers_the_expression_it_is_about():
    text = TWICE.replace("h2 = b(h1)", "h2 = b(x)")
    errors = [d for d in analyze(text).diagnostics if d.severity == "error"]
    assert len(errors) == 1
    assert "inner dimensions 4 and 8 differ" in errors[0].message
    line, col = at(text, "h @ W")
    assert errors[0].range == Range(line, col, line, col + len("h @ W"))


def test_a_syntax_error_is_placed_at_the_offending_token():
    text = "input x : f32[B]\nloss = mean(x) +* 2\n"
    (error,) = analyze(text).diagnostics
    assert error.severity == "error" and error.message.startswith("syntax error")
    assert (error.range.start_line, error.range.start_col) == (1, 16)


def test_an_error_inside_the_standard_library_is_shown_at_the_call():
    text = "import nn\ninput x : f32[B, 3]\nnet = nn.mlp([2, 4, 1])\nloss = mean(net(x))\n"
    (error,) = analyze(text).diagnostics
    assert "inner dimensions 3 and 2 differ" in error.message
    line, col = at(text, "net(x)")
    assert error.range == Range(line, col, line, col + len("net(x)"))


def test_lint_warnings_are_warnings_at_their_declaration():
    text = "input x : f32[B]\ninput spare : f32[B]\nparam w : []\nparam idle : []\nloss = mean((x * w) ** 2)\n"
    found = {d.code: d for d in analyze(text).diagnostics}
    assert found["unused-input"].severity == "warning"
    assert found["unused-input"].range.start_line == 1 and "spare" in found["unused-input"].message
    assert found["no-gradient"].range.start_line == 3 and "idle" in found["no-gradient"].message
    assert not any(d.severity == "error" for d in found.values())


def test_an_error_found_when_the_program_is_made_is_an_error_too():
    text = "input x : f32[B]\nloss = mean(x)\ntrain {\n  seed = 1.5\n}\n"
    (error,) = analyze(text).diagnostics
    assert error.severity == "error" and "seed must be an integer" in error.message
    assert error.range == Range(3, 9, 3, 12)


def test_an_error_in_an_imported_file_is_shown_where_the_document_reaches_it(tmp_path):
    helpers = tmp_path / "helpers.grad"
    helpers.write_text("# helpers\nfn broken(v) = v @ v @ 2\n")
    main = tmp_path / "main.grad"
    text = "input x : f32[B]\nimport helpers\nloss = mean(helpers.broken(x))\n"
    (error,) = analyze(text, main).diagnostics
    line, col = at(text, "helpers.broken(x)")
    assert error.range == Range(line, col, line, col + len("helpers.broken(x)"))
    assert error.message.startswith(f"{helpers}:2:") and "rank 1 or more" in error.message
    (where, _), = error.related
    assert where.path == helpers and where.range.start_line == 1
    helpers.write_text("fn oops(v) = \n")   # a syntax error: found by the import itself
    (error,) = analyze(text, main).diagnostics
    assert error.range == Range(1, 0, 1, len("import helpers")) and "syntax error" in error.message
    (where, _), = error.related
    assert where.path == helpers and where.range.start_line == 0


def test_a_library_file_is_checked_as_an_import_would_run_it():
    nn = stdlib_dir() / "nn.grad"
    assert analyze(nn.read_text(), nn).diagnostics == []
    (error,) = analyze("fn f(x) = x\ninput y : f32[B]\n").diagnostics
    assert "declares no loss" in error.message   # an input makes it a program, which needs a loss


# ---- hover --------------------------------------------------------------------------------------------

def test_hover_shows_the_type_of_the_expression_under_the_cursor():
    analysis = analyze(MOONS, MOONS_PATH)
    assert "scores : f32[B]" in analysis.hover(*at(MOONS, "scores    ="))
    assert "input x : f32[B,2]" in analysis.hover(*at(MOONS, "net(x)", offset=4))
    # on the parenthesis of net(x): the call, whose result is [B, 1]; on [:, 0] the index, [B]
    assert "net(x) : f32[B,1]" in analysis.hover(*at(MOONS, "net(x)", offset=3))
    assert "net(x)[:, 0] : f32[B]" in analysis.hover(*at(MOONS, "[:, 0]"))
    # an operator: the innermost expression around it
    assert "y * scores : f32[B]" in analysis.hover(*at(MOONS, "y * scores", offset=2))
    assert "accuracy : f32[]" in analysis.hover(*at(MOONS, "accuracy"))


def test_hover_on_a_layer_lists_its_params_with_shapes():
    analysis = analyze(MOONS, MOONS_PATH)
    text = analysis.hover(*at(MOONS, "net = "))
    assert "layer net: 6 params" in text
    assert "`net.layers.0.W` : `f32[2,16]`" in text and "`net.layers.2.b` : `f32[1]`" in text


def test_hover_in_a_body_shows_each_type_with_the_call_that_gave_it():
    analysis = analyze(TWICE)
    text = analysis.hover(*at(TWICE, "h @ W", offset=2))
    assert "h @ W" in text and "2 types in 2 evaluations" in text
    assert "`f32[B,8]` — called from line 17" in text and "`f32[B,3]` — called from line 18" in text
    text = analysis.hover(*at(TWICE, "param W", offset=6))
    assert "`param a.W : f32[4,8]` — called from line 15" in text
    assert "`param b.W : f32[8,3]` — called from line 16" in text
    text = analysis.hover(*at(TWICE, "wide[:, 0:n]"))
    assert "`f32[B,3]` — called from line 19" in text and "`f32[B,8]` — called from line 20" in text


def test_hover_on_a_body_used_once_names_its_call():
    text = TWICE.replace("w = first(h1, 5)", "w = h1")
    hover = analyze(text).hover(*at(text, "wide[:, 0:n]", offset=4))
    assert "wide[:, 0:n] : f32[B,2]" in hover and "in the call from line 19" in hover


def test_hover_on_library_names_shows_their_signature_and_documentation():
    analysis = analyze(MOONS, MOONS_PATH)
    text = analysis.hover(*at(MOONS, "mlp("))
    assert "layer mlp(sizes, activation = relu, init = glorot_uniform)" in text
    assert "a stack of dense layers" in text
    assert "builtin relu" in analysis.hover(*at(MOONS, "relu(1"))
    assert "depends on step" in analysis.hover(*at(MOONS, "step /"))
    optimizer = analysis.hover(*at(MOONS, "sgd(", offset=3))
    assert "optimizer sgd(" in optimizer and "lr: a schedule in step" in optimizer and "momentum: 0.0" in optimizer


def test_hover_keeps_working_while_the_text_has_errors():
    good = analyze(TWICE)
    broken = TWICE.replace("h2 = b(h1)", "h2 = b(h1")
    stale = analyze(broken, previous=good)
    assert stale.diagnostics[0].severity == "error" and stale.stale
    assert "h1 : f32[B,8]" in stale.hover(*at(TWICE, "h1 = "))
    # an elaboration error: what was compiled before it still answers, from the new text
    later = TWICE.replace("z = first(h2, 2)", "z = first(h2, 2) + nothing")
    partial = analyze(later, previous=good)
    assert "unknown name 'nothing'" in partial.diagnostics[0].message and not partial.stale
    assert "h2 : f32[B,3]" in partial.hover(*at(later, "h2 = "))


def test_hover_on_nothing_says_nothing():
    analysis = analyze(MOONS)
    assert analysis.hover(*at(MOONS, "# micrograd")) is None


# ---- definitions --------------------------------------------------------------------------------------

def test_definition_of_names_in_the_document():
    analysis = analyze(TWICE)
    assert analysis.definition(*at(TWICE, "first(h2")).range == Range(*at(TWICE, "first(h, n)"), 4, 8)
    assert analysis.definition(*at(TWICE, "block(8")).range.start_line == 9
    where = analysis.definition(*at(TWICE, "h @ W", offset=4))
    assert where.path is None and where.range == Range(10, 8, 10, 9)
    where = analysis.definition(*at(TWICE, "h @ W"))            # the formal of forward(h)
    assert where.range == Range(*at(TWICE, "forward(h)", offset=8), 11, 11)
    assert analysis.definition(*at(TWICE, "h1)")).range == Range(16, 0, 16, 2)
    assert analysis.definition(*at(TWICE, "y)")).range == Range(2, 6, 2, 7)


def test_definition_follows_rebinding():
    text = "input x : f32[B]\nh = x * 2\nh = relu(h)\nloss = mean(h)\n"
    analysis = analyze(text)
    assert analysis.definition(*at(text, "relu(h)", offset=5)).range == Range(1, 0, 1, 1)
    assert analysis.definition(*at(text, "mean(h)", offset=5)).range == Range(2, 0, 2, 1)
    assert analysis.definition(*at(text, "h = relu")).range == Range(2, 0, 2, 1)   # a binding is its own


def test_definition_of_library_names_opens_the_standard_library():
    analysis = analyze(MOONS, MOONS_PATH)
    nn = (stdlib_dir() / "nn.grad").resolve()
    where = analysis.definition(*at(MOONS, "mlp("))
    line = nn.read_text().split("\n")[where.range.start_line]
    assert where.path == nn and line.startswith("layer mlp(")
    assert line[where.range.start_col:where.range.end_col] == "mlp"
    assert analysis.definition(*at(MOONS, "import nn", offset=8)) .path == nn
    text = "from nn import dense\ninput x : f32[B, 2]\nloss = mean(softplus(dense(2, 1)(x)))\n"
    analysis = analyze(text)
    assert analysis.definition(*at(text, "dense(2")).path == nn
    where = analysis.definition(*at(text, "softplus"))           # a prelude function
    assert where.path.name == "activations.grad"
    assert where.path.read_text().split("\n")[where.range.start_line].startswith("fn softplus")
    assert analysis.definition(*at(text, "mean")) is None         # a builtin has no source


# ---- completion ---------------------------------------------------------------------------------------

def test_completion_after_a_module_lists_its_members():
    analysis = analyze(MOONS, MOONS_PATH)
    typing = MOONS.replace("scores    = net(x)[:, 0]", "scores    = nn.")
    line, col = at(typing, "nn.", 1, 3)
    items = {c.label: c for c in analysis.completions(line, col, typing)}
    assert {"dense", "mlp", "embedding"} <= set(items) and "relu" not in items
    assert items["mlp"].kind == "layer" and items["mlp"].detail.startswith("layer mlp(")


def test_completion_after_a_layer_lists_its_members():
    analysis = analyze(MOONS, MOONS_PATH)
    typing = MOONS.replace("sum_of_squares(net.params)", "sum_of_squares(net.la")
    items = {c.label: c for c in analysis.completions(*at(typing, "net.la", offset=6), typing)}
    assert {"params", "layers", "sizes"} <= set(items)
    assert items["layers"].detail.startswith("a list of 3 layers")


def test_completion_of_names_in_scope_builtins_and_keywords():
    analysis = analyze(TWICE)
    items = {c.label: c for c in analysis.completions(*at(TWICE, "loss = "), TWICE)}
    assert {"h1", "block", "first", "mean", "softplus", "nn", "input", "train"} <= set(items)
    assert items["h1"].detail == "f32[B,8]" and items["mean"].kind == "builtin"
    assert "wide" not in items and "n_in" not in items
    inside = {c.label for c in analysis.completions(*at(TWICE, "return wide"), TWICE)}
    assert {"wide", "h", "n", "h1"} <= inside
    in_layer = {c.label for c in analysis.completions(*at(TWICE, "param W"), TWICE)}
    assert {"n_in", "n_out"} <= in_layer and "wide" not in in_layer


def test_completion_of_module_names_after_import(tmp_path):
    (tmp_path / "mine.grad").write_text("fn f(x) = x\n")
    items = {c.label for c in analyze("", tmp_path / "main.grad").completions(0, 7, "import ")}
    assert {"nn", "losses", "mine"} <= items and "main" not in items


def test_columns_convert_to_and_from_the_clients_units():
    line = 'x = "é𝔸" + y'
    col = line.index("+")
    assert to_units(line, col, "utf-16") == col + 1     # 𝔸 is two UTF-16 code units
    assert to_units(line, col, "utf-8") == col + 4      # é two bytes, 𝔸 four
    assert to_units(line, col, "utf-32") == col
    for encoding in ("utf-8", "utf-16", "utf-32"):
        assert from_units(line, to_units(line, col, encoding), encoding) == col


def test_a_loop_variable_shows_its_last_item_and_is_where_the_body_finds_it():
    text = "input x : f32[B]\nh = x\nfor k in [1, 2, 3] {\n  h = h * k\n}\nloss = mean(h)\n"
    analysis = analyze(text)
    assert "3 (an integer)" in analysis.hover(*at(text, "k in")) and "types" not in analysis.hover(*at(text, "k in"))
    assert analysis.definition(*at(text, "* k", offset=2)).range == Range(*at(text, "k in"), 2, 5)


def test_the_language_server_observes_the_elaborator_without_reaching_into_it():
    import ast
    for path in (ROOT / "gradlang" / "lsp").glob("*.py"):
        tree = ast.parse(path.read_text())
        from_front_end = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                          and "frontend" in (node.module or "") for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert "Elaborator" not in {ast.unparse(base).split(".")[-1] for base in node.bases}, path
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert not (node.value.id in from_front_end and node.attr.startswith("_")), (path, node.attr)
        assert not [name for name in from_front_end if name.startswith("_")], path


# ---- the server over stdio ----------------------------------------------------------------------------

class Client:
    """A minimal LSP client: Content-Length framed JSON-RPC over the server's stdin and stdout."""

    def __init__(self, command: list[str], cwd: Path):
        # the checkout's gradlang, not whichever one is installed (the server runs in another folder)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd, env=env)
        self.messages: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        stream = self.proc.stdout
        while True:
            headers = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                line = line.decode("ascii").strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                headers[key.lower()] = value.strip()
            self.messages.put(json.loads(stream.read(int(headers["content-length"]))))

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict, timeout: float = 60.0):
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        reply = self.wait(lambda m: m.get("id") == self.next_id and "method" not in m, timeout)
        assert "error" not in reply, reply
        return reply["result"]

    def wait(self, matches, timeout: float = 60.0) -> dict:
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no reply from the server; its stderr:\n{self._stderr()}") from None
            if matches(message):
                return message

    def diagnostics(self, uri: str, version: int | None = None) -> list:
        return self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                         and m["params"]["uri"] == uri
                         and (version is None or m["params"].get("version") == version))["params"]["diagnostics"]

    def _stderr(self) -> str:
        self.proc.kill()
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request("shutdown", None, timeout=10)
                self.notify("exit", None)
                self.proc.wait(timeout=10)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
        self.proc.stdout.close()
        self.proc.stdin.close()
        self.proc.stderr.close()


def position(text: str, needle: str, offset: int = 0, occurrence: int = 0) -> dict:
    line, col = at(text, needle, occurrence, offset)
    return {"line": line, "character": col}


# the two ways to start it: the gradlang command's subcommand and the module
ENTRY_POINTS = {"cli": ["-m", "gradlang.cli", "lsp"], "module": ["-m", "gradlang.lsp"]}


def start(tmp_path: Path, entry: str) -> Client:
    pytest.importorskip("pygls", reason="the language server needs pygls (pip install -e '.[lsp]')")
    client = Client([sys.executable, *ENTRY_POINTS[entry], "--debounce", "0.05"], tmp_path)
    client.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    client.notify("initialized", {})
    return client


@pytest.fixture
def server(tmp_path):
    client = start(tmp_path, "cli")
    yield client
    client.close()


@pytest.fixture
def module_server(tmp_path):
    client = start(tmp_path, "module")
    yield client
    client.close()


def test_the_server_answers_over_stdio(server, tmp_path):
    path = tmp_path / "moons.grad"
    path.write_text(MOONS)
    uri = path.as_uri()
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "gradlang", "version": 1,
                                                            "text": MOONS}})
    assert server.diagnostics(uri, 1) == []
    doc = {"textDocument": {"uri": uri}}

    hover = server.request("textDocument/hover", {**doc, "position": position(MOONS, "scores    =")})
    assert hover["contents"]["kind"] == "markdown" and "scores : f32[B]" in hover["contents"]["value"]
    hover = server.request("textDocument/hover", {**doc, "position": position(MOONS, "net(x)", 3)})
    assert "f32[B,1]" in hover["contents"]["value"]

    where = server.request("textDocument/definition", {**doc, "position": position(MOONS, "mlp(")})
    assert where["uri"] == (stdlib_dir() / "nn.grad").resolve().as_uri()
    assert where["range"]["start"]["character"] == len("layer ")
    where = server.request("textDocument/definition", {**doc, "position": position(MOONS, "net(x)")})
    assert where["uri"] == uri and where["range"]["start"] == position(MOONS, "net = ")

    # typing `nn.` (not a program yet): members of nn, from the last analysis
    typing = MOONS.replace("scores    = net(x)[:, 0]", "scores    = nn.")
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": typing}]})
    completion = server.request("textDocument/completion", {**doc, "position": position(typing, "nn.", 3, 1)})
    labels = {item["label"] for item in completion["items"]}
    assert {"dense", "mlp"} <= labels and "relu" not in labels
    (error,) = server.diagnostics(uri, 2)
    assert error["severity"] == 1 and "syntax error" in error["message"]

    # a shape error: an error diagnostic over the expression
    wrong = MOONS.replace("net(x)[:, 0]", "net(y)[:, 0]")
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                             "contentChanges": [{"text": wrong}]})
    (error,) = server.diagnostics(uri, 3)
    assert "inner dimensions" in error["message"]
    assert error["range"]["start"] == position(wrong, "net(y)")
    assert error["range"]["end"] == position(wrong, "net(y)", len("net(y)"))


def test_the_server_counts_columns_in_utf16(module_server, tmp_path):
    server = module_server
    text = 'input x : f32[B]\nfn f(v, s = "é𝔸") = v * 3\nh = f(x)\nloss = mean(h)\n'
    uri = (tmp_path / "u.grad").as_uri()
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "gradlang", "version": 1,
                                                            "text": text}})
    server.diagnostics(uri)
    line, col = at(text, "v * 3", offset=2)
    units = col + 1   # 𝔸 counts twice in UTF-16
    hover = server.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": {"line": line, "character": units}})
    assert "v * 3 : f32[B]" in hover["contents"]["value"]


def test_the_server_publishes_lint_warnings_after_compiling(server, tmp_path):
    text = "input x : f32[B]\ninput spare : f32[B]\nloss = mean(x * 2)\n"
    uri = (tmp_path / "lint.grad").as_uri()
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "gradlang", "version": 1,
                                                            "text": text}})
    assert server.diagnostics(uri, 1) == []   # compiled: no error; the lints follow
    (warning,) = server.diagnostics(uri, 1)
    assert warning["severity"] == 2 and warning["code"] == "unused-input" and warning["source"] == "gradlang"
    assert warning["range"] == {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 20}}


def test_gradlang_lsp_says_what_to_install_without_pygls(tmp_path):
    # a pygls that cannot be imported, first on the path
    (tmp_path / "pygls").mkdir()
    (tmp_path / "pygls" / "__init__.py").write_text("raise ImportError('no pygls here', name='pygls')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "gradlang.cli", "lsp"], input=b"", capture_output=True,
                          env=env, timeout=60)
    assert proc.returncode == 1 and b"pip install 'gradlang[lsp]'" in proc.stderr
