"""Every package the code imports is declared in pyproject.toml, and Faust is bounded."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
OURS = {"detectors", "stream", "tests", "examples", "__future__"}


def imported_packages(*roots: str) -> dict[str, set[str]]:
    """Top-level names of third-party modules imported anywhere under ``roots`` -> files."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OURS:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def declared(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def test_every_imported_package_is_declared() -> None:
    project = PYPROJECT["project"]
    core = declared(project["dependencies"])
    extras = set().union(*(declared(v) for v in project["optional-dependencies"].values()))
    distributions = packages_distributions()
    imports = imported_packages("detectors", "stream", "examples")
    assert {"faust", "aiokafka", "numpy", "river", "pydantic_settings"} <= set(imports)
    undeclared = {}
    for module, files in imports.items():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & (core | extras):
            undeclared[module] = sorted(files)
    assert not undeclared, undeclared


def test_faust_and_aiokafka_have_an_upper_bound() -> None:
    """The code overrides private methods of both: a new minor version must be tested first."""
    for name in ("faust-streaming", "aiokafka"):
        (spec,) = [r for r in PYPROJECT["project"]["dependencies"] if r.startswith(name + ">")]
        assert "<" in spec, spec
