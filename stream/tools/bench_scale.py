"""The ``scale`` figure of ``churnwatch bench``: one worker holding many subscribers on RocksDB.

How the state is made: ``--subscribers`` keys ``R00000000``... are written straight to the
subscribers table's changelog, each on the partition its events would use, each with a
real detector state (taken round-robin from a replay of the simulated world). No world of
that size is simulated; the worker restores the changelog like any other. Each copy of the
sample world keeps its groups to itself (the group id in a copied profile carries the copy's
number), so groups have the simulated world's sizes: shared by every copy, a world's 18
groups would have 55,000 members each at a million keys, and the group stage, whose work
per signal grows with its group, would be measured instead.

Then, on one worker process with ``CHURNWATCH_STORE=rocksdb://``:

1. **full restore, first start**: an empty data directory; time from the process start to
   its first processed input event, a single call waiting on the topic (the worker
   consumes input only after recovery);
2. **events/s** over ``--scale-events`` calls of subscribers drawn at random from all keys,
   from their first send to the last processed (the working set is the whole table; the
   worker keeps only a small RocksDB block cache in memory, see
   :mod:`stream.service.faust_internals.rocksdb_store`). The calls cover the day after the
   states' last: its first hour's end closes a day, and the day's sweep over every
   subscriber is part of the figure;
3. **RSS**: the worker's resident and peak resident memory (``/proc/<pid>/status``);
4. **restart on local state**, as an operator's worker meets it: ``kill -9`` once the
   last batch's state is written (``churnwatch_batch_events_sum``: the batch's
   write-ahead copy and records are on the broker), then the same data directory; time
   to the first processed event, and after the group assignment (before it: the process
   start and the group join, which waits for the dead member's session unless the
   workers have static membership, ``CHURNWATCH_INSTANCE_ID`` in the bench's
   environment);
5. **restart after SIGTERM** (a rolling deploy): the worker ends its batch and leaves the
   group, then the same data directory;
6. with ``--scale-kill-in-day-close``, **restart after a kill -9 in a day close**: a call
   after the next day's close sweeps its partition, and the worker is killed as soon as
   it is processed, while its batch sends the sweep's write-ahead copy and records; the
   restarted worker's log lines about what it read and put back are kept with the figure;
7. **full restore after kill -9**: ``kill -9``, then an empty data directory;
8. **disk**: bytes per subscriber of the data directory (every table, RocksDB's files).

Each timed figure carries the machine's one-minute load average at its end.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from stream.tools.processes import events_consumed, metric_sum

TARGETS = {
    "rss_bytes": 2 * 1024**3,
    "restart_local_s": 15.0,
    "full_restore_s": 120.0,
}
READY_TIMEOUT_S = 1800.0
#: How often the worker's /metrics is read while waiting (the figures' resolution).
POLL_S = 0.25


def _say(what: str, figure: Any) -> None:
    # Each phase as it ends: a long run that is cut short still has its figures.
    print(f"bench: scale: {what}: {figure}", file=sys.stderr, flush=True)


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in bytes."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class _Worker:
    """One worker process on RocksDB with a given data directory."""

    def __init__(self, settings: Any, workdir: Path, datadir: str, tag: str) -> None:
        from stream.tools.broker import free_port

        self.port = free_port()
        self.log = workdir / f"{tag}.log"
        env = dict(os.environ, KAFKA_BOOTSTRAP=settings.bootstrap,
                   CHURNWATCH_TOPIC_PREFIX=settings.topic_prefix,
                   CHURNWATCH_APP_ID=settings.app_id, CHURNWATCH_METRICS_PORT=str(self.port),
                   CHURNWATCH_STORE="rocksdb://", CHURNWATCH_DATADIR=str(workdir / datadir),
                   CHURNWATCH_CALIBRATION="false")
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker", "--loglevel", "info"], env=env,
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def wait_consumed(self, n: float, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Seconds from start to ``n`` input events processed, and after assignment."""
        assigned = None
        deadline = time.monotonic() + timeout_s
        while (events_consumed(self.port) or 0) < n:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the scale worker exited ({self.process.poll()}):\n{tail}")
            if time.monotonic() > deadline:
                return {"seconds_to_ready": None, "timed_out_s": timeout_s}
            if assigned is None and (metric_sum(self.port, "churnwatch_partitions_assigned")
                                     or 0) > 0:
                assigned = time.perf_counter()
            # Every scrape renders all metrics in the worker: at 20 a second they took 7%
            # of its time while it restored (profiled), slowing what is measured.
            time.sleep(POLL_S)
        now = time.perf_counter()
        return {"seconds_to_ready": now - self.started,
                "seconds_after_assignment": now - (assigned or self.started),
                **_status(self.process.pid), "load": os.getloadavg()[0],
                "phases_s": _phases(self.log, self.started_wall)}

    def wait_written(self, n: float, timeout_s: float = READY_TIMEOUT_S) -> float | None:
        """Seconds until the batches of ``n`` input events have their state written (the
        write-ahead copy and every per-key record on the broker, then acked); None: not
        within ``timeout_s``. The consumed count runs ahead of it by the batch in hand."""
        started = time.monotonic()
        while (metric_sum(self.port, "churnwatch_batch_events_sum") or 0) < n:
            if self.process.poll() is not None or time.monotonic() - started > timeout_s:
                return None
            time.sleep(POLL_S)
        return time.monotonic() - started

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        from stream.tools.processes import stop_process

        stop_process(self.process)


