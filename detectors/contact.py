"""Contact windows: when a subscriber takes calls, learned from their own calls in event time.

A retention call that nobody answers retains nobody (the sources' region reached 33 of 266
warned customers). Each subscriber's calls say when they are at the phone: the incoming
calls they answer, the ones they miss, and the calls they make themselves, by hour of the
week. The input contract has no "answered" flag: an incoming call with ``duration_s > 0``
was answered, one with ``duration_s == 0`` was missed, and a forwarded call says nothing
about the subscriber (they never saw it ring) and is left out.

Hours of the week are buckets, by the calls' event time: weekdays or weekend, by blocks of
two hours in the operator's time zone, over the hours a call centre calls
(:data:`CALL_HOURS`, 09:00-21:00: a window at 23:00 could not be used, so calls outside
them are not counted; 12 buckets). Two hours, not three: people answer in spans of a few
hours that begin at any hour, and a call placed at a random hour of a three-hour block
misses such a span about a third of the time (on the simulated worlds, advised calls to
churners went unanswered 34-38% of the time with three-hour blocks, 30-32% with two).

Each bucket holds the answered and missed calls, at most :data:`SUM_CAP` (6) of them
together: when a bucket is full, both counts halve before the call is counted, so each
block's share follows its last half dozen to dozen calls, and blocks decay apart (a busy
block does not wipe out what a quiet one has seen). A call the subscriber made in a block
where no call was answered yet counts as one answered call: they were at the phone then
(whether they pick up is for the incoming calls to say).

The state is one integer, the subscriber state's ``"i"``: 12 buckets of 5 bits (an index
into the 28 pairs of counts), below 2**60, so one 32-byte object in memory and at most 19
digits serialized. Earlier versions stored ``"h"``: three-hour blocks (an integer, or before
that a base64 string); they are read by :func:`stored` and replaced at the next call.
"""

from __future__ import annotations

from binascii import Error as Base64Error
from binascii import a2b_base64
from typing import Any

from river import base

__all__ = ["ANSWERED", "BLOCK_HOURS", "BUCKETS", "CALL_HOURS", "MADE", "MISSED", "SUM_CAP",
           "ContactWindows", "from_base64", "from_three_hour_blocks", "keep", "stored"]

#: Hours per block of the day.
BLOCK_HOURS = 2
#: The local hours counted (first, end): those a call centre calls in.
CALL_HOURS = (9, 21)
#: Blocks per day; buckets (weekdays' blocks, then the weekend's).
BLOCKS = (CALL_HOURS[1] - CALL_HOURS[0]) // BLOCK_HOURS
BUCKETS = 2 * BLOCKS
BLOCK_S = 3600 * BLOCK_HOURS
#: The kinds of call a bucket learns from.
ANSWERED, MISSED, MADE = 0, 1, 2
#: Most answered and missed calls a bucket holds together.
SUM_CAP = 6
#: Every pair of counts a bucket can hold, by its 5-bit index (28 of 32).
_PAIRS = [(answered, total - answered) for total in range(SUM_CAP + 1)
          for answered in range(total + 1)]
_INDEX = {pair: i for i, pair in enumerate(_PAIRS)}
_BITS = 5
_MASK = (1 << _BITS) - 1
#: The subscriber state's key for the windows; the key earlier versions used.
KEY, OLD_KEY = "i", "h"
DAY_S = 86400
#: ISO weekdays (Monday 1) of each day type.
WEEKDAYS = [1, 2, 3, 4, 5]
WEEKEND = [6, 7]
_FIRST_S = CALL_HOURS[0] * 3600
_END_S = CALL_HOURS[1] * 3600
#: The three-hour blocks of ``"h"`` (from 09:00, four a day type, a byte each:
#: ``answered * 11 + missed`` in bits 0-6, a call made in bit 7).
_OLD_BLOCK_HOURS, _OLD_BLOCKS = 3, 4


