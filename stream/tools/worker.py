"""``churnwatch worker``: one Faust worker, configured from the environment.

Several workers can run against the same topics (same ``CHURNWATCH_APP_ID``): Faust
spreads the input partitions, with their table partitions, over them. Give each its own
``CHURNWATCH_DATADIR`` and metrics port (``--metrics-port``/``CHURNWATCH_METRICS_PORT``).
Without ``KAFKA_BOOTSTRAP`` the worker starts an embedded broker of its own (handy for a
quick look; other processes cannot find it unless you copy the printed address).

SIGTERM or Ctrl-C: the batch in hand is finished, its state and alerts flushed, offsets
committed, and the process exits 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus port on 127.0.0.1 (0: off; default "
                             "CHURNWATCH_METRICS_PORT or 9108)")
    parser.add_argument("--web-port", type=int, default=None,
                        help="enable Faust's web server on this port (127.0.0.1)")
    parser.add_argument("--capacity", type=int, default=None,
                        help="calls a day: the work queue lists that many items by expected "
                             "retained value (default CHURNWATCH_QUEUE_CAPACITY; 0: all)")
    parser.add_argument("--datadir", default=None,
                        help="Faust data directory (default CHURNWATCH_DATADIR)")
    parser.add_argument("--loglevel", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="log level (default warning)")


def settings_from_args(args: argparse.Namespace, environ: Any = None) -> Any:
    from stream.settings import Settings

    settings = Settings.from_env(environ)
    changes: dict[str, Any] = {}
    if args.metrics_port is not None:
        changes["metrics_port"] = args.metrics_port
    if args.web_port is not None:
        changes.update(web_enabled=True, web_port=args.web_port)
    if args.datadir is not None:
        changes["datadir"] = args.datadir
    if getattr(args, "capacity", None) is not None:
        changes["queue_capacity"] = args.capacity
    return settings.replace(**changes) if changes else settings


def run(args: argparse.Namespace) -> int:
    from stream.service.admin import ensure_topics
    from stream.tools.broker import EmbeddedBroker

    # A SettingsError reaches `churnwatch`'s one handler: one line, exit 2.
    settings = settings_from_args(args)
    broker = None
    if settings.embedded:
        broker = EmbeddedBroker().start()
        settings = settings.with_bootstrap(broker.bootstrap)
        print(f"worker: embedded broker at KAFKA_BOOTSTRAP={broker.bootstrap}", file=sys.stderr)
    try:
        ensure_topics(settings)
        from stream.service.worker import run_worker

        return run_worker(settings, loglevel=args.loglevel)
    finally:
        if broker is not None:
            broker.stop()
