"""Members of a group or an account forwarding off-net: whether others "do the same" as a
member in a stay away (:mod:`detectors.absence`)."""

from __future__ import annotations

import zlib
from collections.abc import MutableMapping
from typing import Any

__all__ = ["GroupForwarding"]


class GroupForwarding:
    """Members of a group or an account forwarding incoming calls off-net, by operator.

    A member counts on each closed day with forwarding evidence (the calls an alert for
    forwarding is raised on, and those of a stay away), whether that member is held as a
    stay away or alerted: a co-member alerted for forwarding to the same operator does the
    same as one held. The circle is the group, or the account for a line without a group.
    Kept in the engine's population store, so only the members that the same engine judges
    are compared (one entry per circle that forwarded within ``keep_days``):
    ``{"v": 2, "d": [[first, last, operator, member], ...]}``: the first and the latest day
    a member was seen forwarding to ``operator`` (``member``: a 16-bit fingerprint, so a
    member does not count itself). A circle's rows older than ``keep_days`` go when it is
    written again; :meth:`sweep` deletes the entries of circles that stopped forwarding,
    so the store holds only the circles of the last ``keep_days``.

    Examples
    --------
    >>> gf = GroupForwarding({})
    >>> gf.add("G1", day=100, operator=2, member=7)
    >>> gf.others("G1", 101, operator=2, member=9, window=14), gf.others("G1", 101, 2, 7, 14)
    (1, 0)
    >>> gf.others("G1", 100, operator=2, member=9, window=14)  # the same day: not yet
    0
    >>> gf.add("G1", day=120, operator=2, member=7)  # still forwarding
    >>> gf.others("G1", 120, operator=2, member=9, window=14)
    1
    >>> gf.others("G1", 135, operator=2, member=9, window=14)  # stopped 15 days before
    0
    >>> gf.sweep(149), sorted(gf.store)  # its latest row is kept for 30 days
    (0, ['~g/G1'])
    >>> gf.sweep(150), sorted(gf.store)
    (1, [])
    """

    PREFIX = "~g/"

    def __init__(self, store: MutableMapping[str, Any], keep_days: int = 30):
        self.store = store
        self.keep_days = keep_days

    @staticmethod
    def member(subscriber_id: str) -> int:
        """A member's number in its circle: a 16-bit hash of its id, not the id itself."""
        return zlib.crc32(subscriber_id.encode()) & 0xFFFF

    @staticmethod
    def circle(group: str | None, account: str | None) -> str | None:
        """The circle a member belongs to: its group, else its account (None: neither)."""
        return f"group {group}" if group else f"account {account}" if account else None

    def add(self, circle: str, day: int, operator: int, member: int) -> None:
        """Record a member forwarding off-net to ``operator`` on ``day``."""
        key = self.PREFIX + circle
        state = self.store.get(key)
        rows = [r for r in (state["d"] if state and state.get("v") == 2 else [])
                if r[1] > day - self.keep_days]
        for r in rows:
            if r[2] == operator and r[3] == member:
                if r[1] >= day:
                    return
                r[1] = day
                break
        else:
            rows.append([day, day, operator, member])
            rows.sort()
        self.store[key] = {"v": 2, "d": rows}

    def others(self, circle: str, day: int, operator: int, member: int, window: int) -> int:
        """Other members forwarding to ``operator`` since before ``day`` (days already
        closed for every member), seen within the ``window`` days before it."""
        state = self.store.get(self.PREFIX + circle)
        if not state or state.get("v") != 2:
            return 0
        return len({r[3] for r in state["d"] if r[0] < day and r[1] >= day - window
                    and r[2] == operator and r[3] != member})

    def sweep(self, day: int) -> int:
        """Delete the entries of circles with no member seen forwarding in the
        ``keep_days`` days up to ``day`` (nothing :meth:`others` can count for a window
        shorter than ``keep_days``); return how many went. The store's other keys are left
        alone."""
        stale = []
        for key in list(self.store):
            if not key.startswith(self.PREFIX):
                continue
            state = self.store.get(key)
            rows = state.get("d") if state else None
            if not rows or max(r[1] for r in rows) <= day - self.keep_days:
                stale.append(key)
        for key in stale:
            del self.store[key]
        return len(stale)
