"""Contact windows: when a subscriber takes calls, learned from their own calls in event time.

A retention call that nobody answers retains nobody (the sources' region reached 33 of 266
warned customers). Each subscriber's calls say when they are at the phone: the incoming
calls they answer, the ones they miss, and the calls they make themselves, by hour of the
week. The input contract has no "answered" flag: an incoming call with ``duration_s > 0``
was answered, one with ``duration_s == 0`` was missed, and a forwarded call says nothing
about the subscriber (they never saw it ring) and is left out.

Hours of the week are coarse buckets: weekdays or weekend, by blocks of four hours in the
operator's time zone (12 buckets). Each bucket holds three small counts (answered, missed,
made), at most 255, kept as 36 bytes in base64: about 50 bytes serialized. The counts
decay in event time: they halve at the start of each period (four weeks by default), and
all halve at once when one reaches its cap, so the shares they give follow the last
couple of months.
"""

from __future__ import annotations

import binascii
from typing import Any

from river import base

from detectors.record import Record

__all__ = ["BLOCK_HOURS", "BUCKETS", "ContactState", "ContactWindows"]

#: Hours per block of the day; blocks per day; buckets (weekdays, then the weekend).
BLOCK_HOURS = 4
BLOCKS = 24 // BLOCK_HOURS
BUCKETS = 2 * BLOCKS
#: The three counts per bucket, in the order they are stored.
ANSWERED, MISSED, MADE = 0, 1, 2
CAP = 255
DAY_S = 86400
#: ISO weekdays (Monday 1) of each day type.
WEEKDAYS = [1, 2, 3, 4, 5]
WEEKEND = [6, 7]


class ContactState(Record):
    """``"h"`` in a subscriber's state: the contact counts and the period they were decayed to.

    ``period``: the event-time period (days since 1970-01-01 local, divided by the period's
    length) of the counts, -1 before the first call; ``counts``: base64 of
    ``3 x BUCKETS`` bytes, answered then missed then made, bucket by bucket.
    """

    __slots__ = ()
    period: int = -1
    counts: str = ""


