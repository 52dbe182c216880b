"""The calibration stage: one global model learns from outcomes and port-outs.

The subscriber engines (N partitions) send what they would have published for
subscribers to the internal ``churn.calibration`` topic (ONE partition) instead of
``churn.alerts``, with the port-outs and deactivations they see and their progress::

    {"kind": "alert", "partition": p, "at": [T, o], "alert": {...}}
    {"kind": "exit",  "partition": p, "at": [T, o], "subscriber_id": ..., "ts": ...}
    {"kind": "day",   "partition": p, "at": [T, o], "day": closed_to}

``at`` is the position, in replay's merge order, of the input event the record came
from: its event time ``T`` (epoch seconds) and kind order ``o`` (calls 0, billing 1). A
``day`` mark says partition ``p`` has processed every event up to ``at`` and closed
every day up to ``day`` (``detectors.Engine.closed_to``). Call-centre tools report to
``churn.outcomes`` (ONE partition). One agent reads both topics and runs
:class:`detectors.OutcomeLearner` over the one-partition ``calibration`` table; the
calibrated alerts go to ``churn.alerts`` (docs/outcomes.md).

**Replay's order.** ``churnwatch replay`` feeds its learner in the order of its event-time
merge: each input event's alerts, then its exit, and outcomes after the calls and billing
events of the same instant. The stage restores that order across the partitions: items
wait in a heap keyed ``(T, o, partition, arrival)`` (outcomes ``(ts, 2, 0, offset)``) and
the smallest goes to the learner once every partition has passed it (its last mark or
item is later; at the same position the lower partition goes first, replay's line order
being unknown here). Outcomes produced ahead of the stream (tests; a tool whose clock is
ahead) so wait until the engines have reached their time, and are not ``unknown_alert``.

A partition that sends nothing (idle, or far behind) would hold everything. So an item
held for ``hold_s`` seconds also goes once every partition has closed the day before its
own (``day(ts) - 1``): a slower partition can then only send items of that day or later,
which the learner scores and labels as in replay's order (the item moves its clock to
``day(ts) - 1 - lag_days`` at most). An outcome so also needs its subscriber's partition
(Kafka's partitioner on the subscriber id, as the inputs are routed) to have passed it:
that partition sends the subscriber's alerts and port-out, and an outcome ahead of its
alert would be a dead letter, ahead of the port-out a label replay does not give. Beyond
``max_held`` the oldest go regardless (``forced``, counted). A partition that has sent
nothing for ``idle_s`` seconds (never reported: no traffic at all; or a stuck worker) is
not waited for by items held that long (``released_idle``, counted): out of replay's
order only if it wakes with earlier events.

**State and restarts.** Everything is in the table: the learner's keys, ``__stage__``
(the partitions' marks and positions, the offset below which each input topic is in the
state, counters) and each held item under ``h:<n>``. A batch's keys go to the changelog
as one write-ahead copy first (:func:`stream.service.write_ahead.wal_chunks`), then key by
key, so a ``kill -9`` leaves the state of one batch or the next, never a mix; the applied offsets
in the same copy make a redelivered message change nothing. Alerts and dead letters are
delivered before the state that says they were made (at least once, same ``alert_id``).

**An engine's records again.** An engine killed after sending its records but before
committing its batch sends them again when it (or the worker its partition moves to)
resumes: the same alerts, exits and marks, at new offsets. A partition's records come in
its order, so one behind the partition's last position is such a repeat; at that
position, an alert the learner already has and the exit last taken from the partition
are too. Repeats are counted (``reemitted``) and dropped: the learner's state stays
replay's, and the alert was published the first time (its state is saved only after).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from detectors.days import Clock, parse_ts
from stream.contracts.partitioning import partition_of
from stream.contracts.validation import Accepted, Rejected, Validator, dead_letter
from stream.service.redaction import stack

log = logging.getLogger(__name__)

CALIBRATION_TABLE = "calibration"
AGENT_NAME = "churnwatch-calibration"
STAGE_KEY = "__stage__"
HELD_PREFIX = "h:"
#: Outcomes come after the calls (0) and billing (1) events of the same instant.
OUTCOME_ORDER = 2
STAGE_STATE_VERSION = 1
#: How often the stage looks at its held items when no message comes (s).
TICK_S = 0.5

Key = tuple[float, int, int, int]


def changelog_topic_name(settings: Any) -> str:
    """The calibration table's changelog (Faust's ``<app id>-<table>-changelog``)."""
    return f"{settings.app_id}-{CALIBRATION_TABLE}-changelog"


def position(value: Any) -> tuple[float, int]:
    """``[T, o]`` as a comparable tuple."""
    return float(value[0]), int(value[1])


@dataclass
class StageOutput:
    """What one call of :meth:`CalibrationStage.process` produced."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    #: (key, dead letter) of rejected outcomes
    dead_letters: list[tuple[bytes | None, dict[str, Any]]] = field(default_factory=list)
    #: (outcome, segment, zone published, leading reason) of the outcomes taken
    outcomes: list[tuple[str, str, str, str]] = field(default_factory=list)


