"""The canonical layout of .grad source (`gradlang fmt`): a pure function from source text to source text.

The layout is decided from the parse tree, never from the input's spacing, so formatting is idempotent.
Comments are kept: the lexer hands them over through a callback (the compiler's parser ignores them),
each is attached to the token before it, and a comment that ends a line inside a statement forces the
brackets around it to break there. The result is checked before it is returned: it must parse to the
same AST as the input and hold the same comments, or formatting fails instead of changing the program.

The style (docs/language.md, "Layout"):
- two-space indentation in blocks, `{` on the header's line, `}` on a line of its own (a one-line
  block is opened up, an empty one is `{}`);
- one space around binary operators, `=` and a declaration's `:`; none inside brackets, after a unary
  `-` or around a slice's `:`; keyword arguments written `name: value`;
- at most one blank line between statements, none at the start or end of a block or the file;
- in a run of consecutive one-line statements of the same kind (assignments, `data`, `input`, `param`,
  `metric`, `output`, train settings) the `=` (or a declaration's `:`) is aligned;
- trailing comments on consecutive lines are aligned, two spaces after the longest code;
- a statement longer than the width (100) breaks its outermost brackets first: the contents on one
  indented line if they fit, else one item per line with a trailing comma; a chain of `+`/`-` (or
  `*`/`/`/`@`) breaks after each operator, aligned with its first operand; a function body after `=`
  moves to the next line, indented four. Comments do not count towards the width.
"""
from __future__ import annotations

import bisect
import functools
import re
import threading
from dataclasses import dataclass

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from ...errors import GradError
from . import parser as _parser_module

WIDTH = 100
BLOCK_INDENT = 2
CONTINUATION_INDENT = 4
_SENTINEL = "\x00"   # marks where a trailing comment starts in a printed line, until comments are aligned


class FormatError(Exception):
    """The formatter would have changed the program's meaning or lost a comment: a bug in the formatter."""


# ---- documents: a small Wadler/Prettier-style layout language -----------------------------------

@dataclass(eq=False)
class Group:
    """Printed flat (on one line) if it fits, else broken: its Lines become newlines."""
    contents: object
    broken: bool = False


@dataclass(eq=False)
class Indent:
    contents: object
    by: int = CONTINUATION_INDENT


@dataclass(eq=False)
class Align:
    """Continuation lines inside start at the column where this starts."""
    contents: object


@dataclass(eq=False)
class Chain:
    """Operands joined by binary operators: flat if it fits; else broken after every operator (the
    operands aligned) if each operand then fits on its line or a comment follows an operator; else, or
    if a comment inside an operand forces a break, kept inline, letting the operands' brackets break."""
    operands: list
    operators: list          # the docs between operands: " +" and any comment after the operator
    broken: bool = False

    def joined(self, separator) -> list:
        doc = [self.operands[0]]
        for op, operand in zip(self.operators, self.operands[1:]):
            doc += [op, separator, operand]
        return doc


@dataclass(frozen=True)
class Line:
    """A space (nothing if soft) when its group is flat, a newline when it is broken."""
    soft: bool = False


@dataclass(frozen=True)
class HardLine:
    pass


@dataclass(frozen=True)
class BlankLine:
    pass


@dataclass(frozen=True)
class IfBreak:
    text: str


@dataclass(frozen=True)
class LineSuffix:
    """A trailing comment: printed at the end of the line it falls on (just before the next newline)."""
    text: str


@dataclass(frozen=True)
class TrailingComment:
    """A comment that ends a line inside a statement: printed right after its token, then a newline
    (legal there, since the source had one), so that it never moves and formatting again agrees."""
    text: str


@dataclass(frozen=True)
class Space:
    """A space, except at the start of a line (before an operator that a comment line pushed down)."""


@dataclass(frozen=True)
class CommentLine:
    """A comment on a line of its own."""
    text: str


SOFT = Line(soft=True)
LINE = Line()
_FLAT, _BREAK = 0, 1


