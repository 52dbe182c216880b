"""`churnwatch bench`: throughput, latency, state size and recovery, measured in one run.

Every figure is measured here, on the embedded broker unless ``KAFKA_BOOTSTRAP`` names a
Kafka, over the same pre-produced messages:

``raw``       a bare aiokafka consumer + orjson decode (the client's limit);
``ceiling``   a bare Faust agent that only counts (Faust's per-message limit);
``pipeline``  the full worker (validation, detectors, tables, alerts) from a fresh
              consumer group, with its ratio to both;
``catchup``   one worker draining the whole world as a backlog: events/s, and the events
              released out of event-time order (forced by the reorder's limit, or late);
``latency``   produce-to-alert p50/p99 at half the pipeline's capacity;
``recovery``  a starting worker restoring ``--recovery-keys`` states from the changelog;
``scaling``   the same with two workers sharing the partitions;
``replay``    ``churnwatch replay`` events/s on one core;
``state``     bytes per subscriber in memory and serialized, every model in place;
``scale``     (on request) ``--subscribers`` keys on one RocksDB worker: restore times,
              events/s, RSS, disk (:mod:`stream.tools.bench_scale`).

Rates are taken from the first message to the last, so consumer-group joins are not
counted. Each figure is the median of ``--repeat`` runs; the machine is noisy, so the
ratios (measured in the same run) are what count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from stream.tools.processes import events_consumed, metric_sum, stop_process

TARGETS = {
    "pipeline_vs_ceiling": 0.5,
    "pipeline_events_per_s": 20_000,
    "replay_events_per_s": 50_000,
    "state_bytes_serialized": 512,
    "state_bytes_memory": 2048,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribers", type=int, default=1000, help="world size")
    parser.add_argument("--days", type=int, default=30, help="days simulated")
    parser.add_argument("--seed", type=int, default=3, help="simulation seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--only",
                        default="raw,ceiling,pipeline,catchup,scaling,latency,recovery,replay,"
                                "state",
                        help="comma-separated figures to measure")
    parser.add_argument("--recovery-keys", type=int, default=200_000,
                        help="subscriber states to restore in the recovery figure")
    parser.add_argument("--scale-events", type=int, default=200_000,
                        help="calls processed in the scale figure")
    parser.add_argument("--scale-kill-in-day-close", action="store_true",
                        help="scale figure: also time a restart after a kill -9 in a day "
                             "close's batch (one partition's sweep more)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the world, the workers' logs and data directories here "
                             "(default: a temporary directory, removed at the end)")


# -- the figures ---------------------------------------------------------------------------


async def _raw_rate(settings: Any, topics: list[str], expected: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.bootstrap, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
        fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        n, first = 0, 0.0
        while n < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                if n == 0:
                    first = time.perf_counter()
                for record in records:
                    orjson.loads(record.value)
                n += len(records)
        return n / (time.perf_counter() - first)
    finally:
        await consumer.stop()


def raw_rate(settings: Any, topics: list[str], expected: int) -> float:
    return asyncio.run(_raw_rate(settings, topics, expected))


def ceiling_rate(settings: Any, topics: list[str], expected: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "stream.tools.bench_ceiling", settings.bootstrap, str(expected),
         *topics],
        capture_output=True, timeout=600, text=True,
    )
    found = re.search(r'\{"events".*?\}', out.stdout + out.stderr)
    if not found:
        raise RuntimeError(f"the Faust ceiling run printed no figure:\n{out.stderr[-2000:]}")
    return float(orjson.loads(found.group(0))["rate"])


def pipeline_rate(settings: Any, prefix: str, expected: int, workdir: Path,
                  workers: int = 1, order: dict[str, float] | None = None) -> float:
    """Events/s of ``workers`` worker processes draining the topics from a fresh group.

    ``order``: filled with the event-time order figures of the run (events released before
    their order settled, events out of order) when the topics are drained."""
    from stream.tools.broker import free_port

    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    procs, ports = [], []
    for i in range(workers):
        port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP=settings.bootstrap, CHURNWATCH_APP_ID=app_id,
                   CHURNWATCH_TOPIC_PREFIX=prefix, CHURNWATCH_METRICS_PORT=str(port),
                   CHURNWATCH_DATADIR=str(workdir / f"{app_id}-{i}"))
        log = (workdir / f"{app_id}-{i}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
        ports.append(port)
    try:
        # The clock starts when a worker has partitions (the group join is not per-message
        # cost) or has consumed something, whichever is seen first.
        first: float | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sum(events_consumed(p) or 0.0 for p in ports)
            now = time.perf_counter()
            if first is None and (done > 0 or any(
                    (metric_sum(p, "churnwatch_partitions_assigned") or 0) > 0 for p in ports)):
                first = now
            if done >= expected and first is not None:
                if order is not None:
                    order.update({name: sum(metric_sum(p, f"churnwatch_events_{name}_total")
                                            or 0.0 for p in ports)
                                  for name in ("forced", "out_of_order")})
                return done / max(now - first, 1e-9)
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a bench worker exited; see {workdir}")
            time.sleep(0.05)
        raise RuntimeError("the pipeline did not drain the topics in 10 minutes")
    finally:
        for p in procs:
            stop_process(p)


def latency(settings: Any, world: Path, rate: float, workdir: Path) -> dict[str, float]:
    """Produce-to-alert latency at a fixed offered load (events/s), one worker.

    Each opening or escalating alert is matched to the input event that triggered it
    (same subscriber, same event time); latency is the alert's arrival on the alert topic
    minus the moment that event was handed to the producer.
    """
    import threading
    from datetime import datetime

    from stream.service.admin import create_topics
    from stream.tools.alerts_tail import read_alerts
    from stream.tools.broker import free_port
    from stream.tools.produce import count_lines, produce_directory

    prefix = f"lat-{uuid.uuid4().hex[:6]}."
    settings = settings.replace(topic_prefix=prefix)
    create_topics(settings.bootstrap, (*settings.all_topics, *settings.group_topics),
                  settings.partitions, client_kwargs=settings.kafka_client_kwargs())
    total = count_lines(world)
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=settings.bootstrap, CHURNWATCH_TOPIC_PREFIX=prefix,
               CHURNWATCH_APP_ID=f"lat-{uuid.uuid4().hex[:8]}",
               CHURNWATCH_METRICS_PORT=str(port), CHURNWATCH_DATADIR=str(workdir / prefix))
    worker = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env,
                              stdout=(workdir / f"{prefix}log").open("wb"),
                              stderr=subprocess.STDOUT)
    sent: dict[tuple[str, float], float] = {}
    sent_wall: dict[tuple[str, float], float] = {}
    arrived: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def on_send(kind: str, key: bytes | None, value: bytes) -> None:
        if kind != "subscribers" and key is not None:
            ts = orjson.loads(value).get("ts")
            sent[(key.decode(), datetime.fromisoformat(ts).timestamp())] = time.perf_counter()
            sent_wall[(key.decode(), datetime.fromisoformat(ts).timestamp())] = time.time()

    def collect() -> None:
        for alert in read_alerts(settings, True, 0.0, poll_s=0.05):
            arrived.append((time.perf_counter(), alert))
            if stop.is_set():
                return

    try:
        deadline = time.monotonic() + 60
        while (metric_sum(port, "churnwatch_partitions_assigned") or 0) == 0:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the latency worker did not start; see {workdir}")
            time.sleep(0.1)
        threading.Thread(target=collect, daemon=True).start()
        produce_directory(world, settings, rate=rate, on_send=on_send)
        deadline = time.monotonic() + 120
        while (events_consumed(port) or 0) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
    finally:
        stop_process(worker)
    waits = []
    made = []  # produced -> alert made (emitted_at): the worker's share of the latency
    for when, alert in arrived:
        if alert.get("status") in ("resolved", "closed") or alert.get("kind") != "subscriber":
            continue
        key = (alert["subscriber_id"], datetime.fromisoformat(alert["ts"]).timestamp())
        if key in sent:
            waits.append(when - sent[key])
            made.append(datetime.fromisoformat(alert["emitted_at"]).timestamp() - sent_wall[key])
    if not waits:
        raise RuntimeError("no alert could be matched to its triggering event")
    waits.sort()
    return {"alerts": len(waits), "offered_events_per_s": rate,
            "p50_s": statistics.median(waits), "p99_s": waits[int(0.99 * (len(waits) - 1))],
            "made_p50_s": statistics.median(made), "made_max_s": max(made)}


def recovery(settings: Any, world: Path, workdir: Path, keys: int) -> dict[str, Any]:
    """Time for a starting worker to restore ``keys`` subscribers' state from the changelog.

    The changelog is filled with real subscriber states (from a replay of ``world``) under
    ``keys`` distinct keys, each on the partition its events would use. Then a worker with
    that app id starts; it processes input only once recovery is complete, so the time to
    its first processed event (one profile sent at start) is the time to be back in
    service; the group join (about half the session timeout) is reported beside it. The
    worker's table must then hold every key.
    """
    from kafka import KafkaProducer

    from stream.contracts.partitioning import partition_of
    from stream.service.admin import create_topics
    from stream.tools.broker import free_port
    from stream.tools.replay import replay_directory

    stores: list[dict[str, Any]] = []
    for _ in replay_directory(world, stores=stores):
        pass
    samples = [orjson.dumps(v) for store in stores for v in store.values()]
    app_id = f"rec-{uuid.uuid4().hex[:8]}"
    prefix = f"{app_id}."
    settings = settings.replace(topic_prefix=prefix, app_id=app_id)
    changelog = f"{app_id}-subscribers-changelog"
    create_topics(settings.bootstrap, [*settings.all_topics, changelog], settings.partitions,
                  client_kwargs=settings.kafka_client_kwargs())
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap.split(","), acks=1,
                             linger_ms=20, batch_size=512 * 1024,
                             **settings.kafka_client_kwargs())
    for i in range(keys):
        key = f"R{i:08d}"
        producer.send(changelog, key=key.encode(), value=samples[i % len(samples)],
                      partition=partition_of(key, settings.partitions))
    producer.flush()
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=settings.bootstrap, CHURNWATCH_TOPIC_PREFIX=prefix,
               CHURNWATCH_APP_ID=app_id, CHURNWATCH_METRICS_PORT=str(port),
               CHURNWATCH_DATADIR=str(workdir / app_id))
    started = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "stream", "worker", "--loglevel", "info"],
                              env=env, stdout=(workdir / f"{app_id}.log").open("wb"),
                              stderr=subprocess.STDOUT)
    # Probe events for a key already in the changelog (the table size must stay ``keys``),
    # one on each input topic so the worker's event-time reorder holds none of them back.
    probe = "R00000000"
    ts = "2026-01-05T09:00:00+08:00"
    for topic, event in (
        (settings.topic_subscribers, {"subscriber_id": probe, "msisdn": "13800000000",
                                      "account_id": None, "segment": "consumer"}),
        (settings.topic_calls, {"event_id": "probe-c", "ts": ts, "subscriber_id": probe,
                                "direction": "out", "other_party": "13800000001",
                                "duration_s": 60}),
        (settings.topic_billing, {"event_id": "probe-b", "ts": ts, "subscriber_id": probe,
                                  "kind": "charge", "amount": 1.0}),
    ):
        producer.send(topic, key=probe.encode(), value=orjson.dumps(event))
    producer.flush()
    producer.close()
    timeout_s = 300.0
    try:
        assigned = None
        deadline = time.monotonic() + timeout_s
        while (events_consumed(port) or 0) < 1:
            if worker.poll() is not None:
                log = (workdir / f"{app_id}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the recovering worker exited ({worker.poll()}):\n{log}")
            if time.monotonic() > deadline:  # a figure too: not back in service in time
                return {"keys": keys, "seconds_to_ready": None, "timed_out_s": timeout_s,
                        "keys_restored": metric_sum(port, _SUBSCRIBER_KEYS) or 0,
                        "events_held": metric_sum(port, "churnwatch_events_held"),
                        "complete": False}
            if assigned is None and (metric_sum(port, "churnwatch_partitions_assigned")
                                     or 0) > 0:
                assigned = time.perf_counter()
            time.sleep(0.05)
        ready = time.perf_counter()
        restored = metric_sum(port, _SUBSCRIBER_KEYS)
    finally:
        stop_process(worker)
    return {"keys": keys, "seconds_to_ready": ready - started,
            "seconds_after_assignment": ready - (assigned or started),
            "keys_restored": restored or 0, "complete": restored == keys}


_SUBSCRIBER_KEYS = 'churnwatch_table_keys{table="subscribers"}'


def replay_rate(world: Path) -> tuple[float, int]:
    from collections import Counter

    from stream.tools.replay import replay_directory

    counts: Counter[str] = Counter()
    started = time.perf_counter()
    for _ in replay_directory(world, counters=counts):
        pass
    elapsed = time.perf_counter() - started
    read = sum(v for k, v in counts.items() if k.startswith("read."))
    return read / elapsed, read


def state_sizes(world: Path) -> dict[str, float]:
    """Mean bytes per subscriber state: serialized (orjson) and in memory
    (:func:`detectors.state.deep_sizeof`, which leaves out what all states share)."""
    from stream.tools.replay import replay_directory

    stores: list[dict[str, Any]] = []
    for _ in replay_directory(world, stores=stores):
        pass
    states = [state for store in stores for state in store.values()]
    serialized = [len(orjson.dumps(s)) for s in states]
    from detectors.state import deep_sizeof

    memory = [deep_sizeof(s) for s in states]
    return {
        "subscribers": len(states),
        "serialized_mean": statistics.fmean(serialized),
        "serialized_max": max(serialized),
        "memory_mean": statistics.fmean(memory),
        "memory_max": max(memory),
    }


# -- the run -------------------------------------------------------------------------------


def _median(fn: Callable[[], float], repeat: int) -> tuple[float, list[float]]:
    runs = [fn() for _ in range(repeat)]
    return statistics.median(runs), runs


def run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from stream.service.admin import create_topics
    from stream.settings import Settings
    from stream.tools.broker import EmbeddedBroker
    from stream.tools.produce import count_lines, produce_directory

    only = set(args.only.split(","))
    figures: dict[str, Any] = {"world": {"subscribers": args.subscribers, "days": args.days,
                                         "seed": args.seed}, "repeat": args.repeat}
    settings = Settings.from_env()
    with ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-bench-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        world = workdir / "world"
        # The scale figure writes its subscribers' states directly: a small world is
        # enough for sample states.
        simulated = args.subscribers if only - {"scale"} else min(args.subscribers, 1000)
        _say(f"simulating {simulated} x {args.days} days")
        subprocess.run([sys.executable, "-m", "stream", "simulate", "--subscribers",
                        str(simulated), "--days", str(args.days), "--seed",
                        str(args.seed), "--out", str(world)], check=True,
                       stderr=subprocess.DEVNULL)
        total = count_lines(world)
        figures["events"] = total

        if only & {"replay"}:
            rate, _ = _median(lambda: replay_rate(world)[0], args.repeat)
            figures["replay_events_per_s"] = rate
            _say(f"replay: {rate:,.0f} events/s")
        if only & {"state"}:
            figures["state"] = state_sizes(world)
            _say(f"state: {figures['state']}")

        if only & {"raw", "ceiling", "pipeline", "catchup", "scaling", "latency", "recovery",
                   "scale"}:
            if settings.embedded:
                broker = stack.enter_context(EmbeddedBroker())
                settings = settings.with_bootstrap(broker.bootstrap)
            prefix = f"bench-{uuid.uuid4().hex[:6]}."
            settings = settings.replace(topic_prefix=prefix)
            create_topics(settings.bootstrap, (*settings.all_topics, *settings.group_topics),
                          settings.partitions, client_kwargs=settings.kafka_client_kwargs())
            if only - {"scale"}:
                _say(f"producing {total:,} events to {settings.bootstrap}")
                produce_directory(world, settings)
            if "scale" in only:
                from stream.tools.bench_scale import scale

                _say(f"scale: {args.subscribers:,} subscribers on one RocksDB worker")
                figures["scale"] = scale(settings, world, workdir, args.subscribers,
                                         args.scale_events, args.scale_kill_in_day_close)
                _say(f"scale: {figures['scale']}")
            topics = list(settings.input_topics)
            if "raw" in only:
                rate, runs = _median(lambda: raw_rate(settings, topics, total), args.repeat)
                figures["raw_events_per_s"] = rate
                _say(f"raw aiokafka+orjson: {rate:,.0f} events/s {runs}")
            if "ceiling" in only:
                rate, runs = _median(lambda: ceiling_rate(settings, topics, total),
                                     args.repeat)
                figures["ceiling_events_per_s"] = rate
                _say(f"bare Faust agent: {rate:,.0f} events/s {runs}")
            if "pipeline" in only:
                rate, runs = _median(
                    lambda: pipeline_rate(settings, prefix, total, workdir), args.repeat)
                figures["pipeline_events_per_s"] = rate
                _say(f"pipeline (1 worker): {rate:,.0f} events/s {runs}")
            if "catchup" in only:
                # The whole world waits in the topics before the worker starts: the
                # reorder must stay within its limit without releasing out of order.
                order: dict[str, float] = {}
                rate = pipeline_rate(settings, prefix, total, workdir, order=order)
                figures["catchup"] = {"events_per_s": rate, **order}
                _say(f"catch-up (1 worker, {total:,} events waiting): {rate:,.0f} events/s, "
                     f"{order['forced']:.0f} forced, {order['out_of_order']:.0f} out of order")
            if "latency" in only:
                offered = 0.5 * figures.get("pipeline_events_per_s", 4000.0)
                figures["latency"] = latency(settings, world, offered, workdir)
                _say(f"latency: {figures['latency']}")
            if "recovery" in only:
                figures["recovery"] = recovery(settings, world, workdir, args.recovery_keys)
                _say(f"recovery: {figures['recovery']}")
            if "scaling" in only:
                rate, runs = _median(
                    lambda: pipeline_rate(settings, prefix, total, workdir, workers=2),
                    args.repeat)
                figures["pipeline_2_workers_events_per_s"] = rate
                _say(f"pipeline (2 workers): {rate:,.0f} events/s {runs}")
    _print_table(figures)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _print_table(f: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    raw, ceiling, pipe = (f.get(k) for k in ("raw_events_per_s", "ceiling_events_per_s",
                                             "pipeline_events_per_s"))
    if raw:
        rows.append(("raw aiokafka + orjson", f"{raw:,.0f} ev/s", ""))
    if ceiling:
        rows.append(("bare Faust agent (ceiling)", f"{ceiling:,.0f} ev/s",
                     f"{ceiling / raw:.3f} of raw" if raw else ""))
    if pipe:
        ratio = f"{pipe / ceiling:.2f} of ceiling (target >= 0.5)" if ceiling else ""
        rows.append(("pipeline, 1 worker", f"{pipe:,.0f} ev/s (target >= 20,000)", ratio))
    catchup = f.get("catchup")
    if catchup:
        rows.append(("catch-up on a backlog, 1 worker", f"{catchup['events_per_s']:,.0f} ev/s",
                     f"{catchup['forced']:.0f} forced, {catchup['out_of_order']:.0f} out of "
                     "order (target 0)"))
    lat = f.get("latency")
    if lat:
        rows.append(("produce-to-alert latency", f"p50 {lat['p50_s'] * 1000:,.0f} ms, "
                     f"p99 {lat['p99_s'] * 1000:,.0f} ms ({lat['alerts']} alerts)",
                     f"at {lat['offered_events_per_s']:,.0f} ev/s offered; target p99 <= 1 s"))
    rec = f.get("recovery")
    if rec and rec["seconds_to_ready"] is None:
        rows.append(("recovery from changelog",
                     f"{rec['keys']:,} keys: not back within {rec['timed_out_s']:.0f} s",
                     "target <= 60 s: MISSED"))
    elif rec:
        rows.append(("recovery from changelog",
                     f"{rec['keys']:,} keys in {rec['seconds_to_ready']:.1f} s "
                     f"({rec['seconds_after_assignment']:.1f} s after assignment)",
                     f"{'every key back' if rec['complete'] else 'KEYS MISSING'}; "
                     "target <= 60 s"))
    two = f.get("pipeline_2_workers_events_per_s")
    if two:
        rows.append(("pipeline, 2 workers", f"{two:,.0f} ev/s",
                     f"{two / pipe:.2f}x one worker (2 cores shared with the broker)"
                     if pipe else ""))
    if f.get("replay_events_per_s"):
        rows.append(("replay, one core", f"{f['replay_events_per_s']:,.0f} ev/s",
                     "target >= 50,000"))
    if f.get("state"):
        s = f["state"]
        rows.append(("state serialized / subscriber",
                     f"{s['serialized_mean']:.0f} B mean, {s['serialized_max']} B max",
                     "target <= 512 B"))
        rows.append(("state in memory / subscriber",
                     f"{s['memory_mean']:.0f} B mean, {s['memory_max']} B max",
                     "target <= 2 KiB"))
    if f.get("scale"):
        from stream.tools.bench_scale import table_rows

        rows.extend(table_rows(f["scale"]))
    print(f"churnwatch bench: {f['events']:,} events, world {f['world']}, "
          f"median of {f['repeat']}")
    for name, value, note in rows:
        print(f"  {name:<32} {value:<40} {note}")
