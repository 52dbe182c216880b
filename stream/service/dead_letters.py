"""Dead letters published so that one that cannot be published never stops a worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)


class DeadLetters:
    """Publishes dead letters so that one that cannot be published never stops a worker.

    Such a letter (too large for the producer or the broker, a broker error) is counted
    (``churnwatch_dead_letter_failures_total``) and logged once per kind of error; its
    input is acked like any other (a poison message must not be redelivered forever).
    """

    def __init__(self, topic: Any, metrics: Any = None) -> None:
        self.topic = topic
        self.metrics = metrics
        self._logged: set[str] = set()

    async def send(
        self, letters: list[tuple[bytes | None, dict[str, Any]]]
    ) -> list[Awaitable[None]]:
        """Queue ``letters``; awaitables that finish when each is delivered or has failed
        (never raising), for the batch's commit to wait on with its other outputs."""
        waits: list[Awaitable[None]] = []
        for key, letter in letters:
            try:
                waits.append(self._settle(letter, await self.topic.send(key=key, value=letter)))
            except Exception as exc:  # e.g. the producer's own size check
                self.failed(letter, exc)
        return waits

    async def _settle(self, letter: dict[str, Any], delivery: Awaitable[Any]) -> None:
        try:
            await delivery
        except Exception as exc:
            self.failed(letter, exc)

    def failed(self, letter: dict[str, Any], error: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.dead_letter_failures.inc()
        name = type(error).__name__
        if name not in self._logged:
            self._logged.add(name)
            log.error("dead letter for %s[%s]@%s (%s, %d bytes) not published: %s; the input "
                      "is acked anyway (churnwatch_dead_letter_failures_total counts every "
                      "such letter; this is logged once per error type)", letter["topic"],
                      letter["partition"], letter["offset"], letter["reason"],
                      letter["raw_size"], name)
