"""Faust's own ceiling for `churnwatch bench`: a bare agent that only counts messages.

Run as ``python -m stream.tools.bench_ceiling BOOTSTRAP EXPECTED TOPIC [TOPIC ...]``; prints one
JSON line ``{"events": n, "seconds": s, "rate": r}`` measured from the first message to the
last (the consumer-group join is not Faust's per-message cost), then exits.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import orjson


def main(argv: list[str]) -> int:
    import faust

    bootstrap, expected, topics = argv[0], int(argv[1]), argv[2:]
    datadir = tempfile.mkdtemp(prefix="churnwatch-ceiling-")
    app = faust.App(
        f"bench-ceiling-{os.getpid()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_disable_leader=True,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_request_timeout=30,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    @app.agent(topic)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for _value in stream:
            if seen["n"] == 0:
                seen["first"] = time.perf_counter()
            seen["n"] += 1
            if seen["n"] >= expected:
                seen["last"] = time.perf_counter()
                seconds = seen["last"] - seen["first"]
                print(orjson.dumps({"events": seen["n"], "seconds": seconds,
                                    "rate": seen["n"] / seconds}).decode(), flush=True)
                os._exit(0)  # the measurement is done; skip Faust's slow shutdown

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