def _propagate_breaks(doc) -> bool:
    """Mark every group that holds a forced break as broken; True if `doc` holds one."""
    if isinstance(doc, list):
        found = False
        for part in doc:
            found = _propagate_breaks(part) or found
        return found
    if isinstance(doc, Group):
        if _propagate_breaks(doc.contents):
            doc.broken = True
        return doc.broken
    if isinstance(doc, (Indent, Align)):
        return _propagate_breaks(doc.contents)
    if isinstance(doc, Chain):
        doc.broken = _propagate_breaks(doc.operands + doc.operators)
        return doc.broken
    return isinstance(doc, (CommentLine, HardLine, BlankLine, TrailingComment))


def _fits(item, rest: list, width: int) -> bool:
    """Does `item` (printed flat) and what follows it up to the next possible newline fit in `width`?"""
    stack, rest_index = [item], len(rest)
    while width >= 0:
        if not stack:
            if rest_index == 0:
                return True
            rest_index -= 1
            stack.append(rest[rest_index])
            continue
        indent, mode, doc = stack.pop()
        if isinstance(doc, str):
            width -= len(doc)
        elif isinstance(doc, Space):
            width -= 1
        elif isinstance(doc, list):
            stack.extend((indent, mode, part) for part in reversed(doc))
        elif isinstance(doc, Group):
            stack.append((indent, _BREAK if doc.broken else mode, doc.contents))
        elif isinstance(doc, (Indent, Align)):
            stack.append((indent, mode, doc.contents))
        elif isinstance(doc, Chain):
            stack.append((indent, _BREAK if doc.broken else mode, doc.joined(LINE)))
        elif isinstance(doc, Line):
            if mode == _BREAK:
                return True
            width -= 0 if doc.soft else 1
        elif isinstance(doc, IfBreak):
            if mode == _BREAK:
                width -= len(doc.text)
        elif isinstance(doc, (HardLine, BlankLine, CommentLine, TrailingComment)):
            return True
    return False


class _Printer:
    def __init__(self, width: int):
        self.width = width
        self.out: list[str] = []
        self.column = 0
        self.at_line_start = True
        self.pending_indent = 0
        self.suffixes: list[str] = []

    def _text(self, text: str, indent: int) -> None:
        if not text or self.at_line_start and not text.strip():   # no spaces after the indentation
            return
        if self.at_line_start:
            self.out.append(" " * self.pending_indent)
            self.column = self.pending_indent
            self.at_line_start = False
        self.out.append(text)
        self.column += len(text)

    def _flush_suffixes(self) -> None:
        self.out += self.suffixes          # at most one: a statement's or a block header's comment
        self.suffixes = []

    def _newline(self, indent: int, force: bool = False) -> None:
        if self.at_line_start and not force:
            self.pending_indent = indent
            return
        self._flush_suffixes()
        self.out.append("\n")
        self.at_line_start, self.pending_indent, self.column = True, indent, 0

    def _operands_fit(self, chain: Chain, column: int) -> bool:
        """Would every operand, with the operator after it, fit on a line of its own at `column`?"""
        lines = [[operand, op] for operand, op in zip(chain.operands, chain.operators)]
        lines.append([chain.operands[-1]])
        return all(_fits((column, _FLAT, line), [], self.width - column) for line in lines)

    def print(self, doc, indent: int = 0) -> str:
        self.pending_indent = indent
        stack = [(indent, _BREAK, doc)]
        while stack:
            ind, mode, doc = stack.pop()
            if isinstance(doc, str):
                self._text(doc, ind)
            elif isinstance(doc, list):
                stack.extend((ind, mode, part) for part in reversed(doc))
            elif isinstance(doc, Indent):
                stack.append((ind + doc.by, mode, doc.contents))
            elif isinstance(doc, Align):
                column = self.pending_indent if self.at_line_start else self.column
                stack.append((column, mode, doc.contents))
            elif isinstance(doc, Group):
                if mode == _FLAT and not doc.broken:
                    stack.append((ind, _FLAT, doc.contents))
                else:
                    column = self.pending_indent if self.at_line_start else self.column
                    flat = (ind, _FLAT, doc.contents)
                    fits = not doc.broken and _fits(flat, stack, self.width - column)
                    stack.append(flat if fits else (ind, _BREAK, doc.contents))
            elif isinstance(doc, Chain):
                column = self.pending_indent if self.at_line_start else self.column
                operands_forced = _propagate_breaks(doc.operands)
                if mode == _FLAT and not doc.broken:
                    stack.append((ind, _FLAT, doc.joined(LINE)))
                elif not doc.broken and _fits((ind, _FLAT, doc.joined(LINE)), stack, self.width - column):
                    stack.append((ind, _FLAT, doc.joined(LINE)))
                elif not operands_forced and (doc.broken or self._operands_fit(doc, column)):
                    stack.append((ind, _BREAK, Align(doc.joined(LINE))))
                else:
                    stack.append((ind, _BREAK, doc.joined(Space())))
            elif isinstance(doc, Line):
                if mode == _FLAT:
                    self._text("" if doc.soft else " ", ind)
                else:
                    self._newline(ind)
            elif isinstance(doc, HardLine):
                self._newline(ind)
            elif isinstance(doc, BlankLine):
                self._newline(ind)
                self.out.append("\n")
            elif isinstance(doc, IfBreak):
                if mode == _BREAK:
                    self._text(doc.text, ind)
            elif isinstance(doc, LineSuffix):
                self.suffixes.append(doc.text)
            elif isinstance(doc, Space):
                if not self.at_line_start:
                    self._text(" ", ind)
            elif isinstance(doc, CommentLine):
                self._newline(ind)
                self._text(doc.text, ind)
                self._newline(ind, force=True)
            elif isinstance(doc, TrailingComment):
                self.out.append(_SENTINEL + doc.text)
                self._newline(ind + CONTINUATION_INDENT, force=True)   # a Line that follows sets its own
        self._flush_suffixes()
        return "".join(self.out)


