"""What the elaborator tells an observer as it runs.

The language server learns from these hooks what a document's names and expressions are, without
depending on how the elaborator is built. An observer sees names bound, imports resolved, expressions
evaluated and calls entered and left, in the order the elaborator meets them (a function's body once
per call); it only watches. Subclass `ElaborationObserver` and override the hooks wanted. Without an
observer the elaborator calls none of them.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GradError, Span
from .syntax import ast
from .values import ModuleValue, Scope


class ElaborationObserver:
    def on_program(self, scope: Scope) -> None:
        """The program's top-level scope, before its first statement runs."""

    def on_import(self, stmt: ast.Import | ast.FromImport, path: Path, scope: Scope) -> None:
        """An import found its module's file; called before the module loads, so also when loading fails."""

    def on_imported(self, stmt: ast.Import | ast.FromImport, module: ModuleValue, scope: Scope) -> None:
        """An import bound its names in `scope` (imports are not reported to on_bind)."""

    def on_bind(self, name: str, value, scope: Scope, site: ast.Node) -> None:
        """`name` holds `value` in `scope` now. `site` is the node whose text names it: a statement (an
        assignment or declaration once its value is known; a `for` at each item, before the body runs)
        or a formal (once all of a call's arguments are bound)."""

    def on_expression(self, node: ast.Node, value, scope: Scope) -> None:
        """`node` evaluated to `value` in `scope` (not called when it raised)."""

    def on_call(self, span: Span) -> None:
        """The body of the function or layer called at `span` starts running."""

    def on_call_end(self, span: Span, error: GradError | None) -> None:
        """That body is done; `error` is the error the call raises, if it raises one."""
