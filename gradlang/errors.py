"""Source locations and the one error type every stage raises.

A `GradError` carries a `Span`; `format()` renders it the way compilers do:

    model.grad:12:9: error: cannot multiply f32[B,784] @ f32[100,10]: inner dimensions 784 and 100 differ
       12 | logits = x @ W
          |          ^^^^^
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Source:
    """A named piece of text that spans point into."""

    name: str
    text: str

    def line(self, number: int) -> str:
        lines = self.lines
        return lines[number - 1].rstrip("\r") if 0 < number <= len(lines) else ""

    @cached_property
    def lines(self) -> list[str]:
        """The text's lines, split once (a file with many warnings formats one line each). Only \n
        ends a line, as for the lexer (str.splitlines would also split at \f, \x1c, \u2028, …)."""
        return self.text.split("\n")


@dataclass(frozen=True)
class Span:
    source: Source
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}:{self.col}"

    def __repr__(self) -> str:
        return f"Span({self})"


class GradError(Exception):
    """An error in a gradlang program (or its data), located in the source when possible."""

    def __init__(self, message: str, span: Span | None = None, notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = notes

    def format(self) -> str:
        if self.span is None:
            head = f"error: {self.message}"
            return "\n".join([head, *(f"note: {n}" for n in self.notes)])
        s = self.span
        text = s.source.line(s.line)
        width = (s.end_col - s.col) if s.end_line == s.line and s.end_col > s.col else 1
        width = max(1, min(width, len(text) - s.col + 1)) if text else 1
        gutter = " " * len(str(s.line))
        # the caret lines up under the text in any terminal: a tab before it stays a tab
        indent = "".join(c if c == "\t" else " " for c in text[:s.col - 1]).ljust(s.col - 1)
        lines = [
            f"{s}: error: {self.message}",
            f" {s.line} | {text}",
            f" {gutter} | {indent}{'^' * width}",
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
