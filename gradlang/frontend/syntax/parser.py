"""Lark parse tree → AST, with friendly syntax errors."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from lark import Lark, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from ... import resources
from ...errors import GradError, Source, Span
from . import ast

_OPENERS = {"LPAR", "LSQB"}
_CLOSERS = {"RPAR", "RSQB"}

# How deeply statements and expressions may nest (a chain `a + b + c + …` nests one level per operator).
# The elaborator evaluates expressions recursively, so a limit here keeps it inside Python's stack.
MAX_NESTING = 100
# A number literal longer than this fits no dtype (i64 has 19 digits; an f64 written out in full, 330 or
# so), and Python refuses to convert an integer of more than 4,300 digits.
MAX_NUMBER_DIGITS = 400
# parse-tree nodes that only group the parts of another (`f(a)` is call > args > positional): no level
_WRAPPERS = {"args", "positional", "keyword", "subscripts", "at", "range_slice", "block", "formals", "formal",
             "shape", "typed_shape", "untyped_shape", "scalar_type", "dotted_name", "setting", "setting_key"}


# a line ending in one of these continues on the next line
CONTINUES = {"=", "+", "-", "*", "/", "@", "**", "==", "!=", "<", "<=", ">", ">=", ",", ":"}


class _Newlines:
    """Post-lexer: a newline inside () or [] or after an operator is whitespace; runs of newlines
    (split by comments) are one."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        skip_newline = True
        for tok in stream:
            if tok.type == "_NL":
                if depth or skip_newline:
                    continue
                skip_newline = True
            else:
                skip_newline = tok.type not in ("NAME", "NUMBER", "STRING") and str(tok) in CONTINUES
                if tok.type in _OPENERS:
                    depth += 1
                elif tok.type in _CLOSERS:
                    depth = max(0, depth - 1)
            yield tok


def lark_parser(**options) -> Lark:
    """A new LALR parser of the compiler's grammar with its post-lexer (positions kept, optional parts
    as None); `options` adds Lark options (the formatter keeps every token and the comments)."""
    return Lark(
        resources.grammar_path().read_text(),
        parser="lalr",
        postlex=_Newlines(),
        propagate_positions=True,
        maybe_placeholders=True,
        **options,
    )


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return lark_parser()


def _number(text: str) -> int | float:
    return int(text) if text.isdigit() else float(text)


_UNESCAPE = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _string(text: str) -> str:
    out, chars = [], iter(text[1:-1])
    for ch in chars:
        out.append(_UNESCAPE.get(next(chars, ""), "") if ch == "\\" else ch)
    return "".join(out)


