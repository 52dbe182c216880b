"""Upgrades of stored subscriber states written by earlier versions of the engine.

A state is upgraded in place the first time the engine touches it, so a running
deployment keeps its subscribers across versions. Version 4 is the current layout (the
named records of :mod:`detectors.state` are the same arrays): a version-4 state read back
from JSON only has its arrays made records again (:func:`detectors.state.decode`).

The contact windows (``"h"``, :class:`detectors.contact.ContactWindows`) came later within
version 3 as a key of their own: a state without them needs nothing but its next call, from
which they start learning (an alert before that says there are too few calls to tell).
They were first a base64 string, now one integer: :class:`detectors.contact.ContactWindows`
reads either (:func:`detectors.contact.from_base64`) and stores the integer at the next call.
Version 2's top-level ``"w"`` was the watermark; it moves into ``"m"`` here, so the one-letter
keys of the two versions never meet.
"""

from __future__ import annotations

from typing import Any

from detectors.dedupe import from_ring
from detectors.spend import SpendDrop
from detectors.state import STATE_VERSION, DayCounts, Numbers, decode

__all__ = ["upgrade"]

#: Length of ``"m"`` in state version 2 (version 1 had 14 numbers): up to the clock.
V2_NUMBERS = Numbers.FIELDS.index("watermark")
#: Numbers kept as floats that version 3 stores as the integer 0 when zero.
_ZERO_FLOATS = ("cusum", "cusum_home", "in_base", "in_fast", "waiting_in", "waiting_new")


def upgrade(st: dict[str, Any]) -> None:
    """Bring a state written by an earlier version up to :data:`STATE_VERSION` in place.

    Version 1 had 14 numbers in ``"m"``; version 2 adds forwarding waiting for a call
    from home (two numbers, zero when nothing waits). Version 3 moves the top-level
    scalars ``w c n l r``, the bill model ``b`` and the forwarding model ``f`` into ``"m"``,
    the usage model ``u`` into the spend model's list ``s`` (one list for both: they
    always learn on the same days), and stores open days' rows relative to the last closed
    day. Version 4 remembers the event ids of each open day (``e``, :mod:`detectors.dedupe`)
    instead of the last 12 of any day: the ring's ids go to the last open day (whose set
    is dropped when it closes). A closed state (``x``) keeps its other keys.

    Examples
    --------
    >>> st = {"v": 2, "w": 1771430370, "c": 20501, "n": 44, "l": 20502,
    ...       "o": [[20502] + [0] * 9 + [-1] + [0] * 5 + [-1]],
    ...       "m": [24917, 50, 0, 3577, 0, 0.0, 1, 3, 0.0, 44, 4.34, 5.64, -1, 0, 0.0, 0.0],
    ...       "s": [30, 6.644, 0.32, 62, 64], "u": [30, 3.832, 11.8, 3, 7],
    ...       "f": [44, 0.0, 0.0, 0, 0.0, 0.0]}
    >>> upgrade(st)
    >>> sorted(st), st["v"], st["o"][0].day, st["s"], st["m"].closed, st["m"].age
    (['m', 'o', 's', 'v'], 4, 1, [30, 6.644, 0.32, 3.832, 11.8, 62, 64, 3, 7], 20501, 44)

    """
    version = st.get("v", 1)
    m = st.get("m")
    if m is not None and len(m) < V2_NUMBERS:
        m.extend(Numbers.DEFAULTS[len(m):V2_NUMBERS])
    if version < 3 and m is not None and "x" not in st:
        c = st.pop("c", -1)
        bill = st.pop("b", None) or [0, 0, 1, -1]
        fwd = st.pop("f", None)
        m.extend([st.pop("w", 0), c, st.pop("n", 0), st.pop("l", -1), st.pop("r", -1),
                  *bill])
        forwarding_at = Numbers.FIELDS.index("fwd_days")
        m.extend(_zeros(fwd) if fwd is not None else Numbers.DEFAULTS[forwarding_at:])
        numbers = st["m"] = Numbers.of(m)
        for name in _ZERO_FLOATS:
            if getattr(numbers, name) == 0:
                setattr(numbers, name, 0)
        rows = st["o"] = [DayCounts.of(row) for row in st.get("o", ())]
        for row in rows:
            row.day -= c
        spend, usage = st.pop("s", None), st.pop("u", None)
        if spend is not None and usage is not None:
            st["s"] = SpendDrop.pack(spend, usage)
    if version < 4 and "e" in st:
        closed = -1 if m is None or "x" in st else st["m"][Numbers.FIELDS.index("closed")]
        if closed < 0:  # a closed state takes no events; no day closed: no day to put them in
            del st["e"]
        else:
            last = max((row[0] for row in st.get("o") or ()), default=1)
            st["e"] = from_ring(st["e"], closed + last)
    st["v"] = STATE_VERSION
    decode(st)


def _zeros(values: list[Any]) -> list[Any]:
    """``values`` with zero floats as the integer 0 (shared; JSON reads back the same)."""
    return [v if v else 0 for v in values]