class CalibrationStage:
    """Orders alerts, exits and outcomes as replay does and feeds them to the learner.

    ``store`` is a mutable mapping (a dict, or the batch cache's view of the table);
    ``keys()`` lists the store's keys (read once, to find held items after a restart);
    ``learner_factory(store)`` builds the :class:`detectors.OutcomeLearner` (it carries on
    from what the store holds).

    Examples
    --------
    Two partitions; an alert of partition 1 waits for partition 0 to pass it:

    >>> from stream.settings import Settings
    >>> store = {}
    >>> stage = CalibrationStage(store, Settings().outcome_learner, sources=2,
    ...                          keys=lambda: list(store), clock=lambda: 0.0)
    >>> alert = {"alert_id": "a1", "kind": "subscriber", "status": "open",
    ...          "subscriber_id": "s1", "zone": "red", "risk_score": 0.8, "reasons": [],
    ...          "ts": "2026-03-02T01:00:00+08:00"}
    >>> at = [parse_ts("2026-03-02T01:00:05+08:00"), 0]
    >>> rec = {"kind": "alert", "partition": 1, "at": at, "alert": alert}
    >>> stage.process([("c", 0, orjson.dumps(rec))]).alerts
    []
    >>> mark = {"kind": "day", "partition": 0, "at": [at[0] + 60, 0], "day": 20513}
    >>> [a["calibration_version"] for a in stage.process([("c", 1, orjson.dumps(mark))]).alerts]
    ['newton-1/0@2026-02-28']
    """

    def __init__(
        self,
        store: MutableMapping[str, Any],
        learner_factory: Callable[[MutableMapping[str, Any]], Any],
        sources: int,
        *,
        keys: Callable[[], Iterable[str]] | None = None,
        hold_s: float = 5.0,
        idle_s: float = 300.0,
        max_held: int = 50_000,
        validator: Validator | None = None,
        topics: tuple[str, str] = ("churn.calibration", "churn.outcomes"),
        clock: Callable[[], float] = time.monotonic,
        tz_offset_hours: float = 8.0,
    ) -> None:
        self.store = store
        self.learner_factory = learner_factory
        self.sources = sources
        self.keys = keys if keys is not None else (lambda: list(store))
        self.hold_s = hold_s
        self.idle_s = idle_s
        self.max_held = max_held
        self.validator = validator or Validator()
        self.topics = topics
        self.clock = clock
        self.days = Clock(tz_offset_hours, 0.0)
        self.learner: Any = None
        self.loaded = False
        self.marks: dict[int, int] = {}
        self.pos: dict[int, tuple[float, int]] = {}
        #: the last exit taken from each partition: ``[T, o, subscriber_id]``
        self.exits: dict[int, list[Any]] = {}
        self.applied: dict[str, int] = {}
        self.seq = 0
        self.counters: Counter[str] = Counter()
        #: (key, held since (wall clock), table key of the item)
        self.heap: list[tuple[Key, float, str]] = []
        #: counters already reported as metrics (see :func:`_record`)
        self.reported: Counter[str] = Counter()
        #: wall clock of each partition's last record, and of the stage's load: liveness
        #: only (never in the state, never in what the learner sees)
        self.heard: dict[int, float] = {}
        self.started = clock()

    # -- state ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget what is in memory (after a failed batch or a rebalance): the next batch
        loads it from the store again."""
        self.learner = None
        self.loaded = False
        self.heap = []

    def load(self) -> None:
        saved = self.store.get(STAGE_KEY)
        now = self.clock()
        if saved is not None:
            if saved.get("v") != STAGE_STATE_VERSION:
                raise ValueError(f"calibration stage state version {saved.get('v')!r} unknown")
            self.marks = {int(k): int(v) for k, v in saved["marks"].items()}
            self.pos = {int(k): position(v) for k, v in saved["pos"].items()}
            self.applied = {str(k): int(v) for k, v in saved["applied"].items()}
            self.seq = int(saved["seq"])
            self.counters = Counter(saved["counters"])
            self.exits = {int(k): list(v) for k, v in saved.get("exits", {}).items()}
        else:
            self.marks, self.pos, self.applied, self.seq = {}, {}, {}, 0
            self.counters = Counter()
            self.exits = {}
        self.heap = []
        self.heard, self.started = {}, now
        for k in self.keys():
            if k.startswith(HELD_PREFIX):
                item = self.store.get(k)
                if item is not None:
                    self.heap.append((tuple(item["k"]), now, k))
        heapq.heapify(self.heap)
        self.learner = self.learner_factory(self.store)
        self.loaded = True
        # What an earlier worker counted is not this one's to report again.
        self.reported = self.totals()

    def totals(self) -> Counter[str]:
        """The learner's counters (``l.``) and the stage's (``s.``), as saved."""
        now: Counter[str] = Counter()
        if self.learner is not None:
            now.update({f"l.{k}": v for k, v in self.learner.counters.items()})
        now.update({f"s.{k}": v for k, v in self.counters.items()})
        return now

    def save(self) -> None:
        self.store[STAGE_KEY] = {
            "v": STAGE_STATE_VERSION,
            "marks": {str(k): v for k, v in self.marks.items()},
            "pos": {str(k): list(v) for k, v in self.pos.items()},
            "applied": dict(self.applied), "seq": self.seq, "counters": dict(self.counters),
            "exits": {str(k): v for k, v in self.exits.items()}}

    @property
    def held(self) -> int:
        return len(self.heap)

    # -- input ----------------------------------------------------------------------------
    def process(self, messages: Iterable[tuple[str, int, bytes | None]]) -> StageOutput:
        """Take ``(topic, offset, raw value)`` messages ("c": churn.calibration, "o":
        churn.outcomes, or the full topic names) and release what can go, in order."""
        if not self.loaded:
            self.load()
        out = StageOutput()
        for topic, offset, raw in messages:
            src = "o" if topic in ("o", self.topics[1]) else "c"
            if offset < self.applied.get(src, 0):
                self.counters["redelivered"] += 1  # in the state already
                continue
            self.applied[src] = offset + 1
            if src == "o":
                self._take_outcome(offset, raw or b"", out)
            else:
                self._take_record(raw)
        self.release(out)
        self.save()
        return out

    def _take_outcome(self, offset: int, raw: bytes, out: StageOutput) -> None:
        verdict = self.validator.check("outcome", raw)
        if not isinstance(verdict, Accepted):
            self.counters[f"dead_{verdict.reason}"] += 1
            out.dead_letters.append((None, dead_letter(raw, self.topics[1], 0, offset, verdict)))
            return
        self._hold((verdict.epoch_s, OUTCOME_ORDER, 0, offset),
                   {"kind": "outcome", "offset": offset, "outcome": verdict.event,
                    "raw": raw.decode("utf-8")})

    def _take_record(self, raw: bytes | None) -> None:
        try:
            rec = orjson.loads(raw or b"")
            kind = rec["kind"]
            p = int(rec["partition"])
            at = position(rec["at"])
        except (ValueError, KeyError, TypeError, IndexError):
            # Our own engines write this topic: a bad record is a bug, not input.
            log.warning("calibration stage: ignored a record it cannot read")
            self.counters["bad_record"] += 1
            return
        self.heard[p] = self.clock()
        if at < self.pos.get(p, (float("-inf"), 0)):
            self.counters["reemitted"] += 1  # a partition's records come in its order
            return
        self.pos[p] = at
        if kind == "exit":
            taken = [at[0], at[1], str(rec.get("subscriber_id"))]
            if self.exits.get(p) == taken:
                self.counters["reemitted"] += 1
                return
            self.exits[p] = taken
        if kind == "day":
            if rec.get("day") is not None and int(rec["day"]) > self.marks.get(p, -1 << 40):
                self.marks[p] = int(rec["day"])
            return
        if kind not in ("alert", "exit"):
            self.counters["bad_record"] += 1
            return
        self.seq += 1
        self._hold((at[0], at[1], p, self.seq), rec)

    def _hold(self, key: Key, item: dict[str, Any]) -> None:
        hkey = f"{HELD_PREFIX}{key[2]}:{key[3]}:{item['kind'][0]}"
        self.store[hkey] = {"k": list(key), "i": item}
        heapq.heappush(self.heap, (key, self.clock(), hkey))
        self.counters["held"] += 1

    # -- release --------------------------------------------------------------------------
    def idle(self, now: float) -> set[int]:
        """Partitions that have sent nothing for ``idle_s`` seconds (nor since the load):
        no traffic at all, or a worker stuck; the release does not wait for them."""
        return {q for q in range(self.sources)
                if now - self.heard.get(q, self.started) >= self.idle_s}

    def passed(self, key: Key, skip: Collection[int] = ()) -> bool:
        """Every partition (but ``skip``) has passed ``key`` (nothing earlier can come)."""
        t, order, p = key[0], key[1], key[2]
        for q in range(self.sources):
            if q in skip:
                continue
            at = self.pos.get(q)
            if at is None:
                return False
            if order == OUTCOME_ORDER:
                if at[0] <= t:
                    return False
            elif q != p and not (at > (t, order) or (at == (t, order) and p < q)):
                return False
        return True

    def sealed_enough(self, item: dict[str, Any]) -> bool:
        """Every partition has closed the day before this item's, and for an outcome, its
        subscriber's partition has passed it: nothing still to come changes what the
        learner makes of it."""
        if len(self.marks) < self.sources:
            return False
        kind = item["kind"]
        ts = parse_ts(item[kind]["ts"] if kind in ("outcome", "alert") else item["ts"])
        if kind == "outcome":
            own = self.pos.get(partition_of(str(item["outcome"]["subscriber_id"]),
                                            self.sources))
            if own is None or own[0] <= ts:
                return False
        return min(self.marks.values()) >= self.days.day(ts) - 1

    def release(self, out: StageOutput) -> None:
        """Feed the learner every held item that can go, smallest key first."""
        now = self.clock()
        heap = self.heap
        while heap:
            key, since, hkey = heap[0]
            item = self.store[hkey]["i"]
            if len(heap) > self.max_held:
                self.counters["forced"] += 1
            elif self.passed(key):
                pass
            elif now - since >= self.hold_s and self.sealed_enough(item):
                self.counters["released_by_days"] += 1
            elif (now - since >= self.idle_s and (idle := self.idle(now))
                  and self.passed(key, idle)):
                # Out of replay's order only if an idle partition wakes with earlier
                # events (all idle: the input has ended, or paused): counted.
                self.counters["released_idle"] += 1
            else:
                break
            heapq.heappop(heap)
            del self.store[hkey]
            self._feed(item, out)

    def _feed(self, item: dict[str, Any], out: StageOutput) -> None:
        learner = self.learner
        kind = item["kind"]
        if kind == "alert":
            if learner.knows(str(item["alert"].get("alert_id"))):
                self.counters["reemitted"] += 1  # sent again by its engine; published already
                return
            try:
                out.alerts.append(learner.alert(item["alert"]))
            except (KeyError, TypeError, ValueError) as exc:
                # An alert the model cannot read (an engine bug or a test stand-in): it
                # still goes out, as the engine made it; never lost, counted. (The stack
                # without the exception's text: it can quote a subscriber.)
                log.error("calibration: published an alert uncalibrated: %s", stack(exc))
                self.counters["uncalibrated"] += 1
                out.alerts.append(dict(item["alert"]))
        elif kind == "exit":
            learner.exit(str(item["subscriber_id"]), str(item["ts"]))
        else:
            outcome = item["outcome"]
            pending = self.store.get(f"a:{outcome['alert_id']}")
            reason = learner.outcome(outcome)
            if reason is None:
                out.outcomes.append((str(outcome["outcome"]), *_answered(pending)))
                return
            self.counters[f"dead_{reason}"] += 1
            detail = {"unknown_alert": "no alert of that id in the learner's horizon",
                      "subscriber_mismatch": "subscriber_id is not the alert's"}[reason]
            letter = dead_letter(item["raw"].encode("utf-8"), self.topics[1], 0,
                                 int(item["offset"]), Rejected(reason, "alert_id", detail))
            out.dead_letters.append((None, letter))


def uncalibrated(values: Iterable[bytes | None]) -> list[dict[str, Any]]:
    """The alerts (as the engines made them, stamped now) in raw ``churn.calibration``
    records: what is published when the stage cannot calibrate a batch.

    >>> rec = {"kind": "alert", "partition": 0, "at": [0, 0], "alert": {"alert_id": "a1"}}
    >>> [a["alert_id"] for a in uncalibrated([orjson.dumps(rec), b"junk", None])]
    ['a1']
    """
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    alerts = []
    for raw in values:
        try:
            rec = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "alert" and isinstance(
                rec.get("alert"), dict):
            alerts.append({**rec["alert"], "emitted_at": stamp})
    return alerts


def _answered(pending: Any) -> tuple[str, str, str]:
    """``(segment, zone, leading reason)`` of the alert an outcome answers, from the
    learner's record of it (``"m"``); "unknown" without one.

    >>> _answered({"s": "s1", "t": 0, "m": ["sme", "red", "usage_drop"], "done": 1})
    ('sme', 'red', 'usage_drop')
    >>> _answered(None)
    ('unknown', 'unknown', 'unknown')
    """
    labels = pending.get("m") if isinstance(pending, dict) else None
    if not labels:
        return "unknown", "unknown", "unknown"
    segment, zone, reason = labels
    return str(segment), str(zone), str(reason)