def _print(doc, indent: int = 0, width: int = WIDTH) -> str:
    """`doc` laid out in `width` columns, starting at column `indent`."""
    _propagate_breaks(doc)
    return _Printer(width).print(doc, indent)


# ---- parsing with comments -----------------------------------------------------------------------

@dataclass
class _Comment:
    text: str
    line: int
    standalone: bool     # alone on its line (else it trails code)


class _CommentSink:
    """Receives COMMENT tokens from the lexer callback; one parse at a time (the parser is shared)."""

    def __init__(self):
        self.tokens: list[Token] = []
        self.lock = threading.Lock()

    def __call__(self, token: Token) -> Token:
        self.tokens.append(token)
        return token


_SINK = _CommentSink()


@functools.lru_cache(maxsize=1)
def _full_parser() -> Lark:
    """The compiler's grammar and post-lexer, keeping every token (punctuation included) and comments."""
    return _parser_module.lark_parser(keep_all_tokens=True, lexer_callbacks={"COMMENT": _SINK})


def _parse_with_comments(text: str) -> tuple[Tree, list[Token]]:
    with _SINK.lock:
        _SINK.tokens = []
        tree = _full_parser().parse(text if text.endswith("\n") else text + "\n")
        comments = list({tok.start_pos: tok for tok in _SINK.tokens}.values())
    return tree, sorted(comments, key=lambda tok: tok.start_pos)


def _leaves(tree: Tree) -> list[Token]:
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, Tree):
            todo.extend(reversed(node.children))
        elif isinstance(node, Token) and node.type != "_NL":
            out.append(node)
    return out


def _children(node: Tree) -> list:
    return [c for c in node.children if c is not None and not (isinstance(c, Token) and c.type == "_NL")]


def _last_token(node) -> Token:
    while isinstance(node, Tree):
        node = _children(node)[-1]
    return node


def _first_token(node) -> Token:
    while isinstance(node, Tree):
        node = _children(node)[0]
    return node


# ---- the layout of each construct ----------------------------------------------------------------

