"""Every metric the Grafana dashboard and the Prometheus rules query is exported by a
running worker, with the labels the queries group by.

A real worker (real detectors) runs on the embedded broker and processes a small simulated
world plus a few poison messages, so labelled series (alerts by zone, dead letters by
reason, ...) have samples; then its ``/metrics`` is scraped and each query of
deploy/grafana/dashboards/churnwatch.json and deploy/prometheus/rules.yml is checked
against the exposition. The same run checks that neither the worker's log (at INFO) nor
its metrics carry a phone number or a subscriber id.

``up`` is written by Prometheus itself for each target and so is not in any exposition.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream import contracts
from tests.deploy.test_deploy_config import (
    SCRAPE_SERIES,
    TARGET_LABELS,
    dashboard_queries,
    promql_labels,
    promql_metrics,
    rule_queries,
)
from tests.integration.helpers import WorkerProc, produce, unique_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(280)]

SUBSCRIBERS, DAYS, SEED = 100, 60, 5
POISON = [b"{not json", b"\xff\xfe", b'{"event_id": "x", "subscriber_id": "S1"}']


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world, with the simulated call centre's answers to its alerts in
    ``outcomes.jsonl`` (so the outcome panels have series)."""
    from stream.settings import Settings
    from stream.tools.callcentre import CallCentre
    from stream.tools.replay import replay_directory
    from stream.tools.simulator import WorldParams, simulate

    out = tmp_path_factory.mktemp("world")
    simulate(out, WorldParams(subscribers=SUBSCRIBERS, days=DAYS, seed=SEED))
    settings = Settings.from_env({})
    answers: list[dict[str, Any]] = []
    list(replay_directory(out, partitions=settings.partitions, groups=False,
                          engine_config=settings.engine_config(),
                          learner=settings.outcome_learner({}),
                          call_centre=CallCentre(seed=3, unreachable=0.3, no_answer=0.1),
                          on_answer=answers.append))
    (out / "outcomes.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in answers))
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
    return text


def samples(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets it has in the exposition."""
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(dict(sample.labels))
    return found


def total(exposition: dict[str, list[dict[str, str]]], text: str, name: str) -> float:
    value = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                value += sample.value
    return value


def missing_from(exposition: dict[str, list[dict[str, str]]],
                 queries: list[tuple[str, str]]) -> list[str]:
    """What the queries name that the exposition lacks: metrics, or grouped labels."""
    problems = []
    for where, expr in queries:
        names = promql_metrics(expr) - SCRAPE_SERIES
        for name in sorted(names):
            if name not in exposition:
                problems.append(f"{where}: metric {name} is not exported ({expr})")
        label_sets = [labels for name in names for labels in exposition.get(name, [])]
        if not label_sets:
            continue
        for label in sorted(promql_labels(expr) - TARGET_LABELS):
            if not any(label in labels for labels in label_sets):
                problems.append(f"{where}: no series of {sorted(names)} has label {label!r}")
    return problems


def test_every_dashboard_query_is_backed_by_the_running_worker(
    broker: Any, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream.tools.produce import produce_directory

    monkeypatch.setenv("TEST_LOGLEVEL", "INFO")  # the log checked for personal data below
    # With the calibration stage, so that the call-centre outcome panels are backed too.
    settings, env = unique_settings(broker.bootstrap, CHURNWATCH_CALIBRATION="true")
    worker = WorkerProc(env, tmp_path, name="dash", fake_engine=False).start()
    try:
        counts = produce_directory(world, settings)
        produce(broker.bootstrap, [(settings.topic_calls, b"S1", bad) for bad in POISON])
        outcomes = (world / "outcomes.jsonl").read_bytes().splitlines()
        assert outcomes, "the call centre answered some alerts"
        produce(broker.bootstrap, [(settings.topic_outcomes,
                                    orjson.loads(o)["subscriber_id"].encode(), o)
                                   for o in outcomes])
        # The ported-numbers registry is not an input event: the worker counts only events.
        sent = sum(counts[kind] for kind in contracts.INPUT_KINDS) + len(POISON)

        def processed() -> bool:
            if not worker.alive():
                raise AssertionError(f"the worker exited early; log:\n{worker.tail(12000)}")
            try:
                text = scrape(worker.metrics_port)
            except OSError:  # the endpoint is not up yet
                return False
            return (total(samples(text), text, "churnwatch_events_total") >= sent
                    and total(samples(text), text, "churnwatch_outcomes_total") > 0)

        wait_for(processed, 200,
                 lambda: f"the worker to process {sent} messages; log:\n{worker.tail()}",
                 step=1.0)

        queries = dashboard_queries() + rule_queries()
        # Gauges set on a timer may lag the counters by a few seconds.
        problems: list[str] = []
        for _ in range(15):
            text = scrape(worker.metrics_port)
            exposition = samples(text)
            problems = missing_from(exposition, queries)
            if not problems:
                break
            time.sleep(1)
        assert not problems, "dashboard/rules query what the worker does not export:\n" + (
            "\n".join(problems))

        # The run really exercised the labelled series the panels group by.
        zones = {labels["zone"] for labels in exposition["churnwatch_alerts_total"]}
        assert {"yellow", "red"} <= zones
        reasons = {labels["reason"] for labels in exposition["churnwatch_dead_letters_total"]}
        assert {"malformed_json", "not_utf8", "schema"} <= reasons
        assert total(exposition, text, "churnwatch_alert_reasons_total") > 0
        # Outcomes carry the answered alert's zone and leading reason, not "unknown".
        answered = exposition["churnwatch_outcomes_total"]
        assert {labels["zone"] for labels in answered} <= {"yellow", "red", "white"}
        assert "unknown" not in {labels["reason"] for labels in answered}
    finally:
        code = worker.terminate()
    assert code == 0, worker.tail()

    # No personal data in the log (INFO) or in the metrics.
    profiles = [orjson.loads(line) for line in (world / "subscribers.jsonl").read_bytes()
                .splitlines()]
    log = worker.log.read_text("utf-8", "replace")
    assert "INFO" in log, "the worker logged at INFO, so the check below means something"
    for profile in profiles:
        for field in ("msisdn", "subscriber_id"):
            value = profile[field]
            assert value not in log, f"the worker log carries a {field}"
            assert value not in text, f"/metrics carries a {field}"


def test_the_check_flags_an_unknown_metric_or_label() -> None:
    """missing_from is not vacuous: a wrong name or a wrong grouping label is reported."""
    text = ('# TYPE churnwatch_alerts_total counter\n'
            'churnwatch_alerts_total{kind="subscriber",zone="red"} 3.0\n')
    exposition = samples(text)
    assert missing_from(exposition, [("ok", "sum by (zone) (churnwatch_alerts_total)")]) == []
    assert missing_from(exposition, [("ok", 'up{job="churnwatch"}')]) == []
    grouped_wrong = [("x", "sum by (segment) (churnwatch_alerts_total)")]
    assert len(missing_from(exposition, grouped_wrong)) == 1
    assert len(missing_from(exposition, [("x", "rate(churnwatch_alert_total[5m])")])) == 1
