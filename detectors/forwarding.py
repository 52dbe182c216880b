"""Call-forwarding model: learn each subscriber's usual forwarding, flag a switch off-net."""

from __future__ import annotations

from typing import Any

from river import base

__all__ = [
    "NO_TARGET",
    "Forwarding",
    "familiar_numbers",
    "is_familiar",
    "is_habit_target",
    "pack_familiar",
    "see_contact",
    "see_target",
]


# The familiar numbers are one integer: a 32-bit lane per number, its 16-bit fingerprint
# over its count (an int of two lanes takes 36 bytes; the list of four ints it replaced, 144).
_LANE = 32
_LANE_MASK = 0xFFFFFFFF
_COUNT_MASK = 0xFFFF


def see_contact(familiar: int, fp: int, size: int) -> int:
    """Count one call to ``fp`` in a Misra-Gries summary of ``size`` numbers, packed in one
    integer (:func:`familiar_numbers` lists it); returns the new summary.

    A number called often stays; a one-off is evicted.

    Examples
    --------
    >>> fam = 0
    >>> for fp in [7, 7, 7, 1, 2, 3, 7, 4]:
    ...     fam = see_contact(fam, fp, size=2)
    >>> familiar_numbers(fam), is_familiar(fam, 7, 2), is_familiar(fam, 4, 2)
    ([(7, 2)], True, False)

    """
    empty = -1
    for shift in range(0, _LANE * size, _LANE):
        entry = familiar >> shift & _LANE_MASK
        if not entry:
            empty = shift if empty < 0 else empty
        elif entry >> 16 == fp:
            return familiar + (1 << shift) if entry & _COUNT_MASK < _COUNT_MASK else familiar
    if empty >= 0:
        return familiar | (fp << 16 | 1) << empty
    # Full, and fp is not in it: every count down by one (Misra-Gries), fp not taken.
    kept = 0
    for shift in range(0, _LANE * size, _LANE):
        entry = familiar >> shift & _LANE_MASK
        if entry & _COUNT_MASK > 1:
            kept |= entry - 1 << shift
    return kept


def is_familiar(familiar: int, fp: int, min_count: int) -> bool:
    """True when ``fp`` is in the summary with at least ``min_count`` calls."""
    while familiar:
        entry = familiar & _LANE_MASK
        if entry and entry >> 16 == fp:
            return entry & _COUNT_MASK >= min_count
        familiar >>= _LANE
    return False


def familiar_numbers(familiar: int) -> list[tuple[int, int]]:
    """``(fingerprint, calls)`` of each number in the summary.

    >>> familiar_numbers(pack_familiar([14568, 333]))
    [(14568, 333)]
    """
    found = []
    while familiar:
        entry = familiar & _LANE_MASK
        if entry:
            found.append((entry >> 16, entry & _COUNT_MASK))
        familiar >>= _LANE
    return found


