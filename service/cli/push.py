"""``ringbridge push``: stream a file (or stdin) of samples over the WebSocket.

Input is JSON lines (one sample object per line: struct fields or
``{"data": "<base64>"}``) or, with ``--binary`` (or a ``.bin`` name), a file
in ring record format. It is cut into batches, sent pipelined through
:class:`ringbridge.client.AsyncStream`, and every ack is accounted for. A
rejected batch is reported at its input line (JSON lines) or record number
(binary): the server's index of the first bad sample maps back to the input.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec

from ..core import ring as core
from ..errors import ClientError, RejectedError, RingbridgeError
from ..wire import WaitFor
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail

BINARY_HINT = "if it is a binary record file, pass --binary"


@dataclass(frozen=True)
class Frame:
    """One batch to send: its number on the connection, payload, and where it came from.

    ``lines`` holds the input line of each sample (JSON lines); for a binary
    batch ``first_record`` is the file's index of its first record.
    """

    id: int
    payload: str | bytes
    count: int
    lines: tuple[int, ...] = ()
    first_record: int = 0


@dataclass
class Rejection:
    frame: Frame
    code: str
    message: str
    #: Where the first bad sample is in the input ("s.jsonl:6", "record 12"), if known.
    where: str | None


@dataclass
class PushReport:
    frames: int = 0
    samples: int = 0
    accepted: int = 0
    rejected_samples: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    errors: list[Rejection] = field(default_factory=list)
    closed: str | None = None
    acked_frames: int = 0


class InputError(Exception):
    """The input is not what it should be; the message names it and the place."""


def read_input(path: Path) -> bytes:
    """The whole input: the file, or stdin for ``-``."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    return path.read_bytes()


def input_name(path: Path) -> str:
    """How messages name the input."""
    return "<stdin>" if str(path) == "-" else str(path)


def load_frames(
    command: str, args: argparse.Namespace, *, with_id: bool = True
) -> list[Frame] | int:
    """The batches of ``args.file``: binary records with ``--binary`` or a
    ``.bin`` name, else JSON lines; or, when there are none, the exit status
    after one line naming ``command``, the input and why."""
    name = input_name(args.file)
    try:
        data = read_input(args.file)
        if args.binary or args.file.suffix == ".bin":
            frames = frames_from_binary(data, name, args.batch_bytes)
        else:
            frames = frames_from_jsonl(
                data, name, args.batch_samples, args.batch_bytes, with_id=with_id
            )
    except OSError as exc:
        return fail(f"{command}: cannot read {name}: {exc.strerror or exc}", EXIT_USAGE)
    except InputError as exc:
        return fail(f"{command}: {exc}", EXIT_USAGE)
    if not frames:
        return fail(f"{command}: {name} holds no samples", EXIT_USAGE)
    return frames


def frames_from_jsonl(
    data: bytes, name: str, batch_samples: int, batch_bytes: int, *, with_id: bool = True
) -> list[Frame]:
    """JSON lines -> text frames ``{"id": n, "samples": [...]}`` (without ``id``: the body of
    ``POST /v1/samples`` or of a fleet message).

    Each line must be one JSON object (a sample); it is checked here so that a
    typo fails fast with its line number, then spliced into the frame as it
    is, without re-encoding. Blank lines are skipped.
    """
    frames: list[Frame] = []
    batch: list[str] = []
    lines: list[int] = []
    size = 0

    def flush() -> None:
        nonlocal batch, lines, size
        if batch:
            fid = len(frames)
            head = f'{{"id":{fid},' if with_id else "{"
            text = f'{head}"samples":[{",".join(batch)}]}}'
            frames.append(Frame(fid, text, len(batch), tuple(lines)))
        batch, lines, size = [], [], 0

    first = True
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.strip()
        if not raw:
            continue
        hint = f" ({BINARY_HINT})" if first or b"\0" in raw else ""
        try:
            text = raw.decode("utf-8")
            obj = msgspec.json.decode(raw)
        except UnicodeDecodeError:
            raise InputError(f"{name}:{lineno}: not UTF-8 text{hint}") from None
        except msgspec.DecodeError as exc:
            raise InputError(f"{name}:{lineno}: not valid JSON: {exc}{hint}") from None
        if not isinstance(obj, dict):
            raise InputError(
                f"{name}:{lineno}: a sample must be a JSON object, got {type(obj).__name__}"
            )
        first = False
        # +1 for the comma; the frame's envelope is ~30 bytes.
        if batch and (len(batch) >= batch_samples or size + len(text) + 1 + 32 > batch_bytes):
            flush()
        batch.append(text)
        lines.append(lineno)
        size += len(text) + 1
    flush()
    return frames


def frames_from_binary(data: bytes, name: str, batch_bytes: int) -> list[Frame]:
    """A file in ring record format -> binary frames cut at record boundaries."""
    from ..schema import validate_binary_batch

    try:
        info = validate_binary_batch(
            data, ring_size=max(len(data), 8), max_sample_bytes=core.MAX_SAMPLE_LEN
        )
    except RingbridgeError as exc:
        raise InputError(f"{name}: not a valid record file: {exc.message}") from None
    frames: list[Frame] = []
    first = 0
    for chunk in core.split_batch(info.records, batch_bytes):
        n = sum(1 for _ in core.iter_records(chunk))
        frames.append(Frame(len(frames), bytes(chunk), n, first_record=first))
        first += n
    return frames


