"""Hostile cases for gradlang, and the worker processes that run them (used by test_fuzz_hostile.py).

A case is a small folder — a `.grad` program and perhaps data, params or checkpoint files — and the
`gradlang` commands to run in it. Cases are generated from (seed, index) alone, so any one can be
rebuilt and rerun:

    python tests/hostile_cases.py --seed 0 --case 17          # print case 17 and run it in a worker

Generators (the families):
- every builtin, data source, optimizer and initialiser in gradlang's own tables, every `fn` and
  `layer` of stdlib/*.grad (read with gradlang's parser), and the names of primitive ops, called with
  hostile arguments (negative, zero, huge, fractional, NaN, ±inf, the wrong type, the wrong number,
  unknown keywords) or plausible ones, in a small program that trains one step: as a loss term, a
  param initialiser, a data source, an optimizer or a train setting;
- damaged data files (CSV, IDX, NPZ, MNIST in a data directory), params files and checkpoints made by
  a real short run and then damaged, read by `run`, `run --resume`, `eval` and `predict`.

Cases run in worker processes (`--worker`) that are reused for many cases and read them as JSON lines:
the worker runs `gradlang.cli.main` in-process under an address-space limit, with an alarm for hangs;
the parent kills and replaces a worker that dies or does not answer in time. Each case ends in one
outcome: ok, error (a located GradError), or a failure: internal (another exception, exit 2, a
crash), hang, memory, unlocated (a GradError with no source location that names none of the case's
data files or command-line options either).
"""
from __future__ import annotations

import base64
import contextlib
import faulthandler
import gzip
import inspect
import io
import json
import math
import os
import random
import re
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gradlang"

CASE_SECONDS = 20                    # a case running longer is a hang
MAX_BYTES = 1_000_000_000            # GRADLANG_MAX_BYTES in the workers: values over 1 GB are refused
ADDRESS_SPACE = 3 * 1024 ** 3        # a worker that reaches 3 GB of address space is out of memory
CASES_PER_WORKER = 400               # a fresh worker now and then: no state builds up across cases
FAILURES = ("internal", "hang", "memory", "unlocated")


# ---- what can be called ------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One parameter of a callable: its name, and its default as gradlang text (None: required)."""

    name: str
    default: str | None = None
    keyword_only: bool = False


@dataclass(frozen=True)
class Callee:
    """Something a program can call: `kind` is builtin, initialiser, data, optimizer, stdlib_fn,
    stdlib_layer or primitive; `module` the stdlib module for the stdlib kinds."""

    kind: str
    name: str
    params: tuple[Param, ...]
    module: str = ""
    forward: tuple[Param, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.module}.{self.name}" if self.module else self.name


def _literal(value) -> str | None:
    """A Python default as gradlang source (None where it has no literal)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return None


def _python_params(function, skip: int) -> tuple[Param, ...]:
    out = []
    for p in list(inspect.signature(function).parameters.values())[skip:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = None if p.default is p.empty else (_literal(p.default) or "0")
        out.append(Param(p.name, default, p.kind == p.KEYWORD_ONLY))
    return tuple(out)


def _initialiser_params(impl) -> tuple[Param, ...]:
    """An initialiser takes (*args, **kwargs) and checks them against the names and defaults it closes over."""
    names_defaults = inspect.getclosurevars(impl).nonlocals.get("names_defaults", ())
    return tuple(Param(name, None if default is None else _literal(default)) for name, default in names_defaults)


def _stdlib_params(formals, text: str) -> tuple[Param, ...]:
    return tuple(Param(f.name, None if f.default is None else _source_text(f.default.span, text)) for f in formals)


def _source_text(span, text: str) -> str:
    lines = text.split("\n")
    if span.line == span.end_line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    return "0"


def callees() -> list[Callee]:
    """Every callable a program can name, read from gradlang's tables and its standard library."""
    from gradlang.frontend import builtins
    from gradlang.frontend.syntax import ast
    from gradlang.frontend.syntax.parser import parse_file
    from gradlang.ops import registry
    from gradlang.runtime.data import DATA_SOURCES
    from gradlang.runtime.optimizers import OPTIMIZERS

    out = []
    for name, builtin in sorted(builtins.BUILTINS.items()):
        if name in DATA_SOURCES:
            out.append(Callee("data", name, _python_params(DATA_SOURCES[name], 1)))
        elif name in OPTIMIZERS:
            out.append(Callee("optimizer", name, tuple(
                Param(k, None if v is None else _literal(v), True) for k, v in OPTIMIZERS[name].settings.items())))
        elif name in builtins.INITIALIZERS:
            out.append(Callee("initialiser", name, _initialiser_params(builtin.impl)))
        else:
            out.append(Callee("builtin", name, _python_params(builtin.impl, 2)))
    for path in sorted((ROOT / "stdlib").glob("*.grad")):
        text = path.read_text()
        for node in parse_file(path).body:
            if isinstance(node, ast.FnDef):
                out.append(Callee("stdlib_fn", node.name, _stdlib_params(node.formals, text), path.stem))
            elif isinstance(node, ast.LayerDef):
                forward = next((s for s in node.body if isinstance(s, ast.ForwardDef)), None)
                out.append(Callee("stdlib_layer", node.name, _stdlib_params(node.formals, text), path.stem,
                                  _stdlib_params(forward.formals, text) if forward else ()))
    named = {c.name for c in out}
    for name, prim in sorted(registry.all_primitives().items()):
        if name not in named:
            out.append(Callee("primitive", name, tuple(Param(f"a{i}") for i in range(prim.arity or 1))))
    return out


# ---- values ------------------------------------------------------------------------------------

HOSTILE = {
    "negative": ["-1", "-7", "-0.5", "-1000000000000", "-9223372036854775809"],
    "zero": ["0", "0.0", "-0.0"],
    "huge": ["50000", "1000000000", "2147483648", "1000000000000", "1099511627776", "9223372036854775807",
             "9223372036854775808", "18446744073709551616", "2 ** 100", "1e300", "1.7976931348623157e308"],
    "huge list": ["[100000, 100000]", "[x.shape[0], 1000000000]", "[65536, 65536, 65536, 65536]", "[-1, -1]",
                  "[0, 0]", "[9223372036854775807]", "[50000, 50000]"],
    "fraction": ["0.5", "1e-300", "2.5", "5e-324", "0.999999999"],
    "nan": ["(1e999 - 1e999)", "(0 * 1e999)"],
    "inf": ["1e999", "-1e999"],
    "string": ['"abc"', '""', '"train"', '"d.csv"', '"relu"'],
    "list": ["[]", "[1, 2]", "[[1, 2], [3]]", "[[1, 2], [3, 4]]", "[0.5, -1]", "range(3)", '["a", 1]', "[[[]]]"],
    "tensor": ["x", "w", "v", "s", "img", "labels", "mask", "x.T", "x.shape"],
    "bool": ["true", "false"],
    "other": ["relu", "nn.dense(2, 2)", "sgd(lr: 0.1)", "two_moons(n: 4)", "zeros", "nn"],
}
# what the train block's `step` allows: schedules that are NaN, infinite or negative at some step
SCHEDULES = ["step", "1 / step", "-step", "log(step)", "1e999 * step", "(step - 1) ** 0.5", "0 * step / 0"]

