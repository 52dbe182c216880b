"""A worker process for the integration tests: ``python -m tests.integration.worker_proc``.

Settings come from the environment like ``churnwatch worker``. Test-only extras:
``TEST_FAKE_ENGINE=1`` uses :mod:`tests.integration.fake_engine` instead of the detectors;
``TEST_DUMP`` names a JSON file the worker rewrites every 0.3 s with its table contents,
its assigned input partitions and whether recovery is done.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson


def main() -> int:
    import faust

    from stream.service.app import create_app
    from stream.service.metrics import serve
    from stream.settings import Settings

    settings = Settings.from_env()
    factory = None
    if os.environ.get("TEST_FAKE_ENGINE") == "1":
        from tests.integration.fake_engine import factory
    app = create_app(settings, engine_factory=factory)
    parts = app.churnwatch
    dump = os.environ.get("TEST_DUMP")
    if dump:
        path = Path(dump)

        peaks: dict[str, int] = {}

        def held_peak_by_topic() -> dict[str, int]:
            # Sampled with the dump: which input topic's events wait for the others.
            now: dict[str, int] = {}
            for (topic, _), n in parts.processor.reorder.held_by.items():
                now[topic] = now.get(topic, 0) + n
            for topic, n in now.items():
                peaks[topic] = max(n, peaks.get(topic, 0))
            return dict(peaks)

        @app.timer(0.3)
        async def write_dump() -> None:
            tables = parts.tables
            assigned = sorted(
                tp.partition for tp in app.consumer.assignment()
                if tp.topic in parts.topics.kinds
            )
            snapshot = {
                "recovered": not app.in_recovery and app.rebalancing is False,
                # Changelog records read by recovery (both tables): a worker restarted on
                # its local RocksDB state reads only the tail.
                "restored": tables.subscriber_index.restored + tables.population_index.restored,
                # Changelog records read by the bulk restore before Faust's recovery
                # (RocksDB; stream.service.faust_internals.bulk_restore).
                "bulk_restored": getattr(app.tables.recovery, "bulk_restored", 0),
                # Subscribers the engines' day sweeps walk (indexed from the changelog, or
                # read from a local store when first needed: peeked at, not read, here).
                "indexed": sum(len(tables.subscriber_index.peek_keys(p)) for p in
                               {*tables.subscriber_index.keys, *tables.subscriber_index.unread}),
                # Partitions whose subscribers are still to be read from the local store.
                "unread": sorted(tables.subscriber_index.unread),
                "assigned": assigned,
                "subscribers": dict(tables.subscribers.data),
                # Per input topic-partition: the offset below which every message is in
                # the state (the processor's applied marks).
                "applied": {f"{t}/{p}": mark for (t, p), mark in parts.processor.applied.items()},
                "population": dict(tables.population.data),
                # The calibration stage's table (learner keys, stage state, held items).
                "calibration": dict(parts.calibration.table.data)
                if parts.calibration is not None else None,
                # Diagnostic (README "Rebalances: two races with a seek"): Faust's ack
                # bookkeeping per input partition: committed offset, the lowest acked
                # offsets, how many wait.
                "faust_acks": {
                    f"{tp.topic}/{tp.partition}": [
                        app.consumer._committed_offset.get(tp),
                        sorted(app.consumer._acked.get(tp) or [])[:8],
                        len(app.consumer._acked.get(tp) or ()),
                        str(app.consumer._gap.get(tp)),
                    ] for tp in app.consumer.assignment() if tp.topic in parts.topics.kinds},
                # Records fetched before a rebalance's seek, dropped
                # (stream.service.faust_internals.transport).
                "stale_dropped": app.consumer.stale_dropped,
                # Events processed out of replay's order (stream.service.ordering).
                "out_of_order": parts.processor.reorder.out_of_order,
                # Released early (the reorder's limit), and the most held at once.
                "forced": parts.processor.reorder.forced,
                "held_peak": parts.processor.reorder.peak,
                "held_peak_by_topic": held_peak_by_topic(),
                "events": sum(
                    s.value
                    for m in parts.metrics.events.collect()
                    for s in m.samples
                    if s.name.endswith("_total")
                ),
                "accepted": sum(
                    s.value
                    for m in parts.metrics.events.collect()
                    for s in m.samples
                    if s.name.endswith("_total") and s.labels.get("outcome") == "accepted"
                ),
            }
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(snapshot))
            tmp.replace(path)

    server = serve(parts.registry, settings.metrics_host, settings.metrics_port) if (
        settings.metrics_port
    ) else None
    worker = faust.Worker(app, loglevel=os.environ.get("TEST_LOGLEVEL", "WARNING"),
                          quiet=True, redirect_stdouts=False)
    try:
        if os.environ.get("TEST_PROFILE"):  # a cProfile of the main thread, for benchmarks
            import cProfile

            cProfile.runctx("worker.execute_from_commandline()", globals(), locals(),
                            os.environ["TEST_PROFILE"])
        else:
            worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    finally:
        if server is not None:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
