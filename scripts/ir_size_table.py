"""Regenerate the table of gradient graph sizes in docs/ir.md (`tests/test_ir_tools.py` holds the page to
what the compiler makes): for every example, its elaborated forward graph, the raw gradient graph and the
gradient graph after simplification, in nodes.

    python scripts/ir_size_table.py [--check]
"""
import argparse
import sys
from pathlib import Path

import gradlang

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ir.md"
MARK = "<!-- table: gradient graph sizes -->"


def rows() -> list[str]:
    out = []
    for path in sorted((ROOT / "examples").glob("*.grad")):
        prog = gradlang.compile(path)
        raw, after = len(prog.raw_gradient_graph()), len(prog.gradient_graph())
        out.append(f"| `{path.stem}` | {len(prog.elaborated.graph)} | {raw} | {after} | "
                   f"{100 * (raw - after) / raw:.0f}% |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; fail if the table is stale")
    args = parser.parse_args()
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(MARK) + 3
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    new = lines[:start] + rows() + lines[end:]
    if new == lines:
        return 0
    if args.check:
        print(f"{DOC} is stale: run python scripts/ir_size_table.py", file=sys.stderr)
        return 1
    DOC.write_text("\n".join(new) + "\n", encoding="utf-8")
    print(f"{DOC} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
