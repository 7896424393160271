"""``ringbridge``: run the service, feed it, and operate its pins.

Subcommands:

- ``serve``  -- the service (flags override ``RINGBRIDGE_*`` environment
  variables, which override the defaults; only flags actually given override);
- ``push``   -- stream a file of samples over the WebSocket, pipelined;
- ``stats``  -- ``GET /v1/stats`` as a table (or the raw JSON);
- ``drain``  -- run the pinned on-demand drain program once (bpftool cannot:
  it always passes data_in, which the kernel refuses for syscall programs);
- ``unpin``  -- remove our pins from a pin dir.

Exit status: 0 success, 1 the operation failed (a batch rejected, the server
or kernel refused), 2 bad usage or input, 3 the service could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import msgspec

from . import units
from .core import ring as core
from .errors import RingbridgeError

log = logging.getLogger("ringbridge.cli")

DEFAULT_WS_URL = "ws://127.0.0.1:8470/v1/stream"
DEFAULT_HTTP_URL = "http://127.0.0.1:8470"
EXIT_FAILED = 1
EXIT_USAGE = 2

def parse_size(text: str) -> int:
    """argparse type for sizes: bytes or a K/M/G suffix (see :mod:`ringbridge.units`)."""
    try:
        return units.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return n


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"ringbridge: {message}", file=sys.stderr)
    return status


# ---------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------

def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field (``ring_size`` -> ``--ring-size``), plus ``--config``.

    The flags carry strings (or booleans) and Settings parses them, exactly as
    it parses the environment and the settings file: one source of truth.
    Flags default to SUPPRESS so that only the flags given override the
    environment (RINGBRIDGE_*), the settings file and the defaults.
    """
    from .settings import CONFIG_ENV, Settings

    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"TOML settings file (env {CONFIG_ENV}); flags and env override it",
    )
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"RINGBRIDGE_{name.upper()}"
        default = info.default
        shown = "none" if default is None else default
        if info.default_factory is not None:
            shown = "none"
        help_text = f"{info.description or name} (env {env}; default {shown})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        ann = info.annotation
        if ann is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(ann) in (list, dict):
            # Repeatable: each use appends one item; Settings parses the list.
            kw["action"] = "append"
            kw["metavar"] = "NAME=SIZE" if typing.get_origin(ann) is dict else "NAME"
        else:
            choices = typing.get_args(ann) if typing.get_origin(ann) is Literal else None
            if choices:
                kw["choices"] = choices
            if not choices:
                kw["metavar"] = _metavar(info)
        parser.add_argument(flag, **kw)


def _metavar(info: Any) -> str:
    args = [a for a in typing.get_args(info.annotation) if a is not type(None)]
    extras = [*info.metadata, *(m for a in args for m in getattr(a, "__metadata__", ()))]
    if any(getattr(m, "func", None) is units.parse_size for m in extras):
        return "SIZE"
    ann = args[0] if args else info.annotation
    names = {int: "N", float: "SECONDS", Path: "PATH", str: "TEXT"}
    return names.get(ann, "VALUE")