# plausible values by parameter name (the rest get the default, a small number or a tensor)
PLAUSIBLE = {
    "x": ["x", "w", "v", "img", "seq"], "a": ["x", "w", "2"], "b": ["v", "x", "1"], "cond": ["mask", "x > 0"],
    "axis": ["0", "-1", "1"], "axes": ["[1, 0]"], "keepdims": ["true", "false"], "depth": ["3", "2"],
    "shape": ["[2, 2]", "[x.shape[0], 2]", "[4]", "[2, -1]"], "rate": ["0.5", "0.0"],
    "labels": ["labels"], "indices": ["labels"], "tokens": ["labels"], "targets": ["y"], "target": ["y", '"y"', "0"],
    "logits": ["x", "x @ w"], "pred": ["x", "y"], "scores": ["y"], "sections": ["2", "[1, 1]"],
    "n": ["2", "3", "8"], "size": ["2", "[2, 2]", "3"], "stride": ["1", "2"], "padding": ["0", "1"],
    "xs": ["[w, w]", "[x, x]", "[v]"], "f": ["sum(w * w)", "mean(x)"], "wrt": ["w", "[w, v]", "x"],
    "loss": ["loss"], "params": ["w", "[w, v]", "v"], "optimizer": ["sgd(lr: 0.1)", "adam()"],
    "repeat": ["1", "2"], "start": ["0", "2"], "stop": ["5", "3"], "step": ["1", "step"], "value": ["0.5", "1"],
    "mean": ["0.0"], "std": ["0.1", "1.0"], "low": ["-1.0"], "high": ["1.0"], "gain": ["1.0", "2.0"],
    "activation": ["relu", "tanh", "identity"], "init": ["zeros", "he_normal", "normal(std: 0.1)"],
    "total": ["10", "100"], "every": ["10"], "warm": ["5"], "lr": ["0.1", "0.01"], "cell": ["rnn.rnn_cell(2, 2)"],
    "state": ["[x]", "[x, x]"], "q": ["seq"], "k": ["seq"], "mask": ["causal_mask(3)", "mask"], "causal": ["true"],
    "n_in": ["2"], "n_out": ["2", "3"], "n_hidden": ["2"], "sizes": ["[2, 3, 1]"], "vocab": ["3"], "dim": ["2"],
    "d_model": ["2"], "heads": ["1", "2"], "d_ff": ["4"], "c_in": ["1"], "c_out": ["2"], "count": ["1", "2"],
    "path": ['"d.csv"', '"d.npz"'], "file": ['"t.txt"'], "y": ['"y.idx"', '""'], "split": ['"train"', '"test"'],
    "task": ['"reverse"', '"sort"', '"copy"'], "length": ["4"], "digits": ["10"], "limit": ["2"],
    "vocab_size": ["20"], "window": ["2"], "negatives": ["2"], "delimiter": ['","'], "header": ["true"],
}

# the train block's settings, plausible values for each
SETTINGS = {
    "data": ["d"], "batch": ["2", "4"], "epochs": ["1", "2"], "steps": ["1", "2"],
    "optimizer": ["sgd(lr: 0.1)", "adam()"], "seed": ["0", "3"], "save": ['"out.npz"'], "loss": ["loss"],
    "validation": ["0.25", "two_moons(n: 4)"], "early_stopping": ["1"], "test": ["two_moons(n: 4)", "d"],
    "checkpoint": ['"ck.npz"'], "phases": ["[phase(loss: loss, params: v)]"], "on_nonfinite": ['"stop"', '"skip"'],
}
# file names a program might write to: outside its folder, a folder, nothing, too long
HOSTILE_PATHS = ['"../x.npz"', '"/tmp/gradlang-hostile-x.npz"', '"~/x.npz"', '""', '"."', '"sub/"', '"sub/x.npz"',
                 '"' + "a" * 300 + '.npz"', '"m.grad"', '"d"', '"a\\tb.npz"', '"./"', '"x.npz/.."']
# settings whose huge values are a legitimately long run, not an attack (out of scope: docs/security.md)
LONG_RUN_SETTINGS = {"steps", "epochs", "repeat"}

# a data set and tensors of several shapes and dtypes, under the names the values above use
BASE = """\
data d = two_moons(n: 8, seed: 1)
input x : f32[B, 2]
input y : f32[B]
param w : [2, 2]
param v : [2] = 0.5
param s : [] = 1
param img : [2, 1, 4, 4]
param seq : [2, 3, 2]
labels = int(y > 0)
mask = y > 0
"""

# the same names for programs whose inputs are the data source's business
DATA_TENSORS = """\
param w : [2, 2]
param v : [2] = 0.5
param s : [] = 1
param img : [2, 1, 4, 4]
param seq : [2, 3, 2]
labels = int(v > 0)
mask = v > 0
"""


def hostile_value(rng: random.Random, exclude=()) -> tuple[str, str]:
    category = rng.choice([c for c in HOSTILE if c not in exclude])
    return category, rng.choice(HOSTILE[category])


def plausible(rng: random.Random, param: Param) -> str:
    options = list(PLAUSIBLE.get(param.name, []))
    if param.default is not None:
        options.append(param.default)
    return rng.choice(options or ["x", "2", "w"])


def call_text(rng: random.Random, callee: Callee, context: str = "") -> tuple[str, str]:
    """A call of `callee` (its arguments hostile or plausible) and a few words saying how it is hostile."""
    params = callee.params
    by_keyword = callee.kind in ("data", "optimizer")
    mode = rng.choices(["valid", "one", "several", "arity", "keyword", "positional"],
                       [15, 45, 15, 10, 10, 5 if by_keyword else 0])[0]
    chosen = [p for p in params if p.default is None or rng.random() < 0.4]
    values = {p.name: plausible(rng, p) for p in chosen}
    notes = []
    if mode in ("one", "several") and (chosen or params):
        pool = chosen or list(params)
        for p in rng.sample(pool, min(len(pool), 1 if mode == "one" else rng.randint(2, 3))):
            if p not in chosen:
                chosen.append(p)
            exclude = ("huge", "huge list") if p.name in LONG_RUN_SETTINGS else ()
            if context == "schedule" and rng.random() < 0.3:
                category, text = "schedule", rng.choice(SCHEDULES)
            else:
                category, text = hostile_value(rng, exclude)
            values[p.name] = text
            notes.append(f"{p.name}: {category}")
    args, kwargs = [], []
    for p in chosen:
        if by_keyword or p.keyword_only or p.default is not None and rng.random() < 0.7:
            kwargs.append(f"{p.name}: {values[p.name]}")
        else:
            args.append(values[p.name])
    if mode == "arity":
        if args and rng.random() < 0.5:
            args.pop(rng.randrange(len(args)))
            notes.append("an argument missing")
        else:
            args += [plausible(rng, Param("x"))] * rng.randint(1, 3)
            notes.append("too many arguments")
    elif mode == "keyword":
        kwargs.append(rng.choice(["bogus: 1", "x: 1", "axis: 0", f"{rng.choice(params).name if params else 'n'}: 2",
                                  "lr: 0.1", "self: 1", "step: 1"]))
        notes.append(f"extra keyword {kwargs[-1]}")
    elif mode == "positional":
        args, kwargs = [v.split(": ", 1)[1] for v in kwargs], []
        notes.append("settings passed by position")
    return f"{callee.reference}({', '.join(args + kwargs)})", ", ".join(notes) or "plausible arguments"


# ---- programs ----------------------------------------------------------------------------------

TRAIN_ONE_STEP = "train {\n  data = d\n  steps = 1\n}\n"


def _imports(module: str = "") -> str:
    """The modules the values above name (nn, rnn), and the callee's own."""
    return "".join(f"import {m}\n" for m in sorted({module, "nn", "rnn"}) if m)


def _use(rng: random.Random, value: str) -> str:
    """Statements that make `r = value` part of what a training step computes or reports."""
    return f"r = {value}\n" + rng.choice([
        "loss = mean(r)\n",
        "loss = mean(x * v[0]) + 0 * sum(r)\n",
        "metric m = mean(r)\nloss = mean(x * v[0])\n",
        "output o = r\nloss = mean(x * v[0])\n",
        "loss = mean(r[0]) + mean(x @ w)\n",
    ])