class ContactWindows(base.Base):
    """When a subscriber answers the phone: the best windows of the week, and their shares.

    ``learn_one`` takes one call: its event time (epoch seconds), its direction and, for an
    incoming call, whether it was answered. :meth:`windows` ranks the buckets by the share
    of incoming calls answered there, with a prior of one answered and one missed call,
    keeps those with at least ``min_calls`` calls and a share above ``min_share``, the best
    ``max_windows`` of them, and joins neighbouring blocks of the same day type.
    :meth:`advice` is what an alert carries (``contact``).

    The state is the integer :attr:`state` (see the module's description); the engine loads
    it from the subscriber's state (:func:`stored`) and stores it back (:func:`keep`).

    Parameters
    ----------
    tz_offset_hours
        The operator's offset from UTC: windows are in its local time.
    min_calls
        Calls a bucket needs before it can be a window.
    min_share
        The share (as ranked) a bucket must exceed to be a window.
    max_windows
        Buckets kept as windows (before neighbouring ones are joined).

    Examples
    --------
    Someone who answers on weekday evenings and misses most calls during the day:

    >>> import random
    >>> from datetime import datetime
    >>> rng = random.Random(12345)
    >>> contact = ContactWindows()
    >>> for day in range(5, 61):  # January and February 2026, from Monday the 5th
    ...     for _ in range(4):
    ...         hour = rng.choice([9, 10, 14, 15, 18, 19, 20])
    ...         evening = hour >= 18
    ...         ts = datetime.fromisoformat(f"2026-01-01T{hour:02d}:30:00+08:00").timestamp()
    ...         ts += (day - 1) * 86400
    ...         out = rng.random() < (0.4 if evening else 0.1)
    ...         contact.learn_one({"ts": ts, "direction": "out" if out else "in",
    ...                            "answered": rng.random() < (0.85 if evening else 0.2)})
    >>> advice = contact.advice()
    >>> advice["summary"]
    'answers 100% of calls on weekdays 17:00-21:00'
    >>> [(w["weekdays"], w["start"], w["end"], w["incoming_calls"]) for w in advice["windows"]]
    [([1, 2, 3, 4, 5], '17:00', '21:00', 12)]
    >>> contact.counts()[:6]  # weekdays, 09:00 to 21:00: (answered, missed), decayed
    [(1, 4), (0, 0), (1, 4), (0, 6), (6, 0), (6, 0)]
    >>> contact.advice(account_manager="AM007")["first_contact"]
    'account_manager'

    """

    def __init__(self, tz_offset_hours: float = 8.0, min_calls: int = 3, min_share: float = 0.6,
                 max_windows: int = 2):
        self.tz_offset_hours = tz_offset_hours
        self.min_calls = min_calls
        self.min_share = min_share
        self.max_windows = max_windows
        self._offset_s = tz_offset_hours * 3600.0
        self._state = 0

    @property
    def state(self) -> int:
        """The counts as one integer (see the module's description)."""
        return self._state

    @state.setter
    def state(self, value: int) -> None:
        self._state = int(value or 0)

    # -- learning ------------------------------------------------------------------------
    def bucket(self, ts: float) -> tuple[int | None, int]:
        """(bucket, local day) of an instant (epoch seconds); the bucket is None outside
        :data:`CALL_HOURS`."""
        local = int(ts + self._offset_s)
        day, second = divmod(local, DAY_S)
        if not _FIRST_S <= second < _END_S:
            return None, day
        weekend = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        return BLOCKS * weekend + (second - _FIRST_S) // BLOCK_S, day

    def learn_one(self, x: dict[str, Any]) -> None:
        """One call: ``{"ts": epoch seconds, "direction": "in"|"out", "answered": bool}``
        (``answered`` is read on incoming calls only)."""
        self.add(float(x["ts"]), MADE if x["direction"] == "out"
                 else ANSWERED if x.get("answered") else MISSED)

    def add(self, ts: float, kind: int) -> None:
        """One call at ``ts`` (epoch seconds) of ``kind`` (:data:`ANSWERED`, :data:`MISSED`
        or :data:`MADE`): :meth:`learn_one` without the dict, for the engine's every call.
        A call outside :data:`CALL_HOURS` is not counted."""
        b, _ = self.bucket(ts)
        if b is None:
            return
        shift = _BITS * b
        answered, missed = _PAIRS[self._state >> shift & _MASK]
        if kind == MADE and answered:
            return  # at the phone then: already known from a call they answered
        if answered + missed >= SUM_CAP:
            answered, missed = answered >> 1, missed >> 1
        if kind == MISSED:
            missed += 1
        else:
            answered += 1
        self._state = self._state & ~(_MASK << shift) | _INDEX[answered, missed] << shift

    # -- reading -------------------------------------------------------------------------
    def counts(self) -> list[tuple[int, int]]:
        """(answered, missed) per bucket."""
        return _unpack(self._state)

    def windows(self) -> list[dict[str, Any]]:
        """The best windows of the week, best first (see the class's description)."""
        counts = self.counts()
        scored = []
        for b, (answered, missed) in enumerate(counts):
            calls = answered + missed
            reached = (answered + 1) / (calls + 2)
            if calls >= self.min_calls and reached > self.min_share:
                scored.append((-reached, -calls, b))
        scored.sort()
        chosen = sorted(b for *_, b in scored[: self.max_windows])
        rank = {b: i for i, (*_, b) in enumerate(scored)}
        # Join neighbouring blocks of one day type: a window is a run of chosen buckets.
        runs: list[list[int]] = []
        for b in chosen:
            if runs and runs[-1][-1] == b - 1 and (b % BLOCKS) != 0:
                runs[-1].append(b)
            else:
                runs.append([b])
        runs.sort(key=lambda run: min(rank[b] for b in run))
        out = []
        for run in runs:
            answered = sum(counts[b][ANSWERED] for b in run)
            missed = sum(counts[b][MISSED] for b in run)
            out.append({
                "weekdays": WEEKEND if run[0] >= BLOCKS else WEEKDAYS,
                "start": f"{CALL_HOURS[0] + (run[0] % BLOCKS) * BLOCK_HOURS:02d}:00",
                "end": f"{CALL_HOURS[0] + (run[-1] % BLOCKS + 1) * BLOCK_HOURS:02d}:00",
                "answered_share": _share(answered, missed),
                "incoming_calls": answered + missed,
                "answered_calls": answered,
            })
        return out

    def advice(self, account_manager: str | None = None) -> dict[str, Any]:
        """What an alert carries as ``contact``: the windows, the share of incoming calls
        answered in them, a sentence, and who to call first (the account manager, when
        given: a key account's relationship goes through them)."""
        windows = self.windows()
        answered = sum(w["answered_calls"] for w in windows)
        share = _share(answered, sum(w["incoming_calls"] for w in windows) - answered)
        if not windows:
            sentence = "too few calls yet to tell when they answer"
        else:
            parts, last = [], None
            for w in windows:  # "weekdays 18:00-21:00 and 09:00-12:00 and weekends ..."
                days = "weekends" if w["weekdays"] == WEEKEND else "weekdays"
                parts.append(("" if days == last else f"{days} ") + f"{w['start']}-{w['end']}")
                last = days
            when = " and ".join(parts)
            sentence = f"answers {share:.0%} of calls on {when}"
        first = "subscriber"
        if account_manager:
            first = "account_manager"
            sentence = f"call through account manager {account_manager} first; the subscriber " \
                       + sentence
        return {"first_contact": first, "account_manager": account_manager,
                "windows": windows, "answered_share": share, "summary": sentence}


