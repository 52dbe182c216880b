"""The README documents what the code has: its metrics, settings and commands."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream.cli import COMMANDS
from stream.service.metrics import Metrics

README = (Path(__file__).parents[1] / "README.md").read_text("utf-8")
SETTINGS_DOC = (Path(__file__).parents[1] / "stream" / "settings.py").read_text("utf-8")


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


def test_every_documented_variable_is_read_by_the_settings() -> None:
    documented = set(re.findall(r"`((?:KAFKA|CHURNWATCH)_[A-Z_]+?)(?:<|`)", README))
    missing = {v for v in documented if v not in SETTINGS_DOC}
    assert documented and not missing, missing


def test_every_command_is_in_the_readme() -> None:
    for name in COMMANDS:
        assert f"churnwatch {name}" in README, name