def function_program(rng: random.Random, callee: Callee) -> tuple[str, str]:
    """A call of a builtin or stdlib function in one of several places of a one-step training program."""
    context = rng.choices(["loss", "init", "shape", "schedule", "setting"], [55, 10, 8, 15, 12])[0]
    call, how = call_text(rng, callee, context=context)
    head = _imports(callee.module) + BASE
    if context == "loss":
        return head + _use(rng, call) + TRAIN_ONE_STEP, f"{how}; as a loss term"
    if context == "init":
        return head + f"param p : [2, 2] = {call}\nloss = mean(x @ p)\n" + TRAIN_ONE_STEP, f"{how}; as an initialiser"
    if context == "shape":
        return head + f"param p : [2, {call}]\nloss = mean(x) + sum(p)\n" + TRAIN_ONE_STEP, f"{how}; as a dimension"
    if context == "schedule":
        return head + f"loss = mean(x @ w)\ntrain {{\n  data = d\n  steps = 2\n  optimizer = sgd(lr: {call})\n}}\n", \
            f"{how}; as a learning-rate schedule"
    setting = "phases" if callee.name == "phase" else rng.choice(sorted(SETTINGS))
    steps = "" if setting in ("steps", "epochs") else "  steps = 1\n"
    data = "" if setting == "data" else "  data = d\n"
    value = f"[{call}]" if setting == "phases" else call
    return head + f"loss = mean(x @ w)\ntrain {{\n{data}{steps}  {setting} = {value}\n}}\n", \
        f"{how}; as the train setting {setting}"


def layer_program(rng: random.Random, callee: Callee) -> tuple[str, str]:
    call, how = call_text(rng, callee)
    forward_args = ", ".join(rng.choice([plausible(rng, p), hostile_value(rng)[1]]) if rng.random() < 0.3
                             else plausible(rng, p) for p in callee.forward)
    bound = rng.random() < 0.8
    body = f"net = {call}\n" + _use(rng, f"net({forward_args})") if bound else _use(rng, f"{call}({forward_args})")
    return _imports(callee.module) + BASE + body + TRAIN_ONE_STEP, f"{how}; forward({forward_args})"


def initialiser_program(rng: random.Random, callee: Callee) -> tuple[str, str]:
    shape = rng.choice(["[2, 2]", "[2, 2]", "[]", "[3]", "[2, 1, 3, 3]", "[0]", "[1000000, 0]", "[40000, 40000]",
                        "[-1]", "[2, 0.5]", "[9223372036854775807]", "[65536, 65536, 65536]"])
    call, how = call_text(rng, callee) if rng.random() < 0.85 else (callee.name, "bare name")
    dtype = rng.choice(["", "", "f64", "i32", "bool"])
    return (_imports() + BASE + f"param p : {dtype}{shape} = {call}\nloss = mean(x * v[0]) + sum(p)\n" + TRAIN_ONE_STEP,
            f"{how}; shape {shape}")


def data_program(rng: random.Random, callee: Callee) -> tuple[str, str]:
    """A data source with hostile settings, read for one training step (or as validation or test data)."""
    call, how = call_text(rng, callee)
    x_type = rng.choice(["f32[B, 2]", "f32[B, 2]", "f32[B]", "f32[B, 3]"])
    y_decl = "input y : f32[B]\n" if rng.random() < 0.5 else ""
    loss = "loss = mean(x * s)" + (" + 0 * mean(y)" if y_decl else "") + "\n"
    role = rng.choices(["data", "inline", "validation", "test"], [60, 15, 15, 10])[0]
    head = f"data d = {call}\n" if role == "data" else "data d = two_moons(n: 8)\n"
    settings = {"data": "  data = d\n", "inline": f"  data = {call}\n",
                "validation": f"  data = d\n  validation = {call}\n", "test": f"  data = d\n  test = {call}\n"}[role]
    if role in ("validation", "test") and x_type != "f32[B, 2]":
        x_type = "f32[B, 2]"
    program = _imports() + head + f"input x : {x_type}\n" + y_decl + DATA_TENSORS + loss + \
        f"train {{\n{settings}  steps = 1\n}}\n"
    return program, f"{how}; as {role} data"


def optimizer_program(rng: random.Random, callee: Callee) -> tuple[str, str]:
    call, how = call_text(rng, callee, context="schedule")
    if rng.random() < 0.8:
        return _imports() + BASE + \
            f"loss = mean(x @ w) + sum(v * v)\ntrain {{\n  data = d\n  steps = 2\n  optimizer = {call}\n}}\n", how
    repeat = rng.choice(["1", "2", "0", "-1", "2.5"])
    return _imports() + BASE + ("loss a = mean(x @ w)\nloss b = sum(v * v)\n"
                   f"train {{\n  data = d\n  steps = 2\n  phases = [phase(loss: a, params: w, optimizer: {call}),\n"
                   f"            phase(loss: b, params: v, repeat: {repeat})]\n}}\n"), \
        f"{how}; in phases"


def setting_program(rng: random.Random) -> tuple[str, str, list[str]]:
    """One train setting (or the command line's --seed) given a hostile or plausible value."""
    setting = rng.choice(sorted(SETTINGS))
    if setting in ("save", "checkpoint") and rng.random() < 0.6:
        value, how = rng.choice(HOSTILE_PATHS), "a hostile path"
    elif rng.random() < 0.25:
        value, how = rng.choice(SETTINGS[setting]), "plausible"
    else:
        category, value = hostile_value(rng, ("huge", "huge list") if setting in LONG_RUN_SETTINGS else ())
        how = category
    others = "" if setting in ("steps", "epochs") else "  steps = 2\n"
    extra = "  validation = 0.25\n" if setting == "early_stopping" else ""
    data = "" if setting == "data" else "  data = d\n"
    flags = []
    if rng.random() < 0.15:
        flags = ["--seed", rng.choice(["-1", "18446744073709551616", "-9223372036854775809", "2", "99" * 40])]
        how += f", --seed {flags[1]}"
    program = (_imports() + BASE + "loss = mean(x @ w) + sum(v * v)\n"
               + f"train {{\n{data}{others}{extra}  {setting} = {value}\n}}\n")
    return program, f"train setting {setting} = {value} ({how})", flags


# ---- data files ---------------------------------------------------------------------------------

def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def csv_file(rng: random.Random) -> tuple[bytes, str, int]:
    """A CSV file (3 columns: a, b, y when undamaged), a description of the damage, and its width."""
    rows = [["a", "b", "y"]] + [[f"{rng.uniform(-1, 1):.3f}", f"{rng.uniform(-1, 1):.3f}", str(rng.randint(0, 2))]
                                for _ in range(6)]
    damage = rng.choice(["none", "value", "value", "ragged", "not utf-8", "empty", "only header", "bom", "nul",
                         "long field", "open quote", "crlf", "one column", "blank lines", "header only blank"])
    width = 3
    if damage == "value":
        r, c = rng.randint(1, 6), rng.randint(0, 2)
        rows[r][c] = rng.choice(["inf", "-inf", "nan", "NaN", "1e20", "1e400", "9" * 30, "9" * 5000, "-0", "abc", "",
                                 " 1 ", "0x10", "1_000", "infinity", "1e-400", "18446744073709551616", "True"])
        damage = f"value {rows[r][c][:20]!r} at row {r}, column {c}"
    elif damage == "ragged":
        rows[rng.randint(1, 6)].append("1")
    elif damage == "one column":
        rows, width = [[r[2]] for r in rows], 1
    text = "\n".join(",".join(r) for r in rows) + "\n"
    if damage == "long field":
        text += "1," + "2" * 200_000 + ",1\n"
    data = text.encode()
    if damage == "not utf-8":
        data = data[:10] + b"\xff\xfe" + data[10:]
    elif damage == "empty":
        data = b""
    elif damage == "only header":
        data = b"a,b,y\n"
    elif damage == "header only blank":
        data = b"a,b,y\n\n\n"
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "nul":
        data = data[:15] + b"\x00" + data[15:]
    elif damage == "open quote":
        data = data[:12] + b'"' + data[12:]
    elif damage == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif damage == "blank lines":
        data = data.replace(b"\n", b"\n\n", 3)
    return data, f"CSV, {damage}", width


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


