"""Service settings: one validated model, read from the environment and an optional TOML file.

Nothing is read at import, and ``Settings(...)`` reads nothing either: call
:meth:`Settings.from_env` where the process starts. The environment wins over the TOML file
(named by ``CHURNWATCH_CONFIG``, top-level keys are the field names, ``[engine]`` the detector
settings), which wins over the defaults. Every field's variable, default and meaning is in
:data:`Settings.model_fields`; ``python -m stream.settings`` prints them as the README's table.

>>> Settings.from_env({"CHURNWATCH_PARTITIONS": "8"}).partitions
8
>>> Settings.from_env({"CHURNWATCH_PARTITIONS": "abc"})
Traceback (most recent call last):
...
stream.settings.SettingsError: CHURNWATCH_PARTITIONS: expected an integer, got 'abc'
"""

from __future__ import annotations

import contextvars
import dataclasses
import ipaddress
import os
import ssl
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    AliasGenerator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from stream import contracts

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
STORES = ("memory://", "rocksdb://", "aerospike://")
ENGINE_PREFIX = "CHURNWATCH_ENGINE__"
CONFIG_VARIABLE = "CHURNWATCH_CONFIG"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message starts with its variable."""


def _variable(name: str) -> str:
    return "CHURNWATCH_" + name.upper()


def _kafka(default: Any, variable: str, description: str) -> Any:
    return Field(default, validation_alias=variable, description=description)


# The environment and TOML file :meth:`Settings.from_env` reads; unset: only the
# constructor's arguments count, so ``Settings()`` is the defaults.
_SOURCES: contextvars.ContextVar[tuple[Mapping[str, str], Path | None] | None] = (
    contextvars.ContextVar("churnwatch_settings_sources", default=None)
)


class Settings(BaseSettings):
    """Everything a worker, the broker command and the tools need to know.

    Immutable; :meth:`replace` and :meth:`with_bootstrap` give validated copies.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        env_nested_delimiter="__",
        env_ignore_empty=True,
        validate_by_name=True,
        validate_by_alias=True,
        alias_generator=AliasGenerator(validation_alias=_variable),
    )

    bootstrap: str = _kafka(
        "", "KAFKA_BOOTSTRAP",
        "`host:port[,host:port]` of an external Kafka; empty: the embedded broker")
    security_protocol: str = _kafka(
        "PLAINTEXT", "KAFKA_SECURITY_PROTOCOL",
        "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`; derived from the SASL and TLS "
        "settings when unset")
    sasl_mechanism: str | None = _kafka(
        None, "KAFKA_SASL_MECHANISM",
        "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; the three SASL settings go together")
    sasl_username: str | None = _kafka(None, "KAFKA_SASL_USERNAME", "SASL user name")
    sasl_password: SecretStr | None = _kafka(
        None, "KAFKA_SASL_PASSWORD", "SASL password (never printed)")
    ssl_cafile: str | None = _kafka(
        None, "KAFKA_SSL_CAFILE", "PEM bundle of the CAs that sign the brokers' certificates")
    ssl_certfile: str | None = _kafka(
        None, "KAFKA_SSL_CERTFILE", "PEM client certificate, for brokers that require one")
    ssl_keyfile: str | None = _kafka(
        None, "KAFKA_SSL_KEYFILE", "PEM private key of the client certificate")

    app_id: str = Field(
        "churnwatch", description="Faust application id: consumer group, changelog prefix")
    partitions: int = Field(
        4, description="partitions of every topic (tables are co-partitioned)")
    replication: int = Field(1, description="replication factor of the topics created")
    standby_replicas: int = Field(
        0, description="standby copies of each table partition kept by other workers")
    store: str = Field(
        "memory://", description="table store: `memory://` or `rocksdb://` (extra `rocksdb`)")
    datadir: str = Field(
        ".churnwatch/worker",
        description="the worker's data directory, created if missing; one per worker")

    web_enabled: bool = Field(False, description="Faust's own web server")
    web_host: str = Field("127.0.0.1", description="address of Faust's web server")
    web_port: int = Field(6066, description="port of Faust's web server")
    metrics_host: str = Field(
        "127.0.0.1",
        description="address of the Prometheus endpoint (a warning when not loopback)")
    metrics_port: int = Field(9108, description="port of the Prometheus endpoint; 0: off")

    batch_size: int = Field(
        5000, description="events per batch at most (also the consumer's records per fetch)")
    batch_within_s: float = Field(0.2, description="longest wait to fill a batch, seconds")
    groups: bool = Field(
        True, description="the group stage: member signals, group alerts, members' group "
                          "context")
    calibration: bool = Field(
        False, description="subscriber alerts pass the calibration stage (outcome learning) "
                           "before `churn.alerts`; `churnwatch replay` follows it")
    calibration_lag_days: int = Field(
        1, description="extra days a label waits before the model learns it")
    calibration_horizon_days: int = Field(
        60, description="days after which an unlabelled alert counts as a false alarm")
    calibration_yellow: float = Field(
        0.45, description="yellow threshold of the calibrated score (a probability)")
    calibration_red: float = Field(
        0.85, description="red threshold of the calibrated score (a probability)")
    calibration_warmup: int = Field(
        40, description="labels the model needs before it calibrates")
    calibration_min_class: int = Field(
        5, description="labels of each class the model needs before it calibrates")
    calibration_hold_s: float = Field(
        5.0, description="seconds an item waits for every partition to pass it before it "
                         "waits only for the days its labels need")
    calibration_max_held: int = Field(
        50_000, description="items held for order at most; beyond, the oldest go (forced)")
    calibration_idle_s: float = Field(
        300.0, description="a partition silent this long is not waited for")
    order_margin_s: float = Field(
        1.0, description="how long a live event waits for an earlier one on another input "
                         "topic of its partition: the longest a producer may hold a record "
                         "after stamping it")
    deadletter_max_bytes: int = Field(
        1_048_588, description="the dead-letter topic's message limit (Kafka's "
                               "`max.message.bytes`): a larger original keeps only a prefix")
    event_max_past_days: int = Field(
        3650, description="an event stamped more than this many days before the wall clock "
                          "is `absurd_value`; raise it to replay older history")
    order_max_held: int = Field(
        200_000, description="events the event-time reorder may hold; input partitions that run "
                             "ahead are not fetched while they hold their share, and beyond it "
                             "the oldest go regardless (`churnwatch_events_forced_total`)")
    sweep_alone_from: int = Field(
        20_000, description="subscribers from which a partition's day close (its sweep over "
                            "every subscriber) gets a batch of its own, which bounds a "
                            "worker's memory at a day close; 0: always")
    instance_id: str = Field(
        "", description="this worker's static group membership id (Kafka's "
                        "`group.instance.id`), unique per worker and kept across restarts; "
                        "empty: dynamic membership")
    session_timeout_s: float = Field(10.0, description="consumer group session timeout")
    heartbeat_s: float = Field(
        1.0, description="consumer heartbeat interval, at most a third of the session timeout")
    request_timeout_s: float = Field(
        30.0, description="Kafka request timeout, above the session timeout")
    commit_interval_s: float = Field(1.0, description="offset commit interval")

    queue_capacity: int = Field(
        0, description="calls the call centre makes a day: the work queue lists that many items "
                       "by expected retained value (docs/callcentre.md); 0: all open work")
    topic_prefix: str = Field("", description="prefix of every topic name of the contract")
    ported_file: str | None = Field(
        None, description='JSON Lines of `{"number", "operator"}`: ported numbers, which '
                          "override the number-segment rule")
    engine_overrides: dict[str, Any] = Field(
        default_factory=dict, validation_alias="CHURNWATCH_ENGINE",
        description="any field of the detectors' `EngineConfig`, "
                    "e.g. `CHURNWATCH_ENGINE__OUR_OPERATOR` (TOML: `[engine]`)")

    # -- sources -------------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = _SOURCES.get()
        if sources is None:
            return (init_settings,)
        environ, toml_path = sources
        chain: list[PydanticBaseSettingsSource] = [
            init_settings, _MappingEnvSource(settings_cls, environ)]
        if toml_path is not None:
            chain.append(_TomlSource(settings_cls, toml_path))
        return tuple(chain)

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
        if toml_path is None and env.get(CONFIG_VARIABLE, "").strip():
            toml_path = env[CONFIG_VARIABLE].strip()
        token = _SOURCES.set((env, Path(toml_path) if toml_path is not None else None))
        try:
            with _named_errors():
                return cls()
        finally:
            _SOURCES.reset(token)

    # -- validation ----------------------------------------------------------------------

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("partitions", "replication", "batch_size", "web_port", "metrics_port",
                     "standby_replicas", "calibration_lag_days", "calibration_horizon_days",
                     "calibration_warmup", "calibration_min_class", "calibration_max_held",
                     mode="before")
    @classmethod
    def _no_bool_for_int(cls, value: Any) -> Any:
        if isinstance(value, bool):  # TOML `partitions = true` is not 1
            raise ValueError("not an integer")
        return value

    @model_validator(mode="before")
    @classmethod
    def _derive_protocol(cls, data: Any) -> Any:
        if not isinstance(data, dict) or _given(data, "security_protocol") is not None:
            return data
        sasl = bool(_given(data, "sasl_mechanism"))
        tls = bool(_given(data, "ssl_cafile") or _given(data, "ssl_certfile"))
        protocol = ("SASL_" if sasl else "") + ("SSL" if tls else "PLAINTEXT")
        return {**data, "security_protocol": protocol}

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for problem in _problems(self):
            raise SettingsError(problem)
        return self

    # -- derived -------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when no external Kafka is configured (the embedded broker is used)."""
        return not self.bootstrap

    @property
    def metrics_exposed(self) -> bool:
        """True when the Prometheus endpoint listens beyond loopback.

        >>> Settings().metrics_exposed, Settings(metrics_host="0.0.0.0").metrics_exposed
        (False, True)
        """
        return bool(self.metrics_port) and not _is_loopback(self.metrics_host)

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

    @property
    def tz_offset_hours(self) -> float:
        """The engines' local time (their days), also the calibration stage's."""
        from detectors import EngineConfig

        return float(self.engine_overrides.get("tz_offset_hours", EngineConfig.tz_offset_hours))

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

    def with_bootstrap(self, bootstrap: str) -> Settings:
        """A copy pointing at ``bootstrap`` (e.g. the embedded broker once it runs)."""
        return self.replace(bootstrap=bootstrap)

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` (field names) applied."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update(changes)
        with _named_errors():
            return type(self)(**values)

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security keyword arguments for kafka-python and aiokafka clients."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password_text,
            )
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    @property
    def sasl_password_text(self) -> str | None:
        """The SASL password in clear, for the Kafka clients only."""
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` from the TLS settings (None on plaintext)."""
        if not self.uses_tls:
            return None
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


def variable_of(name: str) -> str:
    """The environment variable of field ``name``.

    >>> variable_of("partitions"), variable_of("bootstrap")
    ('CHURNWATCH_PARTITIONS', 'KAFKA_BOOTSTRAP')
    """
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else _variable(name)


#: field name -> environment variable, every setting the model reads.
ENV_VARS: dict[str, str] = {name: variable_of(name) for name in Settings.model_fields}
# field name -> (variable, type name), the shape the deploy tests read.
_ENV: dict[str, tuple[str, str]] = {
    name: (var, str(Settings.model_fields[name].annotation)) for name, var in ENV_VARS.items()
    if name != "engine_overrides"
}
_BY_VARIABLE = {var.lower(): name for name, var in ENV_VARS.items()}


def _given(data: Mapping[str, Any], name: str) -> Any:
    """A field's raw value in a source's output, keyed by its name or its variable."""
    for key in (name, ENV_VARS[name]):
        if data.get(key) not in (None, ""):
            return data[key]
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _problems(s: Settings) -> Iterator[str]:
    """Every unusable combination, as ``VARIABLE: what is wrong`` (the first one is raised)."""
    if s.security_protocol not in SECURITY_PROTOCOLS:
        yield (f"KAFKA_SECURITY_PROTOCOL: {s.security_protocol!r} is not one of "
               f"{', '.join(SECURITY_PROTOCOLS)}")
    sasl = (s.sasl_mechanism, s.sasl_username, s.sasl_password)
    if any(sasl) and not all(sasl):
        yield ("KAFKA_SASL_MECHANISM: SASL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME "
               "and KAFKA_SASL_PASSWORD")
    if s.sasl_mechanism and s.sasl_mechanism not in SASL_MECHANISMS:
        yield (f"KAFKA_SASL_MECHANISM: {s.sasl_mechanism!r} is not one of "
               f"{', '.join(SASL_MECHANISMS)}")
    if s.sasl_mechanism and not s.security_protocol.startswith("SASL_"):
        yield "KAFKA_SECURITY_PROTOCOL: SASL settings need SASL_PLAINTEXT or SASL_SSL"
    if s.security_protocol.startswith("SASL_") and not s.sasl_mechanism:
        yield (f"KAFKA_SECURITY_PROTOCOL: {s.security_protocol} needs KAFKA_SASL_MECHANISM, "
               "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
    if (s.ssl_cafile or s.ssl_certfile) and not s.uses_tls:
        yield (f"KAFKA_SECURITY_PROTOCOL: TLS files are set but {s.security_protocol} "
               "does not use TLS (SSL or SASL_SSL)")
    if s.ssl_keyfile and not s.ssl_certfile:
        yield "KAFKA_SSL_KEYFILE: a key file needs KAFKA_SSL_CERTFILE too"
    for var, path in (
        ("CHURNWATCH_PORTED_FILE", s.ported_file),
        ("KAFKA_SSL_CAFILE", s.ssl_cafile),
        ("KAFKA_SSL_CERTFILE", s.ssl_certfile),
        ("KAFKA_SSL_KEYFILE", s.ssl_keyfile),
    ):
        if path and not Path(path).is_file():
            yield f"{var}: no such file: {path}"
    yield from _pem_problems(s)
    if s.bootstrap:
        for hostport in s.bootstrap.split(","):
            host, sep, port_text = hostport.strip().rpartition(":")
            if (not sep or not host or not port_text.isdigit()
                    or not 0 < int(port_text) < 65536):
                yield f"KAFKA_BOOTSTRAP: {hostport!r} is not host:port"
    if s.embedded and s.security_protocol != "PLAINTEXT":
        yield "KAFKA_BOOTSTRAP: SASL/TLS settings need an external KAFKA_BOOTSTRAP"
    if not s.store.startswith(STORES):
        yield f"CHURNWATCH_STORE: {s.store!r} is not one of {', '.join(STORES)}"
    for name in ("partitions", "replication", "batch_size", "batch_within_s",
                 "session_timeout_s", "heartbeat_s", "request_timeout_s", "commit_interval_s",
                 "calibration_horizon_days", "calibration_max_held", "order_max_held"):
        if getattr(s, name) <= 0:
            yield f"{ENV_VARS[name]}: must be > 0, got {getattr(s, name)}"
    for name in ("calibration_lag_days", "calibration_hold_s", "order_margin_s",
                 "standby_replicas", "sweep_alone_from"):
        if getattr(s, name) < 0:
            yield f"{ENV_VARS[name]}: must be >= 0, got {getattr(s, name)}"
    if s.queue_capacity < 0:
        yield f"CHURNWATCH_QUEUE_CAPACITY: must be >= 0, got {s.queue_capacity}"
    if s.deadletter_max_bytes < 16384:
        yield f"CHURNWATCH_DEADLETTER_MAX_BYTES: must be >= 16384, got {s.deadletter_max_bytes}"
    if s.event_max_past_days <= 0:
        yield f"CHURNWATCH_EVENT_MAX_PAST_DAYS: must be > 0, got {s.event_max_past_days}"
    if s.calibration_warmup < 0 or s.calibration_min_class < 0:
        yield "CHURNWATCH_CALIBRATION_WARMUP: warm-up and min class must be >= 0"
    if s.calibration_idle_s < s.calibration_hold_s:
        yield "CHURNWATCH_CALIBRATION_IDLE_S: must be >= CHURNWATCH_CALIBRATION_HOLD_S"
    if not 0 < s.calibration_yellow <= s.calibration_red <= 1:
        yield ("CHURNWATCH_CALIBRATION_YELLOW: need 0 < CHURNWATCH_CALIBRATION_YELLOW <= "
               "CHURNWATCH_CALIBRATION_RED <= 1")
    if s.heartbeat_s * 3 > s.session_timeout_s:
        yield "CHURNWATCH_HEARTBEAT_S: must be at most a third of the session timeout"
    if s.request_timeout_s <= s.session_timeout_s:
        yield "CHURNWATCH_REQUEST_TIMEOUT_S: must exceed CHURNWATCH_SESSION_TIMEOUT_S"
    for name in ("web_port", "metrics_port"):
        if not 0 <= getattr(s, name) < 65536:
            yield f"{ENV_VARS[name]}: {getattr(s, name)} is not a port number"
    if not s.app_id or any(c.isspace() for c in s.app_id):
        yield f"CHURNWATCH_APP_ID: {s.app_id!r} must be a non-empty word"


def _pem_problems(s: Settings) -> Iterator[str]:
    """TLS files that exist but that the ssl module cannot use, each named."""
    files = {"KAFKA_SSL_CAFILE": s.ssl_cafile, "KAFKA_SSL_CERTFILE": s.ssl_certfile,
             "KAFKA_SSL_KEYFILE": s.ssl_keyfile}
    if not all(Path(p).is_file() for p in files.values() if p):
        return  # reported as missing
    if s.ssl_cafile:
        try:
            ssl.create_default_context(cafile=s.ssl_cafile)
        except ssl.SSLError as exc:
            yield (f"KAFKA_SSL_CAFILE: {s.ssl_cafile} is not a PEM CA certificate bundle "
                   f"({exc.reason or exc})")
    if s.ssl_certfile:
        if b"-----BEGIN CERTIFICATE-----" not in Path(s.ssl_certfile).read_bytes():
            yield f"KAFKA_SSL_CERTFILE: {s.ssl_certfile} is not a PEM certificate"
            return
        key = s.ssl_keyfile or s.ssl_certfile
        var = "KAFKA_SSL_KEYFILE" if s.ssl_keyfile else "KAFKA_SSL_CERTFILE"
        if b"PRIVATE KEY-----" not in Path(key).read_bytes():
            yield f"{var}: {key} is not a PEM private key"
            return
        try:
            ssl.create_default_context().load_cert_chain(s.ssl_certfile, s.ssl_keyfile)
        except ssl.SSLError as exc:
            yield (f"{var}: {key} is not the private key of {s.ssl_certfile} "
                   f"({exc.reason or exc})")


class _named_errors:  # noqa: N801 - used as a context manager
    """Turn pydantic's ``ValidationError`` into one :class:`SettingsError` line."""

    _EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false"}

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not isinstance(exc, ValidationError):
            return
        first = exc.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, SettingsError):
            raise cause from None
        loc = first["loc"]
        key = str(loc[0]) if loc else ""
        name = _BY_VARIABLE.get(key.lower(), key)
        var = ENV_VARS.get(name, key)
        if name == "engine_overrides" and len(loc) > 1:
            var = ENGINE_PREFIX + str(loc[1]).upper()
        kind = first["type"].split("_", 1)[0]
        if first["type"].endswith(("_parsing", "_type", "_from_float")) and kind in self._EXPECTED:
            message = f"expected {self._EXPECTED[kind]}, got {first['input']!r}"
        else:
            message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{var}: {message}") from None


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass dicts).

    An empty ``KAFKA_BOOTSTRAP`` means "the embedded broker", even over the TOML file.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        if self._environ.get("KAFKA_BOOTSTRAP") is not None and \
                not self._environ["KAFKA_BOOTSTRAP"].strip():
            values["KAFKA_BOOTSTRAP"] = ""
        return values


