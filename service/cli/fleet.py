"""The control-plane side of fleet delivery: ``ringbridge publish`` and ``ringbridge fleet status``.

``publish`` cuts a file (JSON lines of samples, or ring records) into batches
exactly as ``push`` does and publishes each as one JetStream message with
its ``Content-Type``, to one subject (a broadcast subject, or one node's).
Each message carries a ``Nats-Msg-Id``: a publish retried after a timeout is
stored once. With ``--window 1`` (the default) each batch is confirmed before
the next is sent, so the stream holds them in file order; a larger window
pipelines, and keeps the order unless a publish has to be retried.

``fleet status`` lists each node's durable consumer (ack floor, pending) and
the rollout receipts of pins-mode nodes; with ``--seq N`` it answers "did
every node that N is for apply it?" (exit 0 yes, 1 not yet).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, positive_int
from .push import Frame, InputError, input_name, load_frames

NATS_ENV = "RINGBRIDGE_NATS"
_ATTEMPTS = 5


def add_nats_flags(p: argparse.ArgumentParser) -> None:
    """The server URL and the credentials (files only), as ``serve``'s ``--nats*`` flags."""
    p.add_argument(
        "--nats",
        default=os.environ.get(NATS_ENV),
        metavar="URL",
        help=f"NATS server URL(s), comma-separated (env {NATS_ENV})",
    )
    for flag, what in (
        ("--nats-creds", "NATS credentials file"),
        ("--nats-password-file", "file holding the password of --nats-user"),
        ("--nats-token-file", "file holding a NATS token"),
        ("--nats-tls-ca", "CA bundle for NATS TLS"),
        ("--nats-tls-cert", "client certificate for NATS TLS"),
        ("--nats-tls-key", "client key for NATS TLS"),
    ):
        p.add_argument(flag, type=Path, default=None, metavar="FILE", help=what)
    p.add_argument("--nats-user", default=None, metavar="NAME", help="NATS user name")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--log-level", default="warning", help="stderr log level")


def _auth(args: argparse.Namespace) -> Any:
    from ..fleet.connect import Auth

    if not args.nats:
        raise InputError(f"--nats URL is required (or set {NATS_ENV})")
    return Auth(
        servers=tuple(u.strip() for u in args.nats.split(",") if u.strip()),
        creds=args.nats_creds,
        user=args.nats_user,
        password_file=args.nats_password_file,
        token_file=args.nats_token_file,
        tls_ca=args.nats_tls_ca,
        tls_cert=args.nats_tls_cert,
        tls_key=args.nats_tls_key,
    )


async def _connect(args: argparse.Namespace) -> Any:
    from ..fleet.connect import connect

    return await connect(
        _auth(args), "ringbridge cli", reconnect=False, connect_timeout=args.timeout
    )


# -- publish ------------------------------------------------------------------------


