"""The language server: `gradlang lsp` (or `python -m gradlang.lsp`) speaks LSP on stdin/stdout.

A thin layer over `analysis`: each open document is analysed again a moment after it stops changing
(one analysis at a time, in a worker thread, so requests are answered meanwhile); hovers and definitions
wait for the analysis of the text they ask about, completions use the last one at once (the text being
typed, `nn.`, does not parse yet). Positions are converted between characters and the client's units.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import threading
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from .. import __version__
from .analysis import Analysis, Completion, Diagnostic, Location, Range, analyze, from_units, to_units

_log = logging.getLogger(__name__)
DEBOUNCE_SECONDS = 0.3
_SEVERITY = {"error": lsp.DiagnosticSeverity.Error, "warning": lsp.DiagnosticSeverity.Warning,
             "information": lsp.DiagnosticSeverity.Information}
_KIND = {"keyword": lsp.CompletionItemKind.Keyword, "builtin": lsp.CompletionItemKind.Function,
         "function": lsp.CompletionItemKind.Function, "layer": lsp.CompletionItemKind.Class,
         "module": lsp.CompletionItemKind.Module, "variable": lsp.CompletionItemKind.Variable,
         "field": lsp.CompletionItemKind.Field}


class GradLanguageServer(LanguageServer):
    def __init__(self, debounce: float = DEBOUNCE_SECONDS):
        super().__init__("gradlang", __version__)
        self.debounce = debounce
        self.analyses: dict[str, Analysis] = {}
        self.pending: dict[str, asyncio.Task] = {}   # compiling (hovers wait for it)
        self.linting: dict[str, asyncio.Task] = {}   # then the lints, which can take longer
        # one compilation at a time: the elaborator sets the process's recursion limit while it runs
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradlang-analysis")

    # -- analysing documents -------------------------------------------------------------------------
    def schedule(self, uri: str, delay: float) -> None:
        """Analyse the document after `delay` seconds, unless it changes again before then."""
        for tasks in (self.pending, self.linting):
            previous = tasks.pop(uri, None)
            if previous is not None and not previous.done():
                previous.cancel()
        self.pending[uri] = asyncio.ensure_future(self._analyse(uri, delay))

    async def _analyse(self, uri: str, delay: float) -> None:
        await asyncio.sleep(delay)
        document = self.workspace.get_text_document(uri)
        text, version = document.source, document.version
        loop = asyncio.get_running_loop()
        previous = self.analyses.get(uri)
        try:
            analysis = await loop.run_in_executor(self.worker,
                                                  lambda: analyze(text, _path_of(uri), previous, lint=False))
        except Exception as err:   # a bug in gradlang: said in the editor, rather than falling silent
            _log.exception("analysing %s", uri)
            analysis = Analysis(text, _path_of(uri), [Diagnostic(Range(0, 0, 0, 0), "error", _internal(err))],
                                previous.index if previous is not None else None, stale=previous is not None)
        self.analyses[uri] = analysis
        self.publish(uri, analysis, version)
        self.linting[uri] = asyncio.ensure_future(self._lint(uri, analysis, version))

    async def _lint(self, uri: str, analysis: Analysis, version: int | None) -> None:
        try:
            linted = await asyncio.get_running_loop().run_in_executor(self.worker, analysis.lint)
        except Exception as err:
            _log.exception("linting %s", uri)
            analysis.diagnostics = analysis.diagnostics + [Diagnostic(Range(0, 0, 0, 0), "warning", _internal(err))]
            linted = True
        if linted:
            self.publish(uri, analysis, version)

    def publish(self, uri: str, analysis: Analysis, version: int | None) -> None:
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
            uri=uri, version=version, diagnostics=[self._diagnostic(uri, analysis, d) for d in analysis.diagnostics]))

    async def current(self, uri: str) -> Analysis | None:
        """The analysis of the document's latest text: waits for one that is pending."""
        while True:
            task = self.pending.get(uri)
            if task is None or task.done():
                return self.analyses.get(uri)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():   # this request itself was cancelled
                    raise

    def forget(self, uri: str) -> None:
        for tasks in (self.pending, self.linting):
            task = tasks.pop(uri, None)
            if task is not None:
                task.cancel()
        self.analyses.pop(uri, None)
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    # -- positions ----------------------------------------------------------------------------------
    @property
    def encoding(self) -> str:
        kind = self.workspace.position_encoding
        return str(getattr(kind, "value", kind) or "utf-16")

    def to_range(self, lines: list[str], r: Range) -> lsp.Range:
        def position(line: int, col: int) -> lsp.Position:
            text = lines[line] if line < len(lines) else ""
            return lsp.Position(line=line, character=to_units(text, col, self.encoding))
        return lsp.Range(start=position(r.start_line, r.start_col), end=position(r.end_line, r.end_col))

    def from_position(self, analysis: Analysis, position: lsp.Position) -> tuple[int, int]:
        lines = analysis.text.split("\n")
        text = lines[position.line] if position.line < len(lines) else ""
        return position.line, from_units(text, position.character, self.encoding)

    def to_location(self, uri: str, analysis: Analysis, where: Location) -> lsp.Location:
        if where.path is None:
            return lsp.Location(uri=uri, range=self.to_range(analysis.text.split("\n"), where.range))
        try:
            lines = where.path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            lines = []
        return lsp.Location(uri=from_fs_path(str(where.path)), range=self.to_range(lines, where.range))

    def _diagnostic(self, uri: str, analysis: Analysis, d: Diagnostic) -> lsp.Diagnostic:
        related = [lsp.DiagnosticRelatedInformation(location=self.to_location(uri, analysis, where), message=text)
                   for where, text in d.related] or None
        return lsp.Diagnostic(range=self.to_range(analysis.text.split("\n"), d.range), message=d.message,
                              severity=_SEVERITY[d.severity], source="gradlang", code=d.code,
                              related_information=related)


