"""What an editor needs to know about one .grad document, computed from its text alone.

`analyze(text, path)` compiles the document the way `gradlang check` does, observing the elaborator to
record, for every expression of the document it evaluates, the value it got (a tensor's shape and dtype,
a layer, a function, a number) and where each name it looks up was bound. From that record:

- `diagnostics`: the compiler's error (with the range of its span) and the lint warnings;
- `hover(line, col)`: the innermost expression under the position and its type, `f32[B,16]`; code in a
  function or layer body shows every type it had, with the line of the call in the document that ran it;
- `definition(line, col)`: where a name, a module member or an imported module is defined (into the
  standard library's files for its names);
- `completions(line, col, text)`: module members after `nn.`, layer members after `net.`, module names
  after `import`, otherwise the keywords, builtins, library names and the names in scope.

Positions are 0-based lines and 0-based columns counted in characters (code points); the server converts
them to the client's units. Nothing here imports an editor protocol, so it is tested directly.
"""
from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GradError, Source, Span
from ..frontend.elaborate import Elaborator
from ..frontend.observe import ElaborationObserver
from ..frontend.syntax import ast, parse
from ..frontend.values import (
    Builtin,
    DataSpec,
    Function,
    InitSpec,
    LayerDef,
    LayerInstance,
    ModuleValue,
    OptimizerSpec,
    Scope,
    Tensor,
    UnboundLayer,
    describe,
)
from ..ops.shapes import fmt_type
from ..resources import stdlib_dir

KEYWORDS = ("import", "from", "as", "input", "param", "state", "update", "data", "fn", "layer", "forward", "loss",
            "metric", "output", "train", "for", "in", "if", "else", "return", "true", "false")
# top-level statements that make a file a program; a file with none of them is a library module
_PROGRAM_STATEMENTS = (ast.InputDecl, ast.ParamDecl, ast.DataDecl, ast.LossDecl, ast.MetricDecl,
                       ast.OutputDecl, ast.TrainBlock)
_RECURSION_LIMIT = 20_000


@dataclass(frozen=True, order=True)
class Range:
    """A stretch of one document: 0-based lines and character columns, the end exclusive."""

    start_line: int
    start_col: int
    end_line: int
    end_col: int

    @staticmethod
    def of(span: Span) -> Range:
        end_line, end_col = span.end_line - 1, span.end_col - 1
        if (end_line, end_col) <= (span.line - 1, span.col - 1):   # an empty span still marks its place
            end_line, end_col = span.line - 1, span.col
        return Range(span.line - 1, span.col - 1, end_line, end_col)

    def contains(self, line: int, col: int, inclusive_end: bool = False) -> bool:
        start, end = (self.start_line, self.start_col), (self.end_line, self.end_col)
        return start <= (line, col) < end or inclusive_end and (line, col) == end


@dataclass(frozen=True)
class Location:
    """A range in a file; `path` None is the analysed document itself (which may have no file yet)."""

    path: Path | None
    range: Range


@dataclass(frozen=True)
class Diagnostic:
    range: Range
    severity: str            # error, warning, information
    message: str
    code: str | None = None  # the lint's kind (unused-input, no-gradient, …)
    related: tuple = ()      # (Location, message) pairs: where in another file an error arose


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str                # keyword, builtin, function, layer, module, variable, field
    detail: str = ""
    documentation: str = ""


@dataclass
class _Seen:
    """One evaluation of a document expression: its value, the type text, and the document line (1-based)
    of the outermost call that ran it when it lies in a function or layer body."""

    range: Range
    value: object
    type: str | None
    call_line: int | None


@dataclass
class _Index:
    """What the recorder learned about one version of the document."""

    text: str
    module: ast.Module
    seen: list = field(default_factory=list)          # _Seen
    references: dict = field(default_factory=dict)    # Range in the document → Location of what it names
    top_scope: Scope | None = None


