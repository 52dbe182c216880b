"""`churnwatch demo`: the whole service on the embedded broker, in about two minutes.

Starts the broker (unless ``KAFKA_BOOTSTRAP`` names one), simulates a small labelled world,
starts one worker as a child process, publishes the world to the input topics, prints the
alerts as they arrive on ``churn.alerts``, then a one-screen summary. Everything it starts
it stops, by process id, on the way out (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from stream.tools.processes import events_consumed, stop_process


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribers", type=int, default=400, help="size of the world")
    parser.add_argument("--days", type=int, default=100, help="days simulated")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed")
    parser.add_argument("--max-seconds", type=float, default=160.0,
                        help="stop by then whatever happens (default 160)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the world and the alerts in this directory")


def _child_env(settings: Any, workdir: Path, metrics_port: int) -> dict[str, str]:
    env = dict(os.environ)
    ported = workdir / "world" / "ported.jsonl"
    if ported.exists():  # the world's ported numbers, as replay and evaluate read them
        env["CHURNWATCH_PORTED_FILE"] = str(ported)
    env.update(
        KAFKA_BOOTSTRAP=settings.bootstrap,
        CHURNWATCH_DATADIR=str(workdir / "worker"),
        CHURNWATCH_METRICS_PORT=str(metrics_port),
        CHURNWATCH_PARTITIONS=str(settings.partitions),
    )
    return env


def run(args: argparse.Namespace) -> int:
    from stream.service.admin import ensure_topics
    from stream.settings import Settings
    from stream.tools.alerts_tail import header, read_alerts, row
    from stream.tools.broker import EmbeddedBroker, free_port
    from stream.tools.produce import count_lines, produce_directory

    started = time.monotonic()
    deadline = started + args.max_seconds
    settings = Settings.from_env()
    with ExitStack() as stack:
        workdir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        if settings.embedded:
            broker = stack.enter_context(EmbeddedBroker())
            settings = settings.with_bootstrap(broker.bootstrap)
            print(f"demo: embedded broker at {broker.bootstrap}", file=sys.stderr)
        ensure_topics(settings)

        world = workdir / "world"
        print(f"demo: simulating {args.subscribers} subscribers x {args.days} days ...",
              file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "stream", "simulate", "--subscribers", str(args.subscribers),
             "--days", str(args.days), "--seed", str(args.seed), "--out", str(world)],
            check=True,
        )
        total = count_lines(world)

        metrics_port = free_port()
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"],
            env=_child_env(settings, workdir, metrics_port),
            stdout=(workdir / "worker.log").open("wb"), stderr=subprocess.STDOUT,
        )
        stack.callback(stop_process, worker)
        print(f"demo: worker pid {worker.pid} (log {workdir / 'worker.log'}), "
              f"metrics on 127.0.0.1:{metrics_port}", file=sys.stderr)

        produced: dict[str, Any] = {}
        producer = threading.Thread(
            target=lambda: produced.update(produce_directory(world, settings)), daemon=True
        )
        producer.start()
        print(f"demo: publishing {total:,} events; alerts as they arrive:", file=sys.stderr)

        alerts: list[dict[str, Any]] = []
        print(header())
        pump = _AlertPump(read_alerts, settings)
        for alert in _alerts_until_done(pump, deadline, worker, metrics_port, total):
            alerts.append(alert)
            if alert["zone"] in ("yellow", "red", "white") or alert["status"] == "resolved":
                print(row(alert), flush=True)
        done_at = time.monotonic()
        producer.join(timeout=5)
        if worker.poll() is not None:
            print(f"demo: the worker exited early (code {worker.returncode}); see "
                  f"{workdir / 'worker.log'}", file=sys.stderr)
        consumed = events_consumed(metrics_port)
        code = stop_process(worker)
        _summary(alerts, total, consumed, done_at - started, code)
        if args.keep:
            import orjson

            with (workdir / "alerts.jsonl").open("wb") as out:
                out.writelines(orjson.dumps(a) + b"\n" for a in alerts)
            print(f"demo: world and alerts kept in {workdir}", file=sys.stderr)
    return 0 if alerts else 1


class _AlertPump:
    """Reads the alert topic on a daemon thread, so the demo can poll it with a timeout."""

    def __init__(self, read_alerts: Any, settings: Any) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        def pump() -> None:
            for alert in read_alerts(settings, True, 0.0):
                self.queue.put(alert)

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()

    def get(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


def _alerts_until_done(pump: _AlertPump, deadline: float, worker: Any, metrics_port: int,
                       total: int) -> Any:
    """Alerts until the worker has consumed every event (or the deadline, or it died)."""
    checked = 0.0
    drain_until: float | None = None
    while True:
        alert = pump.get(timeout=0.5)
        if alert is not None:
            yield alert
        now = time.monotonic()
        if now > deadline or worker.poll() is not None:
            return
        if drain_until is not None:
            if now > drain_until and alert is None:
                return
        elif now - checked > 2:
            checked = now
            consumed = events_consumed(metrics_port)
            if consumed is not None and consumed >= total:
                drain_until = now + 3.0  # the last batch's alerts are on their way


ENDED = ("resolved", "closed")  # statuses that end an episode


def _summary(alerts: list[dict[str, Any]], total: int, consumed: float | None,
             elapsed: float, worker_code: int) -> None:
    by_zone = Counter(a["zone"] for a in alerts if a["status"] not in ENDED)
    by_segment = Counter(a["segment"] for a in alerts if a["status"] not in ENDED)
    by_reason = Counter(r["code"] for a in alerts for r in a.get("reasons", []))
    resolved = sum(1 for a in alerts if a["status"] == "resolved")
    print("\n" + "=" * 78)
    print(f"churnwatch demo: {elapsed:.0f}s, {total:,} events published, "
          f"{int(consumed or 0):,} consumed by the worker (exit code {worker_code})")
    print(f"alerts: {len(alerts):,} ({resolved} resolutions); distinct ids "
          f"{len({a['alert_id'] for a in alerts}):,}")
    print("by zone:    " + ", ".join(f"{z} {by_zone[z]}" for z in ("yellow", "red", "white")))
    print("by segment: " + ", ".join(f"{k} {v}" for k, v in by_segment.most_common()))
    print("by reason:  " + ", ".join(f"{k} {v}" for k, v in by_reason.most_common(6)))
    top = sorted((a for a in alerts if a["status"] not in ENDED),
                 key=lambda a: -float(a.get("value_at_risk") or 0))[:5]
    if top:
        print("most value at risk:")
        for a in top:
            why = a["reasons"][0]["summary"] if a.get("reasons") else ""
            who = a.get("subscriber_id") or a.get("group_id")
            print(f"  {who:<12} {a['zone']:<6} {float(a['value_at_risk']):>9,.0f}/mo  "
                  f"manager {a.get('account_manager') or '-'}: {why}")
    print("=" * 78)
