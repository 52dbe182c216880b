"""``churnwatch replay`` with the group stage: group alerts in the output, the same ids
whatever the partition counts, and members' alerts carrying their group's context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from stream.contracts import schema
from stream.tools.replay import replay_directory, stamp
from stream.tools.simulator import WorldParams, simulate

ALERT = fastjsonschema.compile(schema("alert"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("groups-world")
    # Many defecting groups in a small world, so a few groups alert.
    simulate(out, WorldParams(subscribers=300, days=75, seed=7, collective_share=0.5,
                              group_last_start_before_end=30))
    return out


def _groups(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    return sorted((a["alert_id"], a["group_id"], a["ts"], a["status"], a["zone"])
                  for a in alerts if a["kind"] == "group")


@pytest.fixture(scope="module")
def four(world: Path) -> list[dict[str, Any]]:
    return list(replay_directory(world, partitions=4, groups=True))


def test_group_alerts_are_in_the_output_and_keep_the_contract(four: list[dict[str, Any]]
                                                              ) -> None:
    groups = [a for a in four if a["kind"] == "group"]
    assert len({a["group_id"] for a in groups}) >= 2
    for alert in four:
        ALERT(stamp(dict(alert)))
    assert len({a["alert_id"] for a in four}) == len(four)


def test_the_same_group_alerts_whatever_the_partition_counts(
        world: Path, four: list[dict[str, Any]]) -> None:
    one_group_partition = list(replay_directory(world, partitions=4, groups=True,
                                                group_partitions=1))
    # Same engines: the same group alerts, every field (a quiet group's day may be decided
    # at another moment, so they may come in another order).
    by_id = {a["alert_id"]: a for a in four if a["kind"] == "group"}
    assert {a["alert_id"]: a for a in one_group_partition if a["kind"] == "group"} == by_id
    assert [a["alert_id"] for a in one_group_partition if a["kind"] == "subscriber"] == [
        a["alert_id"] for a in four if a["kind"] == "subscriber"]
    # One engine instead of four: each partition's engine keeps its own population
    # baseline, so member zones could differ in principle; on this world they do not, and
    # the group stage must then give the same group alerts.
    one = list(replay_directory(world, partitions=1, groups=True))
    assert _groups(one) == _groups(four)


def test_members_alerts_carry_their_group_context_only_with_groups_on(
        world: Path, four: list[dict[str, Any]]) -> None:
    opened = {a["group_id"]: a["ts"] for a in reversed(four)
              if a["kind"] == "group" and a["status"] == "open"}
    with_context = [a for a in four if a["kind"] == "subscriber"
                    and any(r["code"] == "group_context" for r in a["reasons"])]
    assert with_context
    for alert in with_context:
        reason = next(r for r in alert["reasons"] if r["code"] == "group_context")
        assert reason["figures"]["group_id"] == alert["group_id"]
        assert alert["ts"] >= opened[alert["group_id"]]
    plain = list(replay_directory(world, partitions=4, groups=False))
    assert not any(a["kind"] == "group" for a in plain)
    assert not any(r["code"] == "group_context" for a in plain for r in a["reasons"])
    # The group stage adds to the subscriber alerts; it changes none of them.
    assert [a["alert_id"] for a in plain] == [a["alert_id"] for a in four
                                              if a["kind"] == "subscriber"]


def test_the_group_stage_keeps_the_engines_clock(world: Path) -> None:
    # An operator one hour east of Greenwich: members' days close at midnight +01:00, and
    # so do their groups' (a group's day is its members' day), stamped in that time.
    import dataclasses

    from detectors import EngineConfig
    from stream.contracts.ported import PORTED_FILE, load_ported_numbers

    config = dataclasses.replace(
        EngineConfig(ported_numbers=load_ported_numbers(world / PORTED_FILE)),
        tz_offset_hours=1.0)
    alerts = list(replay_directory(world, partitions=4, groups=True, engine_config=config))
    groups = [a for a in alerts if a["kind"] == "group"]
    assert groups and all(a["ts"].endswith("+01:00") for a in groups)