_GZIP_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """A 4 MB gzip file that inflates to 4 GB (64 members of 64 MB of zeros)."""
    if not _GZIP_BOMB:
        _GZIP_BOMB.append(gzip.compress(b"\0" * (64 << 20), compresslevel=9) * 64)
    return _GZIP_BOMB[0]


def idx_file(rng: random.Random, array: np.ndarray) -> tuple[bytes, str]:
    """An IDX file of `array` (uint8), damaged one way or another."""
    good = idx_bytes(array)
    damage = rng.choice(["none", "magic", "type code", "rank 0", "rank 255", "dims overflow", "product wraps to 0",
                         "truncated", "trailing garbage", "corrupt gzip", "truncated gzip", "empty", "header only",
                         "zero dim", "huge dim", "gzip bomb", "float type"])
    if damage == "magic":
        return b"\x01\x02" + good[2:], "IDX, bad magic"
    if damage == "type code":
        return good[:2] + bytes([rng.choice([0x00, 0x07, 0x0A, 0xFF])]) + good[3:], "IDX, unknown type code"
    if damage == "rank 0":
        return bytes([0, 0, 8, 0]) + good[4:], "IDX, rank 0"
    if damage == "rank 255":
        return bytes([0, 0, 8, 255]) + good[4:], "IDX, rank 255 with a short header"
    if damage == "dims overflow":
        return bytes([0, 0, 8, 3]) + struct.pack(">3I", *([0xFFFFFFFF] * 3)) + array.tobytes(), "IDX, dims 2**32-1 x3"
    if damage == "product wraps to 0":
        return (bytes([0, 0, 8, 4]) + struct.pack(">4I", *([65536] * 4)),
                "IDX, dims 65536 x4 (product 2**64) and no data")
    if damage == "truncated":
        return good[:rng.randint(1, len(good) - 1)], "IDX, truncated"
    if damage == "trailing garbage":
        return good + bytes(rng.randrange(256) for _ in range(rng.randint(1, 9))), "IDX, trailing garbage"
    if damage == "corrupt gzip":
        packed = bytearray(gzip.compress(good))
        for i in range(12, len(packed) - 8, 3):
            packed[i] ^= 0x5A
        return bytes(packed), "IDX, gzip with a corrupt deflate stream"
    if damage == "truncated gzip":
        packed = gzip.compress(good)
        return packed[:rng.randint(2, len(packed) - 1)], "IDX, truncated gzip"
    if damage == "empty":
        return b"", "IDX, empty"
    if damage == "header only":
        return good[:4 + 4 * array.ndim], "IDX, header only"
    if damage == "zero dim":
        return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", 0, *array.shape[1:]), "IDX, 0 examples"
    if damage == "huge dim":
        return bytes([0, 0, 8, 1]) + struct.pack(">I", 0xFFFFFFFF), "IDX, one dim 2**32-1 and no data"
    if damage == "gzip bomb":
        return gzip.compress(good) + gzip_bomb(), "IDX, gzip bomb (a valid file, then 4 GB of zeros in 4 MB)"
    if damage == "float type":
        values = np.full(array.shape, rng.choice([np.inf, -np.inf, np.nan, 1e300]), dtype=">f8")
        return idx_bytes(values, 0x0E), "IDX, float64 with inf, NaN or 1e300"
    return good, "IDX, undamaged"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_header_only(shape: tuple, descr: str = "<f8") -> bytes:
    """An .npy file whose header claims `shape` but holds no data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


NPZ_FIELDS = ("x", "y")


def hostile_array(rng: random.Random, rows: int) -> tuple[np.ndarray | bytes, str]:
    """A field value that is wrong in one way: its type, shape, values, or its .npy bytes."""
    kind = rng.choice(["object", "string", "0-d", "complex", "bool", "float16 inf", "nan", "wrong rank",
                       "no rows", "other rows", "huge header", "header only", "datetime", "structured", "uint64",
                       "fortran", "big-endian", "garbage npy", "labels out of range", "huge labels"])
    if kind == "object":
        return np.array([{"a": 1}, [1, 2]] * (rows // 2), dtype=object), "pickled object array"
    if kind == "string":
        return np.array(["a", "b"] * (rows // 2)), "string array"
    if kind == "0-d":
        return np.array(3.0), "a 0-d array"
    if kind == "complex":
        return np.ones((rows, 2)) + 1j, "complex values"
    if kind == "bool":
        return np.ones((rows, 2), dtype=bool), "booleans"
    if kind == "float16 inf":
        return np.full((rows, 2), np.inf, dtype=np.float16), "float16 infinities"
    if kind == "nan":
        return np.full((rows, 2), np.nan), "NaN values"
    if kind == "wrong rank":
        return np.ones((rows, 2, 1, 1)), "rank 4"
    if kind == "no rows":
        return np.ones((0, 2)), "no examples"
    if kind == "other rows":
        return np.ones((rows + 3, 2)), "more examples than the other field"
    if kind == "huge header":
        return npy_header_only((rng.choice([10 ** 10, 2 ** 62, 10 ** 9]), 2)), "npy header claiming a huge shape"
    if kind == "header only":
        return npy_header_only((rows, 2)), "npy header without data"
    if kind == "datetime":
        return np.array(["2020-01-01"] * rows, dtype="datetime64[D]"), "datetime64"
    if kind == "structured":
        return np.zeros(rows, dtype=[("a", "<f8"), ("b", "<i4")]), "structured dtype"
    if kind == "uint64":
        return np.full((rows, 2), 2 ** 64 - 1, dtype=np.uint64), "uint64 maximum"
    if kind == "fortran":
        return np.asfortranarray(np.ones((rows, 2))), "Fortran order"
    if kind == "big-endian":
        return np.ones((rows, 2), dtype=">f8"), "big-endian floats"
    if kind == "garbage npy":
        return b"\x93NUMPY\x01\x00" + bytes(rng.randrange(256) for _ in range(40)), "garbage after the npy magic"
    if kind == "labels out of range":
        return np.array([0, 1, 2, 5, -1, 1] * (rows // 6 + 1))[:rows], "labels out of range"
    return np.full(rows, 2 ** 40, dtype=np.int64), "labels 2**40"


def npz_file(rng: random.Random) -> tuple[bytes, str]:
    rows = 6
    fields = {"x": np.random.default_rng(rng.randrange(1000)).normal(size=(rows, 2)),
              "y": np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)}
    damage = rng.choice(["none", "field", "field", "field", "not a zip", "truncated", "flipped", "empty zip",
                         "missing field", "extra member", "compressed", "member without .npy"])
    members = {f"{k}.npy": npy_bytes(v) for k, v in fields.items()}
    if damage == "field":
        name = rng.choice(NPZ_FIELDS)
        value, how = hostile_array(rng, rows)
        members[f"{name}.npy"] = value if isinstance(value, bytes) else npy_bytes(value)
        return zip_bytes(members), f"NPZ, field {name}: {how}"
    if damage == "not a zip":
        return rng.choice([b"hello", b"PK\x03\x04garbage", b"\x93NUMPY", b""]), "NPZ, not a zip archive"
    data = zip_bytes(members, compress=damage == "compressed")
    if damage == "truncated":
        return data[:rng.randint(4, len(data) - 1)], "NPZ, truncated"
    if damage == "flipped":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped), "NPZ, bits flipped"
    if damage == "empty zip":
        return zip_bytes({}), "NPZ, an empty archive"
    if damage == "missing field":
        return zip_bytes({"x.npy": members["x.npy"]}), "NPZ, no field y"
    if damage == "extra member":
        return zip_bytes({**members, "../../evil.npy": members["x.npy"], "z.txt": b"text"}), "NPZ, extra members"
    if damage == "member without .npy":
        return zip_bytes({"x": members["x.npy"], "y": members["y.npy"]}), "NPZ, members without .npy"
    return data, f"NPZ, {damage}"


# ---- cases -------------------------------------------------------------------------------------

REGRESSION = """input x : f32[B, 2]
input y : f32[B]
param v : [2]
loss = mean((x @ v - y) ** 2)
"""
CLASSIFIER = """input x : f32[B, 2]
input y : i64[B]
param W : [2, 3]
loss = cross_entropy(x @ W, y)
output p = softmax(x @ W)
"""


def _program(text: str) -> dict:
    return {"m.grad": {"text": text}}


def _run(*argv: str) -> dict:
    return {"argv": ["run", "m.grad", "--quiet", *argv]}


# the other commands that compile a program, and the passes behind them (cost, lint, gradcheck)
OTHER_COMMANDS = [["ir", "m.grad", "--grad"], ["ir", "m.grad", "--cost", "--batch", "2"], ["check", "m.grad"],
                  ["grad", "m.grad"], ["gradcheck", "m.grad", "--random"]]


def _command(rng: random.Random) -> dict:
    """Mostly a one-step training run; now and then another command on the same program."""
    return {"argv": rng.choice(OTHER_COMMANDS)} if rng.random() < 0.15 else _run()


def case_builtin(rng, table):
    pool = table["primitive"] if rng.random() < 0.05 else table["builtin"]   # primitives: mostly unknown names
    callee = rng.choice(pool)
    program, how = function_program(rng, callee)
    return {"callee": callee.reference, "title": f"{callee.kind} {callee.name}: {how}", "files": _program(program),
            "steps": [_command(rng)]}


def case_stdlib_fn(rng, table):
    callee = rng.choice(table["stdlib_fn"])
    program, how = function_program(rng, callee)
    return {"callee": callee.reference, "title": f"stdlib {callee.reference}: {how}", "files": _program(program),
            "steps": [_command(rng)]}


def case_stdlib_layer(rng, table):
    callee = rng.choice(table["stdlib_layer"])
    program, how = layer_program(rng, callee)
    return {"callee": callee.reference, "title": f"stdlib layer {callee.reference}: {how}",
            "files": _program(program), "steps": [_command(rng)]}


def case_initialiser(rng, table):
    callee = rng.choice(table["initialiser"])
    program, how = initialiser_program(rng, callee)
    return {"callee": callee.reference, "title": f"initialiser {callee.name}: {how}", "files": _program(program),
            "steps": [_command(rng)]}


def _support_files(rng) -> dict:
    """Small valid files for the file-reading data sources to find."""
    images = np.arange(16, dtype=np.uint8).reshape(4, 2, 2)
    return {"d.csv": _b64(b"a,b,y\n0.1,0.2,1\n0.3,0.1,0\n-0.2,0.5,1\n0.0,0.0,0\n"),
            "d.npz": _b64(zip_bytes({"x.npy": npy_bytes(np.ones((4, 2))), "y.npy": npy_bytes(np.arange(4.0))})),
            "x.idx": _b64(idx_bytes(images)), "y.idx": _b64(idx_bytes(np.array([0, 1, 2, 1], np.uint8))),
            "t.txt": {"text": "to be or not to be that is the question " * rng.choice([1, 3])}}


def case_data_source(rng, table):
    callee = rng.choice(table["data"])
    program, how = data_program(rng, callee)
    return {"callee": callee.reference, "title": f"data {callee.name}: {how}",
            "files": {**_program(program), **_support_files(rng)}, "steps": [_run()]}


def case_optimizer(rng, table):
    callee = rng.choice(table["optimizer"])
    program, how = optimizer_program(rng, callee)
    return {"callee": callee.reference, "title": f"optimizer {callee.name}: {how}", "files": _program(program),
            "steps": [_run()]}


def case_setting(rng, table):
    program, how, flags = setting_program(rng)
    return {"title": how, "files": _program(program), "steps": [_run(*flags)]}


def case_csv(rng, table):
    data, how, width = csv_file(rng)
    settings = []
    if rng.random() < 0.4:
        settings.append(rng.choice(["target: 5", "target: -100", 'target: "nope"', "target: 9223372036854775808",
                                    "target: 0.5", "target: true", 'target: "a"', "header: false",
                                    'delimiter: ""', 'delimiter: ";;"', 'delimiter: "\\""', 'delimiter: "\\n"',
                                    'delimiter: "\\t"', "standardize: true", "standardize: 1"]))
        how += f"; {settings[-1]}"
    columns = rng.choice([width - 1, 2, 2, 0]) if width > 1 else 0
    x_type = f"f32[B, {columns}]" if columns else "f32[B]"
    y_type = rng.choice(["f32[B]", "i64[B]"])
    if rng.random() < 0.25:   # the file as `predict` input (every column is x) to a model trained on other data
        program = f"data d = blobs(n: 8, dim: {width})\ninput x : f32[B, {width}]\ninput y : f32[B]\n" \
                  "param s : [] = 1\nloss = mean(x * s) + 0 * mean(y)\noutput o = x * s\n" + TRAIN_ONE_STEP
        steps = [_run("--out", "p.npz"), {"argv": ["predict", "m.grad", "--params", "p.npz", "--input", "d.csv"]}]
        return {"title": f"{how}; as predict --input", "files": {**_program(program), "d.csv": _b64(data)},
                "steps": steps}
    program = f'data d = csv(path: "d.csv"{", " if settings else ""}{", ".join(settings)})\n' \
              f"input x : {x_type}\ninput y : {y_type}\nparam s : [] = 1\nloss = mean(x * s) + 0 * mean(y)\n" \
              + TRAIN_ONE_STEP
    return {"title": how, "files": {**_program(program), "d.csv": _b64(data)}, "steps": [_run()]}


def case_idx(rng, table):
    if rng.random() < 0.3:   # MNIST from a data directory of damaged files
        split = rng.choice(["train", "test"])
        names = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}[split]
        images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
        labels = np.array([3, rng.choice([1, 9, 10, 255])], np.uint8)
        damaged = rng.randrange(2)
        files, how = {}, ""
        for i, (name, array) in enumerate(zip(names, (images, labels))):
            data, about = idx_file(rng, array) if i == damaged else (idx_bytes(array), "")
            if not data.startswith(b"\x1f\x8b") and rng.random() < 0.7:
                data = gzip.compress(data)
            files[f"data/mnist/{name}"] = _b64(data)
            how = how or about
        program = f'data d = mnist(split: "{split}", limit: {rng.choice(["0", "1", "-1", "2"])})\n' \
                  "input x : f32[B, 784]\ninput y : i64[B]\nparam W : [784, 10]\nloss = cross_entropy(x @ W, y)\n" \
                  + TRAIN_ONE_STEP
        return {"title": f"MNIST {split}: {how} ({names[damaged]}, labels {labels.tolist()})",
                "files": {**_program(program), **files}, "steps": [_run("--data-dir", "data")]}
    images = np.arange(16, dtype=np.uint8).reshape(4, 2, 2)
    labels = np.array([0, 1, 2, 1], np.uint8)
    target = rng.choice(["x", "y"])
    data, how = idx_file(rng, images if target == "x" else labels)
    files = {"x.idx": _b64(data if target == "x" else idx_bytes(images)),
             "y.idx": _b64(data if target == "y" else idx_bytes(labels))}
    normalize = rng.choice(["255.0", "255.0", "0", "-1", "1e-300", "1e999", "(1e999 - 1e999)"])
    program = f'data d = idx(x: "x.idx", y: "y.idx", normalize: {normalize})\ninput x : f32[B, 2, 2]\n' \
              "input y : i64[B]\nparam W : [4, 3]\nloss = cross_entropy(reshape(x, [x.shape[0], 4]) @ W, y)\n" \
              + TRAIN_ONE_STEP
    return {"title": f"{how} (file {target}.idx), normalize {normalize}", "files": {**_program(program), **files},
            "steps": [_run()]}


def case_npz(rng, table):
    data, how = npz_file(rng)
    head = CLASSIFIER if rng.random() < 0.5 else REGRESSION
    if rng.random() < 0.3:   # as `predict --input`
        program = "data d = two_moons(n: 8)\n" + head.replace("i64[B]", "f32[B]").replace(
            "cross_entropy(x @ W, y)", "mean(x @ W) + 0 * mean(y)") + "output q = x * 2\n" + TRAIN_ONE_STEP
        steps = [_run("--out", "p.npz"), {"argv": ["predict", "m.grad", "--params", "p.npz", "--input", "d.npz"]}]
        return {"title": f"{how}; as predict --input", "files": {**_program(program), "d.npz": _b64(data)},
                "steps": steps}
    program = 'data d = npz(path: "d.npz")\n' + head + TRAIN_ONE_STEP
    return {"title": how, "files": {**_program(program), "d.npz": _b64(data)}, "steps": [_run()]}


CHECKPOINTED = """data d = two_moons(n: 16, seed: 2)
input x : f32[B, 2]
input y : f32[B]
param W : [2, 3]
param b : [3]
param u : [3] = 0.5
loss = mean((tanh(x @ W + b) @ u - y) ** 2)
metric mae = mean(abs(tanh(x @ W + b) @ u - y))
output score = tanh(x @ W + b) @ u
train {
  data = d
  batch = 4
  optimizer = OPTIMIZER
SETTINGS}
"""


def damage_ops(rng: random.Random) -> list[dict]:
    """How to damage an .npz written by gradlang (applied by the worker: see `damage`)."""
    kind = rng.choice(["truncate", "flip", "drop", "drop", "meta", "meta", "meta", "replace", "replace", "add",
                       "garbage", "empty", "meta raw"])
    if kind == "truncate":
        return [{"op": "truncate", "at": rng.random()}]
    if kind == "flip":
        return [{"op": "flip", "at": [rng.random() for _ in range(rng.randint(1, 6))]}]
    if kind == "drop":
        return [{"op": "drop", "prefix": rng.choice(["param/", "optimizer/", "meta", "best/", ""]),
                 "pick": rng.randrange(99)}]
    if kind == "meta":
        value = rng.choice([None, "x", -1, 2 ** 64, 0.5, [], {}, [1, 2], True, 1e308, {"bit_generator": "MT19937"},
                            {"bit_generator": "PCG64", "state": {"state": -1, "inc": "a"}}])
        return [{"op": "meta", "pick": rng.randrange(99), "delete": rng.random() < 0.4, "value": value}]
    if kind == "meta raw":
        return [{"op": "meta raw", "text": rng.choice(["{", "[]", "null", "1", '"text"', "", "{}", "NaN", "\u00ff"])}]
    if kind == "replace":
        return [{"op": "replace", "prefix": rng.choice(["param/", "optimizer/", "meta", ""]), "pick": rng.randrange(99),
                 "with": rng.choice(["shape", "complex", "string", "object", "bool", "nan", "0-d", "huge header",
                                     "int overflow", "float16"])}]
    if kind == "add":
        return [{"op": "add", "name": rng.choice(["param/bogus", "optimizer/velocity.99", "best/W", "meta2", "x"])}]
    return [{"op": kind}]


def case_checkpoint(rng, table):
    """A checkpoint from a real run, damaged, then resumed."""
    optimizer = rng.choice(["sgd(lr: 0.1, momentum: 0.9)", "adam(lr: 0.01)", "rmsprop()", "adagrad()", "adamw()"])
    settings = rng.choice(["", "  validation = 0.25\n  early_stopping = 2\n", "  seed = 3\n"])
    program = CHECKPOINTED.replace("OPTIMIZER", optimizer).replace("SETTINGS", settings)
    ops = damage_ops(rng)
    steps = [_run("--epochs", "2", "--checkpoint", "c.npz", "--checkpoint-every", "0", "--out", "p.npz"),
             {"damage": "c.npz", "ops": ops},
             _run("--resume", "--checkpoint", "c.npz", "--epochs", "3", "--out", "p2.npz")]
    return {"title": f"checkpoint ({optimizer}{', validation' if 'valid' in settings else ''}) damaged: "
                     f"{json.dumps(ops)}", "files": _program(program), "steps": steps}


def case_params(rng, table):
    """A params file from a real run, damaged, then read by eval or predict."""
    program = CHECKPOINTED.replace("OPTIMIZER", "sgd(lr: 0.1)").replace("SETTINGS", "")
    ops = damage_ops(rng)
    command = rng.choice([["eval", "m.grad", "--params", "p.npz"],
                          ["predict", "m.grad", "--params", "p.npz", "--input", "in.npz"]])
    inputs = _b64(zip_bytes({"x.npy": npy_bytes(np.ones((3, 2)))}))
    steps = [_run("--steps", "1", "--out", "p.npz"), {"damage": "p.npz", "ops": ops}, {"argv": command}]
    return {"title": f"params file damaged, then {command[0]}: {json.dumps(ops)}",
            "files": {**_program(program), "in.npz": inputs}, "steps": steps}


# family → (generator, share of the cases); the cycle gives every family its share of any run
FAMILIES = {
    "builtin": (case_builtin, 26), "stdlib_fn": (case_stdlib_fn, 10), "stdlib_layer": (case_stdlib_layer, 7),
    "initialiser": (case_initialiser, 6), "data_source": (case_data_source, 9), "optimizer": (case_optimizer, 6),
    "setting": (case_setting, 7), "csv": (case_csv, 7), "idx": (case_idx, 6), "npz": (case_npz, 7),
    "checkpoint": (case_checkpoint, 6), "params": (case_params, 3),
}
_CYCLE = [name for _, name in sorted((i / weight, name) for name, (_, weight) in FAMILIES.items()
                                     for i in range(weight))]
_TABLE: dict[str, list[Callee]] = {}


def callee_table() -> dict[str, list[Callee]]:
    if not _TABLE:
        for c in callees():
            _TABLE.setdefault(c.kind, []).append(c)
    return _TABLE


def make_case(seed: int, index: int) -> dict:
    """Case `index` of the run seeded `seed`: the same pair always gives the same case."""
    rng = random.Random(f"{seed}:{index}")
    family = _CYCLE[index % len(_CYCLE)]
    return {"seed": seed, "index": index, "family": family, **FAMILIES[family][0](rng, callee_table())}


def describe_case(case: dict) -> str:
    """The case as a human reads it: its title, commands, program and data files."""
    lines = [f"case {case['index']} of seed {case['seed']} ({case['family']}): {case['title']}",
             f"  reproduce: python tests/hostile_cases.py --seed {case['seed']} --case {case['index']}"]
    for step in case["steps"]:
        lines.append("  $ " + (f"gradlang {' '.join(step['argv'])}" if "argv" in step else
                               f"(damage {step['damage']}: {json.dumps(step['ops'])})"))
    for name, content in case["files"].items():
        if "text" in content and name.endswith(".grad"):
            shown = "\n".join("  | " + line for line in content["text"].rstrip("\n").split("\n"))
            lines.append(f"  --- {name}\n" + shown)
        else:
            size = len(content["text"]) if "text" in content else len(base64.b64decode(content["b64"]))
            lines.append(f"  --- {name}: {size} bytes")
    return "\n".join(lines)


# ---- damaging files in the worker ---------------------------------------------------------------

def _replacement(kind: str, like: np.ndarray) -> bytes:
    if kind == "huge header":
        return npy_header_only((10 ** 10,) + like.shape[1:], like.dtype.str if like.dtype.kind in "fiu" else "<f8")
    value = {"shape": lambda: np.ones(like.shape + (2,)), "complex": lambda: np.ones(like.shape) + 1j,
             "string": lambda: np.full(like.shape, "a"), "object": lambda: np.array([object()], dtype=object),
             "bool": lambda: np.ones(like.shape, dtype=bool), "nan": lambda: np.full(like.shape, np.nan),
             "0-d": lambda: np.array(1.0), "int overflow": lambda: np.full(like.shape, 2 ** 63 - 1, dtype=np.int64),
             "float16": lambda: np.full(like.shape, 65504, dtype=np.float16)}[kind]()
    return npy_bytes(value)


def _pick(members: dict[str, bytes], op: dict) -> str | None:
    """The member `op` picks (by its "pick" index) among those whose names start with its "prefix", if any."""
    names = sorted(n for n in members if n.startswith(op["prefix"]))
    return names[op["pick"] % len(names)] if names else None


def damage(path: Path, ops: list[dict]) -> None:
    """Apply `ops` (from `damage_ops`) to the .npz at `path`."""
    for op in ops:
        data = path.read_bytes()
        kind = op["op"]
        if kind == "truncate":
            path.write_bytes(data[:int(len(data) * op["at"])])
            continue
        if kind == "flip":
            flipped = bytearray(data)
            for at in op["at"]:
                flipped[min(int(len(flipped) * at), len(flipped) - 1)] ^= 0xFF
            path.write_bytes(bytes(flipped))
            continue
        if kind == "garbage":
            path.write_bytes(random.Random(len(data)).randbytes(len(data)))
            continue
        if kind == "empty":
            path.write_bytes(b"")
            continue
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}

        if kind == "drop" and (name := _pick(members, op)):
            del members[name]
        elif kind in ("meta", "meta raw") and "meta.npy" in members:
            if kind == "meta raw":
                text = op["text"]
            else:
                meta = json.loads(str(np.load(io.BytesIO(members["meta.npy"]), allow_pickle=False)))
                key = sorted(meta)[op["pick"] % len(meta)]
                if op["delete"]:
                    del meta[key]
                else:
                    meta[key] = op["value"]
                text = json.dumps(meta)
            members["meta.npy"] = npy_bytes(np.array(text))
        elif kind == "replace" and (name := _pick(members, op)):
            like = np.load(io.BytesIO(members[name]), allow_pickle=False)
            members[name] = _replacement(op["with"], like)
        elif kind == "add":
            members[op["name"] + ".npy"] = npy_bytes(np.ones(3))
        path.write_bytes(zip_bytes(members))


# ---- the worker ---------------------------------------------------------------------------------

class CaseTimedOut(BaseException):
    """Raised by the alarm in the worker: the case ran past its time (the traceback shows where). Not
    an Exception, so that no `except Exception` in gradlang mistakes it for an error of its own."""


_LOCATED = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): error: \S")


def _gradlang_frame(tb) -> str:
    """The innermost frame in gradlang's source, as `gradlang/x.py:LINE in function`."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith(str(PACKAGE))]
    if not frames:
        return "outside gradlang"
    f = frames[-1]
    return f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} in {f.name}"