class ContactWindows(base.Base):
    """When a subscriber answers the phone: the best windows of the week, and their shares.

    ``learn_one`` takes one call: its event time (epoch seconds), its direction and, for an
    incoming call, whether it was answered. :meth:`windows` ranks the buckets by the share
    of contacts that reached the subscriber there (answered incoming and calls they made,
    against missed incoming; one made and one missed call of prior), keeps those with at
    least ``min_calls`` calls and a share above ``min_share``, the best ``max_windows`` of
    them, and joins neighbouring blocks of the same day type. :meth:`advice` is what an
    alert carries (``contact``).

    The state is a :class:`ContactState` in :attr:`state`; the engine points it at the
    subscriber's stored record.

    Parameters
    ----------
    tz_offset_hours
        The operator's offset from UTC: windows are in its local time.
    period_days
        The counts halve every this many days of event time.
    min_calls
        Calls a bucket needs before it can be a window.
    min_share
        The share of contacts that reach the subscriber a bucket must exceed to be a window.
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
    ...         hour = rng.choice([9, 10, 14, 15, 17, 18, 19])
    ...         evening = hour >= 16
    ...         ts = datetime.fromisoformat(f"2026-01-01T{hour:02d}:30:00+08:00").timestamp()
    ...         ts += (day - 1) * 86400
    ...         out = rng.random() < (0.4 if evening else 0.1)
    ...         contact.learn_one({"ts": ts, "direction": "out" if out else "in",
    ...                            "answered": rng.random() < (0.85 if evening else 0.2)})
    >>> advice = contact.advice()
    >>> advice["summary"]
    'answers 88% of calls on weekdays 16:00-20:00 and weekends 16:00-20:00'
    >>> [(w["weekdays"], w["start"], w["end"]) for w in advice["windows"]]
    [([1, 2, 3, 4, 5], '16:00', '20:00'), ([6, 7], '16:00', '20:00')]
    >>> contact.advice(account_manager="AM007")["first_contact"]
    'account_manager'

    """

    def __init__(self, tz_offset_hours: float = 8.0, period_days: int = 28, min_calls: int = 3,
                 min_share: float = 0.6, max_windows: int = 3):
        self.tz_offset_hours = tz_offset_hours
        self.period_days = period_days
        self.min_calls = min_calls
        self.min_share = min_share
        self.max_windows = max_windows
        self._offset_s = tz_offset_hours * 3600.0
        self.state: Any = ContactState.new()

    # -- learning ------------------------------------------------------------------------
    def bucket(self, ts: float) -> tuple[int, int]:
        """(bucket, local day) of an instant (epoch seconds)."""
        local = int(ts + self._offset_s)
        day = local // DAY_S
        weekend = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        return BLOCKS * weekend + (local % DAY_S) // (3600 * BLOCK_HOURS), day

    def learn_one(self, x: dict[str, Any]) -> None:
        """One call: ``{"ts": epoch seconds, "direction": "in"|"out", "answered": bool}``
        (``answered`` is read on incoming calls only)."""
        bucket, day = self.bucket(float(x["ts"]))
        kind = MADE if x["direction"] == "out" else ANSWERED if x.get("answered") else MISSED
        s = self.state
        counts = bytearray(binascii.a2b_base64(s[1])) if s[1] else bytearray(3 * BUCKETS)
        period = day // self.period_days
        if s[0] >= 0 and period > s[0]:
            shift = min(period - s[0], 8)
            counts = bytearray(c >> shift for c in counts)
        if period > s[0]:
            s[0] = period
        at = kind * BUCKETS + bucket
        if counts[at] >= CAP:
            counts = bytearray(c >> 1 for c in counts)
        counts[at] += 1
        s[1] = binascii.b2a_base64(bytes(counts), newline=False).decode("ascii")

    # -- reading -------------------------------------------------------------------------
    def counts(self) -> list[tuple[int, int, int]]:
        """(answered, missed, made) per bucket."""
        raw = binascii.a2b_base64(self.state[1]) if self.state[1] else bytes(3 * BUCKETS)
        return [(raw[b], raw[BUCKETS + b], raw[2 * BUCKETS + b]) for b in range(BUCKETS)]

    def windows(self) -> list[dict[str, Any]]:
        """The best windows of the week, best first (see the class's description)."""
        scored = []
        for b, (answered, missed, made) in enumerate(self.counts()):
            calls = answered + missed + made
            reached = (answered + made + 1) / (calls + 2)
            if calls >= self.min_calls and reached > self.min_share:
                scored.append((-reached, -calls, b))
        chosen = sorted(b for *_, b in sorted(scored)[: self.max_windows])
        rank = {b: i for i, (*_, b) in enumerate(sorted(scored))}
        # Join neighbouring blocks of one day type: a window is a run of chosen buckets.
        runs: list[list[int]] = []
        for b in chosen:
            if runs and runs[-1][-1] == b - 1 and (b % BLOCKS) != 0:
                runs[-1].append(b)
            else:
                runs.append([b])
        runs.sort(key=lambda run: min(rank[b] for b in run))
        counts = self.counts()
        out = []
        for run in runs:
            answered = sum(counts[b][ANSWERED] for b in run)
            missed = sum(counts[b][MISSED] for b in run)
            out.append({
                "weekdays": WEEKEND if run[0] >= BLOCKS else WEEKDAYS,
                "start": f"{(run[0] % BLOCKS) * BLOCK_HOURS:02d}:00",
                "end": f"{(run[-1] % BLOCKS + 1) * BLOCK_HOURS:02d}:00",
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
            when = " and ".join(
                f"{'weekends' if w['weekdays'] == WEEKEND else 'weekdays'} "
                f"{w['start']}-{w['end']}" for w in windows)
            sentence = (f"answers {share:.0%} of calls on {when}" if share is not None
                        else f"makes calls on {when} (no incoming calls seen then)")
        first = "subscriber"
        if account_manager:
            first = "account_manager"
            sentence = f"call through account manager {account_manager} first; the subscriber " \
                       + sentence
        return {"first_contact": first, "account_manager": account_manager,
                "windows": windows, "answered_share": share, "summary": sentence}


def _share(answered: int, missed: int) -> float | None:
    total = answered + missed
    return round(answered / total, 2) if total else None
