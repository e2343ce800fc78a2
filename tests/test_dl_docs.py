"""The deep-learning pages (docs/cnn.md, rnn.md, attention.md, word2vec.md, gan.md, policy_gradient.md)
show gradient IR as gradlang prints it; these tests keep the listings true.

A ```grad block after `<!-- program: NAME -->` is a program, written to NAME.grad. A ```text block
after `<!-- ir: PATH -->` (PATH: such a NAME, or a file of the repository) lists lines of
`gradlang ir PATH --grad --no-locations`, in the order printed (lines in between may be left out).
When the compiler's output changes on purpose, regenerate the listing with that command.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradlang.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / f"{name}.md" for name in ("cnn", "rnn", "attention", "word2vec", "gan", "policy_gradient")]
_BLOCK = re.compile(r"<!-- (program|ir): (\S+) -->\n```\w*\n(.*?)```", re.S)


def _blocks(page: Path):
    return [(m.group(1), m.group(2), m.group(3)) for m in _BLOCK.finditer(page.read_text(encoding="utf-8"))]


LISTINGS = [pytest.param(page, path, text, id=f"{page.stem}:{path}") for page in PAGES if page.exists()
            for kind, path, text in _blocks(page) if kind == "ir"]


def test_every_page_shows_gradient_ir():
    for page in PAGES:
        assert page.exists(), page
        assert any(kind == "ir" for kind, _, _ in _blocks(page)), f"{page.name} shows no gradient IR"


@pytest.mark.parametrize("page, path, listing", LISTINGS)
def test_ir_listing_matches_the_compiler(page, path, listing, tmp_path, capsys, monkeypatch):
    programs = {name: text for kind, name, text in _blocks(page) if kind == "program"}
    if path in programs:
        target = tmp_path / f"{path}.grad"
        target.write_text(programs[path], encoding="utf-8")
    else:
        target = ROOT / path
    monkeypatch.chdir(tmp_path)
    assert main(["ir", str(target), "--grad", "--no-locations"]) == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    position = 0
    for line in (line.rstrip() for line in listing.splitlines() if line.strip()):
        assert line in printed[position:], (f"{page.name}: this line of the listing for {path} is not (or no longer, "
                                            f"or not in this order) in `gradlang ir --grad --no-locations`:\n{line}")
        position = printed.index(line, position) + 1
