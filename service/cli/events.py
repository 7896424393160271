"""``ringbridge events``: an event map of a running service, as JSON lines on stdout.

One line per item, as the server sends it: an event ``{"seq", "value"}``
(typed) or ``{"seq", "data"}`` (base64), or a gap ``{"lost", "first_seq",
"last_seq"}``; each line is flushed at once, so the output can be piped
into ``jq`` or a log shipper. It runs until the service stops (exit 0), the
``--count`` items have come, or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ClientError, RejectedError
from .common import EXIT_OK, add_client_flags, fail, positive_int


def add_events_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "events",
        help="print the events of a kernel ring buffer the service reads, as JSON lines",
        description="Subscribe to GET /v1/events?map=NAME of a running service (one of its "
        "--event-map or --event-pin maps) and print every event from now on as one JSON "
        'line: {"seq", "value"} typed, {"seq", "data"} (base64) untyped, or a gap '
        '{"lost": N, "first_seq", "last_seq"} when this subscriber fell behind.',
    )
    add_client_flags(p)
    p.add_argument("--map", required=True, metavar="NAME", help="the event map to read")
    p.add_argument(
        "--count", type=positive_int, default=None, metavar="N", help="stop after N items"
    )
    p.set_defaults(func=cmd_events)


def cmd_events(args: argparse.Namespace) -> int:
    from ..client import Client  # not at import: serve never loads httpx

    c = Client(args.url, token=args.token, retries=0)
    try:
        with c, c.events(args.map) as events:
            for n, item in enumerate(events, 1):
                sys.stdout.write(json.dumps(item, separators=(",", ":")) + "\n")
                sys.stdout.flush()
                if args.count is not None and n >= args.count:
                    break
    except RejectedError as exc:
        hint = " (pass --token or set $RINGBRIDGE_TOKEN)" if exc.status in (401, 403) else ""
        return fail(f"events: {c.url.http('/v1/events')}: {exc.message}{hint}")
    except ClientError as exc:
        return fail(f"events: {exc.message}")
    return EXIT_OK
