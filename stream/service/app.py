"""Build the Faust app from :class:`stream.settings.Settings` (nothing happens at import).

``create_app(settings)`` returns a ready :class:`faust.App` with its topics
(:mod:`stream.service.topics`), state tables (:mod:`stream.service.tables`), the agent
(:mod:`stream.service.agents`), the group stage (:mod:`stream.service.group_stage`, unless
``CHURNWATCH_GROUPS=false``), the calibration stage (:mod:`stream.service.calibration_stage`,
unless ``CHURNWATCH_CALIBRATION=false``), metrics (:mod:`stream.service.metrics`), the
ported-numbers registry (:mod:`stream.service.ported_feed`) and, with the web server on,
the call centre's work queue (:mod:`stream.service.work_queue_web`). The app uses
:class:`stream.service.faust_internals.transport.ChurnwatchTransport`, whose consumer asks for
changelog end
offsets with a Fetch instead of ListOffsets: the embedded broker's ListOffsets stops short
and Faust would otherwise lose the last batch of table updates on recovery. On RocksDB its
table manager reads the changelogs in bulk before Faust's recovery
(:mod:`stream.service.faust_internals.bulk_restore`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from stream.contracts.validation import Validator
from stream.service import codecs
from stream.service.agents import register
from stream.service.faust_internals.gate import BatchGate
from stream.service.faust_internals.transport import ChurnwatchTransport
from stream.service.metrics import Metrics, install_faust_sensor
from stream.service.ported_feed import PortedFeed, newest_written_s
from stream.service.processor import BatchProcessor, EngineLike
from stream.service.tables import StateTables
from stream.service.topics import declare
from stream.settings import Settings


class ChurnwatchApp(faust.App):
    """A Faust app on :class:`ChurnwatchTransport` (complete changelog recovery)."""

    churnwatch: Any = None  #: the parts built by create_app (topics, tables, processor, ...)

    def _new_transport(self) -> Any:
        return ChurnwatchTransport(self.conf.broker_consumer, self)

    async def on_stop(self) -> None:
        parts = self.churnwatch
        if parts is not None and parts.batch_sink is not None:
            # The batch path is fed by the fetcher, which Faust stops first without waiting
            # for the batch in hand: finish that batch before the tables are revoked and
            # the producer stops (stream.service.faust_internals.gate).
            await parts.gate.close()
        if parts is not None and parts.ported is not None:
            await parts.ported.stop()
        await super().on_stop()


class Parts:
    """What create_app wired together, for the worker and the tests."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def broker_credentials(settings: Settings) -> Any:
    if settings.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password_text,
            mechanism=settings.sasl_mechanism,
            ssl_context=settings.ssl_context(),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(settings.ssl_context())
    return None


def default_engine_factory(settings: Settings, tables: StateTables,
                           ported: PortedFeed | None = None) -> Callable[[int], Any]:
    """Engines over the state tables; with ``ported``, each starts from the registry's
    numbers and follows its updates."""
    from detectors import Engine

    config = settings.engine_config()

    def make(partition: int) -> Any:
        engine = Engine(
            config if ported is None else ported.config_for(config),
            subscribers=tables.subscriber_view(partition),
            population=tables.population_view(partition),
            signals=settings.groups,
        )
        return engine if ported is None else ported.attach(engine)

    return make


def max_poll_records(settings: Settings) -> int:
    """Records per fetch handed to the worker: a batch, but at most a sixth of the
    reorder's limit per input partition, so that the records a held-back partition took
    in its last fetch fit the other half of the limit (``stream.service.ordering``).

    >>> from stream.settings import Settings
    >>> max_poll_records(Settings()), max_poll_records(Settings(order_max_held=6000))
    (5000, 250)
    """
    share = settings.order_max_held // (2 * 3 * settings.partitions)
    return max(1, min(max(settings.batch_size, 500), share))


