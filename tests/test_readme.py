"""The README documents what the code has: its metrics, settings and commands, and its links
lead to files of the repository."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream.cli import COMMANDS
from stream.service.metrics import Metrics
from stream.settings import CONFIG_VARIABLE, ENGINE_PREFIX, ENV_VARS, markdown_table

REPO = Path(__file__).parents[1]
README = (REPO / "README.md").read_text("utf-8")
DOCS = {p: p.read_text("utf-8") for p in [REPO / "README.md", *(REPO / "docs").rglob("*.md")]}


def test_readme_opens_with_the_two_commands() -> None:
    opening = "\n".join(README.splitlines()[:15])
    assert "make demo" in opening and "make test" in opening


def test_every_metric_in_the_readme_is_exported() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    exported = {m.name for m in registry.collect()}
    documented = set(re.findall(r"`(churnwatch_[a-z_]+)`", README))
    # prometheus_client reports counters without their _total suffix
    documented = {n.removesuffix("_total") for n in documented}
    assert documented and documented <= exported, documented - exported


def test_the_configuration_table_is_the_settings_model() -> None:
    """The table between the markers is exactly what ``python -m stream.settings`` prints:
    every variable the model reads, with its default, and nothing else."""
    section = re.search(r"<!-- settings table:[^\n]*-->\n(.*?)\n<!-- end of settings table -->",
                        README, re.S)
    assert section, "the README lost its settings table markers"
    assert section.group(1) == markdown_table()
    for variable in ENV_VARS.values():
        assert f"`{variable}" in section.group(1), variable


def test_every_variable_the_readme_names_is_read_by_some_code() -> None:
    named = set(re.findall(r"\b((?:KAFKA|CHURNWATCH|TANSU)_[A-Z0-9_]*[A-Z0-9])", README))
    known = set(ENV_VARS.values()) | {CONFIG_VARIABLE, "TANSU_BIN"}
    unknown = {v for v in named if v not in known and not v.startswith(ENGINE_PREFIX)}
    assert named and not unknown, unknown


def test_every_command_is_in_the_readme() -> None:
    for name in COMMANDS:
        assert f"churnwatch {name}" in README, name


def test_links_in_the_docs_lead_to_files_of_the_repository() -> None:
    for path, text in DOCS.items():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (path.parent / target).resolve().is_relative_to(REPO), (path, target)
            assert (path.parent / target).exists(), (path, target)


def test_the_docs_name_no_path_outside_the_repository() -> None:
    for path, text in DOCS.items():
        for outside in ("../shared", "/work/", "DOMAIN.md", "/home/", "/tmp/"):
            assert outside not in text, (path, outside)