# How the server names the first bad sample at the start of its message:
# "samples[2].flags: ..." (JSON), "record 12: ..." (binary), "sample 2: ...".
_WHERE_PREFIX = re.compile(r"^(?:samples\[(\d+)\]\.?|(?:sample|record) (\d+): )")


def _locate(frame: Frame, name: str, err: RejectedError) -> tuple[str | None, str]:
    """Where in the input the first bad sample is, and the message without the batch index."""
    index = err.index
    message = err.reason
    m = _WHERE_PREFIX.match(message)
    if m is not None:
        message = message[m.end() :]
        if index is None:
            index = int(m.group(1) or m.group(2))
    if index is None:
        return None, message
    if frame.lines:
        if 0 <= index < len(frame.lines):
            return f"{name}:{frame.lines[index]}", message
        return None, message
    return f"{name}: record {frame.first_record + index}", message


async def push_frames(
    url: str,
    frames: Sequence[Frame],
    *,
    name: str,
    token: str | None,
    window: int,
    wait: WaitFor = "committed",
    progress: Any | None = None,
) -> PushReport:
    """Sends ``frames`` with up to ``window`` un-acked and accounts for every ack.

    Raises :class:`~ringbridge.errors.ClientError` when the stream cannot be
    opened (unreachable, refused at the handshake).
    """
    from ..client import AsyncClient  # not at import: serve never loads httpx

    report = PushReport(frames=len(frames), samples=sum(f.count for f in frames))
    async with AsyncClient(url, token=token, retries=2) as client:
        stream = client.stream(window=window, wait=wait)
        await stream.open()
        try:
            sent: asyncio.Queue[tuple[Frame, asyncio.Future[Any]] | None] = asyncio.Queue()

            async def send_all() -> None:
                try:
                    for f in frames:
                        sent.put_nowait((f, await stream.send_frame(f.payload)))
                except ClientError as exc:
                    report.closed = exc.message
                finally:
                    sent.put_nowait(None)

            sender = asyncio.create_task(send_all(), name="ringbridge-push-send")
            while (item := await sent.get()) is not None:
                f, fut = item
                try:
                    ack = await fut
                except RejectedError as exc:
                    report.acked_frames += 1
                    report.rejected_samples += f.count
                    where, message = _locate(f, name, exc)
                    report.errors.append(Rejection(f, exc.code, message, where))
                    if progress is not None:
                        progress.set_postfix(rejected_batches=len(report.errors))
                except ClientError as exc:
                    report.closed = report.closed or exc.message
                    continue
                else:
                    report.acked_frames += 1
                    report.accepted += ack.accepted
                    if report.first_seq is None:
                        report.first_seq = ack.first_seq
                    report.last_seq = ack.last_seq
                if progress is not None:
                    progress.update(f.count)
            await sender
        finally:
            await stream.close()
    return report


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 'es' if noun.endswith('h') else 's'}"


def _span(f: Frame, name: str) -> str:
    if f.lines:
        lo, hi = f.lines[0], f.lines[-1]
        return f"lines {lo}-{hi}" if lo != hi else f"line {lo}"
    last = f.first_record + f.count - 1
    return f"records {f.first_record}-{last}" if last != f.first_record else f"record {last}"


def print_push_summary(
    report: PushReport, name: str, url: str, seconds: float, out: TextIO
) -> None:
    rate = report.accepted / seconds if seconds > 0 else 0.0
    print(
        f"pushed {_n(report.samples, 'sample')} in {_n(report.frames, 'batch')} from {name} "
        f"to {url} in {seconds:.2f} s",
        file=out,
    )
    seqs = f" (seq {report.first_seq}..{report.last_seq})" if report.first_seq is not None else ""
    print(f"  accepted: {_n(report.accepted, 'sample')}{seqs}, {rate:,.0f} samples/s", file=out)
    if report.errors:
        print(
            f"  rejected: {_n(report.rejected_samples, 'sample')} in "
            f"{_n(len(report.errors), 'batch')} (nothing of a rejected batch is committed)",
            file=out,
        )
        for r in report.errors:
            where = r.where or f"{name}: {_span(r.frame, name)}"
            print(
                f"    {where}: {r.code}: {r.message} (batch of {_span(r.frame, name)} rejected)",
                file=out,
            )
    unacked = report.frames - report.acked_frames
    if unacked:
        print(
            f"  not acknowledged: {_n(unacked, 'batch')} (they may or may not be committed)",
            file=out,
        )
    if report.closed:
        print(f"  {report.closed}", file=out)


def cmd_push(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    name = input_name(args.file)
    frames = load_frames("push", args)
    if isinstance(frames, int):
        return frames
    total = sum(f.count for f in frames)
    t0 = time.perf_counter()
    with tqdm(
        total=total, unit="sample", unit_scale=True, file=sys.stderr, disable=args.quiet or None
    ) as bar:
        try:
            report = asyncio.run(
                push_frames(
                    args.url,
                    frames,
                    name=name,
                    token=args.token,
                    window=args.window,
                    wait=args.wait,
                    progress=bar,
                )
            )
        except RejectedError as exc:
            hint = ""
            if exc.status in (401, 403):
                hint = " (pass --token or set $RINGBRIDGE_TOKEN)"
            return fail(f"push: {args.url}: the server refused the stream: {exc.message}{hint}")
        except ClientError as exc:
            return fail(f"push: {exc.message}")
    print_push_summary(report, name, args.url, time.perf_counter() - t0, sys.stdout)
    failed = report.errors or report.closed or report.acked_frames < report.frames
    return EXIT_FAILED if failed else EXIT_OK
