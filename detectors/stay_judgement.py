"""What a stay away (:mod:`detectors.absence`) says in an alert.

While a stay away may be an absence, calls forwarded to another operator's number while
the line is quiet raise **yellow** (:func:`held_signal`): it may be a trip, and a switch
that looks like one must not go unalerted. Once the stay away is not an absence (its
verdict: past a trip's length, activity partly present, a plan cut, others of the group or
account doing the same) it is **red** (:func:`stay_signal`). A stay away without
forwarding (incoming calls collapsed too) says nothing while it may be an absence.
"""

from __future__ import annotations

from typing import Any

from detectors.absence import VERDICTS, AwayState
from detectors.risk import Signal

__all__ = ["away_figures", "held_signal", "stay_signal"]


def held_signal(t: AwayState, since: str, strength: float, trip_days: int,
                operator: str | None) -> Signal:
    """The ``forwarding_off_net`` signal of a stay away with calls forwarded off-net that
    may be an absence: yellow at ``strength``, said plainly.

    >>> t = AwayState.new()
    >>> t.days, t.out, t.expected, t.n_in, t.forwarded = 4, 1, 400, 3, 9
    >>> sig = held_signal(t, "2026-03-06", 0.5, 21, "China Telecom")
    >>> import textwrap
    >>> print(textwrap.fill(sig.summary, 80))
    incoming calls forwarded to a China Telecom number (9 of 12 since 2026-03-06)
    while the line is quiet (1 outgoing call against a usual 40 over 4 days): may be
    a trip; red if it lasts past 21 days, the subscriber calls while forwarding, the
    plan is cut or others of the group or account forward to the same operator
    >>> sig.strength, sig.figures["operator"], sig.figures["absence"]["verdict"]
    (0.5, 'China Telecom', '')
    """
    where = f"a {operator} number" if operator else "another operator's number"
    usual = t.expected / 10
    summary = (f"incoming calls forwarded to {where} ({t.forwarded} of {_incoming(t)} since "
               f"{since}) while the line is quiet ({t.out} outgoing call"
               f"{'s' if t.out != 1 else ''} against a usual {usual:.0f} over {t.days} "
               f"day{'s' if t.days != 1 else ''}): may be a trip; red if it lasts past "
               f"{trip_days} days, the subscriber calls while forwarding, the plan is cut or "
               f"others of the group or account forward to the same operator")
    figures = away_figures(t)
    figures["verdict"] = ""
    return Signal("forwarding_off_net", strength, summary,
                  {"forwarded": t.forwarded, "incoming": _incoming(t), "days": t.days,
                   "operator": operator, "absence": figures})


def _incoming(t: AwayState) -> int:
    """The stay away's incoming calls that reached the phone or went off-net (a call
    forwarded to a number on this network, or to a familiar one, is in neither)."""
    return t.n_in + t.forwarded


def away_figures(t: AwayState) -> dict[str, Any]:
    """The figures of a stay away, for reasons."""
    return {"days": t.days, "outgoing": t.out, "usual_outgoing": round(t.expected / 10, 1),
            "incoming": _incoming(t), "reached": t.n_in, "forwarded": t.forwarded}


def stay_signal(t: AwayState, since: str, strength: float, trip_days: int,
                circle: str | None, operator: str | None) -> Signal:
    """The ``stay_away`` signal of a stay away that is not an absence (its verdict).

    >>> t = AwayState.new()
    >>> t.days, t.out, t.expected, t.n_in, t.forwarded, t.verdict = 16, 3, 480, 10, 40, 1
    >>> sig = stay_signal(t, "2026-03-02", 0.75, 14, None, "China Unicom")
    >>> import textwrap
    >>> print(textwrap.fill(sig.summary, 80))
    outgoing calls collapsed on 2026-03-02 after a steady fortnight (3 against a
    usual 48 over 16 days), and incoming calls were forwarded to a China Unicom
    number (40 of 50): longer than a trip (14 days)
    """
    verdict = VERDICTS[t.verdict]
    summary = (f"outgoing calls collapsed on {since} after a steady fortnight ({t.out} "
               f"against a usual {t.expected / 10:.0f} over {t.days} days)")
    if t.forwarded:
        where = f"a {operator} number" if operator else "an off-net number"
        summary += (f", and incoming calls were forwarded to {where} ({t.forwarded} of "
                    f"{_incoming(t)})")
    else:
        summary += (f", and incoming calls fell with them ({t.n_in} reached the phone in "
                    f"those days)")
    if verdict == "persisted":
        summary += f": longer than a trip ({trip_days} days)"
    elif verdict == "present":
        summary += (": the subscriber still makes calls while incoming ones are forwarded "
                    "away, present rather than away")
    elif verdict == "plan_cut":
        summary += ": the plan was cut during it, which a trip does not do"
    elif verdict == "group":
        summary += (f": other members of {circle} do the same, forwarding to the same "
                    f"operator")
    figures = away_figures(t)
    figures.update({"verdict": verdict, "operator": operator})
    return Signal("stay_away", strength, summary, figures)
