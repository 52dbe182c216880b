"""Contact windows: when a subscriber takes calls, learned from their own calls in event time.

A retention call that nobody answers retains nobody (the sources' region reached 33 of 266
warned customers). Each subscriber's calls say when they are at the phone: the incoming
calls they answer, the ones they miss, and the calls they make themselves, by hour of the
week. The input contract has no "answered" flag: an incoming call with ``duration_s > 0``
was answered, one with ``duration_s == 0`` was missed, and a forwarded call says nothing
about the subscriber (they never saw it ring) and is left out.

Hours of the week are coarse buckets, by the calls' event time: weekdays or weekend, by
blocks of three hours in the operator's time zone, over the hours a call centre calls
(:data:`CALL_HOURS`, 09:00-21:00: a window at 23:00 could not be used, so calls outside
them are not counted; 8 buckets). Each bucket holds three small counts: answered and
missed calls up to :data:`COUNT_CAP` (10), and whether the subscriber made a call there
(:data:`MADE_CAP`, 1: a call made says they were at the phone, and stands for one answered
call, ``made_prior``; whether they pick up is for the answered and missed calls to say).
The counts decay: when a bucket's answered or missed count is at its cap, that bucket's
counts halve before the call is counted, so each block's share follows its last dozen or
twenty calls. Blocks decay apart: a busy block does not wipe out what a quiet one has seen.

The state is one integer, the subscriber state's ``"h"``: an integer below 2**64 is one
small object (at most 36 bytes in memory, 20 digits serialized). Byte ``b`` (from the
lowest) is bucket ``b`` of :data:`BUCKETS`: ``answered * 11 + missed`` in bits 0-6, made in
bit 7. Earlier versions stored a base64 string of 49 bytes (the period of a
four-weekly halving modulo 256, then answered, missed and made counts up to 255 for 16
buckets over the whole day): it is read as the counts of the hours kept, each bucket
halved until it is within the caps (:func:`from_base64`).
"""

from __future__ import annotations

from binascii import Error as Base64Error
from binascii import a2b_base64
from typing import Any

from river import base

__all__ = ["ANSWERED", "BLOCK_HOURS", "BUCKETS", "CALL_HOURS", "COUNT_CAP", "MADE",
           "MADE_CAP", "MISSED", "ContactWindows", "from_base64"]

#: Hours per block of the day.
BLOCK_HOURS = 3
#: The local hours counted (first, end): those a call centre calls in.
CALL_HOURS = (9, 21)
#: Blocks per day; buckets (weekdays' blocks, then the weekend's).
BLOCKS = (CALL_HOURS[1] - CALL_HOURS[0]) // BLOCK_HOURS
BUCKETS = 2 * BLOCKS
BLOCK_S = 3600 * BLOCK_HOURS
#: The three counts per bucket.
ANSWERED, MISSED, MADE = 0, 1, 2
#: Highest answered or missed count (the pair in seven bits), highest count of calls made.
COUNT_CAP = 10
MADE_CAP = 1
_PAIR = COUNT_CAP + 1
DAY_S = 86400
#: ISO weekdays (Monday 1) of each day type.
WEEKDAYS = [1, 2, 3, 4, 5]
WEEKEND = [6, 7]
_FIRST_S = CALL_HOURS[0] * 3600
_END_S = CALL_HOURS[1] * 3600


