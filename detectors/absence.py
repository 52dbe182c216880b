"""Absence by shape: a stay away recognised from the calls themselves, not from cell ids.

A trip is not churn, and a feed may carry no location (``cell_id`` null or constant), so an
absence must show in the counts: outgoing calls collapse from one day to the next after a
steady fortnight, incoming calls collapse with them or are forwarded (often to one
number), and, a week or two later, both come back. Churn looks different in one of four
ways, and each sends a stay away to red: it lasts longer than a trip; activity stays
partly present (the subscriber is still here, only their calls go elsewhere); a decline
came before it (then it is not a stay away at all); the plan is cut during it; or other
members of the subscriber's group or account do the same at the same time (forwarding to
the same operator, held as a stay away or alerted: :mod:`detectors.group_forwarding`).
What a stay away says in an alert (yellow while it may be an absence, if calls are
forwarded off-net) is :mod:`detectors.stay_judgement`'s.
"""

from __future__ import annotations

import math
from typing import Any

from river import base

from detectors.record import Record

__all__ = ["AwayState", "StayAway", "VERDICTS", "beyond_chance"]

#: Why a stay away is not an absence (``AwayState.verdict``); 0: it may still be one.
VERDICTS: tuple[str, ...] = ("", "persisted", "present", "plan_cut", "group")
PERSISTED, PRESENT, PLAN_CUT, GROUP = 1, 2, 3, 4
#: Share of the usual outgoing calls on the first day back that makes an unconfirmed stay
#: away a trip after all (:attr:`StayAway.returned`).
RETURN_LEVEL = 0.8


class AwayState(Record):
    """``"t"``: a running stay away (the key is absent when none runs).

    ``start``: its first day (operator day number); ``days`` closed days it has lasted;
    ``out``: outgoing calls over them, ``expected``: the outgoing calls usual over them
    (tenths); ``n_in``: incoming calls that reached the phone (none forwarded, to any
    number), ``in_expected``: incoming calls usual (tenths),
    ``forwarded``: incoming calls forwarded to new off-net numbers; ``confirmed``: the
    collapse is beyond chance (its days are out of the usage and spend windows);
    ``cusum``: the usage CUSUM's level before it; ``verdict``: why it is not an absence
    (:data:`VERDICTS`, 0: it may be one); ``operator``: index of the operator calls were
    forwarded to (-1: none).
    """

    __slots__ = ()
    start: int = 0
    days: int = 0
    out: int = 0
    expected: int = 0
    n_in: int = 0
    in_expected: int = 0
    forwarded: int = 0
    confirmed: int = 0
    cusum: float = 0
    verdict: int = 0
    operator: int = -1


