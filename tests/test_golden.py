"""Golden files pin the printed forward and gradient IR of small programs.

Regenerate after an intended change with `UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`
and review the diff.
"""
import os
from pathlib import Path

import pytest

import gradlang
from gradlang.analysis import verify

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
PROGRAMS = sorted(p.name for p in GOLDEN.glob("*.grad"))


def _check(actual: str, path: Path) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual)
    assert path.exists(), f"{path.name} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(), f"{path.name} differs; run with UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("name", PROGRAMS)
def test_forward_and_gradient_ir_match_golden(name, monkeypatch):
    monkeypatch.chdir(ROOT)   # locations print relative to the repository root
    program = gradlang.compile(Path("tests/golden") / name)
    verify(program.forward_graph)
    verify(program.gradient_graph())
    _check(program.ir, GOLDEN / (name[:-5] + ".ir"))
    _check(program.gradient_ir, GOLDEN / (name[:-5] + ".grad.ir"))


def test_printing_is_stable_across_compilations(monkeypatch):
    monkeypatch.chdir(ROOT)
    first = gradlang.compile(Path("tests/golden/mlp_softmax.grad")).gradient_ir
    second = gradlang.compile(Path("tests/golden/mlp_softmax.grad")).gradient_ir
    assert first == second