def outside_the_program(case: dict) -> tuple[list[str], list[str]]:
    """What an error may name instead of a place in the program: the case's files other than programs
    (its data, the params and checkpoints its commands name), and the command-line options it gives a
    value that is not a file (`--seed -1`: an error about it has no place in the program to point at)."""
    files = [name for name in case["files"] if not name.endswith(".grad")]
    options = []
    for step in case["steps"]:
        argv = step.get("argv", [])
        files += [arg for arg in argv if "." in arg and not arg.startswith("-") and not arg.endswith(".grad")]
        options += [flag.lstrip("-") for flag, value in zip(argv, argv[1:])
                    if flag.startswith("--") and not value.startswith("--") and "." not in value]
    return files, options


def _where_unlocated(err, named: tuple[list[str], list[str]]) -> str | None:
    """Why a GradError is not located (None if it is): no span and neither a file nor an option of the
    case named, or a span that does not format as `file:line:col: error:` with a caret under a real line."""
    if err.span is None:
        files, options = named
        if any(Path(name).name in err.message for name in files) or \
                any(re.search(rf"\b{re.escape(option)}\b", err.message) for option in options):
            return None
        return "no source location, and no data file or option named"
    text = err.format()
    head = _LOCATED.match(text)
    if not head or int(head["line"]) < 1 or int(head["col"]) < 1:
        return "a location that does not format as file:line:col"
    shown = head["file"]
    if not (shown.startswith("<stdlib>/") or Path(shown).is_file()):
        return f"a location in {shown!r}, which is not a file"
    lines = text.split("\n")
    if len(lines) < 3 or set(lines[2].split("|", 1)[-1].strip()) != {"^"}:
        return "no caret under the line"
    return None


