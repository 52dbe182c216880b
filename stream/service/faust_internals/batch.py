"""How every stage finishes a batch: outputs first, then its state, then the acks.

The batch path, the group stage and the calibration stage all keep their state in
changelog-backed tables without transactions (the embedded broker has none). Their
batches end the same way, which is what makes a crash cost redelivery and never loss:

1. drop messages fetched before a rebalance (:func:`current`): Faust delivers them again
   from the committed offsets to whoever owns the partition now;
2. deliver what the batch made (alerts, dead letters, records for the next stage) and
   wait for the broker to have them;
3. write the state that says they were made: a write-ahead copy first where a batch's
   keys must land together, then the per-key records, each followed by a flush;
4. ack, so Faust commits the offsets only after all of that.

A crash before 4 delivers the batch again: its outputs go out again with the same ids,
and the applied marks in the state skip what was already applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["commit", "current"]


def current(app: Any, items: list[Any]) -> tuple[list[Any], list[Any]]:
    """``(fresh, stale)``: the items fetched in the consumer's current generation, and
    those fetched before a rebalance (stream events or raw messages).

    >>> from types import SimpleNamespace as NS
    >>> app = NS(consumer_generation_id=3)
    >>> items = [NS(message=NS(generation_id=3, offset=1)), NS(generation_id=2, offset=2),
    ...          NS(offset=3)]    # no generation known: current
    >>> fresh, stale = current(app, items)
    >>> [getattr(i, "message", i).offset for i in fresh], [i.offset for i in stale]
    ([1, 3], [2])
    """
    generation = app.consumer_generation_id
    fresh: list[Any] = []
    stale: list[Any] = []
    for item in items:
        message = getattr(item, "message", item)
        if getattr(message, "generation_id", generation) == generation:
            fresh.append(item)
        else:
            stale.append(item)
    return fresh, stale


async def commit(
    app: Any,
    sent: list[Awaitable[Any]],
    state: Callable[[], Iterable[Callable[[], None]]] | None = None,
    acks: Iterable[Callable[[], None]] = (),
) -> None:
    """Finish a batch: wait for ``sent`` (the futures of its outputs); only then call
    ``state()``, which moves the batch's state into its tables and returns the writers
    that queue its changelog records, in order (a write-ahead copy, then the per-key
    records): each is called and followed by a producer flush; then call ``acks``.

    The state moves only once the outputs are delivered: a failed delivery leaves the
    batch unapplied, so its redelivery is processed again. Waiting for the records too
    means the next batch's write-ahead copy is never needed to complete this one.
    """
    if sent:
        await asyncio.gather(*sent)
    for write in state() if state is not None else ():
        write()
        await app.producer.flush()
    for ack in acks:
        ack()
