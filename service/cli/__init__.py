"""``ringbridge``: run the service, feed it, and operate its pins.

Subcommands (one module each):

- ``serve``  -- the service (:mod:`.serve`; flags generated from Settings);
- ``push``   -- stream a file or stdin of samples over the WebSocket (:mod:`.push`);
- ``stats``  -- ``GET /v1/stats`` as a table or the raw JSON (:mod:`.stats`);
- ``events`` -- an event map (``GET /v1/events``) as JSON lines (:mod:`.events`);
- ``types``  -- compile a C header's types into BTF for ``--sample-btf`` (:mod:`.types`);
- ``drain``  -- run the pinned on-demand drain program once (:mod:`.pins`);
- ``unpin``  -- remove our pins from a pin dir (:mod:`.pins`);
- ``publish`` and ``fleet status`` -- the control-plane side of fleet delivery
  through NATS JetStream (:mod:`.fleet`).

Client commands take the server's base URL (``--url``, ``$RINGBRIDGE_URL``,
default http://127.0.0.1:8470); pin commands the pin dir ``serve`` uses.

Exit status: 0 success, 1 the operation failed (a batch rejected, the server
or kernel refused), 2 bad usage or input, 3 the service could not start,
130 interrupted (Ctrl-C) in a client command; ``serve`` stopped by Ctrl-C
or SIGTERM after an orderly shutdown exits 0. A closed stdout (``stats |
head``) ends the command quietly with 141, like a shell pipeline.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .common import (
    EXIT_FAILED,
    EXIT_STARTUP,
    EXIT_USAGE,
    add_client_flags,
    add_pin_dir_flag,
    parse_size,
    positive_int,
    setup_logging,
)
from .serve import add_settings_flags, cmd_serve, settings_from_args

__all__ = [
    "EXIT_FAILED",
    "EXIT_STARTUP",
    "EXIT_USAGE",
    "add_settings_flags",
    "build_parser",
    "main",
    "parse_size",
    "settings_from_args",
]

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def _version() -> str:
    from .. import __version__

    return f"ringbridge {__version__}"


def build_parser() -> argparse.ArgumentParser:
    from .events import add_events_parser
    from .fleet import add_fleet, add_publish
    from .pins import cmd_drain, cmd_unpin
    from .push import cmd_push
    from .stats import cmd_stats
    from .types import add_types_parser

    p = argparse.ArgumentParser(
        prog="ringbridge",
        description="Bridge network clients into a Linux BPF user ring buffer.",
    )
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the service",
        description="Run the service. Each flag overrides its RINGBRIDGE_* variable "
        "(e.g. --ring-size and RINGBRIDGE_RING_SIZE), which overrides the settings file; "
        "sizes take K/M/G suffixes everywhere.",
    )
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    push = sub.add_parser(
        "push",
        help="stream samples from a file (or stdin) over the WebSocket",
        description="FILE ('-' for stdin) is JSON lines (one sample object per line: struct "
        'fields or {"data": "<base64>"}) or, with --binary or a .bin suffix, ring records '
        "(u32 LE length, u32 zero, payload, zero padding to 8). Batches are pipelined up "
        "to --window un-acknowledged; a rejected batch is reported at its input line.",
    )
    push.add_argument("file", type=Path, metavar="FILE")
    add_client_flags(push)
    push.add_argument("--binary", action="store_true", help="FILE is in ring record format")
    push.add_argument(
        "--wait",
        choices=("committed", "consumed"),
        default="committed",
        help="ack once a batch is in the ring (default) or once the kernel consumed it",
    )
    push.add_argument("--batch-samples", type=positive_int, default=1000, metavar="N")
    push.add_argument(
        "--batch-bytes",
        type=parse_size,
        default=256 * 1024,
        metavar="B",
        help="max bytes per frame (keep <= the server's max_batch_bytes); default 256K",
    )
    push.add_argument("--window", type=positive_int, default=16, metavar="W")
    push.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    push.set_defaults(func=cmd_push)

    stats = sub.add_parser("stats", help="show service, ring and kernel counters")
    add_client_flags(stats)
    stats.add_argument("--json", action="store_true", help="print the raw JSON")
    stats.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    stats.set_defaults(func=cmd_stats)

    add_events_parser(sub)
    add_types_parser(sub)

    drain = sub.add_parser(
        "drain",
        help="run the pinned drain program once and print how many samples it drained",
    )
    add_pin_dir_flag(drain)
    drain.set_defaults(func=cmd_drain)

    unpin = sub.add_parser("unpin", help="remove ringbridge's pins (ring, counters, programs)")
    add_pin_dir_flag(unpin)
    unpin.add_argument(
        "--force", action="store_true", help="remove even while a service holds the ring"
    )
    unpin.set_defaults(func=cmd_unpin)

    for sp in (push, stats, drain, unpin, sub.choices["types"], sub.choices["events"]):
        sp.add_argument("--log-level", default="warning", help="stderr log level")
    # Their own --log-level comes with their NATS flags.
    add_publish(sub)
    add_fleet(sub)
    return p


def _silence_stdout() -> None:
    # Python flushes stdout at exit; on a closed pipe that raises again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        # serve configures the service's structured logging itself.
        setup_logging(args.log_level)
    try:
        status: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        if args.command == "serve":
            # uvicorn has shut down in order and re-raises the signal.
            return 0
        print("ringbridge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return status
