"""The work queue on Faust: a table of open episodes fed by the alert topic, served over HTTP.

Every worker with its web server on (``churnwatch worker --web-port``, loopback by default)
declares:

* the table ``work_queue`` (item key -> item, :mod:`stream.service.work_queue`), keyed like
  the alert topic (subscriber, or group for group alerts) and partitioned by Kafka's
  partitioner on that key, so partition ``p`` of the table lives with partition ``p`` of
  ``churn.alerts`` and a view can write it outside a stream (``use_partitioner``);
* an agent folding ``churn.alerts`` into the table (``open``/``escalated`` set the item,
  any other status removes it);
* the views below. A request about one item is answered by the worker that owns the key
  (Faust's ``table_route``); the listing gathers every owner's items.

``GET /queue``
    Open work by priority. Query: ``zone``, ``segment`` (comma lists), ``account_manager``,
    ``reachable_now=true`` (only items whose contact window is open now; items without
    contact windows pass), ``capacity=N`` (the N items of highest expected retained value;
    default ``--capacity``/``CHURNWATCH_QUEUE_CAPACITY``, 0 = all), ``limit``,
    ``include_claimed=true``.
``GET /queue/items/{key}``
    One item (404 when no episode is open).
``POST /queue/items/{key}/claim?by=AGENT[&hold_s=S]``
    Claim the item; 200 with the claim, 409 when someone else holds it. Idempotent.
``POST /queue/items/{key}/outcome`` (JSON body: a ``churn.outcomes`` message)
    Validated against the outcome schema (and against the item: its subscriber, one of its
    alert ids); a rejection is a 422 and a dead letter. Accepted outcomes are published to
    ``churn.outcomes``; ``retained``, ``churned`` and ``not_at_risk`` end the item's work,
    ``no_answer`` and ``unreachable`` release the claim and count the attempt.

Logs never name a subscriber, a group or a number (keys are personal data).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stream.contracts.validation import Accepted, Rejected, Validator, dead_letter
from stream.service import work_queue as wq
from stream.service.codecs import ORJSON, RAW
from stream.service.faust_internals.plain_table import plain_table
from stream.service.faust_internals.transport import track_changelog

log = logging.getLogger(__name__)

TABLE = "work_queue"
AGENT_NAME = "churnwatch-work-queue"
#: Outcomes after which the item has no work left.
FINAL_OUTCOMES = frozenset({"retained", "churned", "not_at_risk"})
#: Path prefix of the internal listing one worker asks of another.
LOCAL_PATH = "/queue/local"
PEER_TIMEOUT_S = 10.0


@dataclass
class WorkQueueService:
    """What :func:`declare` put on the app."""

    table: Any
    agent: Any
    outcomes_topic: Any
    deadletter_topic: Any
    capacity: int
    tz_offset_hours: float
    metrics: Any = None
    validator: Validator | None = None
    #: awaited before a view writes the table (:func:`_changelog_metadata`)
    before_write: Callable[[], Awaitable[Any]] | None = None

    async def writable(self) -> None:
        """Before a write from a view: see :func:`_changelog_metadata`."""
        if self.before_write is not None:
            await self.before_write()

    def local_items(self) -> list[dict[str, Any]]:
        return [dict(v) for v in self.table.values() if isinstance(v, Mapping) and wq.is_open(v)]

    def apply_alert(self, alert: Any) -> str:
        """Fold one alert into the table; what happened (for counting)."""
        if not isinstance(alert, Mapping):
            return "ignored"
        key = wq.item_key(alert)
        if key is None:
            return "ignored"
        status = alert.get("status")
        if status not in wq.OPEN_STATUSES and status not in wq.TERMINAL_STATUSES:
            # The value is not logged: an unknown field's content is not known to be safe.
            log.warning("work queue: an alert status this version does not know; "
                        "its item is closed")
        before = self.table.get(key)
        after = wq.fold(before, alert)
        if after is None:
            if before is not None:
                del self.table[key]
                return "closed"
            return "ignored"
        if after != before:
            self.table[key] = after
            return "updated" if before is not None else "opened"
        return "duplicate"


def declare(app: Any, settings: Any, *, alerts_topic: Any, deadletter_topic: Any,
            metrics: Any = None) -> WorkQueueService:
    """Declare the work-queue table, its agent and its web views on ``app``."""
    table = plain_table(app, TABLE, partitions=settings.partitions, key_type=str,
                        use_partitioner=True,
                        help="Open call-centre work per subscriber or group (work_queue.py).")
    outcomes = app.topic(settings.topic_outcomes, partitions=1, replicas=settings.replication,
                         key_type=bytes, key_serializer=RAW, value_serializer=ORJSON)
    service = WorkQueueService(
        table=table, agent=None, outcomes_topic=outcomes, deadletter_topic=deadletter_topic,
        capacity=settings.queue_capacity,
        tz_offset_hours=float(settings.tz_offset_hours), metrics=metrics,
        before_write=lambda: track_changelog(app, table))

    async def fold_alerts(stream: Any) -> None:
        async for alert in stream:
            service.apply_alert(alert)

    service.agent = app.agent(alerts_topic, name=AGENT_NAME, concurrency=1)(fold_alerts)
    _views(app, service)
    return service


def _views(app: Any, service: WorkQueueService) -> None:
    from faust.web import View

    table = service.table
    #: Faust's router: the worker that owns the key answers (table_route on the URL's key)
    by_key: Callable[[Callable[..., Any]], Callable[..., Any]] = app.table_route(
        table=table, match_info="key")
    with_body: Callable[[Callable[..., Any]], Callable[..., Any]] = _route_with_body(app, table)

    def listing(request: Any, now: float) -> tuple[wq.Filters, int | None, int | None]:
        query = request.query

        def names(name: str) -> frozenset[str] | None:
            text = query.get(name)
            return frozenset(v.strip() for v in text.split(",") if v.strip()) if text else None

        capacity = _int(query.get("capacity"), service.capacity)
        filters = wq.Filters(
            zone=names("zone"), segment=names("segment"),
            account_manager=query.get("account_manager") or None,
            reachable_at=datetime.fromtimestamp(now, UTC)
            if _flag(query.get("reachable_now")) else None,
            now=now, include_claimed=_flag(query.get("include_claimed")))
        return filters, (capacity if capacity and capacity > 0 else None), \
            _int(query.get("limit"), None)

    @app.page("/queue")
    class Queue(View):
        """The open work of every worker, by priority."""

        async def get(self, request: Any) -> Any:
            try:
                filters, capacity, limit = listing(request, time.time())
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            local = [i for i in service.local_items()
                     if filters.accepts(i, service.tz_offset_hours)]
            peers, missing = await _gather_peers(app, request)
            items = wq.ordered(local + peers, capacity)
            if limit is not None and limit >= 0:
                items = items[:limit]
            return self.json({
                "items": [wq.view(i, filters.now) for i in items],
                "count": len(items),
                "capacity": capacity,
                "complete": not missing,
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            })

    @app.page(LOCAL_PATH)
    class QueueLocal(View):
        """This worker's own items that pass the filters (for :class:`Queue` on a peer)."""

        async def get(self, request: Any) -> Any:
            try:
                filters, _, _ = listing(request, time.time())
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"items": [i for i in service.local_items()
                                        if filters.accepts(i, service.tz_offset_hours)]})

    @app.page("/queue/items/{key}")
    class Item(View):
        @by_key
        async def get(self, request: Any, key: str) -> Any:
            item = table.get(key)
            if not wq.is_open(item):
                return self.json({"error": "no open work"}, status=404)
            return self.json(wq.view(item, time.time()))

    @app.page("/queue/items/{key}/claim")
    class Claim(View):
        @by_key
        async def post(self, request: Any, key: str) -> Any:
            by = (request.query.get("by") or "").strip()
            if not by or len(by) > 128:
                return self.json({"error": "claim needs ?by=<agent> (1-128 characters)"},
                                 status=400)
            try:
                hold_s = float(request.query.get("hold_s", wq.DEFAULT_CLAIM_S))
            except ValueError:
                return self.json({"error": "hold_s must be a number of seconds"}, status=400)
            # No await between reading the item and writing it: claims cannot interleave.
            await service.writable()
            item = table.get(key)
            if not wq.is_open(item):
                return self.json({"error": "no open work"}, status=404)
            now = time.time()
            result = wq.claim(item, by, now, hold_s)
            if not result.granted:
                return self.json({"error": "claimed by another agent",
                                  "item": wq.view(item, now)}, status=409)
            if result.item != item:
                table[key] = result.item
            return self.json(wq.view(result.item, now))

    @app.page("/queue/items/{key}/outcome")
    class Outcome(View):
        @with_body
        async def post(self, request: Any, key: str) -> Any:
            raw = await request.read()
            status, body = await _report_outcome(service, key, raw)
            return self.json(body, status=status)


