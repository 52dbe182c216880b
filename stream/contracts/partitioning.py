"""Kafka's default partitioner, so the replay path can group subscribers as the broker does.

Per-partition state (the population baseline per segment) must see the same subscribers in
``churnwatch replay`` as in a worker, or the two paths would judge a subscriber against
different crowds.
"""

from __future__ import annotations

from functools import lru_cache

from kafka.partitioner.default import murmur2


@lru_cache(maxsize=1 << 20)
def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, kafka-python, aiokafka) picks for a key.

    >>> partition_of("s-00042", 4)
    3
    """
    return int(murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
