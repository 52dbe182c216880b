"""A call-centre agent's loop over churnwatch's work queue, over HTTP: an example client.

Lists the open work (by priority, within the day's capacity), claims the first item,
and reports what the call achieved; the worker validates the outcome and publishes it to
``churn.outcomes``. Only the standard library is needed; the endpoints are specified in
``deploy/openapi.yaml`` and described in ``docs/callcentre.md``::

    python examples/queue_client.py --url http://127.0.0.1:6066 --agent agent-17 \\
        --capacity 200 --zone red,white            # show the work and claim the first
    python examples/queue_client.py --url http://127.0.0.1:6066 --agent agent-17 \\
        --report s-00042 --alert-id 3f2a9c0d1e4b5a6978c0d1e2 --outcome no_answer

The queue shows subscriber ids and account managers, never phone numbers: a real tool
looks the number up in its CRM when an agent takes the item.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

OUTCOMES = ("retained", "unreachable", "not_at_risk", "churned", "no_answer")


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None,
         timeout: float = 20.0) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def listing_url(base: str, **query: Any) -> str:
    """The ``GET /queue`` URL for the given filters (``None`` values left out).

    >>> listing_url("http://127.0.0.1:6066", zone="red,white", capacity=200, segment=None)
    'http://127.0.0.1:6066/queue?zone=red%2Cwhite&capacity=200'
    """
    params = {k: v for k, v in query.items() if v is not None}
    return f"{base.rstrip('/')}/queue" + (f"?{urllib.parse.urlencode(params)}" if params else "")


def item_url(base: str, key: str, action: str = "") -> str:
    path = f"/queue/items/{urllib.parse.quote(key, safe='')}"
    return base.rstrip("/") + path + (f"/{action}" if action else "")


def show(items: list[dict[str, Any]]) -> None:
    print(f"{'key':<16} {'zone':<7} {'value':>9} {'risk':>5} {'priority':>9}  due")
    for item in items:
        print(f"{item['key']:<16} {item['zone']:<7} {item['value_at_risk']:>9.0f} "
              f"{item['risk_score']:>5.2f} {item['priority']:>9.1f}  {item['due_at']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:6066", help="any worker's web server")
    parser.add_argument("--agent", required=True, help="who claims and reports")
    parser.add_argument("--capacity", type=int, default=None, help="calls today")
    parser.add_argument("--zone", default=None, help="comma list of zones")
    parser.add_argument("--segment", default=None, help="comma list of segments")
    parser.add_argument("--report", metavar="KEY", default=None,
                        help="report an outcome for this item instead of listing")
    parser.add_argument("--alert-id", default=None, help="the alert the call was about")
    parser.add_argument("--outcome", choices=OUTCOMES, default=None)
    parser.add_argument("--note", default=None)
    args = parser.parse_args(argv)

    if args.report:
        if not (args.alert_id and args.outcome):
            parser.error("--report needs --alert-id and --outcome")
        outcome = {"alert_id": args.alert_id, "subscriber_id": args.report,
                   "ts": datetime.now(UTC).isoformat(timespec="seconds"),
                   "outcome": args.outcome, "note": args.note}
        status, body = call(item_url(args.url, args.report, "outcome"), "POST", outcome)
        print(json.dumps(body))
        return 0 if status == 202 else 1

    status, listing = call(listing_url(args.url, capacity=args.capacity, zone=args.zone,
                                       segment=args.segment))
    if status != 200:
        print(json.dumps(listing), file=sys.stderr)
        return 1
    show(listing["items"])
    if not listing["complete"]:
        print("(a worker did not answer: its items are missing)", file=sys.stderr)
    for item in listing["items"]:
        claim_url = item_url(args.url, item["key"], "claim") + "?" + urllib.parse.urlencode(
            {"by": args.agent})
        status, claimed = call(claim_url, "POST")
        if status == 200:
            print(f"claimed {item['key']} until {claimed['claim']['until']}: "
                  f"alert {claimed['alert_id']}")
            return 0
    print("nothing to claim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