def _template(message: str) -> str:
    """A message with its numbers and quoted names blanked, so that one bug's errors group together."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message))[:100]


def run_gradlang(argv: list[str], named: tuple[list[str], list[str]]) -> dict:
    """Run one `gradlang` command in this process and classify how it ended."""
    from gradlang.cli import main
    from gradlang.errors import GradError
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main([*argv, "--debug"])
    except GradError as exc:
        why = _where_unlocated(exc, named)
        if why is None:
            return {"outcome": "error", "detail": exc.format()}
        return {"outcome": "unlocated", "signature": f"GradError with {why}: {_template(exc.message)} "
                f"(raised at {_gradlang_frame(exc.__traceback__)})", "detail": exc.format()}
    except CaseTimedOut:
        return {"outcome": "hang", "signature": f"hang at {_gradlang_frame(sys.exc_info()[2])}",
                "detail": traceback.format_exc()[-3000:]}
    except MemoryError:
        return {"outcome": "memory", "signature": f"MemoryError at {_gradlang_frame(sys.exc_info()[2])}",
                "detail": traceback.format_exc()[-3000:]}
    except BaseException as exc:   # noqa: BLE001 - anything else escaping gradlang is an internal error
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"outcome": "internal", "signature": f"{type(exc).__name__} at {_gradlang_frame(exc.__traceback__)}",
                "detail": traceback.format_exc()[-3000:]}
    if code == 0:
        return {"outcome": "ok"}
    if code == 1:
        return {"outcome": "error", "detail": err.getvalue()[-2000:]}
    return {"outcome": "internal", "signature": f"exit status {code}", "detail": err.getvalue()[-2000:]}


def _alarm(signum, frame):
    raise CaseTimedOut(f"the case ran longer than {CASE_SECONDS} s")


def run_case(case: dict, workdir: Path) -> dict:
    """Write the case's files into a fresh folder, run its steps there, and return the last outcome."""
    folder = Path(tempfile.mkdtemp(dir=workdir))
    (folder / "data").mkdir()
    for name, content in case["files"].items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content["text"].encode() if "text" in content else base64.b64decode(content["b64"]))
    os.chdir(folder)
    os.environ["GRADLANG_DATA"] = str(folder / "data")
    seconds = case.get("seconds", CASE_SECONDS)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(seconds + 2, exit=False)
    result = {"outcome": "ok"}
    try:
        for i, step in enumerate(case["steps"]):
            if "damage" in step:
                damage(folder / step["damage"], step["ops"])
                continue
            result = run_gradlang(step["argv"], outside_the_program(case))
            if i < len(case["steps"]) - 1 and result["outcome"] != "ok":
                # a setup step (the real run that makes a checkpoint or params file) must train
                if result["outcome"] == "error":
                    result = {"outcome": "setup", "detail": result["detail"]}
                break
    except CaseTimedOut:   # in the harness's own code (damaging a file): still a case that took too long
        result = {"outcome": "hang", "signature": "hang outside gradlang", "detail": traceback.format_exc()[-2000:]}
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        os.chdir(workdir)
        shutil.rmtree(folder, ignore_errors=True)
    return result