class _Recorder(ElaborationObserver):
    """Records, from the elaborator's hooks, each value a document expression takes and where each name
    is bound."""

    def __init__(self, document: Source, index: _Index):
        self.document = document
        self.index = index
        self.graph = None                 # the model's graph, once the elaborator exists: others are the plan's
        self.bindings: dict = {}          # (Scope, name) → Location of the name where it is bound
        self.calls: list[Span] = []
        self.loop_items: dict = {}        # (Range, Scope) of a loop variable → where in `seen` its item is
        # where a binding names its name, looked up once: a loop or a function binds its names at every run
        self.name_range = functools.cache(_name_range)
        self.error_site: Span | None = None   # the document's call through which an error elsewhere came

    # -- where names are bound --------------------------------------------------------------------
    def _bind_here(self, scope: Scope, name: str, span: Span, start: int = 0) -> Location | None:
        found = self.name_range(span, name, start)
        if found is None:
            return None
        where = Location(_file_of(span.source, self.document), found)
        self.bindings[(scope, name)] = where   # the latest binding: `h = relu(h)` rebinds h
        if span.source is self.document:
            self.index.references.setdefault(found, where)
        return where

    def on_program(self, scope: Scope) -> None:
        self.index.top_scope = scope

    def on_bind(self, name: str, value, scope: Scope, site: ast.Node) -> None:
        if isinstance(site, ast.LossDecl) and site.name is None:
            return   # the unnamed loss: `loss` is the keyword itself
        where = self._bind_here(scope, name, site.span, len(_keyword(site)))
        if where is None or site.span.source is not self.document:
            return
        # a loop variable shows the last item it held (in each scope it ran in), not every item
        slot = self.loop_items.setdefault((where.range, scope), len(self.index.seen)) \
            if isinstance(site, ast.For) else None
        self._see(where.range, value, slot)

    def on_import(self, stmt: ast.Import | ast.FromImport, path: Path, scope: Scope) -> None:
        if stmt.span.source is not self.document:
            return
        target = Location(path, Range(0, 0, 0, 0))
        dotted = _name_range(stmt.span, ".".join(stmt.module), len(_keyword(stmt)), word=False)
        if dotted is not None:
            self.index.references.setdefault(dotted, target)
        if isinstance(stmt, ast.Import):
            # `import nn`: the name nn is bound to the module; its definition is the module's file
            self.bindings.setdefault((scope, stmt.alias or stmt.module[-1]), target)

    def on_imported(self, stmt: ast.Import | ast.FromImport, module: ModuleValue, scope: Scope) -> None:
        """`from nn import dense`: dense is bound where the module binds it."""
        if not isinstance(stmt, ast.FromImport):
            return
        skip = _span_text(stmt.span).find(" import ") + len(" import ")
        for imported in stmt.names:
            value = scope.vars[imported]
            target = self.bindings.get((module.scope, imported)) or _definition_of(value, self.document)
            if target is not None:
                self.bindings[(scope, imported)] = target
            where = _name_range(stmt.span, imported, skip)
            if stmt.span.source is self.document and where is not None:
                self._see(where, value)
                if target is not None:
                    self.index.references.setdefault(where, target)

    def on_call(self, span: Span) -> None:
        self.calls.append(span)

    def on_call_end(self, span: Span, error: GradError | None) -> None:
        self.calls.pop()
        # an error in another file (a module of the user's): the innermost call in the document shows it
        if (error is not None and self.error_site is None and error.span is not None
                and error.span.source is not self.document and span.source is self.document):
            self.error_site = span

    # -- what expressions evaluate to ---------------------------------------------------------------
    def on_expression(self, node, value, scope: Scope) -> None:
        if node.span.source is not self.document:
            return
        self._see(Range.of(node.span), value)
        if isinstance(node, ast.Name):
            self._reference(Range.of(node.span), _binding_of(self.bindings, scope, node.id), value)
        elif isinstance(node, ast.Attribute):
            self._attribute(node, scope)

    def _see(self, where: Range | None, value, slot: int | None = None) -> None:
        """Record a value of the document's text at `where`: as a new record, or in place of the one at
        `slot`."""
        if where is None:
            return
        kind = _tensor_type(value)
        if kind is not None and value.graph is not self.graph:
            kind += " (a training-plan value: it depends on step)"
        call_line = next((s.line for s in self.calls if s.source is self.document), None)
        slot = len(self.index.seen) if slot is None else slot
        self.index.seen[slot:slot + 1] = [_Seen(where, value, kind, call_line)]

    def _reference(self, where: Range, bound: Location | None, value) -> None:
        in_model = not isinstance(value, Tensor) or value.graph is self.graph   # not `step` of the plan
        target = bound or (_definition_of(value, self.document) if in_model else None)
        if target is not None:
            self.index.references.setdefault(where, target)

    def _attribute(self, node: ast.Attribute, scope: Scope) -> None:
        """`nn.dense`, `net.layers`: the member's name points at its binding in the module or layer."""
        owner = _peek(node.value, scope)
        member_scope = owner.scope if isinstance(owner, (ModuleValue, LayerInstance)) else None
        if member_scope is None:
            return
        s = node.span
        where = Range(s.end_line - 1, s.end_col - 1 - len(node.name), s.end_line - 1, s.end_col - 1)
        value = member_scope.vars.get(node.name)
        self._reference(where, self.bindings.get((member_scope, node.name)), value)
        if value is not None:
            self._see(where, value)