class ContactWindows(base.Base):
    """When a subscriber answers the phone: the best windows of the week, and their shares.

    ``learn_one`` takes one call: its event time (epoch seconds), its direction and, for an
    incoming call, whether it was answered. :meth:`windows` ranks the buckets by the share
    of incoming calls answered there, with a prior of one answered and one missed call to
    which the calls the subscriber made there add up to ``made_prior`` answered ones (a call
    made says they were at the phone; only answered and missed calls say whether they pick
    up: a block they only call out in ranks below one where they answer most calls), keeps
    those with at
    least ``min_calls`` calls and a share above ``min_share``, the best ``max_windows`` of
    them, and joins neighbouring blocks of the same day type. :meth:`advice` is what an
    alert carries (``contact``).

    The state is the integer :attr:`state` (see the module's description); the engine loads
    it from the subscriber's state and stores it back.

    Parameters
    ----------
    tz_offset_hours
        The operator's offset from UTC: windows are in its local time.
    min_calls
        Calls a bucket needs before it can be a window.
    min_share
        The share (as ranked) a bucket must exceed to be a window.
    made_prior
        The most answered calls that the calls made in a bucket stand for.
    max_windows
        Buckets kept as windows (before neighbouring ones are joined). Two: a third block
        is mostly a weak one, and an advised call in it goes unanswered more often than not.

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
    'answers 86% of calls on weekdays 18:00-21:00 and weekends 18:00-21:00'
    >>> [(w["weekdays"], w["start"], w["end"], w["incoming_calls"]) for w in advice["windows"]]
    [([1, 2, 3, 4, 5], '18:00', '21:00', 9), ([6, 7], '18:00', '21:00', 13)]
    >>> contact.counts()[:4]  # weekdays, 09:00 to 21:00: (answered, missed, made), decayed
    [(2, 7, 0), (4, 10, 0), (0, 9, 0), (9, 0, 1)]
    >>> contact.advice(account_manager="AM007")["first_contact"]
    'account_manager'

    """

    def __init__(self, tz_offset_hours: float = 8.0, min_calls: int = 3, min_share: float = 0.6,
                 made_prior: int = 1, max_windows: int = 2):
        self.tz_offset_hours = tz_offset_hours
        self.min_calls = min_calls
        self.min_share = min_share
        self.made_prior = made_prior
        self.max_windows = max_windows
        self._offset_s = tz_offset_hours * 3600.0
        self._state = 0

    @property
    def state(self) -> int:
        """The counts as one integer (see the module's description)."""
        return self._state

    @state.setter
    def state(self, value: int | str | None) -> None:
        # A subscriber state may hold what an earlier version wrote (a base64 string) or
        # nothing yet ("" or None from ``st.get("h", "")``).
        if isinstance(value, int) and not isinstance(value, bool):
            self._state = value
        elif isinstance(value, str) and value:
            self._state = from_base64(value)
        else:
            self._state = 0

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
        shift = 8 * b
        byte = self._state >> shift & 0xFF
        (answered, missed), made = divmod(byte & 0x7F, _PAIR), byte >> 7
        if kind == MADE:
            made = min(made + 1, MADE_CAP)
        else:
            if (answered if kind == ANSWERED else missed) >= COUNT_CAP:
                answered, missed, made = answered >> 1, missed >> 1, made >> 1
            if kind == ANSWERED:
                answered += 1
            else:
                missed += 1
        byte = answered * _PAIR + missed | made << 7
        self._state = self._state & ~(0xFF << shift) | byte << shift

    # -- reading -------------------------------------------------------------------------
    def counts(self) -> list[tuple[int, int, int]]:
        """(answered, missed, made) per bucket."""
        return _unpack(self._state)

    def windows(self) -> list[dict[str, Any]]:
        """The best windows of the week, best first (see the class's description)."""
        counts = self.counts()
        scored = []
        for b, (answered, missed, made) in enumerate(counts):
            calls = answered + missed + made
            made_as = min(made, self.made_prior)
            reached = (answered + made_as + 1) / (answered + missed + made_as + 2)
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
                "calls_made": sum(counts[b][MADE] for b in run),
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
            sentence = (f"answers {share:.0%} of calls on {when}" if share is not None
                        else f"makes calls on {when} (no incoming calls seen then)")
        first = "subscriber"
        if account_manager:
            first = "account_manager"
            sentence = f"call through account manager {account_manager} first; the subscriber " \
                       + sentence
        return {"first_contact": first, "account_manager": account_manager,
                "windows": windows, "answered_share": share, "summary": sentence}


def from_base64(text: str) -> int:
    """The state an earlier version stored as base64 (49 bytes: a period modulo 256, then
    answered, missed and made counts up to 255 for 16 buckets of three hours over the whole
    day), as this version's integer: the buckets of :data:`CALL_HOURS` only, each halved as
    often as it takes to bring its answered and missed counts within :data:`COUNT_CAP`
    (its share stays), calls made then capped at :data:`MADE_CAP`. Anything else reads as
    no counts (the windows learn again from the next call).

    >>> from binascii import b2a_base64
    >>> old = bytearray(49)
    >>> old[1 + 6] = 24                   # answered on weekdays 18:00-21:00
    >>> old[1 + 16 + 6] = 4               # missed there
    >>> old[1 + 32 + 6] = 30              # made there
    >>> old[1 + 3] = 5                    # answered on weekdays 09:00-12:00
    >>> old[1 + 0] = 40                   # answered on weekdays 00:00-03:00: not kept
    >>> contact = ContactWindows()
    >>> contact.state = b2a_base64(bytes(old), newline=False).decode()
    >>> contact.counts()[:4]
    [(5, 0, 0), (0, 0, 0), (0, 0, 0), (6, 1, 1)]
    """
    try:
        raw = a2b_base64(text)
    except (Base64Error, ValueError):
        return 0
    if len(raw) != 1 + 3 * 16:
        return 0
    old_blocks = 24 // BLOCK_HOURS
    first = CALL_HOURS[0] // BLOCK_HOURS
    state = 0
    for b in range(BUCKETS):
        at = 1 + old_blocks * (b >= BLOCKS) + first + b % BLOCKS
        answered, missed, made = raw[at], raw[at + 16], raw[at + 32]
        while max(answered, missed) > COUNT_CAP:
            answered, missed, made = answered >> 1, missed >> 1, made >> 1
        state |= (answered * _PAIR + missed | min(made, MADE_CAP) << 7) << 8 * b
    return state


def _unpack(state: int) -> list[tuple[int, int, int]]:
    return [(*divmod(byte & 0x7F, _PAIR), byte >> 7)
            for byte in (state >> 8 * b & 0xFF for b in range(BUCKETS))]


def _share(answered: int, missed: int) -> float | None:
    total = answered + missed
    return round(answered / total, 2) if total else None