def _calls(keys: int, n: int, day: date, seed: int, first_id: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sid = f"R{rng.randrange(keys):08d}"
        second = i * 86_000 // max(n, 1)
        hh, mm, ss = second // 3600, second // 60 % 60, second % 60
        ts = f"{day.isoformat()}T{hh:02d}:{mm:02d}:{ss:02d}+08:00"
        out.append((sid, orjson.dumps({
            "event_id": f"scale-{first_id + i}", "ts": ts, "subscriber_id": sid,
            "direction": "out", "other_party": "13800000001", "duration_s": 60})))
    return out


def _call(sid: str, ts: str, event_id: int) -> bytes:
    return orjson.dumps({"event_id": f"scale-{event_id}", "ts": ts, "subscriber_id": sid,
                         "direction": "out", "other_party": "13800000001", "duration_s": 60})


#: Worker log lines that end a phase of a start, by what ended (the first of each).
_PHASES = (("logging", "[^Worker]: Starting..."), ("join_sent", "(Re-)joining group"),
           ("assigned", "Setting newly assigned partitions"), ("recovered", "[^Worker]: Ready"))


def _phases(log: Path, started_wall: float) -> dict[str, float]:
    """Seconds from the process start to each phase's end in the worker's log: the
    interpreter and imports (``logging``), the app's start (``join_sent``), the group join
    (``assigned``; the last assignment, after any second join) and the tables' recovery
    (``recovered``). The rest, to the first processed event, is the first batch."""
    from datetime import datetime

    found: dict[str, float] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        for name, mark in _PHASES:
            if mark in line and (name not in found or name == "assigned"):
                try:
                    at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                except ValueError:
                    continue
                found[name] = round(at - started_wall, 2)
    return found


def _restore_lines(log: Path) -> list[str]:
    """What a worker's log says its recovery read and put back (message text only)."""
    marks = ("bulk restore:", "put back as they were", "restoring the partition")
    return [line.split("] ", 3)[-1].strip() for line in
            log.read_text(errors="replace").splitlines() if any(m in line for m in marks)]


def _copied(state: dict[str, Any], copy: int) -> bytes:
    """``state`` serialized as in copy ``copy`` of the sample world: its group its own.

    >>> orjson.loads(_copied({"v": 4, "p": ["1380", "AC-G1", "G1", "sme"]}, 3))["p"]
    ['1380', 'AC-G1', 'G1~3', 'sme']
    >>> _copied({"v": 4, "p": ["1380", None, None, "sme"]}, 3) == orjson.dumps(
    ...     {"v": 4, "p": ["1380", None, None, "sme"]})
    True
    """
    profile = state.get("p")
    if not (isinstance(profile, list) and len(profile) > 2 and profile[2]):
        return orjson.dumps(state)
    return orjson.dumps({**state, "p": [*profile[:2], f"{profile[2]}~{copy}", *profile[3:]]})


def scale(settings: Any, world: Path, workdir: Path, keys: int, events: int,
          kill_in_day_close: bool = False) -> dict[str, Any]:
    """The scale figure (see the module docstring); ``world`` supplies the sample states;
    ``kill_in_day_close`` adds a restart after a kill in a day close's batch."""
    from kafka import KafkaProducer

    from stream.contracts.partitioning import partition_of
    from stream.service.admin import create_topics
    from stream.tools.replay import replay_directory

    stores: list[dict[str, Any]] = []
    for _ in replay_directory(world, stores=stores):
        pass
    states = [v for store in stores for v in store.values()]
    samples = [orjson.dumps(v) for v in states]
    params = orjson.loads((world / "world.json").read_bytes())["params"]
    day = date.fromisoformat(params["start"]) + timedelta(days=params["days"] + 1)
    app_id = f"scale-{uuid.uuid4().hex[:8]}"
    settings = settings.replace(topic_prefix=f"{app_id}.", app_id=app_id)
    changelog = f"{app_id}-subscribers-changelog"
    create_topics(settings.bootstrap, [*settings.all_topics, *settings.group_topics, changelog],
                  settings.partitions, client_kwargs=settings.kafka_client_kwargs())
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap.split(","), acks=1,
                             linger_ms=20, batch_size=512 * 1024,
                             **settings.kafka_client_kwargs())
    started = time.perf_counter()
    for i in range(keys):
        key = f"R{i:08d}"
        copy, n = divmod(i, len(samples))
        producer.send(changelog, key=key.encode(),
                      value=samples[n] if copy == 0 else _copied(states[n], copy),
                      partition=partition_of(key, settings.partitions))
    producer.flush()
    figures: dict[str, Any] = {
        "keys": keys, "state_bytes_mean": sum(map(len, samples)) / len(samples),
        "changelog_written_s": time.perf_counter() - started,
        # The workers take these from the environment (static membership, the group).
        "instance_id": bool(settings.instance_id), "session_timeout_s": settings.session_timeout_s}
    _say("changelog written", figures)

    def send_calls(n: int, seed: int, first_id: int) -> None:
        send(_calls(keys, n, day, seed, first_id))

    def send(calls: list[tuple[str, bytes]]) -> None:
        for sid, value in calls:
            producer.send(settings.topic_calls, key=sid.encode(), value=value)
        producer.flush()

    workers: list[_Worker] = []

    def restart(datadir: str, name: str, seed: int, call_id: int, figure: str,
                label: str) -> _Worker:
        """A worker started on ``datadir``, then one call sent: the seconds until it is
        processed are ``figure``."""
        worker = _Worker(settings, workdir, datadir, name)
        workers.append(worker)
        send_calls(1, seed, call_id)
        figures[figure] = worker.wait_consumed(1)
        _say(label, figures[figure])
        return worker

    try:
        # 1. One call waits on the topic (the day's first second: no day closes); the
        # worker consumes it once restored. Not the whole load: the first batch would then
        # hold the day's close, a sweep over every subscriber, and be timed as the restore.
        send_calls(1, 1, 0)
        first = _Worker(settings, workdir, "scale-a", "scale-a1")
        workers.append(first)
        figures["full_restore_first_start"] = ready = first.wait_consumed(1)
        _say("full restore, first start", ready)
        # Then the calls, timed from their first send to the last one processed (the
        # day's close, one sweep over every subscriber, among them).
        calls = _calls(keys, events, day, 2, 1)
        sent_at = time.perf_counter()
        send(calls)
        done = first.wait_consumed(events + 1)
        rate = None
        if done["seconds_to_ready"] is not None:
            rate = events / max(first.started + done["seconds_to_ready"] - sent_at, 1e-9)
        figures["events"] = {"events": events, "events_per_s": rate,
                             "rss_bytes": done.get("VmRSS"), "peak_rss_bytes": done.get("VmHWM"),
                             "rss_after_restore_bytes": ready.get("VmRSS")}
        _say("events", figures["events"])
        # 2. An operator's crash: kill -9 once the last batch's state is written (the
        # changelog holds what the data directory holds), then the same data directory.
        figures["events"]["written_after_s"] = first.wait_written(events + 1)
        first.kill9()
        figures["disk_bytes"] = _du(workdir / "scale-a")
        figures["disk_bytes_per_subscriber"] = figures["disk_bytes"] / keys
        _say("disk bytes per subscriber", figures["disk_bytes_per_subscriber"])
        again = restart("scale-a", "scale-a2", 3, events + 1, "restart_local_state",
                        "restart on local state (kill -9)")
        # 3. A rolling deploy: SIGTERM (the worker ends its batch and leaves the group),
        # then the same data directory.
        again.wait_written(1)
        again.stop()
        deployed = restart("scale-a", "scale-a3", 5, events + 2, "restart_after_sigterm",
                           "restart on local state (SIGTERM)")
        last = deployed
        if kill_in_day_close:
            # 4. kill -9 while a day close's batch is written: a call after the next
            # day's close sweeps its partition; the kill comes once it is processed, while
            # the batch sends its write-ahead copy and records.
            deployed.wait_written(1)
            sid = "R00000000"
            close = day + timedelta(days=1)
            send([(sid, _call(sid, f"{close.isoformat()}T01:00:05+08:00", events + 3))])
            deployed.wait_consumed(2)
            deployed.kill9()
            closing = _Worker(settings, workdir, "scale-a", "scale-a4")
            workers.append(closing)
            send([(sid, _call(sid, f"{close.isoformat()}T01:00:10+08:00", events + 4))])
            figures["restart_in_day_close"] = ready = closing.wait_consumed(1)
            ready["restore_log"] = _restore_lines(closing.log)
            _say("restart on local state (kill -9 in a day close's batch)", ready)
            last = closing
        last.kill9()
        # 5. kill -9, an empty data directory.
        restart("scale-b", "scale-b", 4, events + 5, "full_restore_after_kill",
                "full restore after kill -9")
    finally:
        producer.close()
        for w in workers:
            w.stop()
    return figures


