"""Lark parse tree → AST, with friendly syntax errors."""
from __future__ import annotations

import functools
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .. import resources
from ..errors import GradError, Source, Span
from . import ast

_OPENERS = {"LPAR", "LSQB"}
_CLOSERS = {"RPAR", "RSQB"}


# a line ending in one of these continues on the next line
_CONTINUES = {"=", "+", "-", "*", "/", "@", "**", "==", "!=", "<", "<=", ">", ">=", ",", ":"}


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
                skip_newline = tok.type not in ("NAME", "NUMBER", "STRING") and str(tok) in _CONTINUES
                if tok.type in _OPENERS:
                    depth += 1
                elif tok.type in _CLOSERS:
                    depth = max(0, depth - 1)
            yield tok


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        resources.grammar_path().read_text(),
        parser="lalr",
        postlex=_Newlines(),
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _number(text: str) -> int | float:
    return int(text) if text.isdigit() else float(text)


_UNESCAPE = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _string(text: str) -> str:
    out, chars = [], iter(text[1:-1])
    for ch in chars:
        out.append(_UNESCAPE.get(next(chars, ""), "") if ch == "\\" else ch)
    return "".join(out)


@v_args(meta=True)
class ToAst(Transformer):
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

    # expressions
    def number(self, meta, c):
        return ast.Number(self._span(meta), _number(str(c[0])))

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
    "DOT": "'.'", "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/' or '@'",
    "MINUS": "'-'", "PLUS": "'+'", "__ANON_0": "'**'",
}


def _describe(token_type: str) -> str:
    if token_type in _TOKEN_WORDS:
        return _TOKEN_WORDS[token_type]
    try:
        pattern = _parser().get_terminal(token_type).pattern
        return f"'{pattern.value}'"
    except (KeyError, AttributeError):
        return token_type.lower()


def _syntax_error(err: UnexpectedInput, source: Source) -> GradError:
    line, col = max(1, err.line), max(1, err.column)
    if isinstance(err, UnexpectedCharacters):
        ch = source.line(line)[col - 1: col] or "?"
        return GradError(f"unexpected character {ch!r}", Span(source, line, col, line, col + 1))
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            lines = source.text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
            what, width = "end of file", 1
        else:
            what = "end of line" if tok.type == "_NL" else repr(str(tok))
            width = 1 if tok.type == "_NL" else max(1, len(str(tok)))
        expected = sorted({_describe(t) for t in err.expected if not t.startswith("_") or t == "_NL"})
        hint = f"; expected {', '.join(expected[:6])}{' …' if len(expected) > 6 else ''}" if expected else ""
        return GradError(f"syntax error: unexpected {what}{hint}", Span(source, line, col, line, col + width))
    if isinstance(err, UnexpectedEOF):
        lines = source.text.splitlines() or [""]
        return GradError("syntax error: unexpected end of file", Span(source, len(lines), len(lines[-1]) + 1,
                                                                       len(lines), len(lines[-1]) + 2))
    return GradError(f"syntax error: {err}", Span(source, line, col, line, col + 1))


def parse(text: str, name: str = "<string>") -> ast.Module:
    """Parse gradlang source text into an `ast.Module`; raise `GradError` on a syntax error."""
    source = Source(name, text)
    try:
        tree = _parser().parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as err:
        raise _syntax_error(err, source) from None
    return ToAst(source).transform(tree)


def parse_file(path: str | Path, display_name: str | None = None) -> ast.Module:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise GradError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise GradError(f"cannot read {path}: {err.strerror}") from None
    return parse(text, display_name or str(path))
