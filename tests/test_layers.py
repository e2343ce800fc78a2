"""The package's layering, as docs/architecture.md draws it: which package may import which, no import
circles, and no module reaching into another's underscore names. Read from the source, so a new import
that breaks a rule fails here, naming the file."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "gradlang"

# What each layer may import from gradlang, besides itself. The core (ops, ir, passes: the IR and its
# transforms) imports nothing above it; the front end builds IR with the core and never imports what
# lowers or runs it; the runtime may read the front end's declarations (data sources, optimizers, the
# plan). The modules at the top (api, cli, stages, gradcheck, notebook, …) and lsp/ may import anything.
ALLOWED = {
    "ops": {"errors"},
    "ir": {"errors", "ops"},
    "passes": {"errors", "ops", "ir"},
    "frontend": {"errors", "resources", "ops", "ir", "passes"},
    "analysis": {"errors", "ops", "ir", "passes"},
    "lowering": {"errors", "ops", "ir", "passes", "analysis"},
    "runtime": {"errors", "ops", "ir", "passes", "frontend", "analysis", "lowering"},
    "export": {"errors", "ops", "ir", "passes"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported gradlang module, name imported from it or "", line) for every import in `module`,
    those inside functions included."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            if base.split(".")[0] != "gradlang":
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                out.append((child, "", node.lineno) if child in MODULES else (base, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, "", node.lineno) for alias in node.names if alias.name.split(".")[0] == "gradlang")
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gradlang"


def test_each_layer_imports_only_the_layers_below_it():
    wrong = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target}"
             for module in MODULES if _layer(module) in ALLOWED
             for target, _, line in _imports(module)
             if _layer(target) != _layer(module) and _layer(target) not in ALLOWED[_layer(module)]]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = nx.DiGraph((module, target) for module in MODULES for target, _, _ in _imports(module)
                       if target != module)
    circles = [" → ".join(cycle + cycle[:1]) for cycle in nx.simple_cycles(graph)]
    assert not circles, "\n".join(circles)


def test_no_module_uses_another_modules_underscore_names():
    wrong = []
    for module, path in MODULES.items():
        imported = {}
        for target, name, line in _imports(module):
            if name.startswith("_") and not name.startswith("__"):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}.{name}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if any(target.endswith(f".{alias.name}") for target, _, _ in _imports(module)):
                        imported[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("gradlang") and alias.asname:
                        imported[alias.asname] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_the_imports_they_police():
    """The checks above read real imports, relative ones and those inside functions included."""
    assert any(t == "gradlang.ir.graph" for t, _, _ in _imports("gradlang.frontend.elaborate"))
    assert any(t == "gradlang.frontend.plan" for t, _, _ in _imports("gradlang.runtime.runner"))
    assert any(t == "gradlang.api" for t, _, _ in _imports("gradlang.cli"))   # imported inside a function
