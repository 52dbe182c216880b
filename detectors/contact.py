"""Contact windows: when a subscriber takes calls, learned from their own calls in event time.

A retention call that nobody answers retains nobody (the sources' region reached 33 of 266
warned customers). Each subscriber's calls say when they are at the phone: the incoming
calls they answer, the ones they miss, and the calls they make themselves, by hour of the
week. The input contract has no "answered" flag: an incoming call with ``duration_s > 0``
was answered, one with ``duration_s == 0`` was missed, and a forwarded call says nothing
about the subscriber (they never saw it ring) and is left out.

Hours of the week are coarse buckets: weekdays or weekend, by blocks of three hours in the
operator's time zone (16 buckets). Each bucket holds three small counts (answered, missed,
made), at most 255. The counts decay in event time: they halve at the start of each period
(four weeks by default), and all halve at once when one reaches its cap, so the shares
they give follow the last couple of months.

The state is one short string, the subscriber state's ``"h"`` (like the dedupe ring ``"e"``:
a string is one object, where a record of numbers would be a list and its items): base64
of 49 bytes, about 70 bytes serialized and 120 in memory. Byte 0 is the period the counts
were decayed to, modulo 256 (periods of four weeks wrap after 19 years; a call from an
earlier period than the stored one, a late call, is counted without decaying); bytes 1-48
the counts, answered then missed then made, bucket by bucket (:data:`BUCKETS`).
"""

from __future__ import annotations

from binascii import a2b_base64, b2a_base64
from typing import Any

from river import base

__all__ = ["ANSWERED", "BLOCK_HOURS", "BUCKETS", "MADE", "MISSED", "ContactWindows"]

#: Hours per block of the day; blocks per day; buckets (weekdays, then the weekend).
BLOCK_HOURS = 3
BLOCKS = 24 // BLOCK_HOURS
BUCKETS = 2 * BLOCKS
BLOCK_S = 3600 * BLOCK_HOURS
#: The three counts per bucket, in the order they are stored.
ANSWERED, MISSED, MADE = 0, 1, 2
CAP = 255
DAY_S = 86400
#: ISO weekdays (Monday 1) of each day type.
WEEKDAYS = [1, 2, 3, 4, 5]
WEEKEND = [6, 7]


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

    The state is the string :attr:`state` (see the module's description); the engine loads
    it from the subscriber's state and stores it back.

    Parameters
    ----------
    tz_offset_hours
        The operator's offset from UTC: windows are in its local time.
    period_days
        The counts halve every this many days of event time.
    min_calls
        Calls a bucket needs before it can be a window.
    min_share
        The share (as ranked) a bucket must exceed to be a window.
    made_prior
        The most answered calls that the calls made in a bucket stand for.
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
    'answers 84% of calls on weekdays 18:00-21:00 and weekends 15:00-21:00'
    >>> [(w["weekdays"], w["start"], w["end"]) for w in advice["windows"]]
    [([1, 2, 3, 4, 5], '18:00', '21:00'), ([6, 7], '15:00', '21:00')]
    >>> contact.advice(account_manager="AM007")["first_contact"]
    'account_manager'

    """

    def __init__(self, tz_offset_hours: float = 8.0, period_days: int = 28, min_calls: int = 3,
                 min_share: float = 0.6, made_prior: int = 3, max_windows: int = 3):
        self.tz_offset_hours = tz_offset_hours
        self.period_days = period_days
        self.min_calls = min_calls
        self.min_share = min_share
        self.made_prior = made_prior
        self.max_windows = max_windows
        self._offset_s = tz_offset_hours * 3600.0
        self.state = ""

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
        self.add(float(x["ts"]), MADE if x["direction"] == "out"
                 else ANSWERED if x.get("answered") else MISSED)

    def add(self, ts: float, kind: int) -> None:
        """One call at ``ts`` (epoch seconds) of ``kind`` (:data:`ANSWERED`, :data:`MISSED`
        or :data:`MADE`): :meth:`learn_one` without the dict, for the engine's every call."""
        local = int(ts + self._offset_s)
        day = local // DAY_S
        at = 1 + kind * BUCKETS + BLOCKS * ((day + 3) % 7 >= 5) + (local % DAY_S) // BLOCK_S
        period = (day // self.period_days) & 0xFF
        if self.state:
            raw = bytearray(a2b_base64(self.state))
            ahead = (period - raw[0]) & 0xFF
            if ahead:
                if ahead < 128:  # a later period: halve once per period gone by
                    shift = min(ahead, 8)
                    raw[1:] = bytes(c >> shift for c in raw[1:])
                    raw[0] = period
                # else an earlier period (a late call): counted as it is
        else:
            raw = bytearray(1 + 3 * BUCKETS)
            raw[0] = period
        if raw[at] >= CAP:
            raw[1:] = bytes(c >> 1 for c in raw[1:])
        raw[at] += 1
        self.state = b2a_base64(raw, newline=False).decode("ascii")

    # -- reading -------------------------------------------------------------------------
    def counts(self) -> list[tuple[int, int, int]]:
        """(answered, missed, made) per bucket."""
        raw = a2b_base64(self.state) if self.state else bytes(1 + 3 * BUCKETS)
        return [(raw[1 + b], raw[1 + BUCKETS + b], raw[1 + 2 * BUCKETS + b])
                for b in range(BUCKETS)]

    def windows(self) -> list[dict[str, Any]]:
        """The best windows of the week, best first (see the class's description)."""
        scored = []
        for b, (answered, missed, made) in enumerate(self.counts()):
            calls = answered + missed + made
            made_as = min(made, self.made_prior)
            reached = (answered + made_as + 1) / (answered + missed + made_as + 2)
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


def _share(answered: int, missed: int) -> float | None:
    total = answered + missed
    return round(answered / total, 2) if total else None
