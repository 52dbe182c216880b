"""The deployment files agree with the code, checked without Docker.

Docker does not run on the build machines, so nothing here starts a container. What these
tests prove: docker-compose.yml, the Prometheus config and rules, the Grafana provisioning
and dashboard, the Dockerfile and the AsyncAPI document parse, name the topics, partitions,
environment variables, ports and metrics the code really has, and docker-compose.yml is
accepted by a real compose implementation (docker-compose 1.29, `make compose-config`).
What they cannot prove: that the images build and pull, that Apache Kafka starts with these
listeners, that Grafana renders the panels. Whether each dashboard metric is really
exported by a running worker is tests/integration/test_dashboard_metrics.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from stream import contracts
from stream.settings import _ENV, ENGINE_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "churnwatch.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules.yml"
ASYNCAPI = DEPLOY / "asyncapi.yaml"
ALERTS_DOC = REPO / "docs" / "alerts.md"
COMPOSE_VENV_BIN = REPO / ".venv" / "compose" / "bin"

#: Services built from deploy/Dockerfile (they read churnwatch's settings).
CHURNWATCH_IMAGE = "churnwatch:latest"
#: Series Prometheus writes itself for every target, not found in any /metrics.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
#: Labels Prometheus attaches from the target, not found in any /metrics.
TARGET_LABELS = frozenset({"instance", "job"})
SETTINGS_VARS = frozenset(var for var, _kind in _ENV.values()) | {"CHURNWATCH_CONFIG"}


# -- loading -------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    """Parse a YAML file. PyYAML when the project venv has it; otherwise the interpreter of
    the docker-compose venv (which always has PyYAML) converts it to JSON."""
    return yaml_loads(path.read_text("utf-8"))


def yaml_loads(text: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        python = COMPOSE_VENV_BIN / "python"
        if not python.exists():
            pytest.fail("no YAML parser: install pyyaml in .venv (the dev extra should bring "
                        "it) or run `make compose-config`, whose venv has one")
        out = subprocess.run(
            [str(python), "-c",
             "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
            input=text.encode(), capture_output=True, check=True, timeout=60,
        )
        return json.loads(out.stdout)
    return yaml.safe_load(text)


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose's variable substitution (``${VAR:-default}``, ``$$``) over a parsed file."""
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        text = _INTERPOLATION.sub(lambda m: env.get(m[1]) or (m[2] or ""), value)
        return text.replace("$$", "$")
    return value


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = interpolate(load_yaml(COMPOSE_FILE))
    return data


def services() -> dict[str, Any]:
    result: dict[str, Any] = compose()["services"]
    return result


def churnwatch_services() -> dict[str, Any]:
    return {n: s for n, s in services().items() if s.get("image") == CHURNWATCH_IMAGE}


def workers() -> dict[str, Any]:
    return {n: s for n, s in churnwatch_services().items() if s.get("command") == ["worker"]}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def topic_commands() -> dict[str, dict[str, str]]:
    """Topic -> its ``--config`` settings, from the ``topics`` service's script."""
    svc = services()["topics"]
    script = "\n".join(svc["command"])
    env = env_of(svc)
    for name, value in env.items():
        script = script.replace(f'"${name}"', value).replace(f"${name}", value)
    found: dict[str, dict[str, str]] = {}
    for line in script.splitlines():
        m = re.search(r"--topic\s+(\S+)(.*)", line)
        if m and line.strip().startswith("k "):
            configs = dict(c.split("=", 1) for c in re.findall(r"--config\s+(\S+)", m[2]))
            found[m[1].strip('"')] = configs
    return found


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return data


def dashboard_queries() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every target of every panel."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def rule_queries() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"])
            for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


# -- PromQL --------------------------------------------------------------------------------

_PROMQL_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
})


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (function and aggregation names left out).

    >>> sorted(promql_metrics(
    ...     'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) / b'))
    ['a_bucket', 'b']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[m.end():].lstrip().startswith("(") or m[0].lower() in _PROMQL_KEYWORDS:
            continue
        names.add(m[0])
    return names