async def _report_outcome(service: WorkQueueService, key: str,
                          raw: bytes) -> tuple[int, dict[str, Any]]:
    """Validate an outcome for item ``key``, publish it; (HTTP status, response body)."""
    validator = service.validator = service.validator or Validator()
    verdict = validator.check("outcome", raw)
    item = service.table.get(key)
    if isinstance(verdict, Accepted):
        verdict = _against_item(verdict, item, key)
    topic_name = service.outcomes_topic.get_topic_name()
    if isinstance(verdict, Rejected):
        letter = dead_letter(raw, topic_name, None, None, verdict)
        await service.deadletter_topic.send(key=None, value=letter)
        if service.metrics is not None:
            service.metrics.dead_letters.labels(reason=verdict.reason).inc()
        return 422, {"error": verdict.reason, "field": verdict.field, "detail": verdict.detail}
    outcome = verdict.event
    outcome.setdefault("schema_version", 1)
    await service.outcomes_topic.send(key=str(outcome["subscriber_id"]).encode(),
                                      value=outcome, partition=0)
    closed = False
    await service.writable()
    item = service.table.get(key)  # again: it may have changed while we sent
    if wq.is_open(item):
        if outcome["outcome"] in FINAL_OUTCOMES:
            # Kept until the episode ends: its escalation is not new work (work_queue.fold).
            service.table[key] = wq.worked(item, outcome["outcome"])
            closed = True
        else:
            attempts = int(item.get("attempts") or 0) + 1
            service.table[key] = {**item, "claim": None, "attempts": attempts,
                                  "last_outcome": outcome["outcome"]}
    return 202, {"published": True, "item_closed": closed}


