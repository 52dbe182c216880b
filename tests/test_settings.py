"""Settings from the environment and a TOML file: defaults, parsing, clear errors."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from stream.settings import Settings, SettingsError, build_engine_config


def test_defaults_use_the_embedded_broker_and_loopback():
    s = Settings.from_env({})
    assert s.embedded and s.bootstrap == ""
    assert s.partitions == 4 and s.store == "memory://"
    assert s.web_host == "127.0.0.1" and s.metrics_host == "127.0.0.1"
    assert s.web_enabled is False
    assert s.security_protocol == "PLAINTEXT"
    assert s.topic_calls == "telecom.calls" and s.topic_alerts == "churn.alerts"
    assert s.input_topics == {"telecom.calls": "calls", "telecom.billing": "billing",
                              "telecom.subscribers": "subscribers"}
    assert s.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_reading_is_not_done_at_import(monkeypatch):
    monkeypatch.setenv("CHURNWATCH_PARTITIONS", "7")
    assert Settings.from_env().partitions == 7
    assert Settings().partitions == 4


def test_environment_values_are_parsed():
    s = Settings.from_env({
        "KAFKA_BOOTSTRAP": "k1:9092,k2:9093",
        "CHURNWATCH_PARTITIONS": "12",
        "CHURNWATCH_STORE": "rocksdb://",
        "CHURNWATCH_DATADIR": "/var/lib/cw",
        "CHURNWATCH_WEB_ENABLED": "yes",
        "CHURNWATCH_WEB_PORT": "6067",
        "CHURNWATCH_METRICS_PORT": "0",
        "CHURNWATCH_BATCH_WITHIN_S": "0.05",
        "CHURNWATCH_TOPIC_PREFIX": "staging.",
        "CHURNWATCH_STANDBY_REPLICAS": "1",
    })
    assert not s.embedded
    assert (s.partitions, s.store, s.datadir) == (12, "rocksdb://", "/var/lib/cw")
    assert (s.web_enabled, s.web_port, s.metrics_port) == (True, 6067, 0)
    assert s.batch_within_s == 0.05 and s.standby_replicas == 1
    assert s.topic_deadletter == "staging.churn.deadletter"
    assert "staging.telecom.calls" in s.all_topics and len(s.all_topics) == 5


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory):
    """A self-signed CA certificate in PEM, made by openssl for the test."""
    if not shutil.which("openssl"):
        pytest.fail("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca"],
                   cwd=d, check=True, capture_output=True, timeout=60)
    return d / "ca.pem"


def test_sasl_and_tls(ca_pem):
    ca = ca_pem
    s = Settings.from_env({
        "KAFKA_BOOTSTRAP": "kafka.example:9093",
        "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "churn",
        "KAFKA_SASL_PASSWORD": "secret",
        "KAFKA_SSL_CAFILE": str(ca),
    })
    assert s.security_protocol == "SASL_SSL" and s.sasl_mechanism == "SCRAM-SHA-512"
    assert "secret" not in repr(s)
    s2 = Settings.from_env({"KAFKA_BOOTSTRAP": "k:1", "KAFKA_SASL_MECHANISM": "PLAIN",
                            "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})
    assert s2.security_protocol == "SASL_PLAINTEXT"
    kwargs = s2.kafka_client_kwargs()
    assert kwargs["sasl_mechanism"] == "PLAIN" and kwargs["sasl_plain_username"] == "u"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CHURNWATCH_PARTITIONS": "four"}, "CHURNWATCH_PARTITIONS: expected an integer"),
        ({"CHURNWATCH_PARTITIONS": "0"}, "CHURNWATCH_PARTITIONS: must be > 0"),
        ({"CHURNWATCH_BATCH_WITHIN_S": "soon"}, "CHURNWATCH_BATCH_WITHIN_S: expected a number"),
        ({"CHURNWATCH_WEB_ENABLED": "maybe"}, "CHURNWATCH_WEB_ENABLED: expected true or false"),
        ({"CHURNWATCH_METRICS_PORT": "70000"}, "CHURNWATCH_METRICS_PORT"),
        ({"CHURNWATCH_STORE": "redis://"}, "CHURNWATCH_STORE"),
        ({"KAFKA_BOOTSTRAP": "localhost"}, "KAFKA_BOOTSTRAP: 'localhost' is not host:port"),
        ({"KAFKA_BOOTSTRAP": "k:1", "KAFKA_SASL_MECHANISM": "PLAIN"},
         "KAFKA_SASL_MECHANISM: SASL needs"),
        ({"KAFKA_BOOTSTRAP": "k:1", "KAFKA_SASL_MECHANISM": "GSSAPI",
          "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "is not one of"),
        ({"KAFKA_BOOTSTRAP": "k:1", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
         "KAFKA_SSL_CAFILE: no such file"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "need an external KAFKA_BOOTSTRAP"),
        ({"CHURNWATCH_HEARTBEAT_S": "5"}, "CHURNWATCH_HEARTBEAT_S"),
        ({"CHURNWATCH_REQUEST_TIMEOUT_S": "5"}, "CHURNWATCH_REQUEST_TIMEOUT_S"),
        ({"CHURNWATCH_APP_ID": "two words"}, "CHURNWATCH_APP_ID"),
    ],
)
def test_bad_values_raise_an_error_naming_the_variable(environ, named):
    with pytest.raises(SettingsError, match=named.replace("(", r"\(")):
        Settings.from_env(environ)


def test_toml_file_under_the_environment(tmp_path):
    path = tmp_path / "churnwatch.toml"
    path.write_text(
        'partitions = 8\nstore = "memory://"\nmetrics_port = 9200\n'
        "[engine]\nred = 0.8\ncooldown_days = 10\n"
    )
    s = Settings.from_env({"CHURNWATCH_METRICS_PORT": "9300"}, toml_path=path)
    assert s.partitions == 8 and s.metrics_port == 9300
    assert s.engine_overrides == {"red": 0.8, "cooldown_days": 10}
    via_env = Settings.from_env({"CHURNWATCH_CONFIG": str(path)})
    assert via_env.partitions == 8


def test_toml_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("partitions = [")
    with pytest.raises(SettingsError, match="not valid TOML"):
        Settings.from_env({}, toml_path=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("partitons = 3\n")
    with pytest.raises(SettingsError, match="unknown setting.*partitons"):
        Settings.from_env({}, toml_path=unknown)
    with pytest.raises(SettingsError, match="no such file"):
        Settings.from_env({}, toml_path=tmp_path / "missing.toml")
    assert Settings.from_env({"KAFKA_BOOTSTRAP": ""}).embedded


def test_engine_config_from_environment():
    s = Settings.from_env({
        "CHURNWATCH_ENGINE__OUR_OPERATOR": "China Unicom",
        "CHURNWATCH_ENGINE__ALLOWED_LATENESS_S": "7200",
        "CHURNWATCH_ENGINE__COOLDOWN_DAYS": "3",
        "CHURNWATCH_ENGINE__SWEEP": "false",
    })
    config = s.engine_config()
    assert config.our_operator == "China Unicom"
    assert config.allowed_lateness_s == 7200.0
    assert config.cooldown_days == 3 and config.sweep is False
    from detectors import EngineConfig

    assert Settings.from_env({}).engine_config() == EngineConfig()


def test_a_holiday_calendar_from_the_environment_or_toml(tmp_path):
    env = {"CHURNWATCH_ENGINE__HOLIDAYS": "2026-02-15..2026-02-23, 2026-05-01"}
    config = Settings.from_env(env).engine_config()
    assert config.holidays == ("2026-02-15..2026-02-23", "2026-05-01")
    path = tmp_path / "churnwatch.toml"
    path.write_text('[engine]\nholidays = ["2026-10-01..2026-10-07"]\n')
    assert Settings.from_env({}, toml_path=path).engine_config().holidays == (
        "2026-10-01..2026-10-07",)
    with pytest.raises(SettingsError, match="holiday '2026-02-30': expected YYYY-MM-DD"):
        Settings.from_env({"CHURNWATCH_ENGINE__HOLIDAYS": "2026-02-30"}).engine_config()


def test_engine_config_errors_name_the_variable():
    from detectors import EngineConfig

    with pytest.raises(SettingsError, match="CHURNWATCH_ENGINE__NO_SUCH: EngineConfig has no"):
        build_engine_config(EngineConfig, {"no_such": "1"})
    with pytest.raises(SettingsError, match="CHURNWATCH_ENGINE__COOLDOWN_DAYS: expected"):
        build_engine_config(EngineConfig, {"cooldown_days": "a week"})


def test_client_settings_needs_a_broker_address(monkeypatch):
    from stream.settings import SettingsError, client_settings

    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("CHURNWATCH_CONFIG", raising=False)
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP"):
        client_settings()
    assert client_settings("127.0.0.1:9092").bootstrap == "127.0.0.1:9092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9093")
    assert client_settings().bootstrap == "127.0.0.1:9093"
    assert client_settings("127.0.0.1:9094").bootstrap == "127.0.0.1:9094"


def test_calibration_settings_build_the_learner_and_reject_bad_values():
    from stream.settings import Settings, SettingsError

    assert not Settings.from_env({}).calibration  # off by default
    s = Settings.from_env({"CHURNWATCH_CALIBRATION": "true",
                           "CHURNWATCH_CALIBRATION_LAG_DAYS": "2",
                           "CHURNWATCH_CALIBRATION_HORIZON_DAYS": "30",
                           "CHURNWATCH_CALIBRATION_RED": "0.9",
                           "CHURNWATCH_CALIBRATION_WARMUP": "7"})
    assert s.calibration and s.calibration_topics == ("churn.outcomes", "churn.calibration")
    learner = s.outcome_learner({})
    assert (learner.lag_days, learner.horizon_s, learner.thresholds[1:]) == (
        2, 30 * 86400, (0.45, 0.9))
    assert learner.calibrator.warmup == 7
    assert Settings.from_env({"CHURNWATCH_CALIBRATION": "false"}).calibration_topics == ()
    for var, value in (("CHURNWATCH_CALIBRATION_YELLOW", "0.95"),
                       ("CHURNWATCH_CALIBRATION_LAG_DAYS", "-1"),
                       ("CHURNWATCH_CALIBRATION_HORIZON_DAYS", "0")):
        with pytest.raises(SettingsError, match=var):
            Settings.from_env({var: value})


def test_the_constructor_reads_no_environment_and_replace_validates(monkeypatch):
    monkeypatch.setenv("CHURNWATCH_PARTITIONS", "abc")
    assert Settings().partitions == 4
    assert Settings(partitions=6).replace(store="rocksdb://").partitions == 6
    with pytest.raises(SettingsError, match="^CHURNWATCH_METRICS_PORT: 70000 is not a port"):
        Settings().replace(metrics_port=70000)
    with pytest.raises(SettingsError, match="^CHURNWATCH_PARTITIONS: expected an integer"):
        Settings().replace(partitions="many")


def test_engine_overrides_merge_toml_and_nested_environment(tmp_path):
    path = tmp_path / "churnwatch.toml"
    path.write_text('[engine]\nred = 0.8\ncooldown_days = 10\n')
    s = Settings.from_env({"CHURNWATCH_ENGINE__COOLDOWN_DAYS": "4",
                           "CHURNWATCH_ENGINE__OUR_OPERATOR": "China Unicom"}, toml_path=path)
    assert s.engine_overrides == {"red": 0.8, "cooldown_days": "4",
                                  "our_operator": "China Unicom"}
    config = s.engine_config()
    assert (config.red, config.cooldown_days, config.our_operator) == (0.8, 4, "China Unicom")


def test_an_empty_bootstrap_in_the_environment_wins_over_the_file(tmp_path):
    path = tmp_path / "churnwatch.toml"
    path.write_text('bootstrap = "kafka:9092"\npartitions = 6\n')
    assert Settings.from_env({}, toml_path=path).bootstrap == "kafka:9092"
    s = Settings.from_env({"KAFKA_BOOTSTRAP": ""}, toml_path=path)
    assert s.embedded and s.partitions == 6


def test_toml_values_are_typed_and_checked(tmp_path):
    path = tmp_path / "churnwatch.toml"
    path.write_text("partitions = true\n")
    with pytest.raises(SettingsError, match="^CHURNWATCH_PARTITIONS: "):
        Settings.from_env({}, toml_path=path)
    path.write_text('partitions = "7"\ngroups = false\n')
    s = Settings.from_env({}, toml_path=path)
    assert (s.partitions, s.groups) == (7, False)


def test_metrics_beyond_loopback_are_flagged():
    assert not Settings.from_env({}).metrics_exposed
    assert not Settings.from_env({"CHURNWATCH_METRICS_HOST": "::1"}).metrics_exposed
    assert not Settings.from_env({"CHURNWATCH_METRICS_HOST": "localhost"}).metrics_exposed
    assert Settings.from_env({"CHURNWATCH_METRICS_HOST": "0.0.0.0"}).metrics_exposed
    assert not Settings.from_env({"CHURNWATCH_METRICS_HOST": "0.0.0.0",
                                  "CHURNWATCH_METRICS_PORT": "0"}).metrics_exposed
