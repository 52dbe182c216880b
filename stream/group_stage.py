"""The group stage on Faust: member signals re-keyed by ``group_id``, a group table, group alerts.

The subscriber agent's engines (``Engine(..., signals=True)``) emit member signals; the
subscriber side publishes each one to the internal topic ``<prefix>churn.group-signals``
keyed by its ``group_id`` (:meth:`GroupStage.publish`). Kafka's partitioner then puts all
of a group's signals on one partition, whichever subscriber partitions its members are on,
so groups scale across partitions like subscribers do. The group agent folds them with
:class:`detectors.group.GroupStage` over the ``groups`` table (values: the plain
:class:`~detectors.group.GroupWatch` states, co-partitioned with the signals topic, so a
group's state moves with its partition on a rebalance and is restored from the changelog)
and publishes group alerts to the alert topic, keyed by group (``stream.agents.alert_key``).

``churnwatch replay`` does the same in memory (``replay_directory(..., groups=True)``)
and gives the same alert ids; ``docs/groups.md`` says why the order in which signals of
different subscriber partitions interleave does not change them.

Wiring (the subscriber side is not wired here)::

    from stream.group_stage import declare
    groups = declare(app, settings, alerts_topic=topics.alerts)
    # in the subscriber batch handler, after engine.process(...):
    await groups.publish(engine.drain_signals())
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detectors.group import GroupConfig
from detectors.group import GroupStage as GroupFold
from stream.agents import alert_key
from stream.codecs import ORJSON, RAW

log = logging.getLogger(__name__)

SIGNALS_TOPIC = "churn.group-signals"
GROUPS_TABLE = "groups"
AGENT_NAME = "churnwatch-groups"


def signals_topic_name(settings: Any) -> str:
    """``<prefix>churn.group-signals``."""
    return str(settings.topic_prefix) + SIGNALS_TOPIC


@dataclass
class GroupStage:
    """What :func:`declare` put on the app."""

    signals_topic: Any  #: the internal topic of member signals, keyed by group_id
    table: Any  #: group_id -> GroupWatch state (plus one ``__stage__/<p>`` key a partition)
    agent: Any  #: the Faust agent folding signals into the table
    alerts_topic: Any  #: where group alerts go
    config: GroupConfig = field(default_factory=GroupConfig)
    #: one fold per signals partition (they read and write the table: no state of their own)
    folds: dict[int, GroupFold] = field(default_factory=dict)

    def fold(self, partition: int) -> GroupFold:
        fold = self.folds.get(partition)
        if fold is None:
            fold = self.folds[partition] = GroupFold(
                self.config, self.table, meta_key=f"__stage__/{partition}")
        return fold

    async def publish(self, signals: Iterable[dict[str, Any]]) -> list[Any]:
        """Send member signals to the signals topic, keyed by group; the send futures
        (await them, or flush the producer, before committing the input offsets)."""
        futures = []
        for signal in signals:
            gid = signal.get("group_id")
            if gid:
                futures.append(await self.signals_topic.send(key=str(gid).encode(),
                                                             value=signal))
        return futures

    async def handle(self, partition: int, signal: dict[str, Any]) -> list[dict[str, Any]]:
        """Fold one signal of ``partition`` and publish the group alerts it raised."""
        alerts = self.fold(partition).process(signal)
        if alerts:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            for alert in alerts:
                alert["emitted_at"] = stamp
                key = alert_key(alert)
                await self.alerts_topic.send(key=None if key is None else key.encode(),
                                             value=alert)
        return alerts


def declare(app: Any, settings: Any, *, alerts_topic: Any = None,
            config: GroupConfig | None = None) -> GroupStage:
    """Declare the group stage on ``app``: the signals topic, the table, the agent.

    ``alerts_topic`` defaults to a topic of its own on ``settings.topic_alerts`` (the
    worker's :class:`stream.topics.Topics` ``.alerts`` can be passed instead).
    """
    from stream.tables import _table  # the tables' raw-key, orjson-value changelog codec

    common = {
        "partitions": settings.partitions,
        "replicas": settings.replication,
        "key_type": bytes,
        "key_serializer": RAW,
    }
    signals = app.topic(signals_topic_name(settings), value_serializer=ORJSON,
                        internal=True, **common)
    if alerts_topic is None:
        alerts_topic = app.topic(settings.topic_alerts, value_serializer=ORJSON, **common)
    table = _table(app, GROUPS_TABLE, partitions=settings.partitions, key_type=str,
                   help="Group state per group_id (detectors.group.GroupWatch states).")
    stage = GroupStage(signals_topic=signals, table=table, agent=None,
                       alerts_topic=alerts_topic, config=config or GroupConfig())

    async def fold_signals(stream: Any) -> None:
        # One signal at a time: a few per group per day, far fewer than input events.
        # The table write happens while the signal is the current event, so it lands in
        # the changelog partition of the signal's partition (co-partitioned).
        async for event in stream.events():
            value = event.value
            if not isinstance(value, dict) or not value.get("group_id"):
                log.warning("group stage: ignored a signal without a group_id")
                continue
            try:
                await stage.handle(event.message.partition, value)
            except Exception:  # a model bug must not stop the partition: log and go on
                log.exception("group stage failed on partition %d offset %d",
                              event.message.partition, event.message.offset)

    stage.agent = app.agent(signals, name=AGENT_NAME, concurrency=1)(fold_signals)
    return stage
