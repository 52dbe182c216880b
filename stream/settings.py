"""Service settings, read from the environment (and an optional TOML file) at the edge.

Nothing is read at import: call :meth:`Settings.from_env` where the process starts.
The environment wins over the TOML file, which wins over the defaults.

Environment variables (TOML key in brackets: top-level keys of the file)
-----------------------------------------------------------------------
``KAFKA_BOOTSTRAP`` [bootstrap]
    ``host:port[,host:port]`` of an external Kafka. Empty (default): the embedded broker.
``KAFKA_SECURITY_PROTOCOL`` [security_protocol]
    ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``; derived from the SASL and TLS
    settings when unset.
``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``
    SASL (``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``); all three or none.
``KAFKA_SSL_CAFILE``, ``KAFKA_SSL_CERTFILE``, ``KAFKA_SSL_KEYFILE``
    TLS: a CA bundle, and optionally a client certificate with its key.
``CHURNWATCH_APP_ID`` [app_id]
    Faust application id (consumer group, changelog topic prefix). Default ``churnwatch``.
``CHURNWATCH_INSTANCE_ID`` [instance_id]
    This worker's static group membership id (Kafka's ``group.instance.id``), unique per
    worker and the same across its restarts; empty (the default): dynamic membership. A
    restarted worker then gets its partitions back without waiting for the broker to
    expire its old session; a stopped one keeps them until the session timeout.
``CHURNWATCH_PARTITIONS`` [partitions]
    Partitions of every topic (inputs, tables, alerts). Default 4.
``CHURNWATCH_REPLICATION`` [replication]
    Replication factor of the topics created. Default 1.
``CHURNWATCH_STANDBY_REPLICAS`` [standby_replicas]
    Standby copies of each table partition kept by other workers. Default 0.
``CHURNWATCH_STORE`` [store]
    Table store: ``memory://`` (default) or ``rocksdb://`` where installed.
``CHURNWATCH_DATADIR`` [datadir]
    Faust's data directory; give each worker its own. Default ``.churnwatch/worker``.
``CHURNWATCH_WEB_ENABLED``, ``CHURNWATCH_WEB_HOST``, ``CHURNWATCH_WEB_PORT``
    Faust's own web server: off by default; when on it binds 127.0.0.1:6066 by default.
``CHURNWATCH_METRICS_HOST``, ``CHURNWATCH_METRICS_PORT``
    The Prometheus endpoint, 127.0.0.1:9108 by default; port 0 turns it off.
``CHURNWATCH_BATCH_SIZE``, ``CHURNWATCH_BATCH_WITHIN_S``
    Events per batch at most (default 5000; also the consumer's records per fetch) and the
    longest wait to fill one (default 0.2 s). Each batch costs a few broker round trips
    (alerts, write-ahead copy, state records), so small batches cap throughput.
``CHURNWATCH_FAST_PATH``
    ``true`` (default): input messages reach the batch processor a fetch at a time straight
    from Faust's consumer
    (:class:`stream.service.faust_internals.transport.FetchHighwaterConsumer`); ``false``:
    through a Faust agent (``stream.noack_take``), about half as fast. Both give the
    replay's alerts after a ``kill -9`` (tests/integration/test_parity.py runs both).
``CHURNWATCH_GROUPS`` [groups]
    ``true`` (default): the group stage runs in every worker (member signals to
    ``churn.group-signals``, group alerts, members' group context; docs/groups.md).
``CHURNWATCH_CALIBRATION`` [calibration]
    ``true``: subscriber alerts pass the calibration stage (one global model learning
    from ``churn.outcomes`` and port-outs, docs/outcomes.md) before ``churn.alerts``;
    ``false`` (default): the engine's alerts go straight out. Off by default because on
    the simulated worlds a model learned inside one world costs red+ recall for little
    precision (docs/outcomes.md, "Evidence"); ``churnwatch replay`` follows this setting.
``CHURNWATCH_CALIBRATION_LAG_DAYS``, ``CHURNWATCH_CALIBRATION_HORIZON_DAYS``
[calibration_lag_days, calibration_horizon_days]
    Extra days a label waits before the model learns it (default 1: the slack for late
    outcomes and slow partitions) and the days after which an unlabelled alert counts as
    a false alarm (default 60).
``CHURNWATCH_CALIBRATION_YELLOW``, ``CHURNWATCH_CALIBRATION_RED``
[calibration_yellow, calibration_red]
    Zone thresholds of the calibrated score, a probability (defaults 0.45 and 0.85): an
    operating choice (how many red calls the call centre can make).
``CHURNWATCH_CALIBRATION_WARMUP``, ``CHURNWATCH_CALIBRATION_MIN_CLASS``
[calibration_warmup, calibration_min_class]
    Labels (and labels of each class) the model needs before it calibrates (defaults 40
    and 5; until then alerts keep the engine's score and zone).
``CHURNWATCH_CALIBRATION_HOLD_S``, ``CHURNWATCH_CALIBRATION_MAX_HELD``
    The stage feeds the model in replay's order: an item waits until every subscriber
    partition has passed it, or, after ``HOLD_S`` seconds (default 5), until every
    partition has closed the days its labels need; beyond ``MAX_HELD`` items (default
    50000) the oldest go regardless (counted as forced).
``CHURNWATCH_CALIBRATION_IDLE_S``
    A partition that has sent the stage nothing for this many seconds (default 300: no
    traffic at all, or a stuck worker) is not waited for by items held that long
    (counted as released idle).
``CHURNWATCH_ORDER_MARGIN_S``
    How long a producer may hold a record before the broker has it, plus a fetch response's
    trip back (default 0.25 s; ``churnwatch produce`` lingers 20 ms): live events wait about
    this long for the event-time order of their partition to settle. Raise it for
    producers that linger longer or a slow network; ``churnwatch_events_out_of_order_total``
    counts events that came later than it allowed.
``CHURNWATCH_ORDER_MAX_HELD``
    Events the event-time reorder may hold (default 200000). Input partitions that run
    ahead are not fetched while they hold their share of it, so a worker catching up on a
    backlog stays within it; beyond it the oldest are released regardless (counted in
    ``churnwatch_events_forced_total``).
``CHURNWATCH_SESSION_TIMEOUT_S``, ``CHURNWATCH_HEARTBEAT_S``, ``CHURNWATCH_REQUEST_TIMEOUT_S``,
``CHURNWATCH_COMMIT_INTERVAL_S``
    Consumer group timings (defaults 10, 1, 30 and 1 seconds).
``CHURNWATCH_TOPIC_PREFIX`` [topic_prefix]
    Prefix for every topic name of the contract (tests use it to share one broker).
``CHURNWATCH_PORTED_FILE`` [ported_file]
    JSON Lines of ``{"number": ..., "operator": ...}``: numbers ported between operators
    (``ported.jsonl`` of a simulated world); they override the number-segment rule.
``CHURNWATCH_ENGINE__<FIELD>`` [table ``engine``]
    Any field of the detectors' ``EngineConfig`` (``CHURNWATCH_ENGINE__OUR_OPERATOR=...``);
    the value is converted to the type of the field's default.
``CHURNWATCH_CONFIG``
    Path of the TOML file, when ``toml_path`` is not given.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream import contracts

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
STORES = ("memory://", "rocksdb://", "aerospike://")
ENGINE_PREFIX = "CHURNWATCH_ENGINE__"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything a worker, the broker command and the tools need to know."""

    bootstrap: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    app_id: str = "churnwatch"
    instance_id: str = ""
    partitions: int = 4
    replication: int = 1
    standby_replicas: int = 0
    store: str = "memory://"
    datadir: str = ".churnwatch/worker"

    web_enabled: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108

    batch_size: int = 5000
    fast_path: bool = True
    groups: bool = True
    calibration: bool = False
    calibration_lag_days: int = 1
    calibration_horizon_days: int = 60
    calibration_yellow: float = 0.45
    calibration_red: float = 0.85
    calibration_warmup: int = 40
    calibration_min_class: int = 5
    calibration_hold_s: float = 5.0
    calibration_max_held: int = 50_000
    calibration_idle_s: float = 300.0
    order_margin_s: float = 0.25
    order_max_held: int = 200_000
    batch_within_s: float = 0.2
    session_timeout_s: float = 10.0
    heartbeat_s: float = 1.0
    request_timeout_s: float = 30.0
    commit_interval_s: float = 1.0

    topic_prefix: str = ""
    ported_file: str | None = None
    engine_overrides: Mapping[str, Any] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when no external Kafka is configured (the embedded broker is used)."""
        return not self.bootstrap

    @property
    def topic_calls(self) -> str:
        return self.topic_prefix + contracts.TOPIC_CALLS

    @property
    def topic_billing(self) -> str:
        return self.topic_prefix + contracts.TOPIC_BILLING

    @property
    def topic_subscribers(self) -> str:
        return self.topic_prefix + contracts.TOPIC_SUBSCRIBERS

    @property
    def topic_alerts(self) -> str:
        return self.topic_prefix + contracts.TOPIC_ALERTS

    @property
    def topic_deadletter(self) -> str:
        return self.topic_prefix + contracts.TOPIC_DEADLETTER

    @property
    def topic_outcomes(self) -> str:
        return self.topic_prefix + contracts.TOPIC_OUTCOMES

    @property
    def topic_calibration(self) -> str:
        return self.topic_prefix + contracts.TOPIC_CALIBRATION

    @property
    def calibration_topics(self) -> tuple[str, ...]:
        """The calibration stage's one-partition topics (outcomes, internal), if on."""
        return (self.topic_outcomes, self.topic_calibration) if self.calibration else ()

    def outcome_learner(self, store: Any = None) -> Any:
        """The :class:`detectors.OutcomeLearner` these settings describe, over ``store``
        (a dict or the stage's table; a store holding a saved learner carries on with it).

        >>> learner = Settings(calibration_warmup=10).outcome_learner({})
        >>> learner.lag_days, learner.thresholds, learner.calibrator.warmup
        (1, (0.2, 0.45, 0.85), 10)
        """
        from detectors import OutcomeLearner
        from detectors.calibration import RiskCalibrator

        return OutcomeLearner(
            RiskCalibrator(warmup=self.calibration_warmup, min_class=self.calibration_min_class),
            store=store if store is not None else {},
            horizon_days=self.calibration_horizon_days,
            lag_days=self.calibration_lag_days,
            yellow=self.calibration_yellow,
            red=self.calibration_red,
            tz_offset_hours=self.tz_offset_hours,
        )

    @property
    def tz_offset_hours(self) -> float:
        """The engines' local time (their days), also the calibration stage's."""
        from detectors import EngineConfig

        return float(self.engine_overrides.get("tz_offset_hours", EngineConfig.tz_offset_hours))

    @property
    def input_topics(self) -> dict[str, str]:
        """Input topic name -> kind ("calls", "billing", "subscribers")."""
        return {self.topic_prefix + t: kind for t, kind in contracts.INPUT_TOPICS.items()}

    @property
    def all_topics(self) -> tuple[str, ...]:
        return tuple(self.topic_prefix + t for t in contracts.ALL_TOPICS)

    @property
    def group_topics(self) -> tuple[str, ...]:
        """The group stage's internal topics (member signals, group contexts), if on."""
        if not self.groups:
            return ()
        return tuple(self.topic_prefix + t
                     for t in ("churn.group-signals", "churn.group-context"))

    def with_bootstrap(self, bootstrap: str) -> Settings:
        """A copy pointing at ``bootstrap`` (e.g. the embedded broker once it runs)."""
        return dataclasses.replace(self, bootstrap=bootstrap)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security keyword arguments for kafka-python and aiokafka clients."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` from the TLS settings (None on plaintext)."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        import ssl

        ctx = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return ctx

    def engine_config(self) -> Any:
        """The detectors' ``EngineConfig`` with :attr:`engine_overrides` applied, and the
        ported numbers of :attr:`ported_file` (JSON Lines of ``{"number", "operator"}``,
        as ``churnwatch simulate`` writes and ``churnwatch replay`` reads)."""
        from detectors import EngineConfig

        overrides = dict(self.engine_overrides)
        if self.ported_file:
            from stream.contracts.ported import load_ported_numbers

            try:
                overrides["ported_numbers"] = load_ported_numbers(Path(self.ported_file))
            except (OSError, ValueError, KeyError) as exc:
                raise SettingsError(f"CHURNWATCH_PORTED_FILE: {exc}") from None
        return build_engine_config(EngineConfig, overrides)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        toml_path: str | os.PathLike[str] | None = None,
    ) -> Settings:
        """Settings from ``environ`` (default ``os.environ``) over a TOML file over defaults.

        Raises :class:`SettingsError` naming the variable on any unusable value.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        engine: dict[str, Any] = {}
        if toml_path is None and env.get("CHURNWATCH_CONFIG"):
            toml_path = env["CHURNWATCH_CONFIG"]
        if toml_path is not None:
            file_values, engine = _read_toml(Path(toml_path))
            values.update(file_values)
        for name, (var, _kind) in _ENV.items():
            raw = env.get(var)
            if raw is not None and raw.strip() != "":
                values[name] = raw.strip()
            elif raw is not None and name in _EMPTY_MEANS_DEFAULT:
                values.pop(name, None)
        for var, raw in env.items():
            if var.startswith(ENGINE_PREFIX) and raw.strip():
                engine[var[len(ENGINE_PREFIX) :].lower()] = raw.strip()
        typed = {name: _convert(name, value) for name, value in values.items()}
        typed["engine_overrides"] = engine
        if "security_protocol" not in typed:
            typed["security_protocol"] = _derive_protocol(typed)
        settings = cls(**typed)
        settings._check()
        return settings

    def _check(self) -> None:
        def bad(var: str, msg: str) -> SettingsError:
            return SettingsError(f"{var}: {msg}")

        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise bad(
                "KAFKA_SECURITY_PROTOCOL",
                f"{self.security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}",
            )
        sasl = (self.sasl_mechanism, self.sasl_username, self.sasl_password)
        if any(sasl) and not all(sasl):
            raise bad(
                "KAFKA_SASL_MECHANISM",
                "SASL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
            )
        if self.sasl_mechanism and self.sasl_mechanism not in SASL_MECHANISMS:
            raise bad(
                "KAFKA_SASL_MECHANISM",
                f"{self.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}",
            )
        if self.sasl_mechanism and not self.security_protocol.startswith("SASL_"):
            raise bad("KAFKA_SECURITY_PROTOCOL", "SASL settings need SASL_PLAINTEXT or SASL_SSL")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise bad("KAFKA_SSL_KEYFILE", "a key file needs KAFKA_SSL_CERTFILE too")
        for var, path in (
            ("CHURNWATCH_PORTED_FILE", self.ported_file),
            ("KAFKA_SSL_CAFILE", self.ssl_cafile),
            ("KAFKA_SSL_CERTFILE", self.ssl_certfile),
            ("KAFKA_SSL_KEYFILE", self.ssl_keyfile),
        ):
            if path and not Path(path).is_file():
                raise bad(var, f"no such file: {path}")
        if self.bootstrap:
            for hostport in self.bootstrap.split(","):
                host, sep, port_text = hostport.strip().rpartition(":")
                if (not sep or not host or not port_text.isdigit()
                        or not 0 < int(port_text) < 65536):
                    raise bad("KAFKA_BOOTSTRAP", f"{hostport!r} is not host:port")
        if self.embedded and self.security_protocol != "PLAINTEXT":
            raise bad("KAFKA_BOOTSTRAP", "SASL/TLS settings need an external KAFKA_BOOTSTRAP")
        if not self.store.startswith(STORES):
            raise bad("CHURNWATCH_STORE", f"{self.store!r} is not one of {', '.join(STORES)}")
        positive = {
            "CHURNWATCH_PARTITIONS": self.partitions,
            "CHURNWATCH_REPLICATION": self.replication,
            "CHURNWATCH_BATCH_SIZE": self.batch_size,
            "CHURNWATCH_BATCH_WITHIN_S": self.batch_within_s,
            "CHURNWATCH_SESSION_TIMEOUT_S": self.session_timeout_s,
            "CHURNWATCH_HEARTBEAT_S": self.heartbeat_s,
            "CHURNWATCH_REQUEST_TIMEOUT_S": self.request_timeout_s,
            "CHURNWATCH_COMMIT_INTERVAL_S": self.commit_interval_s,
        }
        for var, value in positive.items():
            if value <= 0:
                raise bad(var, f"must be > 0, got {value}")
        if self.calibration_lag_days < 0:
            raise bad("CHURNWATCH_CALIBRATION_LAG_DAYS", "must be >= 0")
        for var, value in (("CHURNWATCH_CALIBRATION_HORIZON_DAYS", self.calibration_horizon_days),
                           ("CHURNWATCH_CALIBRATION_MAX_HELD", self.calibration_max_held),
                           ("CHURNWATCH_ORDER_MAX_HELD", self.order_max_held)):
            if value <= 0:
                raise bad(var, f"must be > 0, got {value}")
        if self.calibration_warmup < 0 or self.calibration_min_class < 0:
            raise bad("CHURNWATCH_CALIBRATION_WARMUP", "warm-up and min class must be >= 0")
        if self.calibration_hold_s < 0:
            raise bad("CHURNWATCH_CALIBRATION_HOLD_S", "must be >= 0")
        if self.calibration_idle_s < self.calibration_hold_s:
            raise bad("CHURNWATCH_CALIBRATION_IDLE_S", "must be >= CHURNWATCH_CALIBRATION_HOLD_S")
        if not 0 < self.calibration_yellow <= self.calibration_red <= 1:
            raise bad("CHURNWATCH_CALIBRATION_YELLOW",
                      "need 0 < CHURNWATCH_CALIBRATION_YELLOW <= CHURNWATCH_CALIBRATION_RED <= 1")
        if self.order_margin_s < 0:
            raise bad("CHURNWATCH_ORDER_MARGIN_S", "must be >= 0")
        if self.standby_replicas < 0:
            raise bad("CHURNWATCH_STANDBY_REPLICAS", "must be >= 0")
        if self.heartbeat_s * 3 > self.session_timeout_s:
            raise bad("CHURNWATCH_HEARTBEAT_S", "must be at most a third of the session timeout")
        if self.request_timeout_s <= self.session_timeout_s:
            raise bad("CHURNWATCH_REQUEST_TIMEOUT_S", "must exceed CHURNWATCH_SESSION_TIMEOUT_S")
        for var, port in (
            ("CHURNWATCH_WEB_PORT", self.web_port),
            ("CHURNWATCH_METRICS_PORT", self.metrics_port),
        ):
            if not 0 <= port < 65536:
                raise bad(var, f"{port} is not a port number")
        if not self.app_id or any(c.isspace() for c in self.app_id):
            raise bad("CHURNWATCH_APP_ID", f"{self.app_id!r} must be a non-empty word")


def client_settings(bootstrap: str | None = None) -> Settings:
    """Settings for a command that talks to a running Kafka (``--bootstrap`` over the env).

    Raises :class:`SettingsError` when no broker address is known: such a command does not
    start a broker of its own.
    """
    settings = Settings.from_env()
    if bootstrap:
        settings = settings.with_bootstrap(bootstrap)
    if not settings.bootstrap:
        raise SettingsError("KAFKA_BOOTSTRAP: not set (or pass --bootstrap); "
                            "`churnwatch broker` prints it")
    return settings


# field name -> (environment variable, kind)
_ENV: dict[str, tuple[str, str]] = {
    "bootstrap": ("KAFKA_BOOTSTRAP", "str"),
    "security_protocol": ("KAFKA_SECURITY_PROTOCOL", "upper"),
    "sasl_mechanism": ("KAFKA_SASL_MECHANISM", "upper"),
    "sasl_username": ("KAFKA_SASL_USERNAME", "str"),
    "sasl_password": ("KAFKA_SASL_PASSWORD", "str"),
    "ssl_cafile": ("KAFKA_SSL_CAFILE", "str"),
    "ssl_certfile": ("KAFKA_SSL_CERTFILE", "str"),
    "ssl_keyfile": ("KAFKA_SSL_KEYFILE", "str"),
    "app_id": ("CHURNWATCH_APP_ID", "str"),
    "instance_id": ("CHURNWATCH_INSTANCE_ID", "str"),
    "partitions": ("CHURNWATCH_PARTITIONS", "int"),
    "replication": ("CHURNWATCH_REPLICATION", "int"),
    "standby_replicas": ("CHURNWATCH_STANDBY_REPLICAS", "int"),
    "store": ("CHURNWATCH_STORE", "str"),
    "datadir": ("CHURNWATCH_DATADIR", "str"),
    "web_enabled": ("CHURNWATCH_WEB_ENABLED", "bool"),
    "web_host": ("CHURNWATCH_WEB_HOST", "str"),
    "web_port": ("CHURNWATCH_WEB_PORT", "int"),
    "metrics_host": ("CHURNWATCH_METRICS_HOST", "str"),
    "metrics_port": ("CHURNWATCH_METRICS_PORT", "int"),
    "batch_size": ("CHURNWATCH_BATCH_SIZE", "int"),
    "batch_within_s": ("CHURNWATCH_BATCH_WITHIN_S", "float"),
    "fast_path": ("CHURNWATCH_FAST_PATH", "bool"),
    "groups": ("CHURNWATCH_GROUPS", "bool"),
    "calibration": ("CHURNWATCH_CALIBRATION", "bool"),
    "calibration_lag_days": ("CHURNWATCH_CALIBRATION_LAG_DAYS", "int"),
    "calibration_horizon_days": ("CHURNWATCH_CALIBRATION_HORIZON_DAYS", "int"),
    "calibration_yellow": ("CHURNWATCH_CALIBRATION_YELLOW", "float"),
    "calibration_red": ("CHURNWATCH_CALIBRATION_RED", "float"),
    "calibration_warmup": ("CHURNWATCH_CALIBRATION_WARMUP", "int"),
    "calibration_min_class": ("CHURNWATCH_CALIBRATION_MIN_CLASS", "int"),
    "calibration_hold_s": ("CHURNWATCH_CALIBRATION_HOLD_S", "float"),
    "calibration_max_held": ("CHURNWATCH_CALIBRATION_MAX_HELD", "int"),
    "calibration_idle_s": ("CHURNWATCH_CALIBRATION_IDLE_S", "float"),
    "order_margin_s": ("CHURNWATCH_ORDER_MARGIN_S", "float"),
    "order_max_held": ("CHURNWATCH_ORDER_MAX_HELD", "int"),
    "session_timeout_s": ("CHURNWATCH_SESSION_TIMEOUT_S", "float"),
    "heartbeat_s": ("CHURNWATCH_HEARTBEAT_S", "float"),
    "request_timeout_s": ("CHURNWATCH_REQUEST_TIMEOUT_S", "float"),
    "commit_interval_s": ("CHURNWATCH_COMMIT_INTERVAL_S", "float"),
    "topic_prefix": ("CHURNWATCH_TOPIC_PREFIX", "str"),
    "ported_file": ("CHURNWATCH_PORTED_FILE", "str"),
}
# An empty KAFKA_BOOTSTRAP in the environment means "embedded", even over a TOML value.
_EMPTY_MEANS_DEFAULT = frozenset({"bootstrap"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _convert(name: str, value: Any) -> Any:
    var, kind = _ENV[name]
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if kind == "upper":
            return str(value).strip().upper()
        return str(value)
    except (TypeError, ValueError):
        expected = {"int": "an integer", "float": "a number", "bool": "true or false"}[kind]
        raise SettingsError(f"{var}: expected {expected}, got {value!r}") from None


def _derive_protocol(values: Mapping[str, Any]) -> str:
    sasl = bool(values.get("sasl_mechanism"))
    tls = bool(values.get("ssl_cafile") or values.get("ssl_certfile"))
    return {(False, False): "PLAINTEXT", (False, True): "SSL"}.get(
        (sasl, tls), "SASL_SSL" if tls else "SASL_PLAINTEXT"
    )


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"CHURNWATCH_CONFIG: no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    engine = data.pop("engine", {})
    if not isinstance(engine, dict):
        raise SettingsError(f"{path}: [engine] must be a table")
    unknown = sorted(set(data) - set(_ENV))
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return data, dict(engine)


def build_engine_config(config_cls: type, overrides: Mapping[str, Any]) -> Any:
    """``config_cls(**overrides)`` with values converted to the types of the defaults.

    Unknown names and unconvertible values raise :class:`SettingsError`.
    """
    if not overrides:
        return config_cls()
    defaults = config_cls()
    known = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(
        config_cls
    ) else set(vars(defaults))
    kwargs: dict[str, Any] = {}
    for name, value in overrides.items():
        var = ENGINE_PREFIX + name.upper()
        if name not in known:
            raise SettingsError(
                f"{var}: EngineConfig has no field {name!r}; known: {', '.join(sorted(known))}"
            )
        kwargs[name] = _convert_like(var, getattr(defaults, name), value)
    try:
        if dataclasses.is_dataclass(defaults) and not isinstance(defaults, type):
            return dataclasses.replace(defaults, **kwargs)
        return config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{ENGINE_PREFIX}*: {exc}") from None


def _convert_like(var: str, default: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value  # from TOML: already typed
    try:
        if isinstance(default, bool):
            text = value.lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (tuple, list, frozenset, set)):
            items = [v.strip() for v in value.split(",") if v.strip()]
            sample = next(iter(default), "")
            if isinstance(sample, int):
                items = [int(v) for v in items]  # type: ignore[misc]
            return type(default)(items)
    except ValueError:
        raise SettingsError(
            f"{var}: expected a value like {default!r}, got {value!r}"
        ) from None
    return value
