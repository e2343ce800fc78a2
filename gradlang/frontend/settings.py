"""What a setting known at compile time may be, and where an error about one points.

Data sources, initialisers, optimizers and the train block declare each numeric setting's range
(`Range`), each string setting's options (`Choice`) and its kind (`Static`) in tables; the front end
checks every setting against them where the program compiles, and each error points at the setting as
written in the call (`setting_span`).
"""
from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..errors import GradError, Span
from .syntax import ast
from .syntax.parser import parse
from .values import show


@dataclass(frozen=True)
class Range:
    """The numbers a setting may take: finite, from `low` to `high` (None: unbounded; a string names
    another setting, as in `classes ≤ n`), the ends excluded when `above` / `below`."""

    low: float | str | None = None
    high: float | str | None = None
    above: bool = False
    below: bool = False

    def refusal(self, value, settings: dict) -> str | None:
        """What the value must be, in words (the bound it crosses), when `value` is not in the range;
        else None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "a number"
        low, high = (settings[end] if isinstance(end, str) else end for end in (self.low, self.high))
        too_low = low is not None and (value <= low if self.above else _below(value, low))
        too_high = high is not None and (value >= high if self.below else value > high)
        finite = not isinstance(value, float) or math.isfinite(value)
        if finite and not too_low and not too_high:
            return None
        bounds = [f"{sign} {_bound(end, settings)}" for end, sign, crossed in
                  ((self.low, ">" if self.above else "≥", too_low or not finite),
                   (self.high, "<" if self.below else "≤", too_high or not finite)) if end is not None and crossed]
        return " and ".join(bounds) if finite else " ".join(["a finite number", " and ".join(bounds)]).rstrip()


def _below(value: float, low: float) -> bool:
    """value < low, −0.0 counting as below 0.0: NumPy refuses a scale of −0.0 (its sign bit is set)."""
    return value < low or value == low and math.copysign(1, value) < math.copysign(1, low)


@dataclass(frozen=True)
class Choice:
    """The strings a setting may take."""

    options: tuple

    def refusal(self, value, settings: dict) -> str | None:
        return None if value in self.options else " or ".join(f'"{option}"' for option in self.options)


def _bound(end, settings: dict) -> str:
    return f"{end} ({show(settings[end])})" if isinstance(end, str) else f"{end:,}" \
        if isinstance(end, int) else f"{end:g}"


INT64_MAX = 2 ** 63 - 1
COUNT = Range(1, INT64_MAX)                   # a number of examples, classes, dimensions, …
COUNT_OR_0 = Range(0, INT64_MAX)              # 0 meaning "all" or "the default"
SCALE = Range(0)                              # a noise level, standard deviation or spread
POSITIVE = Range(0, above=True)
SEED = Range(0)
HALF_MAX = float(np.finfo(np.float64).max) / 2   # the ends of a uniform draw, whose width must be finite


@dataclass(frozen=True)
class Static:
    """What a setting known at compile time may be: its kind, and the range a number must lie in."""

    kind: str = "number"      # "integer", "number" or "boolean"
    range: Range = Range()

    def refusal(self, value, settings: dict) -> str | None:
        """What the value must be, in words, when it is not of this kind and range; else None."""
        if self.kind == "boolean":
            return None if isinstance(value, bool) else "true or false"
        if isinstance(value, bool) or not isinstance(value, int if self.kind == "integer" else (int, float)):
            return f"an {self.kind}" if self.kind == "integer" else f"a {self.kind}"
        return self.range.refusal(value, settings)


NUMBER = Static()
SCALE_SETTING = Static("number", SCALE)
FRACTION_BELOW_1 = Static("number", Range(0, 1, below=True))   # a decay rate: 1 would never forget


def check_statics(owner: str, rules: dict, settings: dict, span: Span | None) -> None:
    """Refuse the first of `settings` that its rule in `rules` does not admit, at the setting in the
    call `owner(…)` at `span`."""
    for name, value in settings.items():
        requirement = rules[name].refusal(value, settings)
        if requirement is not None:
            raise GradError(f"{owner}({name}: {show(value)}): {name} must be {requirement}",
                            setting_span(span, name))


@contextmanager
def at_setting(call: Span | None, *names: str):
    """Place a GradError raised inside at the first of `names` set in the call at `call` (see setting_span)."""
    try:
        yield
    except GradError as err:
        raise GradError(err.message, setting_span(call, *names), err.notes) from None


def setting_span(call: Span | None, *names: str) -> Span | None:
    """Where the first of `names` that the call at `call` sets is written (`name: value`), else the call.
    A spec keeps only its call's span, so the call is found again in its source, parsed anew; this runs
    only for an error."""
    if call is None:
        return None
    try:
        pending = [parse(call.source.text, call.source.name)]
    except GradError:
        return call
    where = (call.line, call.col, call.end_line, call.end_col)
    while pending:
        node = pending.pop()
        if isinstance(node, (list, tuple)):
            pending.extend(node)
        elif isinstance(node, ast.Call) and (node.span.line, node.span.col, node.span.end_line,
                                             node.span.end_col) == where:
            written = {keyword.name: keyword.span for keyword in node.kwargs}
            return next((written[name] for name in names if name in written), call)
        elif isinstance(node, ast.Node):
            pending.extend(getattr(node, f.name) for f in dataclasses.fields(node))
    return call