def pack_familiar(items: list[int]) -> int:
    """The summary of a flat list ``[fp, count, ...]`` (as states stored it before)."""
    packed = 0
    for i in range(0, len(items), 2):
        packed |= (items[i] << 16 | min(items[i + 1], _COUNT_MASK)) << (_LANE * (i // 2))
    return packed


#: The slot of :func:`see_target` holding no number.
NO_TARGET = (-1, 0, 0)


def see_target(slot: list[int], fp: int, age: int) -> list[int]:
    """Count one ordinary day (number ``age``) of forwarding to ``fp`` in a one-slot
    Misra-Gries summary ``[target, days, first day]``; returns the new slot.

    The slot keeps the forward target seen on the most such days, net of days forwarded
    elsewhere, and the day it was first seen. A habit's one number (a partner's line on
    another operator, say) wins the slot and, once seen on enough days over long enough
    (:func:`is_habit_target`), is no new number, whatever share of calls it takes on a day.

    Examples
    --------
    >>> slot = list(NO_TARGET)
    >>> for age, fp in enumerate([7, 7, 3, 7, 7]):
    ...     slot = see_target(slot, fp, age)
    >>> slot
    [7, 3, 0]
    >>> see_target(see_target([7, 1, 0], 3, 5), 5, 6)
    [5, 1, 6]

    """
    target, days, since = slot
    if fp == target:
        return [target, days + 1, since]
    if days > 1:
        return [target, days - 1, since]
    return [fp, 1, age] if days == 0 else list(NO_TARGET)


def is_habit_target(slot: list[int], fp: int, age: int, min_days: int, min_span: int) -> bool:
    """True when ``fp`` holds the slot of :func:`see_target` with ``min_days`` ordinary days,
    first seen ``min_span`` days or more before day ``age``: a habit of weeks, not the
    first days of a switch (which may begin with a few calls forwarded, then most).

    >>> is_habit_target([7, 3, 0], 7, 6, 3, 7), is_habit_target([7, 3, 0], 7, 7, 3, 7)
    (False, True)
    """
    return slot[0] == fp and slot[1] >= min_days and age - slot[2] >= min_span


class Forwarding(base.AnomalyDetector):
    """Daily forwarding of one subscriber, and how unusual the latest is.

    A River anomaly detector: :meth:`learn_one` learns a closed day's counts
    (``{"n_in": ..., "n_fwd": ..., "n_new_off": ...}``), :meth:`score_one` is the strength of
    the evidence in a day's counts so far (0, 0.6 or 1.0). The engine calls the same two
    steps by their own names, :meth:`close_day` and :meth:`evidence`, with plain numbers.

    Counted per day by the engine: incoming calls, forwarded calls, and forwarded to *new*
    off-net numbers (another operator's, by prefix and the ported list, and neither one of
    the subscriber's familiar contacts, see :func:`see_contact`, nor their habit's number,
    see :func:`see_target`). Learned: exponentially
    weighted shares of forwarded and of new-off-net-forwarded incoming calls (span
    ``span_days``), so a habitual forwarder (voicemail, a colleague, even off-net) is
    recognised. Evidence adds today's counts to a decayed sum of the last days' (factor
    ``carry`` a day), so a low-volume subscriber's switch shows within a few days and a
    busy one's within the hour.

    After warm-up, forwarding to new off-net numbers is not learned as normal while a
    streak of suspicious days runs, so a switch is not absorbed into the habit before it is
    flagged (after ``absorb_days`` running it becomes the new habit).

    Parameters
    ----------
    span_days
        Span of the exponential averages of daily shares.
    min_calls
        Forwarded calls to new off-net numbers needed today for strong evidence.
    min_carried
        The same over the last days (carried, weaker evidence: a quiet subscriber's).
    min_share
        Share of the incoming calls they must be.
    habit_share
        A usual new-off-net share above this makes such forwarding habitual (no evidence).
    min_carried_strong
        Calls forwarded to new off-net numbers on a first day of forwarding that, with
        ``strong_share`` of the day's incoming calls, make it overwhelming at the day's
        close (:meth:`carried_strength`).
    carry
        Daily factor by which earlier days' counts still count.
    absorb_days
        Length of a streak after which it is learned as the new habit.
    warmup_days
        Days learned from unconditionally (a new subscriber's normal).

    Examples
    --------
    Thirty days with some forwarding to voicemail, then nearly every call forwarded to a
    number on another operator; weak evidence at the second such call, strong by the
    fourth:

    >>> import random
    >>> rng = random.Random(12345)
    >>> fwd = Forwarding()
    >>> for day in range(30):
    ...     fwd.close_day(rng.randint(3, 12), n_fwd=rng.randint(0, 2), n_new_off=0)
    >>> n_in = n_new_off = 0
    >>> for call in range(20):
    ...     n_in += 1
    ...     n_new_off += rng.random() < 0.95
    ...     strength = fwd.evidence(n_in, n_new_off)
    ...     if strength > 0:
    ...         print(n_in, n_new_off, strength)
    ...     if strength == 1.0:
    ...         break
    2 2 0.6
    3 3 0.6
    4 4 1.0

    A habitual forwarder is not flagged for doing what it always does:

    >>> habit = Forwarding()
    >>> for day in range(30):
    ...     habit.close_day(10, n_fwd=9, n_new_off=9)
    >>> habit.habitual, habit.evidence(10, 9)
    (True, 0.0)
    >>> Forwarding.from_state(fwd.to_state()).to_state() == fwd.to_state()
    True

    """

    def __init__(
        self,
        span_days: int = 30,
        min_calls: int = 4,
        min_carried: float = 1.5,
        min_share: float = 0.5,
        habit_share: float = 0.2,
        carry: float = 0.8,
        absorb_days: int = 60,
        warmup_days: int = 14,
        strong_share: float = 0.8,
        min_carried_strong: float = 2.0,
        carried_share: float = 0.5,
    ):
        self.span_days = span_days
        self.min_calls = min_calls
        self.min_carried = min_carried
        self.min_share = min_share
        self.habit_share = habit_share
        self.carry = carry
        self.absorb_days = absorb_days
        self.warmup_days = warmup_days
        self.strong_share = strong_share
        self.min_carried_strong = min_carried_strong
        self.carried_share = carried_share
        self.alpha = 2.0 / (span_days + 1)
        self.days = 0
        self.usual_fwd = 0.0
        self.usual_new_off = 0.0
        self.streak = 0
        self.acc_in = 0.0
        self.acc_new = 0.0

    def learn_one(self, x: dict[Any, Any]) -> None:
        """Learn one closed day's counts (missing counts are zero)."""
        self.close_day(int(x.get("n_in", 0)), int(x.get("n_fwd", 0)),
                       int(x.get("n_new_off", 0)))

    def score_one(self, x: dict[Any, Any]) -> float:
        """Strength of the evidence in a day's counts so far (missing counts are zero)."""
        return self.evidence(int(x.get("n_in", 0)), int(x.get("n_new_off", 0)))

    @property
    def habitual(self) -> bool:
        """Forwarding to new off-net numbers is this subscriber's normal."""
        return self.usual_new_off >= self.habit_share

    def evidence(self, n_in: int, n_new_off: int) -> float:
        """Strength (0, 0.6 or 1.0) of today's counts, alone or with carried ones."""
        if self.habitual or self.days < self.warmup_days or n_new_off + self.acc_new < 1:
            return 0.0
        today = self._strength(n_in, n_new_off, self.min_calls)
        if today == 1.0:
            return today
        carried = self._strength(self.acc_in + n_in, self.acc_new + n_new_off, self.min_carried)
        return max(today, min(carried, 0.6))

    def carried_strength(self) -> float:
        """Strength (0, 0.6 or 1.0) of the evidence carried into the next day.

        After a day's close: 1.0 when forwarding has run two days (:attr:`streak`), or
        when at least ``min_carried_strong`` of the first day's calls, ``carried_share``
        of them or more, were forwarded to new off-net numbers: a switch already
        overwhelming on its first day. 0.6 for a first day that is weaker, 0 without a streak.

        Examples
        --------
        >>> fwd = Forwarding()
        >>> for day in range(20):
        ...     fwd.close_day(5, n_fwd=0, n_new_off=0)
        >>> fwd.close_day(3, n_fwd=3, n_new_off=3)
        >>> fwd.streak, fwd.carried_strength()
        (1, 1.0)

        One call a day forwarded is weaker: the second day makes a streak, not yet red:

        >>> weak = Forwarding()
        >>> for day in range(20):
        ...     weak.close_day(5, n_fwd=0, n_new_off=0)
        >>> weak.close_day(1, n_fwd=1, n_new_off=1)
        >>> weak.close_day(1, n_fwd=1, n_new_off=1)
        >>> weak.streak, weak.carried_strength()
        (1, 0.6)

        """
        if self.streak >= 2:
            return 1.0
        if self.streak != 1:
            return 0.0
        # The carried counts are the day's decayed once (by ``carry``); rounded so that
        # 3 calls carried as 2.4 still count as 3.
        if (round(self.acc_new / self.carry, 2) >= self.min_carried_strong
                and self.acc_new >= self.carried_share * self.acc_in):
            return 1.0
        return 0.6

    def forget(self) -> None:
        """Drop the running streak and the carried counts: the forwarding was a trip's,
        now over (what was learned as usual stays).

        >>> fwd = Forwarding()
        >>> for day in range(20):
        ...     fwd.close_day(5, n_fwd=0, n_new_off=0)
        >>> for day in range(3):
        ...     fwd.close_day(3, n_fwd=3, n_new_off=3)
        >>> fwd.carried_strength()
        1.0
        >>> fwd.forget()
        >>> fwd.streak, fwd.carried_strength(), fwd.evidence(0, 0)
        (0, 0.0, 0.0)
        """
        self.streak = 0
        self.acc_in = self.acc_new = 0.0

    def _strength(self, n_in: float, n_new_off: float, min_calls: float) -> float:
        if n_new_off < min_calls or n_in <= 0:
            return 0.0
        share = n_new_off / n_in
        if share < self.min_share:
            return 0.0
        return 1.0 if share >= self.strong_share else 0.6

    def close_day(self, n_in: int, n_fwd: int, n_new_off: int) -> None:
        """Learn from one closed day's counts."""
        suspicious = n_new_off > 0 and self.evidence(n_in, n_new_off) > 0
        self.days += 1
        if suspicious:
            self.streak += 1
        elif n_in >= 2 or (n_in > 0 and n_new_off == 0):
            self.streak = 0
        self.acc_new = round((self.acc_new + n_new_off) * self.carry, 2)
        # Incoming calls are carried only while forwarding is: the calls of ordinary days
        # before a switch must not dilute its share.
        self.acc_in = round((self.acc_in + n_in) * self.carry, 2) if self.acc_new else 0.0
        if n_in <= 0:
            return
        a = max(1.0 / self.days, self.alpha)
        self.usual_fwd = round(self.usual_fwd + a * (n_fwd / n_in - self.usual_fwd), 4)
        # While a switch is suspected (a streak runs) it is not learned as normal, until it
        # has lasted ``absorb_days`` (a new habit).
        if (self.days <= self.warmup_days or not (suspicious or self.streak)
                or self.streak >= self.absorb_days):
            self.usual_new_off = round(
                self.usual_new_off + a * (n_new_off / n_in - self.usual_new_off), 4
            )

    def to_state(self) -> list[float]:
        """``[days, usual_fwd, usual_new_off, streak, acc_in, acc_new]``."""
        # A zero is stored as the integer 0: one shared object instead of a 24-byte float
        # each (from_state makes them floats again, so nothing downstream changes).
        return [
            self.days, self.usual_fwd or 0, self.usual_new_off or 0, self.streak,
            self.acc_in or 0, self.acc_new or 0,
        ]

    @classmethod
    def from_state(cls, state: list[float], **params: float) -> Forwarding:
        """Rebuild a model from :meth:`to_state` (``params`` as in the constructor)."""
        model = cls(**params)  # type: ignore[arg-type]
        model.days = int(state[0])
        model.usual_fwd = float(state[1])
        model.usual_new_off = float(state[2])
        model.streak = int(state[3])
        model.acc_in = float(state[4])
        model.acc_new = float(state[5])
        return model
