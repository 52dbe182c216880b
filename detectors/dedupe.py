"""Duplicates over a subscriber's open days: the event ids seen, per day, until it closes.

Upstream mediation re-sends events after a fault, sometimes days later, with the same
``event_id``. The engine keeps, for each of a subscriber's open days, a compact set of the
day's event-id fingerprints (the state's ``"e"``), and drops a day's set when the day
closes: an event dated in a closed day is not the engine's to take any more (the service
and ``churnwatch replay`` reject it as ``too_late`` before the engine sees it,
:mod:`stream.service.lateness`), so a re-send is recognised however late it comes: as a
duplicate while its day is open, as too late after.

A day's set is exact: 24-bit fingerprints, three bytes each (four base64 characters).
It keeps the last :data:`DAY_MAX` of a day's events, which bounds the state: a day busier
than that (fewer than one subscriber-day in 200 in the simulated worlds) forgets its
earliest events, and a re-send of one of those while its day is open is taken again. A
lossy filter of a fixed size (a Bloom filter) was the alternative; its false positives
would drop genuine events, and drop different ones depending on how the calls and
billing streams interleave, which must not matter.

Stored as one string, ``"DAY:SET DAY:SET"`` (absolute ``Clock`` day numbers, ascending;
each set the base64 of its fingerprints): one object in memory, not a list of them.
"""

from __future__ import annotations

import binascii
import zlib

__all__ = ["DAY_MAX", "add", "fingerprint", "from_ring", "prune", "seen"]

#: Bytes of one fingerprint.
FP_BYTES = 3
#: Most event ids a day remembers (the latest ones).
DAY_MAX = 48
#: A day's set as text: four base64 characters a fingerprint.
_TEXT_MAX = 4 * DAY_MAX


def fingerprint(event_id: str) -> int:
    """A 24-bit fingerprint of an event id (the low bits of its CRC-32).

    Examples
    --------
    >>> hex(fingerprint("call-000001"))
    '0x6e2550'

    """
    return zlib.crc32(event_id.encode()) & 0xFFFFFF


def _contains(raw: bytes, fp: int) -> bool:
    needle = fp.to_bytes(FP_BYTES, "little")
    pos = raw.find(needle)
    while pos != -1:
        if pos % FP_BYTES == 0:
            return True
        pos = raw.find(needle, pos + 1)
    return False


def _decode(text: str) -> bytes:
    return binascii.a2b_base64(text) if text else b""


def _entries(days: str) -> list[tuple[int, str]]:
    return [(int(d), fps) for d, _, fps in
            (entry.partition(":") for entry in days.split())]


def _join(entries: list[tuple[int, str]]) -> str:
    return " ".join(f"{d}:{fps}" for d, fps in entries)


def _find(days: str, day: int) -> tuple[int, int]:
    """Where ``day``'s set is in ``days`` (start and end; -1, -1 if it has none)."""
    key = f"{day}:"
    at = days.find(key)
    while at > 0 and days[at - 1] != " ":  # the end of a longer day number
        at = days.find(key, at + 1)
    if at == -1:
        return -1, -1
    end = days.find(" ", at)
    return at + len(key), len(days) if end == -1 else end


def seen(days: str, day: int, fp: int) -> bool:
    """Whether ``fp`` is in ``day``'s set of ``days`` (the state's ``"e"``).

    Examples
    --------
    >>> days = add("", 20513, fingerprint("c1"))
    >>> days
    '20513:oSrX'
    >>> seen(days, 20513, fingerprint("c1")), seen(days, 20514, fingerprint("c1"))
    (True, False)

    """
    start, end = _find(days, day)
    return start != -1 and _contains(_decode(days[start:end]), fp)


def add(days: str, day: int, fp: int) -> str:
    """``days`` with ``fp`` in ``day``'s set.

    Three bytes are four base64 characters, so a fingerprint is appended to a set as
    text, without decoding it (this runs for every event).

    Examples
    --------
    >>> days = ""
    >>> for n in range(3):
    ...     days = add(days, 20513, fingerprint(f"c{n}"))
    >>> days
    '20513:NxrQoSrXG3ve'
    >>> for n in range(3, 60):
    ...     days = add(days, 20513, fingerprint(f"c{n}"))
    >>> len(days), [seen(days, 20513, fingerprint(f"c{n}")) for n in (11, 12, 59)]
    (198, [False, True, True])
    >>> add(add("20513:oSrX", 20514, fingerprint("c0")), 20512, fingerprint("c0"))
    '20512:NxrQ 20513:oSrX 20514:NxrQ'

    """
    text = _encode(fp.to_bytes(FP_BYTES, "little"))
    start, end = _find(days, day)
    if start != -1:
        kept = days[start:end] + text
        if len(kept) > _TEXT_MAX:
            kept = kept[-_TEXT_MAX:]
        return days[:start] + kept + days[end:]
    entries = _entries(days)
    entries.append((day, text))
    entries.sort()
    return _join(entries)


def prune(days: str, closed: int) -> str:
    """``days`` without the sets of days up to ``closed`` (closed days: their events are
    too late now, whatever they are).

    Examples
    --------
    >>> prune("20512:AAAA 20513:AQAA", 20512)
    '20513:AQAA'

    """
    if not days or int(days[:days.index(":")]) > closed:
        return days
    return _join([(d, fps) for d, fps in _entries(days) if d > closed])


def _encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def from_ring(ring: str, day: int) -> str:
    """The days of a version-3 state's ring (the last 12 event ids' 32-bit CRCs, as
    base64), all put in ``day``: the upgrade keeps what it remembered until that day
    closes.

    Examples
    --------
    >>> import base64
    >>> ring = base64.b64encode(zlib.crc32(b"c7").to_bytes(4, "little")).decode()
    >>> seen(from_ring(ring, 20513), 20513, fingerprint("c7"))
    True

    """
    raw = _decode(ring)
    days = ""
    for i in range(0, len(raw) - 3, 4):
        days = add(days, day, int.from_bytes(raw[i:i + 4], "little") & 0xFFFFFF)
    return days