def selftest_case(action: str, seconds: int = 1) -> dict:
    """Cases that misbehave on purpose, to show the harness sees each kind of failure."""
    return {"seed": -1, "index": -1, "family": "selftest", "title": action, "files": {}, "steps": [],
            "selftest": action, "seconds": seconds}


def _selftest(action: str) -> dict:
    if action == "hang":
        while True:
            time.sleep(0.01)
    if action == "hang in C":
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        time.sleep(3600)
    if action == "memory":
        blocks = [np.empty(1 << 27) for _ in range(64)]   # 64 GB
        return {"outcome": "ok", "blocks": len(blocks)}
    if action == "crash":
        os.abort()
    if action == "exit":
        os._exit(3)
    return {"outcome": "ok"}


def worker_main() -> None:
    """Read cases as JSON lines on stdin, answer each with one JSON line on the original stdout
    (gradlang's own output goes to /dev/null). Each case runs in a folder of its own below the
    current one, which the parent made and removes."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    faulthandler.enable()
    signal.signal(signal.SIGALRM, _alarm)
    sys.setrecursionlimit(10_000)   # as the command line does
    workdir = Path.cwd()
    for line in sys.stdin:
        case = json.loads(line)
        started = time.perf_counter()
        if "selftest" in case:
            try:
                signal.alarm(case.get("seconds", CASE_SECONDS))
                result = _selftest(case["selftest"])
            except CaseTimedOut:
                result = {"outcome": "hang", "signature": "hang (selftest)"}
            except MemoryError:
                result = {"outcome": "memory", "signature": "MemoryError (selftest)"}
            finally:
                signal.alarm(0)
        else:
            result = run_case(case, workdir)
        result["seconds"] = round(time.perf_counter() - started, 3)
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


# ---- the parent: workers, limits, results -------------------------------------------------------

def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _worker_environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_", "MPI_", "SLURM_"))}
    env.update({"GRADLANG_MAX_BYTES": str(MAX_BYTES), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", "PYTHONPATH": str(ROOT)})
    return env


class Worker:
    """One worker process; replaced when it dies, hangs, runs out of memory or has run its share."""

    def __init__(self, grace: float = 5.0):
        self.grace = grace
        self.proc = None
        self.cases = 0
        self.log = tempfile.NamedTemporaryFile(prefix="gradlang-hostile-worker-", suffix=".log", delete=False)
        self.workdir = tempfile.mkdtemp(prefix="gradlang-hostile-")   # the cases' folders, even a killed worker's

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=_worker_environment(),
                                     preexec_fn=_limit_memory, cwd=self.workdir, text=True)
        self.cases = 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _log_since(self, offset: int) -> str:
        with open(self.log.name, errors="replace") as f:
            f.seek(offset)
            return f.read()[-4000:]

    def run(self, case: dict) -> dict:
        seconds = case.get("seconds", CASE_SECONDS)
        if self.proc is None or self.proc.poll() is not None or self.cases >= CASES_PER_WORKER:
            self.stop()
            self._start()
        self.cases += 1
        offset = os.path.getsize(self.log.name)
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], seconds + self.grace)
        line = self.proc.stdout.readline() if ready else None
        if line:
            result = json.loads(line)
            if result["outcome"] in ("hang", "memory"):
                self.stop()   # its state after an alarm or a failed allocation is not to be trusted
            return result
        if line is None:
            self.stop()
            log = self._log_since(offset)
            return {"outcome": "hang", "signature": f"hang, killed after {seconds + self.grace:g} s at "
                    f"{_frame_in_dump(log)}", "detail": log}
        status = self.proc.wait()
        self.proc = None
        log = self._log_since(offset)
        memory = "MemoryError" in log or "Cannot allocate memory" in log or "std::bad_alloc" in log
        return {"outcome": "memory" if memory else "internal",
                "signature": f"worker died ({_status(status)}) at {_frame_in_dump(log)}", "detail": log}


def _status(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"


def _frame_in_dump(log: str) -> str:
    """The innermost gradlang frame of a faulthandler dump (most recent call first)."""
    for match in re.finditer(r'File "([^"]+)", line (\d+) in (\S+)', log):
        if match[1].startswith(str(PACKAGE)):
            return f"{Path(match[1]).relative_to(ROOT)}:{match[2]} in {match[3]}"
    return "an unknown place (no gradlang frame in the dump)"


@dataclass
class Results:
    """Every case's outcome, with the failures grouped by signature."""

    seed: int
    counts: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)    # signature → list of (case, result)
    seconds: float = 0.0

    def add(self, case: dict, result: dict) -> None:
        self.counts[result["outcome"]] = self.counts.get(result["outcome"], 0) + 1
        if result["outcome"] in FAILURES:
            self.failures.setdefault(f"[{result['outcome']}] {result['signature']}", []).append((case, result))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return f"{self.total} hostile cases (seed {self.seed}) in {self.seconds:.0f} s: " + \
            ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))

    def report(self, examples: int = 1) -> str:
        """Each distinct failure once, with its count and its smallest cases, most frequent first."""
        parts = [self.summary(), f"{len(self.failures)} distinct failures:"]
        for signature, found in sorted(self.failures.items(), key=lambda kv: -len(kv[1])):
            parts.append(f"\n=== {signature} — {len(found)} case(s)")
            for case, result in sorted(found, key=lambda cr: len(json.dumps(cr[0])))[:examples]:
                parts.append(describe_case(case))
                parts.append("  error:\n" + "\n".join("    " + line for line in
                                                      result.get("detail", "").rstrip().split("\n")[-14:]))
        return "\n".join(parts)

    def as_json(self) -> dict:
        return {"seed": self.seed, "counts": self.counts, "seconds": self.seconds,
                "failures": {s: [{"case": c, "result": r} for c, r in found] for s, found in self.failures.items()}}


