"""Collective churn of groups: member signals folded per ``group_id``, group alerts out.

The subscriber engine (``Engine(..., signals=True)``) emits a *member signal* whenever what
a group needs to know about one of its members changes: the member's zone, the operator
their incoming calls are forwarded to off-net, their 14-day spend against their baseline,
their monthly value, a port-out. :class:`GroupWatch` folds one group's member signals in
event time and raises group alerts (``kind: "group"``, keyed by ``group_id``) when members
move together:

* **forwarding**: ``k`` of ``n`` members forward calls to numbers of one competitor, the
  forwarding started within ``fwd_window`` days of each other;
* **herd**: ``k`` of ``n`` members entered the yellow zone or worse within
  ``warn_window`` days of each other;
* **spend**: the group's spend (members' 14-day run-rate) against its own baseline (what
  its members spent while calm);
* **leaving**: ``k`` of ``n`` members ported out (or were deactivated) within
  ``leave_window`` days.

Counts are judged against the group's size with a binomial tail: the chance that ``k`` or
more of ``n`` members do the thing in the window by themselves, at a base rate per member
(``*_base_rate``). Its surprise, ``-log10`` of that chance, sets the zone: 3 of 6 is
rarer than 3 of 60, and a group of one is just a subscriber (no group alert).

Determinism: signals of different members come from different partitions and may arrive
interleaved in any order. A group decides its days in event time: day ``D`` is decided
once a signal of day ``D + 1 + hold_days`` or later has arrived for the group, on the
signals of days up to ``D`` only, applied in a fixed order (day, time, subscriber). So
the alerts, and their ids (a hash of group, episode start, zone, status), depend on the
set of signals, not on their interleaving, as long as no partition lags the others by
more than ``hold_days`` days of event time. A signal for a day already decided is still
folded in (counted as ``late``) and weighs on the next days' decisions.

Everything stored is plain data (``to_state``/``from_state``), versioned, small.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

from detectors.group_config import GroupConfig
from detectors.group_watch import GROUP_MODEL_VERSION, GROUP_STATE_VERSION, GroupWatch
from detectors.surprise import binomial_surprise

__all__ = [
    "GROUP_MODEL_VERSION",
    "GROUP_STATE_VERSION",
    "GroupConfig",
    "GroupStage",
    "GroupWatch",
    "binomial_surprise",
    "group_context",
]


def group_context(group_id: str, context: list[Any]) -> dict[str, Any]:
    """The ``group_context`` reason a member's own alert gets while its group is in alert.

    ``context`` is :attr:`GroupWatch.context` (``[alert_id, zone, ts, headline]``).

    >>> reason = group_context("G1", ["ab" * 12, "red", "2026-04-12T01:00:00+08:00",
    ...                               "5 of 8 members forward calls to Telecom numbers"])
    >>> print(reason["summary"])
    group G1 in a red group alert since 2026-04-12: 5 of 8 members forward calls to Telecom numbers
    """
    alert_id, zone, ts, headline = context
    summary = f"group {group_id} in a {zone} group alert since {str(ts)[:10]}"
    if headline:
        summary += f": {headline}"
    return {
        "code": "group_context",
        "summary": summary,
        "figures": {"group_id": group_id, "group_alert_id": alert_id, "group_zone": zone},
    }


class GroupStage:
    """Group watches over a store of plain states, keyed by ``group_id``: the group stage.

    The stream's group agent and ``churnwatch replay`` both drive one per partition of the
    group-signals topic: ``process(signal)`` loads the group's state, folds the signal,
    writes the state back (``store[group_id] = state``: a Faust table write) and returns
    the group alerts raised.

    A group's days are decided when event time passes them: on a signal of a later day for
    the group, or, for a group gone quiet (members emit signals only on change), when a
    signal of a later day comes for any group of the partition. The stage keeps that
    partition-wide event time and the groups still active (signals waiting, or an episode
    open) in the store under ``meta_key``.

    Examples
    --------
    A day is decided when a signal of a later day comes; until then its signals wait:

    >>> stage = GroupStage(GroupConfig(), {})
    >>> calm = {"group_id": "G1", "subscriber_id": "m1", "day": 20514,
    ...     "ts": "2026-03-03T01:00:00+08:00", "zone": "blue", "operator": None,
    ...     "spend_ratio": 1.0, "monthly_value": 300.0, "left": None}
    >>> stage.process(calm)
    []
    >>> len(stage.store["G1"]["q"]), sorted(stage.store["G1"]["m"])
    (1, [])
    >>> stage.process({**calm, "group_id": "G2", "day": 20515,
    ...                "ts": "2026-03-04T01:00:00+08:00"})
    []
    >>> len(stage.store["G1"]["q"]), sorted(stage.store["G1"]["m"])
    (0, ['m1'])

    """

    def __init__(
        self,
        config: GroupConfig | None = None,
        store: MutableMapping[str, dict[str, Any]] | None = None,
        meta_key: str = "__stage__",
    ):
        self.config = config if config is not None else GroupConfig()
        self.store: MutableMapping[str, dict[str, Any]] = store if store is not None else {}
        self.meta_key = meta_key
        self.counters: Counter[str] = Counter()

    def watch(self, group_id: str) -> GroupWatch:
        state = self.store.get(group_id)
        if state is None:
            return GroupWatch(group_id, self.config)
        return GroupWatch.from_state(state, self.config)

    def process(self, signal: dict[str, Any]) -> list[dict[str, Any]]:
        """Fold one member signal into its group; the group alerts it raised."""
        group_id = signal.get("group_id")
        if not group_id or group_id == self.meta_key:
            self.counters["signals_without_group"] += 1
            return []
        gid = str(group_id)
        self.counters["signals"] += 1
        meta = self.store.get(self.meta_key) or {"w": -1, "a": []}
        names: list[str] = meta["a"]  # the active groups, sorted
        watch = self.watch(gid)
        late = watch.late
        watch.update(signal)
        self.counters["late_signals"] += watch.late - late
        day = int(signal["day"])
        if day > meta["w"]:
            # Event time moved on: decide the quiet active groups' days too.
            active = set(names)
            alerts = self._keep(watch, active)
            alerts.extend(self._advance_quiet(day, active, skip=gid))
            meta = {"w": day, "a": sorted(active)}
        else:
            # Only this group's place in the list can change: found by bisection, not by
            # sorting every active group for every signal (thousands on a large worker).
            at = bisect_left(names, gid)
            listed = at < len(names) and names[at] == gid
            alerts = self._keep(watch, None)
            if watch.active == listed:
                return alerts
            names = names[:at] + [gid] + names[at:] if watch.active else (
                names[:at] + names[at + 1:])
            meta = {"w": meta["w"], "a": names}
        self.store[self.meta_key] = meta
        return alerts

    def advance(self, day: int) -> list[dict[str, Any]]:
        """Every member signal before ``day`` has been processed (the sources' watermarks
        say so): decide the active groups' days as a signal of ``day`` would. A group that
        no signal reaches any more (its last member gone) still closes its episode."""
        meta = self.store.get(self.meta_key) or {"w": -1, "a": []}
        if day <= meta["w"]:
            return []
        active = set(meta["a"])
        alerts = self._advance_quiet(day, active)
        self.store[self.meta_key] = {"w": day, "a": sorted(active)}
        return alerts

    def _advance_quiet(self, day: int, active: set[str], skip: str | None = None
                       ) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        for other in sorted(active - {skip}):
            quiet = self.watch(other)
            quiet.advance(day)
            alerts.extend(self._keep(quiet, active))
        return alerts

    def _keep(self, watch: GroupWatch, active: set[str] | None) -> list[dict[str, Any]]:
        self.store[watch.group_id] = watch.to_state()
        if active is not None:  # None: the caller keeps the active list itself
            if watch.active:
                active.add(watch.group_id)
            else:
                active.discard(watch.group_id)
        for alert in watch.alerts:
            self.counters[f"group_alerts_{alert['status']}"] += 1
        return watch.alerts

    def context(self, group_id: str | None) -> dict[str, Any] | None:
        """The ``group_context`` reason for a member of ``group_id``, if it is in alert."""
        if not group_id:
            return None
        state = self.store.get(group_id)
        if not state or not state.get("c"):
            return None
        return group_context(group_id, state["c"])
