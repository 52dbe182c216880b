"""Child processes the tools start (brokers, workers): stopped by pid, watched by /metrics."""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from typing import Any


def stop_process(process: subprocess.Popen[Any], grace_s: float = 20.0) -> int:
    """SIGTERM, wait ``grace_s``, then SIGKILL; the exit code.

    SIGTERM first because a worker finishes its batch and commits on it.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace_s)
    return process.returncode


def metric_sum(metrics_port: int, name: str) -> float | None:
    """Sum of the samples of ``name`` (a metric, or a metric with its labels) on a local
    worker's /metrics; None when the worker does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def events_consumed(metrics_port: int) -> float | None:
    """Input messages a worker has taken off its topics (every outcome)."""
    return metric_sum(metrics_port, "churnwatch_events_total")