def add_publish(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="publish batches of samples to a fleet subject (NATS JetStream)",
        description="FILE ('-' for stdin) is cut into batches as for push: JSON lines (one "
        'sample per line: struct fields or {"data": "<base64>"}) or, with --binary or a .bin '
        "suffix, ring records. Each batch is one JetStream message with its Content-Type; "
        "every node whose subjects match validates and commits it exactly once.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    add_nats_flags(p)
    p.add_argument("--subject", required=True, help="subject, e.g. fleet.all or fleet.node.NAME")
    p.add_argument("--binary", action="store_true", help="FILE is in ring record format")
    p.add_argument("--batch-samples", type=positive_int, default=1000, metavar="N")
    p.add_argument("--batch-bytes", type=positive_int, default=256 * 1024, metavar="B")
    p.add_argument(
        "--window",
        type=positive_int,
        default=1,
        metavar="W",
        help="batches in flight; 1 (default) keeps file order even across retries",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_publish)


async def _publish_one(js: Any, subject: str, f: Frame, headers: dict[str, str], t: float) -> int:
    import nats.errors

    for attempt in range(_ATTEMPTS):
        try:
            payload = f.payload.encode() if isinstance(f.payload, str) else f.payload
            ack = await js.publish(subject, payload, timeout=t, headers=headers)
            return int(ack.seq)
        except nats.errors.TimeoutError:
            if attempt == _ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def publish_frames(
    args: argparse.Namespace, frames: Sequence[Frame], progress: Any | None
) -> list[int]:
    """Publishes ``frames`` in order (``--window`` in flight); returns their stream seqs."""
    ctype = "application/octet-stream" if args.binary else "application/json"
    run = uuid.uuid4().hex
    nc = await _connect(args)
    try:
        js = nc.jetstream()
        sem = asyncio.Semaphore(args.window)

        async def one(f: Frame) -> int:
            headers = {"Content-Type": ctype, "Nats-Msg-Id": f"ringbridge-{run}-{f.id}"}
            async with sem:
                seq = await _publish_one(js, args.subject, f, headers, args.timeout)
            if progress is not None:
                progress.update(f.count)
            return seq

        tasks = []
        for f in frames:
            await sem.acquire()  # send in file order; at most --window in flight
            sem.release()
            tasks.append(asyncio.ensure_future(one(f)))
            await asyncio.sleep(0)
        return list(await asyncio.gather(*tasks))
    finally:
        await nc.close()


def cmd_publish(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    name = input_name(args.file)
    frames = load_frames("publish", args, with_id=False)
    if isinstance(frames, int):
        return frames
    args.binary = args.binary or args.file.suffix == ".bin"
    try:
        _auth(args)
    except InputError as exc:
        return fail(f"publish: {exc}", EXIT_USAGE)
    total = sum(f.count for f in frames)
    t0 = time.perf_counter()
    with tqdm(
        total=total, unit="sample", unit_scale=True, file=sys.stderr, disable=args.quiet or None
    ) as bar:
        try:
            seqs = asyncio.run(publish_frames(args, frames, bar))
        except Exception as exc:
            return fail(f"publish: {args.subject}: {type(exc).__name__}: {exc}")
    took = time.perf_counter() - t0
    print(
        f"published {total:,} samples in {len(frames):,} batches from {name} to {args.subject} "
        f"in {took:.2f} s: stream seqs {seqs[0]}..{seqs[-1]}"
    )
    return EXIT_OK


# -- fleet status ------------------------------------------------------------------------


def add_fleet(sub: Any) -> None:
    p = sub.add_parser("fleet", help="fleet delivery through NATS JetStream")
    fsub = p.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    st = fsub.add_parser(
        "status",
        help="each node's place in the stream: durable ack floors, pending, receipts",
        description="Lists the stream's durable consumers (per node and subject: the last "
        "acked stream seq and how many messages are pending) and the rollout receipts of "
        "pins-mode nodes. With --seq N: for the nodes message N is for, whether they "
        "applied it (exit 0 when all did, 1 otherwise).",
    )
    add_nats_flags(st)
    st.add_argument("--stream", required=True, help="the fleet's JetStream stream")
    st.add_argument(
        "--receipts", default="ringbridge_receipts", metavar="BUCKET", help="KV bucket of receipts"
    )
    st.add_argument("--seq", type=positive_int, default=None, metavar="N")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    st.set_defaults(func=cmd_fleet_status)


async def _status(args: argparse.Namespace) -> tuple[Any, str | None]:
    from ..fleet.status import read_status

    nc = await _connect(args)
    try:
        js = nc.jetstream()
        st = await read_status(js, args.stream, args.receipts)
        subject = None
        if args.seq is not None:
            msg = await js.get_msg(args.stream, seq=args.seq)
            subject = msg.subject
        return st, subject
    finally:
        await nc.close()


def _age(ts: float) -> str:
    return f"{max(0.0, time.time() - ts):.0f}s ago"


def cmd_fleet_status(args: argparse.Namespace) -> int:
    import json

    from nats.js.errors import NotFoundError

    from ..fleet.status import applied

    try:
        st, subject = asyncio.run(_status(args))
    except InputError as exc:
        return fail(f"fleet status: {exc}", EXIT_USAGE)
    except NotFoundError:
        what = f"message {args.seq}" if args.seq is not None else f"stream {args.stream}"
        return fail(f"fleet status: {what} not found")
    except Exception as exc:
        return fail(f"fleet status: {type(exc).__name__}: {exc}")
    verdict = applied(st, args.seq, subject) if args.seq is not None and subject else None
    if args.json:
        out: dict[str, Any] = asdict(st)
        if verdict is not None:
            out["seq"] = {
                "seq": args.seq,
                "subject": subject,
                "nodes": [asdict(a) for a in verdict],
            }
        print(json.dumps(out, default=str, indent=2))
    else:
        print(f"stream {st.stream}: seqs {st.first_seq}..{st.last_seq} ({st.messages:,} messages)")
        if st.durables:
            print(f"{'DURABLE':<28} {'NODE':<16} {'SUBJECT':<24} {'ACKED':>8} {'PENDING':>8}")
            for d in st.durables:
                print(
                    f"{d.name:<28} {d.node or '-':<16} {d.subject or '*':<24} "
                    f"{d.acked:>8} {d.pending + d.ack_pending:>8}"
                )
        if st.receipts:
            print(f"receipts ({st.receipts_bucket}):")
            print(f"{'NODE':<28} {'SEQ':>8} {'COMMITTED':>10}  WRITTEN")
            for r in st.receipts:
                print(f"{r.node:<28} {r.seq:>8} {r.committed:>10}  {_age(r.time)}")
        if not st.durables and not st.receipts:
            print("no node has consumed this stream yet")
        if verdict is not None:
            done = sum(a.applied for a in verdict)
            print(f"message {args.seq} ({subject}): applied by {done} of {len(verdict)}")
            for a in verdict:
                if not a.applied:
                    print(f"  not yet: {a.who} (at {a.at})")
    if verdict is None:
        return EXIT_OK
    return EXIT_OK if verdict and all(a.applied for a in verdict) else EXIT_FAILED