@v_args(meta=True)
class ToAst(Transformer_NonRecursive):
    """One method per grammar rule (or alias), each building one AST node."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.source, 1, 1, 1, 1)
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    # statements
    def start(self, meta, children):
        return ast.Module(self._span(meta), list(children))

    def block(self, meta, children):
        return list(children)

    def dotted_name(self, meta, parts):
        return [str(p) for p in parts]

    def import_stmt(self, meta, c):
        return ast.Import(self._span(meta), c[0], str(c[1]) if c[1] is not None else None)

    def from_import(self, meta, c):
        return ast.FromImport(self._span(meta), c[0], [str(n) for n in c[1:]])

    def input_decl(self, meta, c):
        return ast.InputDecl(self._span(meta), str(c[0]), c[1])

    def param_decl(self, meta, c):
        return ast.ParamDecl(self._span(meta), str(c[0]), c[1], c[2])

    def state_decl(self, meta, c):   # c[0] is the keyword (a soft one: see the grammar)
        return ast.StateDecl(self._span(meta), str(c[1]), c[2], c[3])

    def update_stmt(self, meta, c):
        return ast.Update(self._span(meta), str(c[1]), c[2])

    def typed_shape(self, meta, c):
        return ast.TypeSpec(self._span(meta), str(c[0]), c[1])

    def scalar_type(self, meta, c):
        return ast.TypeSpec(self._span(meta), str(c[0]), None)

    def untyped_shape(self, meta, c):
        return ast.TypeSpec(self._span(meta), None, c[0])

    def shape(self, meta, c):
        return [d for d in c if d is not None]

    def data_decl(self, meta, c):
        return ast.DataDecl(self._span(meta), str(c[0]), c[1])

    def fn_def(self, meta, c):
        return ast.FnDef(self._span(meta), str(c[0]), c[1], c[2])

    def layer_def(self, meta, c):
        return ast.LayerDef(self._span(meta), str(c[0]), c[1], c[2])

    def forward_def(self, meta, c):
        return ast.ForwardDef(self._span(meta), c[0], c[1])

    def formals(self, meta, c):
        return [f for f in c if f is not None]

    def formal(self, meta, c):
        return ast.Formal(self._span(meta), str(c[0]), c[1])

    def assign(self, meta, c):
        return ast.Assign(self._span(meta), str(c[0]), c[1])

    def loss_decl(self, meta, c):
        return ast.LossDecl(self._span(meta), str(c[0]) if c[0] is not None else None, c[1])

    def output_decl(self, meta, c):
        return ast.OutputDecl(self._span(meta), str(c[0]), c[1])

    def metric_decl(self, meta, c):
        return ast.MetricDecl(self._span(meta), str(c[0]), c[1])

    def train_block(self, meta, c):
        return ast.TrainBlock(self._span(meta), list(c))

    def setting(self, meta, c):
        return ast.Assign(self._span(meta), c[0], c[1])

    def setting_key(self, meta, c):
        return str(c[0])

    def for_stmt(self, meta, c):
        return ast.For(self._span(meta), str(c[0]), c[1], c[2])

    def if_stmt(self, meta, c):
        orelse = c[2]
        if isinstance(orelse, ast.If):
            orelse = [orelse]
        return ast.If(self._span(meta), c[0], c[1], orelse or [])

    def return_stmt(self, meta, c):
        return ast.Return(self._span(meta), c[0])

    def assert_stmt(self, meta, c):
        return ast.Assert(self._span(meta), c[0], c[1])

    # expressions
    def number(self, meta, c):
        text = str(c[0])
        if len(text) > MAX_NUMBER_DIGITS:
            raise GradError(f"a number written with {len(text):,} characters is longer than the limit of "
                            f"{MAX_NUMBER_DIGITS} (no type holds it)", self._span(meta))
        return ast.Number(self._span(meta), _number(text))

    def string(self, meta, c):
        return ast.String(self._span(meta), _string(str(c[0])))

    def true(self, meta, c):
        return ast.Bool(self._span(meta), True)

    def false(self, meta, c):
        return ast.Bool(self._span(meta), False)

    def name(self, meta, c):
        return ast.Name(self._span(meta), str(c[0]))

    def list(self, meta, c):
        return ast.ListExpr(self._span(meta), [x for x in c if x is not None])

    def list_comp(self, meta, c):
        return ast.ListComp(self._span(meta), c[0], str(c[1]), c[2])

    def compare(self, meta, c):
        return ast.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    def binop(self, meta, c):
        return ast.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    def pow(self, meta, c):
        return ast.BinOp(self._span(meta), "**", c[0], c[1])

    def neg(self, meta, c):
        return ast.Neg(self._span(meta), c[0])

    def call(self, meta, c):
        func, args = c
        positional = [a for a in args if not isinstance(a, ast.Keyword)]
        keywords = [a for a in args if isinstance(a, ast.Keyword)]
        return ast.Call(self._span(meta), func, positional, keywords)

    def args(self, meta, c):
        return [a for a in c if a is not None]

    def positional(self, meta, c):
        return c[0]

    def keyword(self, meta, c):
        return ast.Keyword(self._span(meta), str(c[0]), c[1])

    def index(self, meta, c):
        return ast.Index(self._span(meta), c[0], c[1])

    def subscripts(self, meta, c):
        return list(c)

    def at(self, meta, c):
        return c[0]

    def range_slice(self, meta, c):
        return ast.Slice(self._span(meta), c[0], c[1], c[2])

    def attribute(self, meta, c):
        return ast.Attribute(self._span(meta), c[0], str(c[1]))


_TOKEN_WORDS = {
    "_NL": "end of line", "$END": "end of file", "NAME": "a name", "NUMBER": "a number",
    "STRING": "a string", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='",
    "DOT": "'.'", "COMP_OP": "a comparison", "MINUS": "'-'", "PLUS": "'+'", "_POW": "'**'",
}
# the keywords a statement can start with; several of them expected at once read as "a statement"
_STATEMENT_STARTS = {"IMPORT", "FROM", "INPUT", "PARAM", "STATE", "UPDATE", "DATA", "FN", "LAYER", "FORWARD",
                     "LOSS", "METRIC", "TRAIN", "FOR", "IF", "RETURN"}
# what may follow a complete expression; several of them expected at once read as "an operator"
_OPERATORS = {"ADD_OP", "MUL_OP", "COMP_OP", "_POW", "DOT", "LPAR", "LSQB"}
# an operator token that stands for several operators is expected as each of them
_OPERATOR_WORDS = {"ADD_OP": ["'+'", "'-'"], "MUL_OP": ["'*'", "'/'", "'@'"]}
# keywords that start a statement and so cannot name a variable (`data = 3`)
_KEYWORDS = {"import", "from", "input", "param", "data", "fn", "layer", "forward", "metric", "train", "for",
             "if", "return"}
# what an expression can start with; expected together they read as "an expression"
_EXPRESSION_STARTS = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "PLUS", "TRUE", "FALSE"}
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_HINTS = {"'": "strings are written in double quotes", ";": "a statement ends at the end of its line"}


def _describe(token_type: str) -> str:
    if token_type in _TOKEN_WORDS:
        return _TOKEN_WORDS[token_type]
    try:
        pattern = _parser().get_terminal(token_type).pattern
        return f"'{pattern.value}'"
    except (KeyError, AttributeError):
        return token_type.lower()


def _expected(types: set[str]) -> list[str]:
    """What the parser would have accepted, in words: specific tokens first, then the summaries."""
    types = set(types)
    summaries = []
    if len(types & _STATEMENT_STARTS) >= 3:
        in_train = "FN" not in types   # a train block's settings may be named like these keywords
        types -= _STATEMENT_STARTS | {"NAME", "_NL", "$END"}
        summaries.append("a setting (name = value)" if in_train else "a statement")
    if {"NAME", "NUMBER", "STRING"} <= types:
        types -= _EXPRESSION_STARTS
        summaries.append("an expression")
    if {"ADD_OP", "MUL_OP"} <= types:
        types -= _OPERATORS
        summaries.append("an operator")
    if "_NL" in types:   # the end of the file is also the end of a line
        types.discard("$END")
    words = sorted({w for t in types if not t.startswith("_") or t in ("_NL", "_POW")
                    for w in _OPERATOR_WORDS.get(t, [_describe(t)])} - {"end of line", "end of file"})
    tail = [w for w in ("end of line", "end of file") if {"end of line": "_NL", "end of file": "$END"}[w] in types]
    return summaries + words + tail


def _join(words: list[str]) -> str:
    if len(words) > 6:
        words = words[:6] + ["…"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _brackets(text: str, stop: int | None = None) -> list[tuple[str, int, int]]:
    """The brackets still open at offset `stop` (the end by default), as (bracket, line, col), innermost
    last; strings and comments are skipped, a closer pops its opener (a mismatched one pops nothing)."""
    stack: list[tuple[str, int, int]] = []
    line, col, i, n = 1, 1, 0, len(text) if stop is None else min(stop, len(text))
    while i < n:
        ch = text[i]
        if ch == "\n":
            line, col, i = line + 1, 1, i + 1
            continue
        if ch == "#":
            while i < n and text[i] != "\n":
                i += 1
                col += 1
            continue
        if ch == '"':
            i, col = i + 1, col + 1
            while i < n and text[i] not in '"\n':
                step = 2 if text[i] == "\\" and i + 1 < n and text[i + 1] != "\n" else 1
                i, col = i + step, col + step
            if i < n and text[i] == '"':
                i, col = i + 1, col + 1
            continue
        if ch in _PAIRS:
            stack.append((ch, line, col))
        elif ch in ")]}" and stack and _PAIRS[stack[-1][0]] == ch:
            stack.pop()
        i, col = i + 1, col + 1
    return stack


def _syntax_error(err: UnexpectedInput, source: Source) -> GradError:
    line, col = max(1, err.line), max(1, err.column)
    if isinstance(err, UnexpectedCharacters):
        ch = source.line(line)[col - 1: col] or "?"
        if ch == '"':
            return GradError("syntax error: unterminated string (a string ends with \" on the line it starts)",
                             Span(source, line, col, line, len(source.line(line)) + 1))
        hint = _HINTS.get(ch, "")
        if not ch.isascii() and ch.isalpha():
            hint = "names are made of ASCII letters, digits and _"
        return GradError(f"syntax error: unexpected character {ch!r}" + (f"; {hint}" if hint else ""),
                         Span(source, line, col, line, col + 1))
    if isinstance(err, (UnexpectedToken, UnexpectedEOF)):
        tok = getattr(err, "token", None)
        if tok is None or tok.type == "$END":
            unclosed = _brackets(source.text)
            if unclosed:
                bracket, line, col = unclosed[-1]
                return GradError(f"syntax error: '{bracket}' is never closed (the file ends before its "
                                 f"'{_PAIRS[bracket]}')", Span(source, line, col, line, col + 1))
            if getattr(tok, "end_line", None) and getattr(tok, "end_column", None):
                line, col = tok.end_line, tok.end_column   # $END borrows the last token's place: just after it
            else:
                lines = source.text.split("\n")
                while len(lines) > 1 and not lines[-1].strip():
                    lines.pop()
                line, col = len(lines), len(lines[-1].rstrip("\r")) + 1
            what, width = "end of file", 1
        else:
            what = "end of line" if tok.type == "_NL" else repr(str(tok))
            width = 1 if tok.type == "_NL" else max(1, len(str(tok)))
            if tok.type in ("RPAR", "RSQB", "RBRACE") and tok.start_pos is not None:
                open_ = _brackets(source.text, tok.start_pos)
                if not open_:
                    return GradError(f"syntax error: unmatched {what}: there is no opening bracket before it",
                                     Span(source, line, col, line, col + width))
            if tok.type == "EQUAL" and tok.start_pos is not None:
                before = source.text[:tok.start_pos]
                word = before.rstrip(" \t").rsplit("\n", 1)[-1].strip()
                if word in _KEYWORDS:
                    start = len(before.rstrip(" \t")) - len(word)
                    kcol = start - (before.rfind("\n", 0, start) + 1) + 1
                    return GradError(f"syntax error: '{word}' is a keyword and cannot be used as a name",
                                     Span(source, line, kcol, line, kcol + len(word)))
            if tok.type == "COMP_OP" and "COMP_OP" not in (getattr(err, "accepts", None) or ()):
                return GradError(f"syntax error: unexpected {what}: comparisons do not chain (a < b < c); "
                                 "compare two values at a time", Span(source, line, col, line, col + width))
        accepts = getattr(err, "accepts", None) or getattr(err, "expected", None) or set()
        expected = _expected(accepts)
        hint = f"; expected {_join(expected)}" if expected else ""
        if tok is not None and tok.type != "$END" and "NAME" in accepts and str(tok).isidentifier() \
                and tok.type not in ("NAME", "TRUE", "FALSE"):
            hint += f" ('{tok}' is a keyword and cannot be used as a name)"
        return GradError(f"syntax error: unexpected {what}{hint}", Span(source, line, col, line, col + width))
    return GradError(f"syntax error: {err}", Span(source, line, col, line, col + 1))


def _check_nesting(tree: Tree, source: Source) -> None:
    """Refuse statements and expressions nested more than MAX_NESTING levels deep (iteratively: a
    recursive walk is what the limit protects against)."""
    todo = [(tree, 0)]
    while todo:
        node, depth = todo.pop()
        if node.data not in _WRAPPERS:
            depth += 1
        if depth > MAX_NESTING:
            meta = node.meta
            line, col = getattr(meta, "line", 1), getattr(meta, "column", 1)
            raise GradError(f"syntax error: nested more than {MAX_NESTING} levels deep; split the expression "
                            "into several assignments", Span(source, line, col, line, col + 1))
        todo.extend((child, depth) for child in node.children if isinstance(child, Tree))


def parse(text: str, name: str = "<string>") -> ast.Module:
    """Parse gradlang source text into an `ast.Module`; raise `GradError` on a syntax error."""
    source = Source(name, text)
    try:
        tree = _parser().parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as err:
        raise _syntax_error(err, source) from None
    _check_nesting(tree, source)
    try:
        return ToAst(source).transform(tree)
    except VisitError as err:   # Lark wraps what a rule's method raises
        if isinstance(err.orig_exc, GradError):
            raise err.orig_exc from None
        raise


# train settings whose value is text: a bare word given for one is a string missing its quotes
_TEXT_SETTINGS = ("save", "checkpoint", "on_nonfinite")


def parse_setting(name: str, value: str, origin: str) -> ast.Assign:
    """A train setting given outside the file (`--set NAME=VALUE`, `compile(settings=…)`): `value` is a
    gradlang expression, parsed as the line `train { NAME = VALUE }` of a source named `origin`, so that an
    error in it is shown on that line with a caret, like one in the file."""
    if not isinstance(value, str):
        raise GradError(f"{origin}: the value of {name} must be gradlang text, got {type(value).__name__}")
    if "\n" in value or "\r" in value:
        raise GradError(f"{origin}: the value of {name} must be one line, got {value!r}")
    if name in _TEXT_SETTINGS and re.fullmatch(r"[\w./~-]+", value.strip()) and not value.strip()[0].isdigit():
        raise GradError(f"{origin}: {name} takes text in quotes, as in the file: {name}='\"{value.strip()}\"'")
    module = parse(f"train {{ {name} = {value} }}", origin)
    block = module.body[0] if len(module.body) == 1 else None
    if not isinstance(block, ast.TrainBlock) or len(block.body) != 1:
        raise GradError(f"{origin}: {name} = {value!r} is not one setting", module.span)
    return block.body[0]


def parse_file(path: str | Path, display_name: str | None = None) -> ast.Module:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise GradError(f"cannot read {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(raw, err, display_name or str(path)) from None
    return parse(text, display_name or str(path))


def _not_utf8(raw: bytes, err: UnicodeDecodeError, name: str) -> GradError:
    """A file that is not UTF-8, located at the first bad byte (shown as U+FFFD in the quoted line)."""
    before = raw[:err.start]
    line = before.count(b"\n") + 1
    col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
    source = Source(name, raw.decode("utf-8", "replace"))
    return GradError(f"not a UTF-8 text file ({err.reason} at byte {err.start})",
                     Span(source, line, col, line, col + 1))