def _peek(node, scope: Scope):
    """The value of a name or a chain of attributes, looked up again without emitting anything."""
    if isinstance(node, ast.Name):
        try:
            return scope.lookup(node.id)
        except KeyError:
            return None
    if isinstance(node, ast.Attribute):
        owner = _peek(node.value, scope)
        if isinstance(owner, (ModuleValue, LayerInstance)):
            return owner.scope.vars.get(node.name)
    return None


def _binding_of(bindings: dict, scope: Scope, name: str) -> Location | None:
    while scope is not None:
        if name in scope.vars:
            return bindings.get((scope, name))
        scope = scope.parent
    return None


def _bound_name(stmt) -> str | None:
    if isinstance(stmt, (ast.Assign, ast.InputDecl, ast.ParamDecl, ast.StateDecl, ast.DataDecl, ast.MetricDecl,
                         ast.OutputDecl, ast.FnDef, ast.LayerDef)):
        return stmt.name
    if isinstance(stmt, ast.LossDecl):
        return stmt.name   # None for the unnamed loss: `loss` is the keyword itself
    if isinstance(stmt, ast.For):
        return stmt.var
    return None


def _keyword(stmt) -> str:
    """The keyword a statement starts with, skipped when looking for the name it binds."""
    return {ast.InputDecl: "input", ast.ParamDecl: "param", ast.StateDecl: "state", ast.DataDecl: "data",
            ast.MetricDecl: "metric",
            ast.OutputDecl: "output", ast.FnDef: "fn", ast.LayerDef: "layer", ast.LossDecl: "loss",
            ast.For: "for", ast.Import: "import", ast.FromImport: "from"}.get(type(stmt), "")


def _name_range(span: Span, name: str, skip: int = 0, word: bool = True) -> Range | None:
    """Where `name` first occurs as a word in the text of `span`, `skip` characters after its start."""
    lines = _lines(span.source)
    pattern = re.compile((r"(?<![\w.])" + re.escape(name) + r"(?![\w])") if word else re.escape(name))
    for line in range(span.line, min(span.end_line, len(lines)) + 1):
        text = lines[line - 1]
        start = span.col - 1 + skip if line == span.line else 0
        end = span.end_col - 1 if line == span.end_line else len(text)
        found = pattern.search(text, start, max(start, end))
        if found:
            return Range(line - 1, found.start(), line - 1, found.end())
    return None


@functools.lru_cache(maxsize=64)
def _lines(source: Source) -> list[str]:
    """A source's lines, split once: names are looked for in them at every statement elaborated."""
    return source.text.split("\n")


def _file_of(source: Source, document: Source) -> Path | None:
    """The file a span's source was read from: None for the document itself."""
    if source is document:
        return None
    if source.name.startswith("<stdlib>/"):
        return stdlib_dir().resolve() / source.name[len("<stdlib>/"):]
    return Path(source.name)


def _definition_of(value, document: Source) -> Location | None:
    """Where a value was defined, when no binding of the name was seen (library names of the prelude)."""
    if isinstance(value, Function):
        span, name = value.span, value.name
    elif isinstance(value, LayerDef):
        span, name = value.node.span, value.node.name
    elif isinstance(value, Tensor) and value.graph.op(value.node) in ("input", "param", "state"):
        span, name = value.graph.span(value.node), value.graph.attrs(value.node)["name"].split(".")[-1]
    else:
        return None
    if span is None:
        return None
    where = _name_range(span, name, len(_keyword_of_span(span))) or Range.of(span)
    return Location(_file_of(span.source, document), where)


def _keyword_of_span(span: Span) -> str:
    word = re.match(r"\s*(\w+)", span.source.line(span.line)[span.col - 1:])
    return word.group(1) if word and word.group(1) in KEYWORDS else ""


