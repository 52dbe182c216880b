"""Plain, versioned per-subscriber state: its records, shared strings and size.

What the engine keeps per subscriber is a small dict of numbers and short strings, never a
pickled object: a changelog of pickles is a remote-code risk and breaks on upgrades. Keys are
short on purpose (the serialized budget is 512 bytes):

=====  =====================================================================================
key    meaning
=====  =====================================================================================
``v``  state version (:data:`STATE_VERSION`)
``p``  profile (:class:`Profile`), or absent
``o``  open days (:class:`DayCounts`), usually one or two; each row's day is relative to
       the last closed day (a small number)
``m``  every model's numbers in one record (:class:`Numbers`)
``s``  spend (tenths of a yuan) and usage (outgoing calls a day) models in one list
       (:meth:`detectors.spend.SpendDrop.pack`)
``k``  familiar numbers: a Misra-Gries summary of 16-bit fingerprints and their counts in one
       integer (:func:`detectors.forwarding.see_contact`); a list ``[fingerprint, count,
       ...]`` written by an earlier version is read as well
``t``  a running stay away (:class:`detectors.absence.AwayState`), absent when none runs
``a``  alert policy (:class:`detectors.policy.AlertPolicy` state), once it has alerted
``e``  event ids seen on each open day, dropped when the day closes
       (:mod:`detectors.dedupe`)
``g``  the last member signal emitted (group members, with ``signals=True`` only)
``x``  set once the subscriber ported out or was deactivated (:class:`Closed`)
``h``  contact windows: when the subscriber takes calls, small counts by hour of the week
       packed in one integer below 2**64 (:class:`detectors.contact.ContactWindows`), from
       their first call on; a base64 string written by an earlier version is read as well
=====  =====================================================================================

At most 11 keys at once, more than 10 rarely (``x`` drops ``o m s k t a g h``; ``t`` and ``a`` are
rare, ``g`` only with signals): a CPython dict of 6-10 keys takes 272 bytes, of 11-21 keys
464. A state without ``h`` (written before contact windows were learned) needs no upgrade:
its contact windows start with its next call; nor does one without ``t``, nor one whose
``m`` lacks its last numbers (the usage CUSUM's dispersion, the forwarding habit's target:
learned from then on) or whose open days lack their last (the day's forward target), nor
one whose ``k`` is a list (packed into one integer when read: :func:`decode`). Zero
floats are stored as the integer 0 (CPython shares small integers; a float is 24 bytes).
Version 4 (this one) is upgraded from 1, 2 and 3 in place by :func:`detectors.upgrade.upgrade`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from detectors.absence import AwayState
from detectors.forwarding import pack_familiar
from detectors.presence import HomeState
from detectors.record import Record, group

__all__ = [
    "HELD_BACK",
    "STATE_VERSION",
    "Closed",
    "DayCounts",
    "Numbers",
    "Profile",
    "decode",
    "deep_sizeof",
    "shared",
]

STATE_VERSION = 4
#: ``DayCounts.judged`` of a day whose overwhelming forwarding evidence, seen from home, was
#: held back for the day's close (a stay away may begin): it counts there as evidence.
HELD_BACK = -1


class Profile(Record):
    """``"p"``: who the subscriber is (from the subscribers stream)."""

    __slots__ = ()
    msisdn: str | None = None
    account_id: str | None = None
    group_id: str | None = None
    segment: str = "unknown"
    tier: str | None = None
    account_manager: str | None = None


class DayCounts(Record):
    """``"o"``: one open day's counters, applied when the day closes.

    Everything a day's events change is a sum (or a max) here, so the order in which the
    calls and billing streams interleave within the allowed lateness is moot. While open,
    ``day`` is relative to the last closed day (a small number, which CPython does not
    allocate); money in thousandths of a yuan (``bill_cents``: hundredths).
    """

    __slots__ = ()
    day: int = 0
    call_charge: int = 0
    bill_charge: int = 0
    n_in: int = 0
    n_fwd: int = 0
    n_off: int = 0
    n_new: int = 0
    n_out: int = 0
    n_located: int = 0
    n_away: int = 0
    #: index of the operator of the day's last new off-net forward target (-1: none)
    operator: int = -1
    #: strongest forwarding evidence judged intra-day (x10); :data:`HELD_BACK`: evidence
    #: seen from home that was overwhelming but held back for a stay away's judgement
    judged: int = 0
    plan_change: int = 0
    downgrades: int = 0
    bills: int = 0
    bill_cents: int = 0
    #: away flag after the day's last located call (-1: no located call)
    away_end: int = -1
    #: fingerprint of the day's new off-net forward target (-1: none, -2: more than one)
    target: int = -1

    #: the call counters (``n_in`` to ``n_away``), read in one step when the day closes
    counts: list[int]

    @classmethod
    def at(cls, day: int) -> DayCounts:
        """Zero counters for ``day``."""
        row = cls(cls.DEFAULTS)
        row[0] = day
        return row


class Numbers(Record):
    """``"m"``: the subscriber's numbers, every model's scalars in one array.

    One array and not one per model: a list header costs 56 bytes and the in-memory budget
    is 2 KiB a subscriber. The groups, by model: home cell and stays away
    (:mod:`detectors.presence`), the usage CUSUM and incoming-call means (:mod:`detectors.usage`),
    the subscriber's clock, the bill model (:mod:`detectors.bill`), and the forwarding model
    (:class:`detectors.forwarding.Forwarding`, as its
    :meth:`~detectors.forwarding.Forwarding.to_state`).
    Zero floats are stored as the integer 0 (one shared object, not 24 B each).
    """

    __slots__ = ()
    # presence: home cell (16-bit fingerprint, -1 unknown), its votes, the run of calls
    # from other cells, the last other cell, whether a stay away is running
    cell: int = -1
    votes: int = 0
    run: int = 0
    last_cell: int = -1
    away: int = 0
    # usage: Poisson CUSUM level, yesterday's count pending (0/1) and the count, the level
    # at the last call from home
    cusum: float = 0
    pending: int = 0
    pending_count: int = 0
    cusum_home: float = 0
    # incoming calls: days learned, baseline mean, last-week mean
    in_days: int = 0
    in_base: float = 0
    in_fast: float = 0
    # operator index of the last new off-net forward target; last closed day spent away
    fwd_operator: int = -1
    day_away: int = 0
    # forwarding seen on days without a located call, waiting for a call from home
    waiting_in: float = 0
    waiting_new: float = 0
    # clock: event-time watermark (s), last closed day, closed days (age), last active day
    # (-1: none), last plan downgrade day (-1: none)
    watermark: int = 0
    closed: int = -1
    age: int = 0
    last_active: int = -1
    downgrade: int = -1
    # bill: bills seen, their mean, the last one's ratio to it, its day
    bill_n: int = 0
    bill_mean: float = 0
    bill_ratio: float = 1
    bill_day: int = -1
    # forwarding (Forwarding.to_state; 0 days: not started)
    fwd_days: int = 0
    fwd_usual: float = 0
    fwd_usual_new_off: float = 0
    fwd_streak: int = 0
    fwd_acc_in: float = 0
    fwd_acc_new: float = 0
    # usage: the daily counts' dispersion around the CUSUM's expectation (0: not learned;
    # late, so a state written before it was learned reads as numbers short)
    cusum_phi: float = 0
    # forwarding: the forward target seen on the most ordinary days (16-bit fingerprint,
    # -1: none), its net count of such days, the age it was first seen at
    # (forwarding.see_target)
    fwd_target: int = -1
    fwd_target_days: int = 0
    fwd_target_since: int = 0

    # The models' states, each a slice of the numbers (loaded and stored in one step).
    usage: list[Any]
    incoming: list[Any]
    bill: list[Any]
    forwarding: list[Any]
    habit_target: list[Any]


DayCounts.counts = group(DayCounts, "n_in", "n_away")  # type: ignore[assignment]
Numbers.usage = group(Numbers, "cusum", "cusum_home")  # type: ignore[assignment]
Numbers.incoming = group(Numbers, "in_days", "in_fast")  # type: ignore[assignment]
Numbers.bill = group(Numbers, "bill_n", "bill_day")  # type: ignore[assignment]
Numbers.forwarding = group(Numbers, "fwd_days", "fwd_acc_new")  # type: ignore[assignment]
Numbers.habit_target = group(Numbers, "fwd_target", "fwd_target_since")  # type: ignore[assignment]
# HomeCell works on the numbers directly: they must begin with its state's fields.
if Numbers.FIELDS[: len(HomeState.FIELDS)] != HomeState.FIELDS:
    raise TypeError("Numbers must begin with the fields of HomeState")


class Closed(Record):
    """``"x"``: how a subscriber who left left (the rest of the state is dropped)."""

    __slots__ = ()
    kind: str = "port_out"
    day: int = 0
    level: int = 0


def decode(st: dict[str, Any]) -> None:
    """Make a state read back from JSON (plain lists) named records again, in place.

    The arrays are the same, so this only changes their Python type: a restored state
    equals the one written, and needs no upgrade. A version-4 state written before the
    last numbers were kept has its arrays completed with their defaults, and a list of
    familiar numbers is packed into one integer.
    """
    if "m" in st:
        m = st["m"] = Numbers.of(st["m"])
        if len(m) < len(Numbers.FIELDS):  # written before its last numbers were learned
            m.extend(Numbers.DEFAULTS[len(m):])
    if "o" in st:
        st["o"] = rows = [DayCounts.of(row) for row in st["o"]]
        for row in rows:
            if len(row) < len(DayCounts.FIELDS):  # written before the day kept its target
                row.extend(DayCounts.DEFAULTS[len(row):])
    if type(st.get("k")) is list:  # the familiar numbers as a list, before one integer
        st["k"] = pack_familiar(st["k"])
    if "p" in st:
        st["p"] = Profile.of(st["p"])
    if "x" in st:
        st["x"] = Closed.of(st["x"])
    if "t" in st:
        st["t"] = AwayState.of(st["t"])


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