_STATEMENT_KINDS = {"assign": "assign", "data_decl": "data", "input_decl": "input", "param_decl": "param",
                    "state_decl": "state", "update_stmt": "update", "metric_decl": "metric", "output_decl": "output",
                    "setting": "setting"}
_CLOSERS = {"RPAR", "RSQB"}


@dataclass
class _Item:
    """One line-level thing in a block: a statement or a comment on its own line."""
    first_line: int
    last_line: int
    comment: str | None = None
    node: Tree | None = None
    kind: str | None = None          # alignment kind; None: never aligned
    head: str = ""                   # what is padded when aligned
    rest: object = None              # the doc after the head
    trailing: str | None = None
    single_line: bool = False
    pad: int = 0


class _Formatter:
    def __init__(self, text: str, width: int):
        self.width = width
        self.tree, comment_tokens = _parse_with_comments(text)
        tokens = _leaves(self.tree)
        ends = [tok.end_pos for tok in tokens]
        self.after: dict[int | None, list[_Comment]] = {}
        for tok in comment_tokens:
            line_start = text.rfind("\n", 0, tok.start_pos) + 1
            standalone = not text[line_start:tok.start_pos].strip()
            i = bisect.bisect_right(ends, tok.start_pos) - 1
            key = tokens[i].start_pos if i >= 0 else None
            self.after.setdefault(key, []).append(
                _Comment(str(tok).rstrip(), tok.line, standalone))

    # comments
    def take(self, tok: Token | None, *, standalone: bool | None = None) -> list[_Comment]:
        key = None if tok is None else tok.start_pos
        found = self.after.get(key, [])
        taken = [c for c in found if standalone is None or c.standalone == standalone]
        if taken:
            self.after[key] = [c for c in found if c not in taken]
        return taken

    def comment_docs(self, tok: Token) -> list:
        docs = []
        for c in self.take(tok):
            docs.append(CommentLine(c.text) if c.standalone else TrailingComment(c.text))
        return docs

    def tok(self, tok: Token, text: str | None = None) -> list:
        """A token's text followed by the comments after it."""
        return [str(tok) if text is None else text, *self.comment_docs(tok)]

    # expressions
    def expr(self, node) -> object:
        if isinstance(node, Token):
            return self.tok(node)
        method = getattr(self, "x_" + node.data, None)
        if method is None:
            return [self.expr(c) for c in _children(node)]   # number, string, name, true, false, at, …
        return method(node)

    def brackets(self, open_tok: Token, parts: list, close_tok: Token, render=None) -> list:
        """`(a, b)`; broken: the items on one indented line, else one per line with a trailing comma."""
        render = render or self.expr
        items: list[list] = []
        for part in parts:
            if isinstance(part, Token) and part.type == "COMMA":
                items[-1].append(part)
            else:
                items.append([part])
        inner: list = []
        for i, item in enumerate(items):
            inner.append(render(item[0]))
            comma = item[1] if len(item) > 1 else None
            if i < len(items) - 1:
                inner += [self.tok(comma), LINE]
            else:
                inner.append(IfBreak(","))
                if comma is not None:
                    inner += self.comment_docs(comma)
        opening = self.comment_docs(open_tok)
        if not items and not opening:
            return [str(open_tok), str(close_tok), *self.comment_docs(close_tok)]
        # the opener inside the indentation: a comment after it is indented as the contents are
        group = Group([Indent([str(open_tok), *opening, SOFT, Group(inner)]), SOFT, str(close_tok)])
        return [group, *self.comment_docs(close_tok)]

    def x_atom(self, node):          # ( expr )
        lpar, inner, rpar = _children(node)
        opening = self.comment_docs(lpar)
        group = Group([Indent(["(", *opening, SOFT, self.expr(inner)]), SOFT, ")"])
        return [group, *self.comment_docs(rpar)]

    def x_list(self, node):
        c = _children(node)
        return self.brackets(c[0], c[1:-1], c[-1])

    def x_list_comp(self, node):
        lsqb, item, for_, var, in_, iterable, rsqb = _children(node)
        body = ["[", *self.comment_docs(lsqb), SOFT, self.expr(item), LINE, self.tok(for_), " ", self.tok(var),
                " ", self.tok(in_), " ", self.expr(iterable)]
        return [Group([Indent(body), SOFT, "]"]), *self.comment_docs(rsqb)]

    def x_call(self, node):
        c = _children(node)
        func, lpar, rest = c[0], c[1], c[2:]
        args = _children(rest[0]) if isinstance(rest[0], Tree) else []
        return [self.expr(func), self.brackets(lpar, args, rest[-1])]

    def x_index(self, node):
        value, lsqb, subscripts, rsqb = _children(node)
        return [self.expr(value), self.brackets(lsqb, _children(subscripts), rsqb)]

    def x_range_slice(self, node):
        return [self.expr(c) for c in _children(node)]

    def x_keyword(self, node):
        name, sep, value = _children(node)
        return [self.tok(name), self.tok(sep, ":"), " ", self.expr(value)]

    def x_attribute(self, node):
        value, dot, name = _children(node)
        space = " " if isinstance(value, Tree) and value.data == "number" else ""   # `1 .x`, not `1.x`
        return [self.expr(value), space, self.tok(dot), self.tok(name)]

    def x_neg(self, node):
        minus, operand = _children(node)
        space = " " if isinstance(operand, Tree) and operand.data == "neg" else ""   # `- -x`, not `--x`
        return [self.tok(minus), space, self.expr(operand)]

    def x_unary(self, node):
        plus, operand = _children(node)
        return [self.tok(plus), self.expr(operand)]

    def _chain(self, node) -> list:
        """`a + b - c` as [a, +, b, -, c]: the left-nested operators of one precedence level."""
        left, op, right = _children(node)
        kind = op.type
        if isinstance(left, Tree) and left.data == "binop" and _children(left)[1].type == kind:
            return self._chain(left) + [op, right]
        return [left, op, right]

    def _operator_group(self, parts: list) -> Chain:
        operands, operators = [self.expr(parts[0])], []
        for op, operand in zip(parts[1::2], parts[2::2]):
            operators.append([Space(), self.tok(op)])
            operands.append(self.expr(operand))
        return Chain(operands, operators)

    def x_binop(self, node):
        return self._operator_group(self._chain(node))

    def x_compare(self, node):
        return self._operator_group(_children(node))

    def x_pow(self, node):
        return self._operator_group(_children(node))

    def type_spec(self, node):
        c = _children(node)
        if node.data == "typed_shape":
            return [self.tok(c[0]), self.shape(c[1])]
        if node.data == "scalar_type":
            return self.tok(c[0])
        return self.shape(c[0])

    def shape(self, node):
        c = _children(node)
        return self.brackets(c[0], c[1:-1], c[-1])

    def formals(self, lpar: Token, formals, rpar: Token):
        parts = _children(formals) if isinstance(formals, Tree) else []
        return self.brackets(lpar, parts, rpar, render=self.formal)

    def formal(self, node):
        c = _children(node)
        if len(c) == 1:
            return self.tok(c[0])
        return [self.tok(c[0]), " ", self.tok(c[1]), " ", self.expr(c[2])]

    def dotted(self, node):
        return [self.tok(t) for t in _children(node)]

    # statements
    def statement(self, node: Tree, depth: int) -> _Item:
        last = _last_token(node)
        trailing = self.take(last, standalone=False)
        item = _Item(node.meta.line, node.meta.end_line, node=node,
                     trailing=trailing[0].text if trailing else None)
        c = _children(node)
        kind = node.data
        if kind in ("assign", "data_decl", "metric_decl", "output_decl", "setting", "update_stmt") or \
                (kind == "loss_decl" and len(c) == 3):
            value, eq = c[-1], c[-2]
            head = [str(t) for t in c[:-2]] if kind != "setting" else [str(_children(c[0])[0])]
            item.kind = "assign" if kind == "loss_decl" else _STATEMENT_KINDS[kind]
            item.head, item.rest = " ".join(head), [" ", self.tok(eq), " ", self.expr(value)]
        elif kind == "loss_decl":
            item.head = f"loss {c[1]}"
            item.kind, item.rest = "loss", [" ", self.tok(c[2]), " ", self.expr(c[3])]
        elif kind == "input_decl":
            item.kind, item.head = "input", f"input {c[1]}"
            item.rest = [" ", self.tok(c[2]), " ", self.type_spec(c[3])]
        elif kind in ("param_decl", "state_decl"):
            item.kind = _STATEMENT_KINDS[kind]
            item.head = f"{item.kind} {c[1]}"
            item.rest = [" ", self.tok(c[2]), " ", self.type_spec(c[3])]
            if len(c) > 4:
                item.rest += [" ", self.tok(c[4]), " ", self.expr(c[5])]
        else:
            item.rest = self.compound(node, depth)
        return item

    def compound(self, node: Tree, depth: int) -> list:
        c = _children(node)
        kind = node.data
        if kind == "import_stmt":
            doc = [self.tok(c[0]), " ", self.dotted(c[1])]
            if len(c) > 2:
                doc += [" ", self.tok(c[2]), " ", self.tok(c[3])]
            return doc
        if kind == "from_import":
            doc = [self.tok(c[0]), " ", self.dotted(c[1]), " ", self.tok(c[2]), " "]
            for part in c[3:]:
                doc += [self.tok(part), " "] if part.type == "COMMA" else [self.tok(part)]
            return doc
        if kind == "return_stmt":
            return [self.tok(c[0]), " ", self.expr(c[1])]
        if kind == "assert_stmt":
            return [self.tok(c[0]), " ", self.expr(c[1]), self.tok(c[2]), " ", self.expr(c[3])]
        if kind in ("fn_def", "layer_def", "forward_def"):
            name = [self.tok(c[0])] if kind == "forward_def" else [self.tok(c[0]), " ", self.tok(c[1])]
            rest = c[1:] if kind == "forward_def" else c[2:]
            lpar, formals, rpar = rest[0], rest[1], rest[2]
            if isinstance(formals, Token):          # no formals: ( )
                formals, rpar = None, formals
                body = rest[2:]
            else:
                body = rest[3:]
            doc = [*name, self.formals(lpar, formals, rpar)]
            if isinstance(body[0], Token) and body[0].type == "EQUAL":
                return doc + [Group([" ", self.tok(body[0]), Indent([LINE, self.expr(body[1])])])]
            return doc + [" ", self.block(body[0], depth)]
        if kind == "train_block":
            return [self.tok(c[0]), " ", self.braces(c[1], c[2:-1], c[-1], depth)]
        if kind == "for_stmt":
            for_, var, in_, iterable, block = c
            return [self.tok(for_), " ", self.tok(var), " ", self.tok(in_), " ", self.expr(iterable), " ",
                    self.block(block, depth)]
        if kind == "if_stmt":
            doc = [self.tok(c[0]), " ", self.expr(c[1]), " ", self.block(c[2], depth)]
            if len(c) > 3:
                orelse = c[4]
                doc += [" ", self.tok(c[3]), " "]
                doc.append(self.block(orelse, depth) if orelse.data == "block" else self.compound(orelse, depth))
            return doc
        raise FormatError(f"no layout for a {kind} statement")

    def block(self, node: Tree, depth: int) -> list:
        c = _children(node)
        return self.braces(c[0], c[1:-1], c[-1], depth)

    def braces(self, lbrace: Token, statements: list, rbrace: Token, depth: int) -> list:
        header_comment = self.take(lbrace, standalone=False)
        doc: list = ["{"]
        if header_comment:
            doc.append(LineSuffix(_SENTINEL + header_comment[0].text))
        body = self.statements(statements, lbrace, depth + 1)
        if body:
            doc += [Indent([HardLine(), body], BLOCK_INDENT), HardLine()]
        elif header_comment:
            doc.append(HardLine())
        return doc + ["}"]

    def statements(self, nodes: list, opener: Token | None, depth: int) -> list:
        """The statements of a block (or the file) with the comments between them, aligned in runs."""
        items: list[_Item] = []

        def comments_after(tok):
            for c in self.take(tok, standalone=True):
                items.append(_Item(c.line, c.line, comment=c.text))

        comments_after(opener)
        for node in nodes:
            # the comments on the lines after a statement are the block's, not the statement's last token's
            following = self.take(_last_token(node), standalone=True)
            items.append(self.statement(node, depth))
            items += [_Item(c.line, c.line, comment=c.text) for c in following]
        indent = depth * BLOCK_INDENT
        for item in items:
            if item.kind is not None:
                item.single_line = "\n" not in _print(self.item_doc(item, 0), indent, self.width)
        self.align(items)
        doc: list = []
        for i, item in enumerate(items):
            if i:
                doc.append(HardLine())
                if item.first_line - items[i - 1].last_line > 1:
                    doc.append(BlankLine())
            doc.append(self.item_doc(item, item.pad))
        return doc

    @staticmethod
    def align(items: list[_Item]) -> None:
        run: list[_Item] = []

        def close():
            width = max((len(it.head) for it in run), default=0)
            for it in run:
                it.pad = width
            run.clear()

        for item in items:
            joins = (item.single_line and run and run[-1].kind == item.kind
                     and item.first_line - run[-1].last_line <= 1)
            if not joins:
                close()
            if item.single_line:
                run.append(item)
        close()

    @staticmethod
    def item_doc(item: _Item, pad: int) -> list:
        if item.comment is not None:
            return [item.comment]
        doc = [item.head.ljust(pad), item.rest] if item.kind is not None else [item.rest]
        if item.trailing is not None:
            doc.append(LineSuffix(_SENTINEL + item.trailing))
        return doc

    def file(self) -> str:
        doc = self.statements(_children(self.tree), None, 0)
        text = _print(doc, 0, self.width)
        leftover = [c.text for cs in self.after.values() for c in cs]
        if leftover:
            raise FormatError(f"comments not placed: {leftover}")
        lines = _align_comments(text.split("\n"))
        return "\n".join(line.rstrip() for line in lines).strip("\n") + "\n" if doc else ""