def _tensor_type(value) -> str | None:
    if isinstance(value, Tensor):
        return fmt_type(value.shape, value.dtype)
    return None


# ---- describing values ------------------------------------------------------------------------------

def _formals(formals: list) -> str:
    parts = []
    for f in formals:
        default = _span_text(f.default.span) if f.default is not None else None
        parts.append(f.name if default is None else f"{f.name} = {default}")
    return ", ".join(parts)


def _span_text(span: Span) -> str:
    return _range_text(span.source.text, Range.of(span), limit=None)


def _comment_above(span: Span) -> str:
    """The `#` comment lines just above a definition: its documentation."""
    lines = span.source.text.split("\n")
    out, line = [], span.line - 2
    while line >= 0 and lines[line].strip().startswith("#"):
        out.append(lines[line].strip().lstrip("#").strip())
        line -= 1
    return " ".join(reversed(out))


def _summary(value, type_text: str | None) -> str:
    """One line saying what a value is."""
    if type_text is not None:
        op = value.graph.op(value.node)
        if op == "param" or op == "state" or op == "input" and "training-plan" not in type_text:
            return f"{op} {value.graph.attrs(value.node)['name']} : {type_text}"
        return type_text
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} ({describe(value)})"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, list):
        if all(isinstance(v, Tensor) for v in value) and value:
            types = ", ".join(fmt_type(v.shape, v.dtype) for v in value[:4])
            return f"a list of {len(value)} tensors: {types}{', …' if len(value) > 4 else ''}"
        if all(isinstance(v, LayerInstance) for v in value) and value:
            return f"a list of {len(value)} layers: " + ", ".join(v.name for v in value[:4]) + \
                ("…" if len(value) > 4 else "")
        text = repr(value)
        return text if len(text) <= 60 else f"a list of {len(value)} items"
    if isinstance(value, Function):
        return f"fn {value.name}({_formals(value.formals)})"
    if isinstance(value, Builtin):
        return f"builtin {value.name}"
    if isinstance(value, LayerDef):
        return f"layer {value.node.name}({_formals(value.node.formals)})"
    if isinstance(value, UnboundLayer):
        return f"layer {value.layer.node.name}(…), not yet bound to a name"
    if isinstance(value, LayerInstance):
        return f"layer {value.name}: {len(value.params)} param{'s' * (len(value.params) != 1)}"
    if isinstance(value, ModuleValue):
        return f"module {value.name}"
    if isinstance(value, DataSpec):
        return f"data source {value.source}(" + ", ".join(f"{k}: {v!r}" for k, v in value.kwargs) + ")"
    if isinstance(value, OptimizerSpec):
        settings = ", ".join(f"{k}: {'a schedule in step' if isinstance(v, Tensor) else repr(v)}"
                             for k, v in value.settings)
        return f"optimizer {value.kind}({settings})"
    if isinstance(value, InitSpec):
        return f"initialiser {value.kind}"
    return describe(value)


def _details(value) -> str:
    """More than one line about a value, where there is more to say (documentation, a layer's params)."""
    if isinstance(value, (Function, LayerDef)):
        return _comment_above(value.span if isinstance(value, Function) else value.node.span)
    if isinstance(value, Builtin):
        return value.doc
    if isinstance(value, LayerInstance):
        shown = [f"- `{p.graph.attrs(p.node)['name']}` : `{fmt_type(p.shape, p.dtype)}`" for p in value.params[:12]]
        more = len(value.params) - len(shown)
        return "\n".join(shown + ([f"- … and {more} more"] if more > 0 else []))
    return ""


# ---- the analysis -----------------------------------------------------------------------------------