class StayAway(base.DriftDetector):
    """Recognise a stay away by its shape, day by day, and say when it is not one.

    Before each :meth:`update` (one closed day's outgoing calls), :meth:`expect` gives the
    day's context: the outgoing and incoming calls usual that day, the incoming calls seen,
    those forwarded to new off-net numbers, whether the fortnight before was steady (no
    decline, no usage alarm) and whether the plan was cut that day.

    - **Onset**: a day with outgoing calls at or below ``collapse`` of usual after a steady
      fortnight (the collapsed days just before it belong to it), or below ``back`` of
      usual with incoming calls forwarded off-net that day (a trip's first day). After a
      decline there is no onset: that is churn going its way, judged by the other models.
    - **Confirmed** (:attr:`drift_detected`) once outgoing calls over its days are at most
      ``collapse`` of usual, and either incoming calls are forwarded off-net, or, after
      ``min_days`` days at least, ``min_expected`` outgoing calls were usual, short of
      usual by ``z`` standard errors (Poisson: :func:`beyond_chance`), and incoming calls
      collapsed too (at most ``collapse`` of usual, from at least ``min_expected`` usual
      over its days). A day
      that does not collapse before that ends it (a quiet day, not a stay), unless calls
      are forwarded off-net and its days together stay below ``partial`` of usual (a trip's
      first days are partly at home); once confirmed, activity at ``partial`` of usual
      without forwarding ends it.
    - **Ends** on the first day outgoing calls are back to ``back`` of usual (two calls at
      least) with nothing forwarded off-net (:attr:`ended`). One not yet confirmed, yet as
      long, low and beyond chance as a confirmation needs, that ends with a day back at
      :data:`RETURN_LEVEL` of usual was an absence after all (:attr:`returned`).
    - **Not an absence** (:attr:`verdict`) when it lasts more than ``trip_days`` (on the
      calendar, from its first day to the day of the last update); when
      outgoing calls stay at ``partial`` of usual or more over two days or more while calls
      are forwarded off-net (the subscriber is here, their calls go elsewhere; not at a
      holiday, when a traveller's call or two reaches that share of the low usual); when the
      plan is cut during it (:meth:`note_cut` for a day it does not step); or
      (:meth:`group_moves`) when other members of the group or account do the same.

    State is an :class:`AwayState` in :attr:`state` (None when no stay away runs).

    Parameters
    ----------
    collapse
        Share of the usual calls at or below which a day has collapsed.
    back
        Share of the usual outgoing calls at which activity is back.
    partial
        Share of the usual outgoing calls over the stay that shows presence.
    min_expected
        Usual outgoing calls over the collapsed days that make the collapse beyond chance.
    trip_days
        The longest a trip lasts.
    z
        Standard errors by which outgoing calls must fall short of usual to confirm.
    min_days
        Days a stay away without forwarding must last before it is confirmed: one or two
        quiet days inside a decline are not a trip, and confirming them would take the
        decline's days out of the usage window.

    Examples
    --------
    Four calls a day out and in; then a ten-day trip with incoming calls forwarded to a
    family member's number on another operator, then back (recognised on its first day:
    its calls are forwarded):

    >>> import random
    >>> rng = random.Random(12345)
    >>> stay = StayAway()
    >>> for day in range(40):
    ...     trip = 20 <= day < 30
    ...     out = sum(rng.random() < (0.02 if trip else 0.5) for _ in range(8))
    ...     n_in = sum(rng.random() < 0.5 for _ in range(8))
    ...     stay.expect(4.0, 4.0, n_in, n_in if trip else 0, steady=stay.state is None)
    ...     stay.update(out)
    ...     if stay.drift_detected or stay.ended:
    ...         print(day, "away" if stay.drift_detected else "back", stay.verdict or "-")
    20 away -
    21 away -
    22 away -
    23 away -
    24 away -
    25 away -
    26 away -
    27 away -
    28 away -
    29 away -
    30 back -

    The same collapse that lasts past a trip's length is not an absence:

    >>> stay = StayAway(trip_days=3)
    >>> for day in range(5):
    ...     stay.expect(4.0, 4.0, 0, 0, steady=True)
    ...     stay.update(0)
    >>> stay.verdict, stay.state.days
    ('persisted', 5)

    """

    def __init__(self, collapse: float = 0.25, back: float = 0.5, partial: float = 0.35,
                 min_expected: float = 4.0, trip_days: int = 14, z: float = 3.0,
                 min_days: int = 3):
        super().__init__()
        self.collapse = collapse
        self.back = back
        self.partial = partial
        self.min_expected = min_expected
        self.trip_days = trip_days
        self.z = z
        self.min_days = min_days
        self.state: Any = None
        #: the stay away ended with the last update (activity came back)
        self.ended = False
        #: a stay away ended before it was confirmed, yet shaped like a trip: as long, low
        #: and beyond chance as a confirmation needs, and activity back near its old level
        #: at once (a decline's noise comes back lower); its days were an absence's
        self.returned = False
        self._rate = 1.0
        self._in_rate = 1.0
        self._n_in = 0
        self._forwarded = 0
        self._steady = True
        self._cut = False
        self._day = 0
        self._cusum: float = 0
        self._run: tuple[int, int] = (0, 0)
        self._holiday = False

    def expect(self, rate: float, in_rate: float, n_in: int, forwarded: int,
               steady: bool = True, cut: bool = False, day: int = 0,
               cusum: float = 0, run: tuple[int, int] = (0, 0),
               holiday: bool = False) -> None:
        """The context of the next :meth:`update`: usual outgoing (``rate``) and incoming
        (``in_rate``) calls that day, incoming calls that reached the phone (``n_in``, none
        forwarded) and those forwarded to new off-net numbers (``forwarded``), a steady
        fortnight before, a plan cut that day, the day's number, the usage CUSUM's level
        (kept at onset), the collapsed days just before (``run``: how many, and their
        outgoing calls), which an onset takes in, and whether everyone is at a holiday
        (``holiday``: presence is no verdict then).
        """
        self._rate, self._in_rate = rate, in_rate
        self._n_in, self._forwarded = n_in, forwarded
        self._steady, self._cut, self._day, self._cusum = steady, cut, day, cusum
        self._run, self._holiday = run, holiday

    @property
    def verdict(self) -> str:
        """Why the running stay away is not an absence (``""``: it may be one)."""
        return VERDICTS[self.state.verdict] if self.state is not None else ""

    @property
    def holding(self) -> bool:
        """A confirmed stay away that may be an absence: judgement waits."""
        s = self.state
        return s is not None and bool(s.confirmed) and not s.verdict

    def update(self, x: int | float) -> None:
        """One closed day's outgoing calls."""
        s = self.state
        out = int(x)
        rate = self._rate
        self.ended = self.returned = self._drift_detected = False
        collapsed = out <= self.collapse * rate
        if s is None:
            # A trip's first day is half at home: with calls forwarded off-net that day,
            # outgoing calls at ``back`` of usual begin a stay away too.
            onset = collapsed or (self._forwarded > 0 and out < self.back * rate)
            if not (onset and self._steady and rate > 0):
                return
            s = self.state = AwayState.new()
            days, calls = self._run
            s.start, s.cusum = self._day - days, self._cusum
            s.days, s.out, s.expected = days, calls, round(10 * rate * days)
            s.in_expected = round(10 * self._in_rate * days)
            s.n_in = round(self._in_rate * days)  # not kept per day: taken as usual
        elif not s.confirmed and not (collapsed or self._still_low(s, out, rate)):
            self.state = None  # a quiet day, not a stay; or a trip's return
            self.returned = self._returned(s, out, rate)
            return
        elif out >= max(self.back * rate, 2) and not self._forwarded:
            self.state = None
            self.ended = bool(s.confirmed)
            self.returned = not s.confirmed and self._returned(s, out, rate)
            return
        s.days += 1
        s.out += out
        s.expected += round(10 * rate)
        s.n_in += self._n_in
        s.in_expected += round(10 * self._in_rate)
        s.forwarded += self._forwarded
        if self._cut and not s.verdict:
            s.verdict = PLAN_CUT  # before confirmation too: it counts once confirmed
        # Low; without forwarding, beyond chance too: a few quiet days of a subscriber who
        # calls little are Poisson noise, not a stay. With calls forwarded to a new off-net
        # number something happened, and whether a trip or a switch, the shape tells
        # later; waiting for the collapse to be beyond chance let every trip of those
        # who call little (and at a holiday, of nearly everyone) be alerted as a switch.
        low_out = 10 * s.out <= self.collapse * s.expected
        # Incoming calls "collapse too" only from as many usual as the outgoing need: a
        # line nobody calls has no incoming calls to lose, and its decline is no stay.
        # Without forwarding, a few days too: one or two quiet days are as often a dip
        # inside a decline as a trip's start, and confirming takes them out of the usage
        # window (the decline's evidence with them).
        if not s.confirmed and low_out and (s.forwarded or (
                self._long_beyond_chance(s)
                and s.in_expected >= 10 * self.min_expected
                and 10 * s.n_in <= self.collapse * s.in_expected)):
            s.confirmed = 1
        if not s.confirmed or s.verdict:
            self._drift_detected = bool(s.confirmed)
            return
        present = s.days >= 2 and 10 * s.out >= self.partial * s.expected
        if present and not s.forwarded:
            self.state = None  # quiet, not away: the usage models judge it
            return
        # Its length on the calendar: days away from home by cells are not stepped here,
        # but a trip lasts them all the same.
        if max(s.days, self._day - s.start + 1) > self.trip_days:
            s.verdict = PERSISTED
        elif present and not self._holiday:
            # At a holiday the usual is everyone's low, and a traveller's call or two
            # reaches a share of it: presence says nothing until the holiday is over.
            s.verdict = PRESENT
        self._drift_detected = True

    def _still_low(self, s: AwayState, out: int, rate: float) -> bool:
        """Whether an unconfirmed stay away's days, with today's ``out`` calls, are still
        low enough for it to go on: at ``collapse`` of usual or less; with calls forwarded
        off-net, below ``partial`` too, for presence decides then (a trip begun the
        afternoon before is a third at home over its first two days)."""
        calls, usual = 10 * (s.out + out), s.expected + 10 * rate
        return calls <= self.collapse * usual or (
            bool(s.forwarded or self._forwarded) and calls < self.partial * usual)

    def _long_beyond_chance(self, s: AwayState) -> bool:
        """As long and as far short of usual as a stay away without forwarding must be to
        count: ``min_days`` days, ``min_expected`` calls usual, short by ``z`` errors."""
        return (s.days >= self.min_days and s.expected >= 10 * self.min_expected
                and beyond_chance(s, self.z))

    def _returned(self, s: AwayState, out: int, rate: float) -> bool:
        """Whether an unconfirmed stay away ending with ``out`` calls was a trip after all:
        low and long enough to have been confirmed, and back near the usual at once."""
        return (out >= max(RETURN_LEVEL * rate, 2)
                and 10 * s.out <= self.collapse * s.expected and self._long_beyond_chance(s))

    def note_cut(self) -> None:
        """A plan cut on a day :meth:`update` does not see (away from home by cells) while a
        stay away runs: it counts as one during it."""
        if self.state is not None and not self.state.verdict:
            self.state.verdict = PLAN_CUT

    def group_moves(self) -> None:
        """Other members of the group or account do the same: not an absence."""
        if self.state is not None and self.state.confirmed and not self.state.verdict:
            self.state.verdict = GROUP


def beyond_chance(t: AwayState, z: float) -> bool:
    """Whether a stay away's outgoing calls fall short of usual by ``z`` standard errors
    (Poisson) or more: a few quiet days of a subscriber who calls little are chance.

    >>> t = AwayState.new()
    >>> t.out, t.expected = 2, 99  # 2 calls against a usual 9.9
    >>> beyond_chance(t, 3.0), beyond_chance(t, 2.0)
    (False, True)
    """
    usual = t.expected / 10
    return usual - t.out >= z * math.sqrt(usual)