def promql_labels(expr: str) -> set[str]:
    """Label names a query groups by or matches on.

    >>> sorted(promql_labels('sum by (topic) (rate(x{outcome!="ok"}[1m]))'))
    ['outcome', 'topic']
    """
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels.update(label.strip() for label in group.split(",") if label.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        for matcher in matchers.split(","):
            m = re.match(r"\s*([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matcher)
            if m:
                labels.add(m[1])
    return labels


def code_metric_names() -> set[str]:
    """Sample names the worker's registry can expose: ours and Faust's sensor."""
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import CollectorRegistry

    from stream.service.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    FaustMetrics.create(registry, "faust")
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


# -- compose -------------------------------------------------------------------------------


def test_compose_has_the_stack() -> None:
    svc = services()
    assert {"kafka", "topics", "prometheus", "grafana", "demo"} <= set(svc)
    assert len(workers()) == 2, "two churnwatch workers"
    assert svc["kafka"]["image"].startswith("apache/kafka:")
    assert svc["topics"]["image"] == svc["kafka"]["image"], "same Kafka tools as the broker"
    assert svc["demo"]["profiles"] == ["demo"]
    for name in workers():
        assert svc[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert "version" not in compose() and "name" not in compose(), (
        "docker-compose 1.29 rejects a top-level name:, and version: is obsolete")


def test_kafka_is_kraft_with_a_container_and_a_host_listener() -> None:
    env = env_of(services()["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env), "KRaft, no ZooKeeper"
    advertised = dict(
        item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    assert set(advertised) <= set(listeners)
    inside = [addr for addr in advertised.values() if addr.startswith("kafka:")]
    outside = [addr for addr in advertised.values() if addr.startswith("localhost:")]
    assert len(inside) == 1 and len(outside) == 1, advertised
    host_port = outside[0].rsplit(":", 1)[1]
    assert f"127.0.0.1:{host_port}:{host_port}" in services()["kafka"]["ports"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    for name, svc in churnwatch_services().items():
        assert env_of(svc)["KAFKA_BOOTSTRAP"] == inside[0], name


def test_churnwatch_services_use_only_variables_the_settings_read() -> None:
    for name, svc in churnwatch_services().items():
        for var in env_of(svc):
            if var.startswith(("CHURNWATCH_", "KAFKA_")):
                assert var in SETTINGS_VARS or var.startswith(ENGINE_PREFIX), (
                    f"{name}: {var} is not read by stream/settings.py")
        # ... and the settings accept the values.
        Settings.from_env(env_of(svc))


def test_workers_settings_agree_with_ports_and_prometheus() -> None:
    prom = load_yaml(PROMETHEUS)
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "churnwatch"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    expected_targets = set()
    host_ports, datadirs = [], []
    for name, svc in workers().items():
        settings = Settings.from_env(env_of(svc))
        assert settings.metrics_host == "0.0.0.0", f"{name}: Prometheus scrapes from outside"
        assert settings.metrics_port > 0
        expected_targets.add(f"{name}:{settings.metrics_port}")
        (mapping,) = [p for p in svc["ports"] if p.endswith(f":{settings.metrics_port}")]
        assert mapping.startswith("127.0.0.1:"), "published on loopback only"
        host_ports.append(mapping.split(":")[1])
        probe = " ".join(svc["healthcheck"]["test"])
        assert f"127.0.0.1:{settings.metrics_port}/metrics" in probe, name
        datadirs.append(settings.datadir)
        assert settings.partitions == Settings().partitions == 4
        assert settings.app_id == "churnwatch"
    assert targets == expected_targets
    assert len(set(host_ports)) == len(host_ports), "one host port per worker"
    assert len(set(datadirs)) == len(datadirs), "one data directory per worker"
    assert "/etc/prometheus/rules.yml" in prom["rule_files"]
    mounts = services()["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts


def test_workers_keep_rocksdb_state_on_a_volume_of_their_own() -> None:
    declared = set(load_yaml(COMPOSE_FILE).get("volumes") or {})
    volumes = []
    for name, svc in workers().items():
        settings = Settings.from_env(env_of(svc))
        assert settings.store == "rocksdb://", f"{name}: tables in RocksDB"
        mounts = [m.split(":") for m in svc["volumes"]]
        holding = [(source, target) for source, target, *_ in mounts
                   if Path(settings.datadir).is_relative_to(target)]
        assert len(holding) == 1, f"{name}: its data directory is on a volume"
        source, _ = holding[0]
        assert source in declared, f"{name}: a named volume, kept across restarts"
        volumes.append(source)
    assert len(volumes) == len(set(volumes)) >= 2, "a volume per worker"


def test_topic_initialiser_creates_every_topic_the_workers_use() -> None:
    from stream.service.app import create_app

    topics = topic_commands()
    settings = Settings.from_env(env_of(next(iter(workers().values()))))
    assert set(settings.all_topics) <= set(topics)
    assert set(settings.group_topics) <= set(topics)
    app = create_app(settings.with_bootstrap("localhost:9"))  # builds, connects to nothing
    changelogs = {t.changelog_topic.get_topic_name() for t in app.tables.values()}
    assert changelogs and changelogs <= set(topics), (changelogs, sorted(topics))
    # The calibration stage is off by default; its topics exist anyway, so turning it on
    # (CHURNWATCH_CALIBRATION=true) needs nothing else.
    calibrated = settings.replace(calibration=True)
    cal_app = create_app(calibrated.with_bootstrap("localhost:9"))
    cal_changelogs = {t.changelog_topic.get_topic_name() for t in cal_app.tables.values()}
    assert set(calibrated.calibration_topics) <= set(topics)
    assert cal_changelogs <= set(topics), (cal_changelogs, sorted(topics))
    assert set(topics) == (set(settings.all_topics) | set(settings.group_topics)
                           | set(calibrated.calibration_topics) | changelogs
                           | cal_changelogs), "no stray topics"
    # The calibration stage's topics and table have ONE partition (one model), the rest
    # follow PARTITIONS.
    script = "\n".join(services()["topics"]["command"])
    single = script[script.index("PARTS=1"):]
    for name in (*calibrated.calibration_topics, f"{settings.app_id}-calibration-changelog"):
        assert name in cal_changelogs | set(calibrated.calibration_topics)
        assert name.removeprefix(settings.app_id) in single, name
    assert all(t not in single for t in (*settings.all_topics, *settings.group_topics))
    env = env_of(services()["topics"])
    assert int(env["PARTITIONS"]) == settings.partitions
    assert int(env["REPLICATION"]) == settings.replication
    for compacted in (contracts.TOPIC_SUBSCRIBERS, *changelogs):
        assert topics[compacted].get("cleanup.policy") == "compact", compacted
    for kept in (contracts.TOPIC_ALERTS, contracts.TOPIC_DEADLETTER):
        assert int(topics[kept]["retention.ms"]) >= 7 * 86400 * 1000, kept
    assert int(topics[contracts.TOPIC_ALERTS]["retention.ms"]) == 30 * 86400 * 1000


def test_partitions_and_app_id_follow_one_knob() -> None:
    env = {"CHURNWATCH_PARTITIONS": "12", "CHURNWATCH_APP_ID": "cw-prod"}
    raw = load_yaml(COMPOSE_FILE)
    svc = interpolate(raw, env)["services"]
    assert env_of(svc["topics"])["PARTITIONS"] == "12"
    assert env_of(svc["topics"])["APP_ID"] == "cw-prod"
    for name in workers():
        assert env_of(svc[name])["CHURNWATCH_PARTITIONS"] == "12"
        assert env_of(svc[name])["CHURNWATCH_APP_ID"] == "cw-prod"


def test_demo_profile_runs_real_commands() -> None:
    from stream.cli import build_parser

    demo = services()["demo"]
    (script,) = demo["command"]
    parser = build_parser()
    commands = [c.strip() for c in script.split("&&")]
    assert [c.split()[1] for c in commands] == ["simulate", "produce"]
    for command in commands:
        argv = command.split()
        assert argv[0] == "churnwatch"
        parser.parse_args(argv[1:])  # exits (fails the test) on an unknown option
    parser.parse_args(services()["alerts"]["command"])


def test_dockerfile_is_slim_non_root_and_installs_the_repo() -> None:
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    joined = re.sub(r"\\\n", " ", text)
    froms = re.findall(r"^FROM\s+(\S+)", joined, re.M)
    assert froms and all(f.endswith("-slim") for f in froms)
    users = re.findall(r"^USER\s+(\S+)", joined, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^COPY\s+stream\s", joined, re.M)
    assert re.search(r"^COPY\s+detectors\s", joined, re.M)
    assert re.search(r'pip wheel .* "?\.\[rocksdb\]"?$', joined, re.M), (
        "the package is built from the repo, with the RocksDB store")
    assert re.search(r'pip install .*"churnwatch\[rocksdb\]"', joined, re.M)
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", joined, re.M):
        env.update(item.split("=", 1) for item in line.split())
    ours = {k: v for k, v in env.items() if k.startswith(("CHURNWATCH_", "KAFKA_"))}
    assert set(ours) <= SETTINGS_VARS
    settings = Settings.from_env(ours)
    assert re.search(rf"^EXPOSE\s+{settings.metrics_port}$", joined, re.M)
    assert re.findall(r'^ENTRYPOINT\s+\["churnwatch"\]', joined, re.M)


# -- Prometheus and Grafana ------------------------------------------------------------------


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    (source,) = load_yaml(prov / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in services()["prometheus"]["ports"]
    (provider,) = load_yaml(prov / "dashboards" / "churnwatch.yml")["providers"]
    mounts = services()["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    uids = {
        d["uid"]
        for panel in dashboard()["panels"]
        for d in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        if d
    }
    assert uids == {source["uid"]}


def test_dashboard_panels_cover_the_operations_view() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    text = " ".join(p["title"] for p in panels).lower()
    for wanted in ("events/s by topic", "event-time lag", "dead letters by reason",
                   "alerts by zone", "reason code", "open alerts by segment", "processing time",
                   "consumer lag", "workers up"):
        assert wanted in text, wanted
    queries = " ".join(e for _, e in dashboard_queries())
    assert "histogram_quantile(0.99" in queries
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("targets"), panel["title"]


def test_every_dashboard_and_rule_metric_is_registered_by_the_code() -> None:
    """Unit-level: the names exist in stream/service/metrics.py (and Faust's sensor).

    A dashboard metric that the code does not register fails here; whether a running worker
    exports it with the grouped labels is test_dashboard_metrics.py.
    """
    known = code_metric_names()
    missing = {
        (where, name)
        for where, expr in dashboard_queries() + rule_queries()
        for name in promql_metrics(expr)
        if name not in known and name not in SCRAPE_SERIES
    }
    assert not missing, f"metrics named but not registered by stream/service/metrics.py: {missing}"


# -- a real compose implementation --------------------------------------------------------------


def compose_binary() -> str:
    """docker-compose 1.29 (``make compose-config`` installs it in .venv/compose)."""
    for candidate in (os.environ.get("DOCKER_COMPOSE"), str(COMPOSE_VENV_BIN / "docker-compose"),
                      shutil.which("docker-compose")):
        if candidate and Path(candidate).exists():
            return candidate
    message = ("docker-compose 1.29 is not installed, so docker-compose.yml was NOT validated "
               "by a compose implementation: run `make compose-config` (CI does)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_compose(*args: str, env: dict[str, str] | None = None,
                file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("CHURNWATCH_", "COMPOSE_", "GRAFANA_"))}
    return subprocess.run(
        [compose_binary(), "--project-directory", str(REPO), "--file", str(file), *args],
        capture_output=True, text=True, timeout=120, env={**base, **(env or {})},
    )


def test_docker_compose_config_accepts_the_file() -> None:
    demo = run_compose("--profile", "demo", "config", "--services")
    assert demo.returncode == 0, demo.stderr
    assert set(demo.stdout.split()) == set(services())
    resolved = run_compose("config", env={"CHURNWATCH_PARTITIONS": "6"})
    assert resolved.returncode == 0, resolved.stderr
    svc = yaml_loads(resolved.stdout)["services"]
    # 1.29 lists profiled services too; what keeps them out of a plain `up` is this key.
    assert svc["demo"]["profiles"] == svc["alerts"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in svc.items() if n not in ("demo", "alerts"))
    assert str(svc["topics"]["environment"]["PARTITIONS"]) == "6"
    for name in workers():
        assert str(svc[name]["environment"]["CHURNWATCH_PARTITIONS"]) == "6"
        assert svc[name]["environment"] == {
            **env_of(services()[name]), "CHURNWATCH_PARTITIONS": "6"}


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: the same binary refuses a file with a misspelt key."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text("utf-8").replace("depends_on:", "depend_on:", 1))
    result = run_compose("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "depend_on" in result.stderr


# -- the alert contract for consumers ----------------------------------------------------------


def _examples(markdown: str) -> dict[str, Any]:
    found = re.findall(r"<!-- example: ([\w-]+) -->\s*```json\n(.*?)```", markdown, re.S)
    return {name: json.loads(body) for name, body in found}


def test_alert_doc_examples_match_the_schema() -> None:
    validate = fastjsonschema.compile(contracts.schema("alert"))
    examples = _examples(ALERTS_DOC.read_text("utf-8"))
    assert {"open", "escalated", "resolved", "white"} <= set(examples)
    for name, example in examples.items():
        validate(example)
        for reason in example["reasons"]:
            assert reason["code"] in KNOWN_REASON_CODES, (name, reason["code"])
    assert examples["resolved"]["status"] == "resolved"
    assert examples["resolved"]["reasons"][0]["code"] == "resolved"


#: Reason codes the detectors emit (detectors/judgement.py, the stay away's in
#: detectors/stay_judgement.py); "resolved" leads a resolution, "closed" a port-out or deactivation
#: that ends an episode.
KNOWN_REASON_CODES = frozenset({
    "usage_drop", "spend_drop", "forwarding_off_net", "silent", "bill_drop", "stay_away",
    "resolved", "closed"})


def test_reason_codes_in_the_doc_are_the_detectors_codes() -> None:
    # Signals are built in judgement.py and stay_judgement.py, the alerts' own reasons
    # (resolved, closed) in outputs.py.
    engine = "".join((REPO / "detectors" / name).read_text("utf-8")
                     for name in ("judgement.py", "stay_judgement.py", "outputs.py"))
    emitted = set(re.findall(r'Signal\(\s*"([a-z_]+)"', engine))
    emitted |= set(re.findall(r'_drop\(\s*"([a-z_]+)"', engine))
    emitted |= set(re.findall(r'"code":\s*"([a-z_]+)"', engine))
    assert emitted == KNOWN_REASON_CODES
    doc = ALERTS_DOC.read_text("utf-8")
    for code in KNOWN_REASON_CODES:
        assert f"`{code}`" in doc, code


def _resolve(doc: Any, ref: str) -> Any:
    node = doc
    for part in ref.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_document_describes_the_alert_topic() -> None:
    doc = load_yaml(ASYNCAPI)
    assert doc["asyncapi"] == "3.0.0"
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    refs.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    for ref in refs:
        if ref.startswith("#"):
            _resolve(doc, ref)  # KeyError when dangling
        else:
            assert (ASYNCAPI.parent / ref).resolve().is_file(), ref
    channels = doc["channels"]
    addresses = {c["address"] for c in channels.values()}
    assert contracts.TOPIC_ALERTS in addresses
    (alerts,) = [c for c in channels.values() if c["address"] == contracts.TOPIC_ALERTS]
    (message,) = alerts["messages"].values()
    message = _resolve(doc, message["$ref"]) if "$ref" in message else message
    payload = message["payload"]
    assert payload["schemaFormat"].startswith("application/schema+json;version=draft-07")
    schema_path = (ASYNCAPI.parent / payload["schema"]["$ref"]).resolve()
    alert_schema = REPO / "stream" / "contracts" / "schemas" / "alert.schema.json"
    assert schema_path == alert_schema.resolve()
    validate = fastjsonschema.compile(contracts.schema("alert"))
    assert message["examples"]
    for example in message["examples"]:
        validate(example["payload"])
    key = message["bindings"]["kafka"]["key"]
    assert key["type"] == "string"
    receive = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert receive and all(
        _resolve(doc, op["channel"]["$ref"]) is alerts for op in receive)
    servers = doc["servers"]
    assert any(s["protocol"] == "kafka" for s in servers.values())