def stored(st: dict[str, Any]) -> int:
    """The windows' integer in a subscriber state: ``"i"``, or what an earlier version
    stored as ``"h"`` (:func:`from_three_hour_blocks`, :func:`from_base64`), or 0."""
    value: int | None = st.get(KEY)
    if value is not None:
        return value
    old = st.get(OLD_KEY)
    if isinstance(old, int) and not isinstance(old, bool):
        return from_three_hour_blocks(old)
    if isinstance(old, str):
        return from_base64(old)
    return 0


def keep(st: dict[str, Any], state: int) -> None:
    """Store the windows' integer in a subscriber state (dropping an earlier version's)."""
    st[KEY] = state
    st.pop(OLD_KEY, None)


def from_three_hour_blocks(old: int) -> int:
    """The integer an earlier version stored as ``"h"`` (three-hour blocks from 09:00, a
    byte each: ``answered * 11 + missed`` in bits 0-6, a call made in bit 7), as this
    version's: each two-hour block takes the counts of the three-hour block its first hour
    lay in (:func:`_pack`).

    >>> weekday_evening = (6 * 11 + 1 | 1 << 7) << 8 * 3  # 18:00-21:00: 6 answered, 1 missed
    >>> contact = ContactWindows()
    >>> contact.state = from_three_hour_blocks(weekday_evening)
    >>> contact.counts()[4:6]                             # 17:00-19:00, 19:00-21:00
    [(0, 0), (3, 0)]
    """
    blocks = [(*divmod(byte & 0x7F, 11), byte >> 7)
              for byte in (old >> 8 * b & 0xFF for b in range(2 * _OLD_BLOCKS))]
    return _pack([blocks[_OLD_BLOCKS * (b >= BLOCKS)
                         + (b % BLOCKS * BLOCK_HOURS) // _OLD_BLOCK_HOURS]
                  for b in range(BUCKETS)])


def from_base64(text: str) -> int:
    """The state an earlier version stored as base64 (49 bytes: a period modulo 256, then
    answered, missed and made counts up to 255 for 16 buckets of three hours over the whole
    day), as this version's integer: each two-hour block of :data:`CALL_HOURS` takes the
    counts of the three-hour block its first hour lay in (:func:`_pack`). Anything else
    reads as no counts (the windows learn again from the next call).

    >>> from binascii import b2a_base64
    >>> old = bytearray(49)
    >>> old[1 + 6] = 24                   # answered on weekdays 18:00-21:00
    >>> old[1 + 16 + 6] = 4               # missed there
    >>> old[1 + 32 + 6] = 30              # made there
    >>> old[1 + 3] = 5                    # answered on weekdays 09:00-12:00
    >>> old[1 + 0] = 40                   # answered on weekdays 00:00-03:00: not kept
    >>> contact = ContactWindows()
    >>> contact.state = from_base64(b2a_base64(bytes(old), newline=False).decode())
    >>> contact.counts()[:6]
    [(5, 0), (5, 0), (0, 0), (0, 0), (0, 0), (3, 0)]
    """
    try:
        raw = a2b_base64(text)
    except (Base64Error, ValueError):
        return 0
    if len(raw) != 1 + 3 * 16:
        return 0
    first = CALL_HOURS[0] // _OLD_BLOCK_HOURS
    blocks = []
    for b in range(BUCKETS):
        at = 1 + 8 * (b >= BLOCKS) + first + (b % BLOCKS * BLOCK_HOURS) // _OLD_BLOCK_HOURS
        blocks.append((raw[at], raw[at + 16], raw[at + 32]))
    return _pack(blocks)


def _pack(blocks: list[tuple[int, int, int]]) -> int:
    """(answered, missed, made) per bucket as this version's integer: a call made where
    none was answered counts as one answered; each bucket halved until it holds at most
    :data:`SUM_CAP` calls (its share stays, roughly)."""
    state = 0
    for b, (answered, missed, made) in enumerate(blocks):
        if made and not answered:
            answered = 1
        while answered + missed > SUM_CAP:
            answered, missed = answered >> 1, missed >> 1
        state |= _INDEX[answered, missed] << _BITS * b
    return state


def _unpack(state: int) -> list[tuple[int, int]]:
    return [_PAIRS[state >> _BITS * b & _MASK] for b in range(BUCKETS)]


def _share(answered: int, missed: int) -> float | None:
    total = answered + missed
    return round(answered / total, 2) if total else None
