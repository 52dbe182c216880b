"""Plain, versioned per-subscriber state: helpers for fingerprints, the dedupe ring and size.

What the engine keeps per subscriber is a small dict of numbers and short strings, never a
pickled object: a changelog of pickles is a remote-code risk and breaks on upgrades. Keys are
short on purpose (the serialized budget is 512 bytes):

=====  =====================================================================================
key    meaning
=====  =====================================================================================
``v``  state version (:data:`STATE_VERSION`)
``p``  profile ``[msisdn, account_id, group_id, segment, tier, account_manager]`` or absent
``o``  open days: counters per day (see ``detectors.engine``), usually one or two; each
       row's day is relative to the last closed day (a small number)
``m``  the engine's numbers in one list (``engine.M_*``): home cell, usage CUSUM,
       incoming-call means, the event-time watermark, last closed day, closed days (age),
       last active day, last plan downgrade, the bill model, the forwarding model
       (:class:`detectors.forwarding.Forwarding` state)
``s``  spend (tenths of a yuan) and usage (outgoing calls a day) models in one list
       (:meth:`detectors.spend.SpendDrop.pack`)
``k``  familiar numbers: ``[fingerprint, count, ...]`` (Misra-Gries, 16-bit fingerprints)
``a``  alert policy (:class:`detectors.policy.AlertPolicy` state), once it has alerted
``e``  dedupe ring: base64 of the last 32-bit event-id fingerprints
``g``  the last member signal emitted (group members, with ``signals=True`` only)
``x``  set once the subscriber ported out or was deactivated: ``[kind, day, level]``
=====  =====================================================================================

At most 10 keys: a CPython dict of 6-10 keys takes 272 bytes, of 11-21 keys 464. Zero
floats are stored as the integer 0 (CPython shares small integers; a float is 24 bytes).
Version 3 (this one) is upgraded from 1 and 2 in place by :func:`detectors.engine.upgrade`.
"""

from __future__ import annotations

import binascii
import sys
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "STATE_VERSION",
    "deep_sizeof",
    "fingerprint",
    "remember",
    "shared",
]

STATE_VERSION = 3


def fingerprint(text: str) -> bytes:
    """A 32-bit fingerprint (CRC-32) of ``text`` as 4 bytes.

    Examples
    --------
    >>> fingerprint("call-000001").hex()
    '50256ef0'

    """
    return zlib.crc32(text.encode()).to_bytes(4, "little")


def remember(ring: str, fp: bytes, size: int) -> tuple[bool, str]:
    """Check ``fp`` against a base64 ring of fingerprints and push it if new.

    Returns ``(seen, ring)``. The ring keeps the last ``size`` distinct fingerprints, so a
    duplicate is recognised if it arrives within ``size`` events of the same subscriber
    (redeliveries after a crash or a rebalance come right after the originals).

    Examples
    --------
    >>> ring = ""
    >>> for event_id in ["a", "b", "a", "c", "d", "b"]:
    ...     seen, ring = remember(ring, fingerprint(event_id), size=2)
    ...     print(event_id, seen)
    a False
    b False
    a True
    c False
    d False
    b False

    """
    raw = binascii.a2b_base64(ring) if ring else b""
    pos = raw.find(fp)
    while pos != -1:
        if pos % 4 == 0:
            return True, ring
        pos = raw.find(fp, pos + 1)
    raw = (raw + fp)[-4 * size :]
    return False, binascii.b2a_base64(raw, newline=False).decode("ascii")


#: Strings many states have in common (segments, tiers, account managers, corporate
#: accounts and groups), kept once: see :func:`shared`.
_SHARED: dict[str, str] = {}
_SHARED_MAX = 100_000


def shared(text: str | None) -> str | None:
    """One object for all equal profile values, so a million states do not hold a million
    copies of ``"key_account"``.

    Examples
    --------
    >>> a, b = shared("".join(["key_", "account"])), shared("key_account")
    >>> a is b, shared(None)
    (True, None)

    """
    if text is None:
        return None
    found = _SHARED.get(text)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            return text  # an unbounded vocabulary is not shared (memory stays bounded)
        _SHARED[text] = found = text
    return found


def deep_sizeof(obj: Any, _seen: set[int] | None = None) -> int:
    """Bytes a plain structure of dicts, lists, strings and numbers adds to memory.

    Objects shared between all states are not counted: small integers (-5..256, cached by
    CPython), identifier-like short strings such as the state's keys (interned), and the
    profile values kept once by :func:`shared`.

    Examples
    --------
    >>> deep_sizeof({"a": [1.5, 2.5]}) > deep_sizeof({"a": []})
    True
    >>> deep_sizeof([7]) < deep_sizeof([7000])
    True

    """
    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, bool) or obj is None:
        return 0
    if isinstance(obj, int) and -5 <= obj <= 256:
        return 0
    if isinstance(obj, str) and (
        (len(obj) <= 2 and obj.isidentifier()) or _SHARED.get(obj) is obj
    ):
        return 0
    size = sys.getsizeof(obj)
    if isinstance(obj, Mapping):
        size += sum(deep_sizeof(k, seen) + deep_sizeof(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        size += sum(deep_sizeof(item, seen) for item in obj)
    return size
