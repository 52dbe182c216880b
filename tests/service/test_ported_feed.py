"""The ported-numbers registry: live updates of the engines, the wait before a batch, and
the compacted topic ``ensure_topics`` creates."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest


@pytest.mark.parametrize("number", ["13912345678", "+8613912345678"])
def test_ported_registry_updates_live_engines(number: str) -> None:
    from detectors import Engine, EngineConfig
    from stream.service.ported_feed import PortedFeed

    feed = PortedFeed(settings=None, initial={"13500000000": "China Unicom"})
    engine = feed.attach(Engine(feed.config_for(EngineConfig())))
    assert engine.lookup.operator("13500000000") == "China Unicom"
    assert engine.lookup.operator("13912345678") == "China Mobile"
    assert engine._operator("13912345678")[0] is False  # cached: on our network
    record = orjson.dumps({"number": number, "operator": "China Telecom"})
    assert feed.apply([(number.encode(), record)]) == 1
    assert engine.lookup.operator("13912345678") == "China Telecom"
    assert engine._operator("13912345678")[0] is True  # the cache was dropped
    assert feed.apply([(number.encode(), record)]) == 0  # the same again: no change
    assert feed.apply([(number.encode(), None)]) == 1  # tombstone: the prefix again
    assert engine.lookup.operator("13912345678") == "China Mobile"
    assert feed.apply([(b"x", b"not json"), (None, b"{}")]) == 0
    # A new engine starts from what the registry holds now.
    fresh = Engine(feed.config_for(EngineConfig()))
    assert fresh.config.ported_numbers == {"13500000000": "China Unicom"}


def test_sync_waits_for_the_registry_and_gives_up() -> None:
    from stream.service import ported_feed
    from stream.service.ported_feed import PortedFeed, newest_written_s

    feed = PortedFeed(settings=None)

    class Msg:
        def __init__(self, ts: float) -> None:
            self.timestamp = ts

    assert newest_written_s([Msg(1_700_000_000_000), Msg(1_700_000_001.5)]) == 1_700_000_001.5
    assert asyncio.run(feed.sync(None)) is True

    async def later() -> bool:
        async def catch_up() -> None:
            await asyncio.sleep(0.1)
            feed.complete_as_of = 200.0

        task = asyncio.create_task(catch_up())
        done = await feed.sync(150.0)
        await task
        return done

    assert asyncio.run(later()) is True
    old = ported_feed.SYNC_TIMEOUT_S
    ported_feed.SYNC_TIMEOUT_S = 0.05
    try:
        assert asyncio.run(feed.sync(300.0)) is False
        assert feed.stalled and asyncio.run(feed.sync(400.0)) is False  # no second wait
    finally:
        ported_feed.SYNC_TIMEOUT_S = old


def test_ensure_topics_declares_the_registry_compacted(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka.admin

    from stream.service.admin import ensure_topics
    from stream.settings import Settings

    created: list[Any] = []

    class FakeAdmin:
        def __init__(self, **kwargs: Any) -> None:
            pass

        def list_topics(self) -> list[str]:
            return []

        def create_topics(self, topics: list[Any], timeout_ms: int) -> None:
            created.extend(topics)

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", FakeAdmin)
    ensure_topics(Settings(bootstrap="127.0.0.1:9", topic_prefix="p."))
    configs = {t.name: t.topic_configs for t in created}
    assert configs["p.telecom.ported"] == {"cleanup.policy": "compact"}
    assert configs["p.churn.alerts"] == {}
    assert "p.churn.outcomes" not in configs  # no web server, no calibration: no outcomes
    created.clear()
    ensure_topics(Settings(bootstrap="127.0.0.1:9", topic_prefix="p.", web_enabled=True))
    assert [t.num_partitions for t in created if t.name == "p.churn.outcomes"] == [1]