def table_rows(f: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for ``churnwatch bench``'s table."""

    def seconds(fig: dict[str, Any], target: float) -> tuple[str, str]:
        if fig.get("seconds_to_ready") is None:
            return f"not back within {fig.get('timed_out_s', 0):.0f} s", "MISSED"
        s = fig["seconds_to_ready"]
        load = f", load {fig['load']:.1f}" if "load" in fig else ""
        ph = fig.get("phases_s") or {}
        # From the worker's log: up (imports done), assigned (group joined), recovered.
        log = "".join(f", {name} {ph[key]:.1f}" for name, key in (
            ("up", "logging"), ("assigned", "assigned"), ("recovered", "recovered"))
            if key in ph)
        return (f"{s:.1f} s ({fig['seconds_after_assignment']:.1f} s after assignment{log}"
                f"{load})", f"target <= {target:.0f} s")

    keys = f["keys"]
    ev = f["events"]
    rows = [("scale: subscribers on RocksDB", f"{keys:,}",
             f"{f['state_bytes_mean']:.0f} B state mean; changelog written in "
             f"{f['changelog_written_s']:.0f} s")]
    rows.append(("scale: full restore, first start",
                 *seconds(f["full_restore_first_start"], TARGETS["full_restore_s"])))
    rate = ev["events_per_s"]
    rows.append(("scale: events/s, all keys random",
                 "timed out" if rate is None else f"{rate:,.0f} ev/s",
                 f"{ev['events']:,} calls"))
    rss, peak = ev.get("rss_bytes"), ev.get("peak_rss_bytes")
    rows.append(("scale: worker RSS", f"{(rss or 0) / 2**20:,.0f} MiB "
                 f"(peak {(peak or 0) / 2**20:,.0f} MiB)", "target <= 2,048 MiB"))
    rows.append(("scale: restart on local state, kill -9",
                 *seconds(f["restart_local_state"], TARGETS["restart_local_s"])))
    rows.append(("scale: restart on local state, SIGTERM",
                 *seconds(f["restart_after_sigterm"], TARGETS["restart_local_s"])))
    if "restart_in_day_close" in f:
        rows.append(("scale: restart, kill -9 in a day close",
                     *seconds(f["restart_in_day_close"], TARGETS["restart_local_s"])))
    rows.append(("scale: full restore after kill -9",
                 *seconds(f["full_restore_after_kill"], TARGETS["full_restore_s"])))
    rows.append(("scale: disk per subscriber", f"{f['disk_bytes_per_subscriber']:,.0f} B",
                 f"{f['disk_bytes'] / 2**20:,.0f} MiB data directory"))
    return rows