def _against_item(verdict: Accepted, item: Mapping[str, Any] | None,
                  key: str) -> Accepted | Rejected:
    """An outcome must name the item's subscriber and one of its alerts (when open)."""
    event = verdict.event
    if item is None:
        return verdict  # closed since: the outcome still counts (docs/alerts.md)
    if item.get("kind") != "group" and event.get("subscriber_id") != key:
        return Rejected("schema", "subscriber_id", "names another subscriber than the item")
    if event.get("alert_id") not in (item.get("alert_ids") or [item.get("alert_id")]):
        return Rejected("schema", "alert_id", "not an alert of this item's episode")
    return verdict


async def _gather_peers(app: Any, request: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The filtered items of every other worker that owns table partitions."""
    me = str(app.conf.canonical_url).rstrip("/")
    try:
        hosts = [str(h).rstrip("/") for h, tps in app.router.table_metadata(TABLE).items()
                 if tps]
    except Exception:  # no assignment yet
        hosts = []
    peers = [h for h in dict.fromkeys(hosts) if h != me]
    if not peers:
        return [], []

    async def one(host: str) -> list[dict[str, Any]] | None:
        url = f"{host}{LOCAL_PATH}?{request.query_string}"
        try:
            async with app.http_client.get(url, timeout=PEER_TIMEOUT_S) as response:
                if response.status != 200:
                    return None
                found = orjson.loads(await response.read())
                return list(found.get("items") or [])
        except Exception as exc:  # a peer down: the listing says it is incomplete
            log.warning("work queue: peer listing failed: %r", type(exc).__name__)
            return None

    answers = await asyncio.gather(*(one(h) for h in peers))
    items = [i for found in answers if found is not None for i in found]
    return items, [h for h, found in zip(peers, answers, strict=True) if found is None]


def _route_with_body(app: Any, table: Any) -> Callable[[Any], Any]:
    """Like Faust's ``table_route`` on ``match_info="key"``, with the request body.

    Faust's router forwards method, headers and URL only, so a JSON body would be lost
    on its way to the worker that owns the key.
    """
    def decorate(fun: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def post(view: Any, request: Any, key: str) -> Any:
            try:
                dest = app.router.key_store(table.name, key)
            except KeyError:
                return view.json({"error": "no worker owns this key yet"}, status=503)
            me = app.conf.canonical_url
            if (dest.host, dest.port) == (me.host, me.port):
                return await fun(view, request, key)
            body = await request.read()
            url = request.url.with_host(dest.host).with_port(dest.port)
            async with app.http_client.post(url, data=body, headers={
                    "Content-Type": "application/json"}) as response:
                return view.bytes(await response.read(), content_type="application/json",
                                  status=response.status)

        post.__name__ = fun.__name__
        return post

    return decorate


def _flag(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


def _int(text: str | None, default: int | None) -> int | None:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None