class Analysis:
    """The diagnostics of one version of a document, and the record that answers hovers, definitions and
    completions — from this version, or from the last one that parsed when this one does not."""

    def __init__(self, text: str, path: Path | None, diagnostics: list[Diagnostic], index: _Index | None,
                 stale: bool = False, unlinted=None):
        self.text = text
        self.path = path
        self.diagnostics = diagnostics
        self.index = index
        self.stale = stale   # the index comes from an earlier version (this one has a syntax error)
        self._unlinted = unlinted   # (elaborated, folder, document) while the lints are still to run

    def lint(self) -> bool:
        """Add the lint warnings to the diagnostics (`analyze(..., lint=False)` leaves them for later:
        on a big model they take longer than compiling). True if there were lints to run."""
        if self._unlinted is None:
            return False
        try:
            found = _lint(*self._unlinted)
        except GradError as err:   # found while making the program (a seed that is not an integer)
            found = [_error_diagnostic(err, self._unlinted[2], self.index.module)]
        self._unlinted = None
        self.diagnostics = self.diagnostics + found
        return True

    # -- hover ----------------------------------------------------------------------------------------
    def hover(self, line: int, col: int) -> str | None:
        """Markdown: the innermost expression at the position, with its type (every type it had, and the
        call that gave it, for code in a function or layer body); None where there is nothing to show."""
        if self.index is None:
            return None
        found = _innermost(self.index.seen, line, col)
        if not found:
            return None
        where = found[0].range
        text = _range_text(self.index.text, where)
        groups: dict[str, list[_Seen]] = {}
        for seen in found:
            groups.setdefault(_summary(seen.value, seen.type), []).append(seen)
        if len(groups) == 1:
            (summary, seen), = groups.items()
            head = summary if _is_declaration(summary) else f"{text} : {summary}" if seen[0].type else summary
            body = [f"```grad\n{head}\n```"]
            calls = sorted({s.call_line for s in seen if s.call_line is not None})
            if calls:
                body.append(f"in the call{'s' * (len(calls) > 1)} from line{'s' * (len(calls) > 1)} "
                            + ", ".join(str(c) for c in calls))
        else:
            body = [f"```grad\n{text}\n```"]
            items = [f"{len(groups)} types in {len(found)} evaluations:"]
            for summary, seen in groups.items():
                calls = sorted({s.call_line for s in seen if s.call_line is not None})
                where_from = f" — called from line{'s' * (len(calls) > 1)} " + ", ".join(map(str, calls)) \
                    if calls else ""
                items.append(f"- `{summary}`{where_from}" + (f" ({len(seen)}×)" if len(seen) > 1 else ""))
            body.append("\n".join(items))
        details = _details(found[-1].value)
        if details:
            body.append(details)
        if self.stale:
            body.append("*(from the last version of the file without a syntax error)*")
        return "\n\n".join(body)

    # -- definition -----------------------------------------------------------------------------------
    def definition(self, line: int, col: int) -> Location | None:
        """Where the name (or module member, or imported module) at the position is defined."""
        if self.index is None:
            return None
        for inclusive in (False, True):   # a cursor just after a name still means the name
            hits = [(r, to) for r, to in self.index.references.items() if r.contains(line, col, inclusive)]
            if hits:
                return min(hits, key=lambda hit: _nesting_key(hit[0]))[1]
        return None

    # -- completion -----------------------------------------------------------------------------------
    def completions(self, line: int, col: int, text: str | None = None) -> list[Completion]:
        """Candidates at the position of `text` (default: the analysed text); the names come from the
        last version that compiled as far as it did."""
        lines = (text if text is not None else self.text).split("\n")
        before = lines[line][:col] if line < len(lines) else ""
        if re.match(r"\s*(import|from)\s+[\w.]*$", before):
            return _module_names(self.path)
        member = re.search(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.\w*$", before)
        top = self.index.top_scope if self.index is not None else None
        if member is not None:
            owner = _resolve_dotted(top, member.group(1).split("."))
            return _members(owner)
        items = [Completion(k, "keyword") for k in KEYWORDS]
        seen = set(KEYWORDS)
        if self.index is not None:
            for name, kind, detail in _locals_at(self.index.module, line, col):
                if name not in seen:
                    seen.add(name)
                    items.append(Completion(name, kind, detail))
        scope = top
        while scope is not None:
            for name, value in sorted(scope.vars.items()):
                if name not in seen and not name.startswith("_"):
                    seen.add(name)
                    items.append(_completion(name, value))
            scope = scope.parent
        if top is None:   # nothing compiled yet: the builtins are still known
            from ..frontend.builtins import BUILTINS
            items += [_completion(n, v) for n, v in sorted(BUILTINS.items()) if n not in seen]
        return items


def _is_declaration(summary: str) -> bool:
    return summary.startswith(("input ", "param ", "fn ", "layer ", "module ", "builtin "))


def _nesting_key(r: Range) -> tuple:
    """Sorts the innermost of nested ranges first: the latest start, then the earliest end."""
    return (-r.start_line, -r.start_col, r.end_line, r.end_col)


def _innermost(seen: list, line: int, col: int) -> list:
    for inclusive in (False, True):
        hits = [s for s in seen if s.range.contains(line, col, inclusive)]
        if hits:
            best = min((s.range for s in hits), key=_nesting_key)
            return [s for s in hits if s.range == best]
    return []


def _range_text(text: str, r: Range, limit: int | None = 60) -> str:
    """The text in a range, on one line, shortened to `limit` characters."""
    lines = text.split("\n")[r.start_line:r.end_line + 1]
    if not lines:
        return ""
    if len(lines) == 1:
        shown = lines[0][r.start_col:r.end_col]
    else:
        shown = " ".join([lines[0][r.start_col:].strip()] + [x.strip() for x in lines[1:-1]]
                         + [lines[-1][:r.end_col].strip()])
    return shown if limit is None or len(shown) <= limit else shown[:limit - 1] + "…"


def _completion(name: str, value) -> Completion:
    kind = {Builtin: "builtin", Function: "function", LayerDef: "layer", ModuleValue: "module",
            LayerInstance: "variable", Tensor: "variable"}.get(type(value), "variable")
    return Completion(name, kind, _summary(value, _tensor_type(value)), _details(value))


def _resolve_dotted(scope: Scope | None, parts: list[str]):
    if scope is None:
        return None
    try:
        value = scope.lookup(parts[0])
    except KeyError:
        return None
    for part in parts[1:]:
        if not isinstance(value, (ModuleValue, LayerInstance)):
            return None
        value = value.scope.vars.get(part)
    return value


def _members(owner) -> list[Completion]:
    if isinstance(owner, ModuleValue):
        return [_completion(n, v) for n, v in sorted(owner.scope.vars.items()) if not n.startswith("_")]
    if isinstance(owner, LayerInstance):
        items = [Completion("params", "field", f"the {len(owner.params)} params of {owner.name}")]
        return items + [Completion(n, "field", _summary(v, _tensor_type(v)), _details(v))
                        for n, v in sorted(owner.scope.vars.items()) if n != "self"]
    if isinstance(owner, Tensor):
        return [Completion("shape", "field", "the shape, as a list"), Completion("T", "field", "the transpose")]
    return []


def _module_names(path: Path | None) -> list[Completion]:
    """Importable modules: the standard library's, and the .grad files beside the document."""
    names = {p.stem: "standard library" for p in stdlib_dir().glob("*.grad")}
    if path is not None:
        for p in path.parent.glob("*.grad"):
            if p.resolve() != path.resolve():
                names.setdefault(p.stem, str(p.name))
    return [Completion(n, "module", detail) for n, detail in sorted(names.items())]


def _locals_at(module: ast.Module, line: int, col: int) -> list[tuple[str, str, str]]:
    """Formals and names bound in the definitions (fn, layer, forward) that enclose the position."""
    out = []

    def visit(body, inside: bool):
        for stmt in body if isinstance(body, list) else []:
            if inside and _bound_name(stmt):
                out.append((_bound_name(stmt), "variable", "local"))
            if isinstance(stmt, (ast.FnDef, ast.LayerDef, ast.ForwardDef)):
                if Range.of(stmt.span).contains(line, col, inclusive_end=True):
                    out.extend((f.name, "variable", "argument") for f in stmt.formals)
                    visit(stmt.body, True)
            elif isinstance(stmt, ast.For):
                visit(stmt.body, inside)
            elif isinstance(stmt, ast.If):
                visit(stmt.then + stmt.orelse, inside)

    visit(module.body, False)
    return out


# ---- compiling the document ---------------------------------------------------------------------------

def _is_library(module: ast.Module) -> bool:
    return not any(isinstance(stmt, _PROGRAM_STATEMENTS) for stmt in module.body)


def _error_diagnostic(err: GradError, document: Source, module: ast.Module | None,
                      site: Span | None = None) -> Diagnostic:
    message = err.message + "".join(f"\nnote: {n}" for n in err.notes)
    if err.span is None:
        return Diagnostic(Range(0, 0, 0, 0), "error", message)
    if err.span.source is document:
        return Diagnostic(Range.of(err.span), "error", message)
    # an error in a module the document imports: shown on that import, with a link to the place
    elsewhere = Location(_file_of(err.span.source, document), Range.of(err.span))
    if site is not None:
        return Diagnostic(Range.of(site), "error", f"{err.span}: {message}", related=((elsewhere, err.message),))
    where = Range(0, 0, 0, 0)
    stem = Path(err.span.source.name).stem
    for stmt in module.body if module is not None else []:
        if isinstance(stmt, (ast.Import, ast.FromImport)) and stmt.module[-1] == stem:
            where = Range.of(stmt.span)
            break
    return Diagnostic(where, "error", f"{err.span}: {message}", related=((elsewhere, err.message),))


def _lint(elaborated, folder: Path | None, document: Source) -> list[Diagnostic]:
    """The warnings `gradlang check` prints, placed in the document (library code at its call)."""
    from ..analysis.lint import lint
    from ..api import Program
    program = Program(elaborated, folder or Path.cwd(), None, document.name)
    sites = {}
    for _, d in elaborated.graph.nx.nodes(data=True):
        if d["span"] is not None and d["site"] is not None and d["site"].source is document:
            sites.setdefault(d["span"], d["site"])
    out = []
    for warning in lint(program):
        span = warning.span
        if span is not None and span.source is not document:
            span = sites.get(span)
        out.append(Diagnostic(Range.of(span) if span is not None else Range(0, 0, 0, 0), "warning",
                              warning.message, warning.kind))
    for rewrite in program.rewrites:
        if rewrite.span is not None and rewrite.span.source is document:
            out.append(Diagnostic(Range.of(rewrite.span), "information",
                                  f"rewritten for numerical stability: {rewrite.rule}", "stability"))
    return out


def analyze(text: str, path: str | Path | None = None, previous: Analysis | None = None,
            dtype: str = "f32", lint: bool = True) -> Analysis:
    """Compile `text` (the document at `path`, whose folder imports are resolved against; the current
    directory when None) and record what the editor asks about. `previous` is the last analysis of the
    same document: when this text does not parse, its record keeps hovers and completions working.
    With `lint` False the warnings wait for `Analysis.lint()`."""
    path = Path(path) if path is not None else None
    folder = path.resolve().parent if path is not None else Path.cwd()
    name = str(path) if path is not None else "<document>"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _RECURSION_LIMIT))
    try:
        try:
            module = parse(text, name)
        except GradError as err:
            index = previous.index if previous is not None else None
            document = err.span.source if err.span is not None and err.span.source.name == name else Source(name, text)
            return Analysis(text, path, [_error_diagnostic(err, document, None)], index, stale=index is not None)
        document = module.span.source
        recorder = _Recorder(document, _Index(text, module))
        elaborator = Elaborator(dtype, observer=recorder)
        recorder.graph = elaborator.graph
        diagnostics: list[Diagnostic] = []
        unlinted = None
        try:
            if _is_library(module):
                # a library file is checked the way an import runs it
                recorder.index.top_scope = Scope(elaborator.prelude)
                elaborator.exec_block(module.body, recorder.index.top_scope, context="module", folder=folder)
            else:
                unlinted = (elaborator.elaborate_main(module, folder), folder, document)
        except GradError as err:
            diagnostics.insert(0, _error_diagnostic(err, document, module, recorder.error_site))
        except RecursionError:
            diagnostics.insert(0, Diagnostic(Range(0, 0, 0, 0), "error", "the program nests calls or "
                                             "expressions too deeply to compile"))
        analysis = Analysis(text, path, diagnostics, recorder.index, unlinted=unlinted)
        if lint:
            analysis.lint()
        return analysis
    finally:
        sys.setrecursionlimit(limit)


# ---- positions in the client's units -------------------------------------------------------------------

def to_units(line_text: str, col: int, encoding: str = "utf-16") -> int:
    """A character column as the client counts it (LSP's default counts UTF-16 code units)."""
    head = line_text[:col]
    if encoding == "utf-8":
        return len(head.encode("utf-8")) + max(0, col - len(line_text))
    if encoding == "utf-16":
        return len(head.encode("utf-16-le")) // 2 + max(0, col - len(line_text))
    return col


def from_units(line_text: str, units: int, encoding: str = "utf-16") -> int:
    """The character column of a position the client gives in its units."""
    if encoding == "utf-32":
        return units
    count = 0
    for i, ch in enumerate(line_text):
        if count >= units:
            return i
        count += len(ch.encode("utf-8")) if encoding == "utf-8" else len(ch.encode("utf-16-le")) // 2
    return len(line_text) + max(0, units - count)
