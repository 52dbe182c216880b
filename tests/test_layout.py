"""The layout's rule: imports point one way, tools -> service -> contracts -> detectors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Each layer, from the bottom up, and the layers it must never import.
FORBIDDEN = {
    "detectors": ("stream",),
    "stream/contracts": ("stream.service", "stream.tools"),
    "stream/service": ("stream.tools",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer):
    offences = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / layer).rglob("*.py"))
        for name in sorted(imported_modules(path))
        if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[layer])
    ]
    assert offences == []


def test_the_rule_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from stream.tools.replay import run\n")
    assert "stream.tools.replay" in imported_modules(module)


def test_importing_detectors_loads_no_kafka_client():
    code = (
        "import sys, detectors\n"
        "loaded = sorted(m for m in ('faust', 'aiokafka', 'kafka') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_among(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that a file imports (``from package import module``
    imports that module, not the package's other modules)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            inner = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            names.update(inner or {node.module})
    return names & modules


def import_circles(root: Path, packages: tuple[str, ...]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a circle (imports under
    ``TYPE_CHECKING`` and inside functions included): Tarjan's strongly connected
    components of more than one module."""
    files = [p for package in packages for p in sorted((root / package).rglob("*.py"))]
    modules = {module_name(root, p): p for p in files}
    edges = {name: sorted(imports_among(path, set(modules)) - {name})
             for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in modules:
        if name not in index:
            visit(name)
    return circles


def test_no_module_imports_one_that_imports_it_back():
    assert import_circles(REPO, ("detectors", "stream")) == []


def test_a_circle_is_seen_through_type_checking_and_functions(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\n"
                                  "if TYPE_CHECKING:\n    from pkg.b import B\n")
    (package / "b.py").write_text("def f():\n    from pkg.c import C\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from pkg import a\n")
    assert import_circles(tmp_path, ("pkg",)) == [["pkg.a", "pkg.b", "pkg.c"]]