class _TomlSource(PydanticBaseSettingsSource):
    """Top-level keys of a TOML file (field names) and its ``[engine]`` table."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        try:
            data = tomllib.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{CONFIG_VARIABLE}: no such file: {self.path}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{CONFIG_VARIABLE}: {self.path}: not valid TOML: {exc}") \
                from None
        engine = data.pop("engine", {})
        if not isinstance(engine, dict):
            raise SettingsError(f"{CONFIG_VARIABLE}: {self.path}: [engine] must be a table")
        unknown = sorted(set(data) - set(ENV_VARS) | ({"engine_overrides"} & set(data)))
        if unknown:
            raise SettingsError(
                f"{CONFIG_VARIABLE}: {self.path}: unknown setting(s) {', '.join(unknown)}")
        values = {ENV_VARS[name]: value for name, value in data.items()}
        if engine:
            values["engine_overrides"] = engine
        return values


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


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


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


def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "see `detectors/config.py`"
    default = field.default
    if default is None or default == "":
        return "empty: the embedded broker" if name == "bootstrap" else "none"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, str):
        return f"`{default}`"
    return f"{default:g}" if isinstance(default, float) else str(default)


def markdown_table() -> str:
    """The README's configuration table, one row per variable, from the model.

    >>> markdown_table().splitlines()[2]
    '| `KAFKA_BOOTSTRAP` | empty: the embedded broker | `host:port[,host:port]` of an external Kafka; empty: the embedded broker |'
    """  # noqa: E501
    rows = ["| variable | default | what |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        var = ENV_VARS[name] + ("__<FIELD>" if name == "engine_overrides" else "")
        rows.append(f"| `{var}` | {_default_text(name)} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - `python -m stream.settings`
    sys.stdout.write(markdown_table() + "\n")