def _internal(err: Exception) -> str:
    return (f"internal error in gradlang: {type(err).__name__}: {err} (the server's log has the traceback; "
            "please report it)")


def _path_of(uri: str) -> Path | None:
    """The file behind a document, when it has one (an unsaved buffer resolves imports from the cwd)."""
    if not uri.startswith("file:"):
        return None
    path = to_fs_path(uri)
    return Path(path) if path else None


def _completion_item(c: Completion) -> lsp.CompletionItem:
    doc = lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=c.documentation) if c.documentation else None
    return lsp.CompletionItem(label=c.label, kind=_KIND.get(c.kind), detail=c.detail or None, documentation=doc)


def make_server(debounce: float = DEBOUNCE_SECONDS) -> GradLanguageServer:
    server = GradLanguageServer(debounce)

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: GradLanguageServer, params: lsp.DidOpenTextDocumentParams):
        ls.schedule(params.text_document.uri, 0.0)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: GradLanguageServer, params: lsp.DidChangeTextDocumentParams):
        ls.schedule(params.text_document.uri, ls.debounce)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: GradLanguageServer, params: lsp.DidSaveTextDocumentParams):
        ls.schedule(params.text_document.uri, 0.0)   # a module it imports may have changed too

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: GradLanguageServer, params: lsp.DidCloseTextDocumentParams):
        ls.forget(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    async def hover(ls: GradLanguageServer, params: lsp.HoverParams):
        analysis = await ls.current(params.text_document.uri)
        if analysis is None:
            return None
        text = analysis.hover(*ls.from_position(analysis, params.position))
        if text is None:
            return None
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text))

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    async def definition(ls: GradLanguageServer, params: lsp.DefinitionParams):
        uri = params.text_document.uri
        analysis = await ls.current(uri)
        if analysis is None:
            return None
        where = analysis.definition(*ls.from_position(analysis, params.position))
        return None if where is None else ls.to_location(uri, analysis, where)

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["."]))
    async def completion(ls: GradLanguageServer, params: lsp.CompletionParams):
        uri = params.text_document.uri
        analysis = ls.analyses.get(uri) or await ls.current(uri)
        if analysis is None:
            return None
        text = ls.workspace.get_text_document(uri).source
        lines = text.split("\n")
        line = params.position.line
        col = from_units(lines[line] if line < len(lines) else "", params.position.character, ls.encoding)
        items = analysis.completions(line, col, text)
        return lsp.CompletionList(is_incomplete=False, items=[_completion_item(c) for c in items])

    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradlang lsp", description="The gradlang language server, on stdio.")
    parser.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default and only way)")
    parser.add_argument("--debounce", type=float, default=DEBOUNCE_SECONDS,
                        help=f"seconds to wait after a change before compiling (default {DEBOUNCE_SECONDS})")
    args = parser.parse_args(argv)
    # the elaborator recurses deeply on big programs; the analysis thread gets a stack to match
    threading.stack_size(64 * 1024 * 1024)
    make_server(args.debounce).start_io()
    return 0
