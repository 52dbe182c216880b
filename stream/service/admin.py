"""Topic administration: create the contract topics on the configured Kafka."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.settings import Settings


class BrokerError(RuntimeError):
    """The broker could not be found, started or reached, or its topics disagree."""


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    replication: int = 1,
    client_kwargs: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (with topic ``configs``, e.g.
    ``{"cleanup.policy": "compact"}``); return the names created.

    An existing topic with fewer partitions than asked is an error (co-partitioning of
    tables with the inputs depends on the counts being equal).
    """
    from kafka.admin import KafkaAdminClient, NewTopic

    wanted = list(dict.fromkeys(names))
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="churnwatch-admin",
        request_timeout_ms=int(timeout_s * 1000),
        **(client_kwargs or {}),
    )
    try:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            admin.create_topics(
                [NewTopic(n, num_partitions=partitions, replication_factor=replication,
                          topic_configs=dict(configs or {}))
                 for n in missing],
                timeout_ms=int(timeout_s * 1000),
            )
        present = [n for n in wanted if n in existing]
        if present:
            described = admin.describe_topics(present)
            for topic in described:
                count = len(topic.get("partitions") or [])
                if count and count != partitions:
                    name = topic.get("name") or topic.get("topic")
                    raise BrokerError(
                        f"topic {name} has {count} partitions, settings say {partitions} "
                        "(CHURNWATCH_PARTITIONS)"
                    )
        return missing
    finally:
        admin.close()


def ensure_topics(settings: Settings) -> list[str]:
    """Create the contract topics of ``settings`` on its (embedded or external) Kafka.

    With calibration on, also ``churn.outcomes``, the internal ``churn.calibration`` and the
    calibration table's changelog, each with ONE partition (one model: docs/outcomes.md).
    The ported-numbers registry is compacted (latest operator per number); with the web
    server on (the work queue), ``churn.outcomes`` is created too (one partition).
    """
    if not settings.bootstrap:
        raise BrokerError("ensure_topics needs a bootstrap address (start the broker first)")
    created = create_topics(
        settings.bootstrap,
        (*settings.all_topics, *settings.group_topics),
        settings.partitions,
        settings.replication,
        client_kwargs=settings.kafka_client_kwargs(),
    )
    from stream.service.ported_feed import ported_topic_name

    created += create_topics(
        settings.bootstrap, [ported_topic_name(settings)], settings.partitions,
        settings.replication, client_kwargs=settings.kafka_client_kwargs(),
        configs={"cleanup.policy": "compact"})
    if settings.web_enabled and not settings.calibration:
        created += create_topics(settings.bootstrap, [settings.topic_outcomes], 1,
                                 settings.replication,
                                 client_kwargs=settings.kafka_client_kwargs())
    if settings.calibration:
        from stream.service.calibration_stage import changelog_topic_name

        created += create_topics(
            settings.bootstrap,
            (*settings.calibration_topics, changelog_topic_name(settings)),
            1,
            settings.replication,
            client_kwargs=settings.kafka_client_kwargs(),
        )
    return created