def run_cases(cases, workers: int = 2, progress: str | None = None, seed: int = 0, grace: float = 5.0) -> Results:
    """Run `cases` (an iterable of case dicts) on `workers` reused worker processes; a worker that has
    not answered `grace` seconds after its case's time is killed."""
    results = Results(seed)
    lock = threading.Lock()
    iterator = iter(cases)
    started = time.perf_counter()

    def serve() -> None:
        worker = Worker(grace)
        try:
            while True:
                with lock:
                    case = next(iterator, None)
                if case is None:
                    return
                result = worker.run(case)
                with lock:
                    results.add(case, result)
                    if progress and results.total % 250 == 0:
                        results.seconds = time.perf_counter() - started
                        with open(progress, "a") as f:
                            f.write(results.summary() + "\n")
        finally:
            worker.close()

    threads = [threading.Thread(target=serve, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.seconds = time.perf_counter() - started
    return results


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="Show and run hostile gradlang cases.")
    parser.add_argument("--worker", action="store_true", help="serve cases on stdin (what the test starts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, action="append", help="the case index to show and run (repeatable)")
    parser.add_argument("--count", type=int, help="run cases 0 … COUNT-1 and print the report")
    parser.add_argument("--json", type=Path, help="write the results to this file as JSON")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    cases = [make_case(args.seed, i) for i in args.case] if args.case else \
        (make_case(args.seed, i) for i in range(args.count or 100))
    if args.case:
        for case in cases:
            print(describe_case(case))
    results = run_cases(cases, seed=args.seed)
    if args.case:
        for found in results.failures.values():
            for _, result in found:
                print(f"\n{result['outcome']}: {result['signature']}\n{result.get('detail', '')}")
    print(results.report() if results.failures else results.summary())
    if args.json:
        args.json.write_text(json.dumps(results.as_json(), indent=1))
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
