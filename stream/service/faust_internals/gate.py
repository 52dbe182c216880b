"""A stop waits for the batch in hand: :class:`BatchGate`.

Faust stops a worker's services in a fixed order (fetcher, tables, agents, consumer,
producer) and does not wait for a batch in hand: our batch path runs shielded from the
fetcher, and an agent's batch is cancelled where it stands. A batch cut short leaves its
state records in the producer's buffer when the producer stops; Faust then crashes
("Producer service not yet started") and the worker exits 1 instead of 0.

Each stage runs its batches one at a time under its gate's ``lock`` and skips a batch
once the gate is ``closed``. ``close()`` marks the gate closed and waits for the batch in
hand, so it finishes while the producer still runs; a batch turned away is not acked, and
whoever owns the partition next gets its messages again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

#: A batch still in hand after this long (a broker gone away) is left to the next owner.
CLOSE_TIMEOUT_S = 60.0


class BatchGate:
    """Batches one at a time, none after :meth:`close`.

    >>> import asyncio
    >>> gate = BatchGate("example")
    >>> done = []
    >>> async def batch(n):
    ...     async with gate.lock:
    ...         if gate.closed:
    ...             return
    ...         await asyncio.sleep(0.01)
    ...         done.append(n)
    >>> async def main():
    ...     first = asyncio.ensure_future(batch(1))
    ...     await asyncio.sleep(0)          # the first batch is in hand
    ...     await gate.close()              # waits for it
    ...     await batch(2)                  # turned away
    ...     await first
    >>> asyncio.run(main())
    >>> done
    [1]
    """

    def __init__(self, name: str, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.lock = asyncio.Lock()
        self.closed = False

    async def close(self) -> None:
        """Turn later batches away and wait for the one in hand (if any)."""
        self.closed = True
        try:
            await asyncio.wait_for(self.lock.acquire(), self.timeout_s)
        except TimeoutError:
            log.warning("%s: the batch in hand did not finish within %.0f s; stopping "
                        "anyway (its input is delivered again)", self.name, self.timeout_s)
            return
        self.lock.release()


def gate_for_agent(app: Any, name: str) -> BatchGate:
    """A gate for an agent's batches, closed on Faust's ``on_before_shutdown``: after
    Faust's stop has drained the streams (the agent acks what it was given), before it
    cancels the agents, so the batch in hand finishes with the producer running."""
    gate = BatchGate(name)

    async def close_gate(sender: Any, **kwargs: Any) -> None:
        await gate.close()

    app.on_before_shutdown.connect(close_gate)
    return gate