def settings_from_args(args: argparse.Namespace) -> Any:
    """A Settings from the flags given (the rest from env, the settings file, defaults)."""
    from .settings import Settings

    overrides = {name: getattr(args, name) for name in Settings.model_fields if name in args}
    return Settings.load(overrides, getattr(args, "config", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return _fail(f"invalid settings: {problems}", EXIT_USAGE)
    except RingbridgeError as exc:
        return _fail(f"invalid settings: {exc.message}", EXIT_USAGE)
    from .api.server import run

    return run(settings)


# ---------------------------------------------------------------------------
# drain / unpin
# ---------------------------------------------------------------------------


def cmd_drain(args: argparse.Namespace) -> int:
    from .kernel.bpfobj import open_pinned_drain

    try:
        n = open_pinned_drain(args.pin_dir)
    except RingbridgeError as exc:
        return _fail(f"drain {args.pin_dir}: {exc.message}")
    print(n)
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    from .kernel.bpfobj import lock_producer, unpin

    pin_dir: Path = args.pin_dir
    if not pin_dir.is_dir():
        return _fail(f"unpin: {pin_dir} is not a directory: nothing to remove")
    if not args.force:
        # A running service holds the producer lock; pulling its pins would
        # leave it running on a ring nobody else can find or clean up.
        try:
            lock = lock_producer(pin_dir)
        except RingbridgeError as exc:
            return _fail(f"unpin: {exc.message} (use --force to remove the pins anyway)")
        lock.close()
    try:
        removed = unpin(pin_dir)
    except RingbridgeError as exc:
        return _fail(f"unpin {pin_dir}: {exc.message}")
    if not removed:
        return _fail(f"unpin: no ringbridge pins under {pin_dir}")
    for p in removed:
        print(f"removed {p}")
    return 0


# ---------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One batch to send: its id (0-based frame number), payload, sample count."""

    id: int
    payload: str | bytes
    count: int


@dataclass
class PushReport:
    frames: int = 0
    samples: int = 0
    accepted: int = 0
    rejected_samples: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    errors: list[tuple[Any, str, str]] = field(default_factory=list)
    closed: str | None = None
    acked_frames: int = 0


class InputError(Exception):
    """The file to push is not what it should be; message names file and place."""


def frames_from_jsonl(path: Path, batch_samples: int, batch_bytes: int) -> list[Frame]:
    """JSON lines -> text frames ``{"id": n, "samples": [...]}``.

    Each line must be one JSON object (a sample); it is checked here so that a
    typo fails fast with its line number, then spliced into the frame as it
    is, without re-encoding. Blank lines are skipped.
    """
    frames: list[Frame] = []
    batch: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if batch:
            fid = len(frames)
            text = f'{{"id":{fid},"samples":[{",".join(batch)}]}}'
            frames.append(Frame(fid, text, len(batch)))
        batch, size = [], 0

    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            try:
                obj = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise InputError(
                    f"{path}:{lineno}: a sample must be a JSON object, got {type(obj).__name__}"
                )
            # +1 for the comma; the frame's envelope is ~30 bytes.
            if batch and (len(batch) >= batch_samples or size + len(text) + 1 + 32 > batch_bytes):
                flush()
            batch.append(text)
            size += len(text) + 1
    flush()
    return frames


def frames_from_binary(path: Path, batch_bytes: int) -> list[Frame]:
    """A file in ring record format -> binary frames cut at record boundaries."""
    from .schema import validate_binary_batch

    buf = path.read_bytes()
    try:
        info = validate_binary_batch(
            buf, ring_size=max(len(buf), 8), max_sample_bytes=core.MAX_SAMPLE_LEN
        )
    except RingbridgeError as exc:
        raise InputError(f"{path}: not a valid record file: {exc.message}") from None
    frames: list[Frame] = []
    for chunk in core.split_batch(info.records, batch_bytes):
        n = sum(1 for _ in core.iter_records(chunk))
        frames.append(Frame(len(frames), bytes(chunk), n))
    return frames


async def push_frames(
    url: str,
    frames: Sequence[Frame],
    *,
    token: str | None,
    window: int,
    progress: Any | None = None,
    open_timeout: float = 10.0,
) -> PushReport:
    """Sends ``frames`` with up to ``window`` un-acked, and collects the acks.

    The server answers every frame in order (DESIGN §4), so the n-th ack is
    for the n-th frame; an ack whose id does not match is a protocol error.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    report = PushReport(frames=len(frames), samples=sum(f.count for f in frames))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # permessage-deflate off: 60x slower on binary sample frames (DESIGN §2b).
    async with connect(
        url,
        compression=None,
        additional_headers=headers,
        open_timeout=open_timeout,
        max_size=1 << 20,
    ) as ws:
        slots = asyncio.Semaphore(window)

        async def send_all() -> None:
            for f in frames:
                await slots.acquire()
                await ws.send(f.payload)

        sender = asyncio.create_task(send_all(), name="ringbridge-push-send")
        try:
            for f in frames:
                try:
                    raw = await ws.recv()
                except ConnectionClosed as exc:
                    report.closed = f"connection closed by the server: {exc}"
                    break
                slots.release()
                _account(report, f, raw)
                if progress is not None:
                    progress.update(f.count)
                    if report.errors:
                        progress.set_postfix(rejected_batches=len(report.errors))
            # A send error (e.g. the server went away) surfaces here.
            if report.closed is None:
                await sender
        finally:
            # Not `await sender`: that would also swallow a cancellation of
            # this coroutine (Ctrl-C) along with the sender's own.
            sender.cancel()
            await asyncio.wait({sender})
            if not sender.cancelled():
                sender.exception()  # retrieved: a send error was reported as `closed`
    return report


def _account(report: PushReport, f: Frame, raw: str | bytes) -> None:
    try:
        ack = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RingbridgeError(f"batch {f.id}: the server's ack is not JSON: {exc}") from None
    if not isinstance(ack, dict) or ack.get("id") != f.id:
        got = ack.get("id") if isinstance(ack, dict) else ack
        raise RingbridgeError(f"acks out of order: expected batch {f.id}, got {got!r}")
    report.acked_frames += 1
    err = ack.get("error")
    if err is not None:
        report.rejected_samples += f.count
        report.errors.append((f.id, str(err.get("code", "?")), str(err.get("message", err))))
        return
    report.accepted += int(ack["accepted"])
    if report.first_seq is None:
        report.first_seq = ack.get("first_seq")
    report.last_seq = ack.get("last_seq")


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 'es' if noun.endswith('h') else 's'}"


def print_push_summary(report: PushReport, url: str, seconds: float, out: TextIO) -> None:
    rate = report.accepted / seconds if seconds > 0 else 0.0
    print(
        f"pushed {_n(report.samples, 'sample')} in {_n(report.frames, 'batch')} to {url} "
        f"in {seconds:.2f} s",
        file=out,
    )
    seqs = f" (seq {report.first_seq}..{report.last_seq})" if report.first_seq is not None else ""
    print(f"  accepted: {_n(report.accepted, 'sample')}{seqs}, {rate:,.0f} samples/s", file=out)
    if report.errors:
        print(
            f"  rejected: {_n(report.rejected_samples, 'sample')} in "
            f"{_n(len(report.errors), 'batch')}",
            file=out,
        )
        for fid, code, message in report.errors:
            print(f"    batch {fid}: {code}: {message}", file=out)
    unacked = report.frames - report.acked_frames
    if unacked:
        print(f"  not acknowledged: {_n(unacked, 'batch')}", file=out)
    if report.closed:
        print(f"  {report.closed}", file=out)


def cmd_push(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    path: Path = args.file
    binary = args.binary or path.suffix == ".bin"
    try:
        if binary:
            frames = frames_from_binary(path, args.batch_bytes)
        else:
            frames = frames_from_jsonl(path, args.batch_samples, args.batch_bytes)
    except OSError as exc:
        return _fail(f"push: cannot read {path}: {exc.strerror or exc}", EXIT_USAGE)
    except (InputError, UnicodeDecodeError) as exc:
        return _fail(f"push: {exc}", EXIT_USAGE)
    if not frames:
        return _fail(f"push: {path} holds no samples", EXIT_USAGE)
    total = sum(f.count for f in frames)
    t0 = time.perf_counter()
    with tqdm(
        total=total, unit="sample", unit_scale=True, file=sys.stderr, disable=args.quiet or None
    ) as bar:
        try:
            report = asyncio.run(
                push_frames(args.url, frames, token=args.token, window=args.window, progress=bar)
            )
        except RingbridgeError as exc:
            return _fail(f"push: {exc.message}")
        except OSError as exc:
            return _fail(f"push: cannot connect to {args.url}: {exc}")
        except Exception as exc:  # websockets' handshake errors (InvalidStatus, ...)
            from websockets.exceptions import WebSocketException

            if isinstance(exc, WebSocketException | TimeoutError):
                return _fail(f"push: {args.url}: {exc}")
            raise
    print_push_summary(report, args.url, time.perf_counter() - t0, sys.stdout)
    return (
        EXIT_FAILED if report.errors or report.closed or report.acked_frames < report.frames else 0
    )


# ---------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------


def _rows(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for k, v in value.items():
            rows += _rows(f"{prefix}.{k}" if prefix else str(k), v)
        return rows
    return [
        (
            prefix,
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value),
        )
    ]


def render_stats(stats: dict[str, Any]) -> str:
    """A readable table: one ``section.key  value`` row per number, then kinds."""
    stats = dict(stats)
    kernel = dict(stats.get("kernel", {}))
    kinds: dict[str, dict[str, int]] = kernel.pop("kinds", {}) or {}
    if "kernel" in stats:
        stats["kernel"] = kernel
    rows = _rows("", stats)
    width = max((len(k) for k, _ in rows), default=0)
    lines = [f"{k:<{width}}  {v:>}" for k, v in rows]
    if kinds:
        lines.append("")
        lines.append(f"{'kind':>6}  {'samples':>14}  {'value sum':>22}")
        for kind, kv in sorted(kinds.items(), key=lambda kv: int(kv[0])):
            lines.append(f"{kind:>6}  {kv.get('samples', 0):>14,}  {kv.get('value', 0):>22,}")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    import httpx

    url = args.url.rstrip("/") + "/v1/stats"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        r = httpx.get(url, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        return _fail(f"stats: GET {url} failed: {exc}")
    if r.status_code != 200:
        try:
            detail = r.json().get("error", {}).get("message", r.text)
        except (ValueError, AttributeError):
            detail = r.text
        return _fail(f"stats: GET {url}: HTTP {r.status_code}: {detail}")
    if args.json:
        print(json.dumps(r.json(), indent=2))
    else:
        print(render_stats(r.json()))
    return 0


# ---------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringbridge",
        description="Bridge network clients into a Linux BPF user ring buffer.",
    )
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

    env_token = os.environ.get("RINGBRIDGE_TOKEN")

    push = sub.add_parser(
        "push",
        help="stream samples from a file over the WebSocket",
        description="FILE is JSON lines (one sample object per line: struct fields or "
        '{"data": "<base64>"}) or, with --binary or a .bin suffix, a file in ring record '
        "format. Batches are pipelined up to --window un-acknowledged.",
    )
    push.add_argument("file", type=Path, metavar="FILE")
    push.add_argument("--url", default=DEFAULT_WS_URL, help=f"default {DEFAULT_WS_URL}")
    push.add_argument("--token", default=env_token, help="bearer token (env RINGBRIDGE_TOKEN)")
    push.add_argument("--binary", action="store_true", help="FILE is in ring record format")
    push.add_argument("--batch-samples", type=_positive_int, default=1000, metavar="N")
    push.add_argument(
        "--batch-bytes",
        type=parse_size,
        default=256 * 1024,
        metavar="B",
        help="max bytes per frame (keep <= the server's max_batch_bytes); default 256K",
    )
    push.add_argument("--window", type=_positive_int, default=16, metavar="W")
    push.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    push.set_defaults(func=cmd_push)

    stats = sub.add_parser("stats", help="show service, ring and kernel counters")
    stats.add_argument("--url", default=DEFAULT_HTTP_URL, help=f"default {DEFAULT_HTTP_URL}")
    stats.add_argument("--token", default=env_token, help="bearer token (env RINGBRIDGE_TOKEN)")
    stats.add_argument("--json", action="store_true", help="print the raw JSON")
    stats.add_argument("--timeout", type=float, default=10.0)
    stats.set_defaults(func=cmd_stats)

    drain = sub.add_parser(
        "drain",
        help="run the pinned drain program once and print how many samples it drained",
    )
    drain.add_argument("--pin-dir", type=Path, required=True)
    drain.set_defaults(func=cmd_drain)

    unpin = sub.add_parser("unpin", help="remove ringbridge's pins (ring, counters, programs)")
    unpin.add_argument("--pin-dir", type=Path, required=True)
    unpin.add_argument(
        "--force", action="store_true", help="remove even while a service holds the ring"
    )
    unpin.set_defaults(func=cmd_unpin)

    for sp in (push, stats, drain, unpin):
        sp.add_argument("--log-level", default="warning", help="stderr log level")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        # serve configures the service's structured logging itself.
        _setup_logging(args.log_level)
    status: int = args.func(args)
    return status
