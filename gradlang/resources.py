"""Where the grammar and the standard library are: beside the package in a checkout, inside it in a wheel."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gradlang installation is missing its {name}/ folder")


def grammar_path() -> Path:
    return _find("grammar") / "gradlang.lark"


def stdlib_dir() -> Path:
    return _find("stdlib")
