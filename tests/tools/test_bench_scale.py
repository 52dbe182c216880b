"""The scale figure's reading of a worker's log and its table rows (no broker)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from stream.tools.bench_scale import _phases, _restore_lines, table_rows

LOG = """\
[2026-12-06 12:28:52,504] [28379] [INFO] [^Worker]: Starting...
[2026-12-06 12:28:53,567] [28379] [INFO] (Re-)joining group scale-1
[2026-12-06 12:28:56,573] [28379] [INFO] Setting newly assigned partitions {first}
[2026-12-06 12:28:58,000] [28379] [INFO] (Re-)joining group scale-1
[2026-12-06 12:28:59,579] [28379] [INFO] Setting newly assigned partitions {again}
[2026-12-06 12:29:00,100] [28379] [INFO] bulk restore: 1,904 changelog records in 0.0 s (4 p)
[2026-12-06 12:29:01,073] [28379] [INFO] [^Worker]: Ready
"""


def test_a_start_is_split_into_its_phases_from_the_worker_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(LOG)
    started = datetime(2026, 12, 6, 12, 28, 50).timestamp()
    # The last assignment counts (a second join after the first), the rest the first.
    assert _phases(log, started) == {"logging": 2.5, "join_sent": 3.57, "assigned": 9.58,
                                     "recovered": 11.07}
    assert _restore_lines(log) == [
        "bulk restore: 1,904 changelog records in 0.0 s (4 p)"]
    assert _phases(tmp_path / "missing.log", started) == {}


def _start(seconds: float | None) -> dict:
    if seconds is None:
        return {"seconds_to_ready": None, "timed_out_s": 1800.0}
    return {"seconds_to_ready": seconds, "seconds_after_assignment": 1.0, "load": 2.0,
            "phases_s": {"logging": 2.5, "assigned": 9.6, "recovered": 11.1}}


def test_the_table_has_a_row_per_restart_and_says_when_one_never_came_back() -> None:
    figures = {"keys": 1000, "state_bytes_mean": 400.0, "changelog_written_s": 1.0,
               "full_restore_first_start": _start(12.0),
               "events": {"events": 10, "events_per_s": 5.0, "rss_bytes": 2**20,
                          "peak_rss_bytes": 2**21},
               "restart_local_state": _start(12.6), "restart_after_sigterm": _start(None),
               "full_restore_after_kill": _start(20.0), "disk_bytes": 2**20,
               "disk_bytes_per_subscriber": 1048.6}
    rows = {name: (value, note) for name, value, note in table_rows(figures)}
    assert rows["scale: restart on local state, kill -9"] == (
        "12.6 s (1.0 s after assignment, up 2.5, assigned 9.6, recovered 11.1, load 2.0)",
        "target <= 15 s")
    assert rows["scale: restart on local state, SIGTERM"] == (
        "not back within 1800 s", "MISSED")
    assert "scale: restart, kill -9 in a day close" not in rows
    figures["restart_in_day_close"] = _start(30.0)
    rows = {name: value for name, value, _ in table_rows(figures)}
    assert rows["scale: restart, kill -9 in a day close"].startswith("30.0 s")