def _align_comments(lines: list[str]) -> list[str]:
    """Trailing comments on consecutive lines start in one column, two spaces after the longest code."""
    out, i = [], 0
    while i < len(lines):
        if _SENTINEL not in lines[i]:
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < len(lines) and _SENTINEL in lines[j]:
            j += 1
        run = [line.split(_SENTINEL, 1) for line in lines[i:j]]
        column = max(len(code.rstrip()) for code, _ in run) + 2
        out += [code.rstrip().ljust(column) + comment for code, comment in run]
        i = j
    return out


# outside a string, `#` starts a comment: enough to list the comments of a program that parses
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')


def _comment_texts(text: str) -> list[str]:
    return [m.group().rstrip() for m in _STRING_OR_COMMENT.finditer(text) if m.group().startswith("#")]


def format_source(text: str, name: str = "<string>", width: int = WIDTH) -> str:
    """The canonical layout of gradlang source `text`. Raises `GradError` on a syntax error, and
    `FormatError` if the result would not mean the same (a formatter bug, never a silent change)."""
    if _SENTINEL in text:
        raise GradError(f"{name}: the file contains a NUL character")
    original = _parser_module.parse(text, name)        # syntax errors, reported as the compiler does
    try:
        result = _Formatter(text, width).file()
    except UnexpectedInput as err:                       # parse() accepted it, so this cannot happen
        raise FormatError(f"the formatter's parser disagrees with the compiler's: {err}") from None
    try:
        same = _parser_module.parse(result, name) == original
    except GradError as err:
        raise FormatError(f"formatting {name} would make it fail to parse: {err.message}") from None
    if not same:
        raise FormatError(f"formatting {name} would change its meaning")
    if _comment_texts(result) != _comment_texts(text):
        raise FormatError(f"formatting {name} would change its comments")
    return result