def _table_manager(settings: Settings) -> dict[str, Any]:
    """On RocksDB, Faust's table manager with the bulk changelog restore."""
    from stream.service.faust_internals.rocksdb_store import is_rocksdb

    if not is_rocksdb(settings.store):
        return {}
    from stream.service.faust_internals.bulk_restore import BulkTableManager

    return {"TableManager": BulkTableManager}


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    engine_factory: Callable[[StateTables], Callable[[int], EngineLike]] | None = None,
) -> ChurnwatchApp:
    """The worker's Faust app. ``settings.bootstrap`` must name a running broker."""
    if not settings.bootstrap:
        raise ValueError("create_app needs settings.bootstrap (start the embedded broker first)")
    codecs.register()
    registry = registry if registry is not None else CollectorRegistry()
    app = ChurnwatchApp(
        settings.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in settings.bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=settings.datadir,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_disable_leader=True,
        table_standby_replicas=settings.standby_replicas,
        key_serializer=codecs.RAW,
        value_serializer=codecs.ORJSON,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        # Static membership (settings.instance_id): a restart takes its partitions back.
        consumer_group_instance_id=settings.instance_id or None,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_request_timeout=settings.request_timeout_s,
        broker_commit_interval=settings.commit_interval_s,
        broker_max_poll_records=max_poll_records(settings),
        # A batch's state records (two changelog topics, every partition) then mostly
        # leave in one produce request, which narrows the window for a half-written batch.
        producer_linger=0.01,
        producer_max_request_size=4 * 1024 * 1024,
        stream_buffer_maxsize=max(4 * settings.batch_size, 4096),
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        **_table_manager(settings),
    )
    metrics = Metrics(registry)
    install_faust_sensor(app, registry)
    topics = declare(app, settings)
    tables = StateTables.on_app(app, settings.partitions)
    engine_config = settings.engine_config()
    ported = PortedFeed(settings, engine_config.ported_numbers)
    make_factory = engine_factory or (lambda t: default_engine_factory(settings, t, ported))
    processor = BatchProcessor(
        tables, topics.kinds, make_factory(tables), metrics=metrics,
        calibration=settings.calibration, partitions=settings.partitions,
        validator=Validator(max_past=timedelta(days=settings.event_max_past_days)),
        deadletter_max_bytes=settings.deadletter_max_bytes, max_held=settings.order_max_held,
        sweep_alone_from=settings.sweep_alone_from)
    groups = None
    if settings.groups:
        from detectors.group import GroupConfig
        from stream.service.group_stage import declare as declare_groups

        # The engines' clock: a group's days are its members' days.
        groups = declare_groups(app, settings, alerts_topic=topics.alerts, metrics=metrics,
                                config=GroupConfig().on_clock_of(engine_config))
        if groups.contexts is not None:
            processor.group_context = groups.contexts.reason
    calibration = None
    if settings.calibration:
        from stream.service.calibration_agent import declare as declare_calibration

        calibration = declare_calibration(app, settings, alerts_topic=topics.alerts,
                                          deadletter_topic=topics.deadletter, metrics=metrics)
    gate = BatchGate("churnwatch-detect")  # closed by ChurnwatchApp.on_stop
    agent, handle = register(app, topics, processor, settings, groups=groups, gate=gate,
                             before_batch=lambda items: ported.sync(newest_written_s(items)))
    app.task(ported.run)  # its consumer is stopped by ChurnwatchApp.on_stop
    work_queue = None
    if settings.web_enabled:
        from stream.service.work_queue_web import declare as declare_work_queue

        work_queue = declare_work_queue(app, settings, alerts_topic=topics.alerts,
                                        deadletter_topic=topics.deadletter, metrics=metrics)
    app.churnwatch = Parts(
        batch_sink=handle,
        batch_topics=frozenset(topics.kinds),
        settings=settings,
        registry=registry,
        metrics=metrics,
        topics=topics,
        tables=tables,
        processor=processor,
        agent=agent,
        groups=groups,
        calibration=calibration,
        gate=gate,
        ported=ported,
        work_queue=work_queue,
    )
    return app
