"""Admission at the edge, at the ASGI level: the steps of every ingestion path.

Plain functions over ASGI ``receive`` callables and header values, shared by
the one HTTP handler (:mod:`ringbridge.api.fastpath`) and the WebSocket
stream (:mod:`ringbridge.api.ws`):

1. :func:`reservation` -- how many bytes to admit *before* reading a body:
   its ``Content-Length`` (413 at once when over the batch limit), or the
   batch limit itself for a chunked body (a stream is admitted once, for one
   frame, at its handshake);
2. ``producer.admit(nbytes, timeout)`` -- the credit, or an immediate 503
   (:class:`~ringbridge.errors.OverloadedError`) with the body left unread;
3. :func:`read_body` -- the body, within the credit's bytes and the body
   timeout (a slow client must not hold credit for long: 408);
4. :func:`decode` -- the decode rule every front door shares
   (:mod:`ringbridge.schema.payload`), for a JSON body, a binary body or
   frame and a WebSocket text frame: validation into ring records (a worker
   thread for big ones), then the credit resized to the batch;
5. ``producer.submit(batch, credit, gone=watch_disconnect(receive))`` -- the
   batch is given up (never committed) if the client disconnects first (a
   stream's batches use ``producer.enqueue``: they commit even then).

:func:`ingest_http` is those steps for one HTTP request. A refused batch,
whatever refused it, is counted by its code and answered in one place:
:func:`refuse` (an HTTP error answer, also that of a refused WebSocket
handshake) and :func:`refuse_frame` (a WebSocket error ack), both rendered
by :mod:`ringbridge.wire`; :func:`error_response` is the same answer,
uncounted, for the routes that take no batch.
"""

from __future__ import annotations

import asyncio
import io
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response

from .. import schema, wire
from ..errors import (
    ClientGoneError,
    RecordTooLargeError,
    RequestTimeoutError,
    RingbridgeError,
    RingTimeoutError,
)
from ..producer.keys import Keyed, KeyRecord
from ..producer.observe import Arrival
from ..runtime import Runtime
from ..schema.payload import (
    BINARY,
    JSON,
    TEXT_FRAME,
    THREAD_DECODE_BYTES,
    decode_payload,
    media_type,
    offload,
)
from ..wire import Ack, ErrorInfo, WaitFor
from .decodecost import decode_cost
from .idempotency import body_digest, first_sending, key_digest

__all__ = [
    "BINARY",
    "JSON",
    "TEXT_FRAME",
    "THREAD_DECODE_BYTES",
    "decode",
    "decode_charged",
    "decode_now",
    "error_response",
    "ingest_http",
    "media_type",
    "offload",
    "read_body",
    "refuse",
    "refuse_frame",
    "reservation",
    "watch_disconnect",
]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def reservation(content_length: str | None, limit: int) -> int:
    """Bytes to admit before reading a body of ``content_length`` (None: chunked)."""
    if content_length is None:
        return limit
    declared = content_length.strip()
    if not declared.isdigit():
        # h11 and httptools refuse such requests before we see them; refuse
        # rather than guess if another server lets one through.
        raise RecordTooLargeError(f"Content-Length {content_length!r} is not a byte count")
    n = int(declared)
    if n > limit:
        raise RecordTooLargeError(f"body of {n} bytes exceeds the limit of {limit}")
    return n


async def read_body(receive: Receive, limit: int, timeout: float, expected: int = 0) -> bytes:
    """The request body, refused (413) as soon as it outgrows ``limit``.

    ``limit`` is the credit's size: a body that lied about its length is not
    read past what was admitted. ``timeout`` (``body_timeout``) bounds the
    whole read (408): a client trickling its body does not hold credit for
    long. It is not the batch's ``?timeout=``: a server slow to get to the
    body (busy) must not answer that the client was slow.
    """
    # The chunks go into one growing buffer as they come, and getvalue()
    # hands that very buffer over: no list of chunks plus their join, which
    # held every body twice for a moment (the admission budget counts it once).
    first: bytes | None = None
    buf: io.BytesIO | None = None
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGoneError("the client went away while sending the body")
                chunk: bytes = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise RecordTooLargeError(f"body exceeds the limit of {limit} bytes")
                    if first is None:
                        first = chunk
                    else:
                        if buf is None:
                            buf = io.BytesIO()
                            if expected > len(first):
                                # Sized once: no growth, each byte copied once.
                                buf.seek(expected - 1)
                                buf.write(b"\0")
                                buf.seek(0)
                            buf.write(first)
                        buf.write(chunk)
                        del chunk
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestTimeoutError(
            f"body not received within {timeout:g}s of admission ({size} bytes so far)"
        ) from None
    if buf is not None:
        if buf.tell() < expected:
            buf.truncate()  # shorter than announced (a chunked body has no size)
        return buf.getvalue()
    return first if first is not None else b""


async def watch_disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (call once the body has been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def decode_now(
    rt: Runtime, kind: str, data: bytes | str, native: bool = True
) -> tuple[Any, schema.EncodedBatch]:
    """(the text frame's id, or None; the validated batch) of ``data``, a ``kind`` payload:
    the decode rule (:func:`ringbridge.schema.payload.decode_payload`) within the
    service's limits."""
    return decode_payload(rt.codec, rt.limits, kind, data, native)


def _decode_cost(rt: Runtime, data: bytes | str) -> int:
    """What a JSON decode of ``data`` is charged (:mod:`.decodecost`); 413 when
    even the whole budget could not hold it."""
    cost = decode_cost(data)
    budget = rt.producer.admission.budget
    if cost > budget:
        # Too many samples for any batch is the more telling refusal.
        rt.codec.check_sample_count(data, rt.codec.max_samples(rt.settings.max_batch_bytes))
        raise RecordTooLargeError(
            f"decoding this JSON batch holds about {cost} bytes, more than the whole "
            f"admission budget ({budget}); split it, or send it as a binary batch"
        )
    return cost


def decode_charged(rt: Runtime, kind: str, data: bytes | str) -> tuple[Any, schema.EncodedBatch]:
    """:func:`decode_now` on the event loop (a small payload), charged as :func:`decode`."""
    if kind == BINARY:
        return decode_now(rt, kind, data)
    # JSON the native scanner takes: decoded with no charge (see NativeScan).
    scanned = rt.native_scan(kind, data)
    if scanned is not None:
        return scanned
    charge = rt.producer.admit(_decode_cost(rt, data), 0.0)
    try:
        return decode_now(rt, kind, data, native=False)
    finally:
        charge.release()


async def decode(
    rt: Runtime, kind: str, data: bytes | str, deadline: float | None = None
) -> tuple[Any, schema.EncodedBatch]:
    """:func:`decode_now`, off the event loop for big payloads, charged for what it holds.

    A JSON decode takes admission credit for its working set
    (:func:`ringbridge.api.decodecost.decode_cost`) while it runs: 503
    ``overloaded`` without it, 413 when even the whole budget could not hold
    it. Decodes in worker threads run one at a time, in arrival order, until
    ``deadline`` (loop time). A binary batch is checked in place, and a small
    JSON batch that the native scanner takes is scanned on the loop: no charge.
    """
    if kind == BINARY:
        return await offload(len(data), decode_now, rt, kind, data)
    threaded = len(data) > THREAD_DECODE_BYTES
    if not threaded and (scanned := rt.native_scan(kind, data)) is not None:
        return scanned
    cost = _decode_cost(rt, data)
    if threaded:
        try:
            async with asyncio.timeout_at(deadline):
                await rt.decoding.acquire()
        except TimeoutError:
            raise RingTimeoutError(
                "batch not decoded within its timeout: other big JSON batches were decoded first"
            ) from None
    try:
        charge = rt.producer.admit(cost, 0.0)
        try:
            # The scanner was tried above unless the decode is threaded.
            return await offload(len(data), decode_now, rt, kind, data, native=threaded)
        finally:
            charge.release()
    finally:
        if threaded:
            rt.decoding.release()


def request_timeout(rt: Runtime, timeout: float | None) -> float:
    """The query's ``timeout`` (or the default), capped by ``max_timeout``."""
    if timeout is None:
        return rt.settings.submit_timeout
    return min(timeout, rt.settings.max_timeout)


async def ingest_http(
    rt: Runtime,
    content_type: str | None,
    content_length: str | None,
    receive: Receive,
    wait: WaitFor,
    timeout: float | None,
    key: str | None = None,
) -> tuple[Ack, bool]:
    """One ``POST /v1/samples``: admit, read, decode, submit; ``(ack, replayed)`` or a
    RingbridgeError. ``replayed``: the ack of an earlier sending of ``key``'s batch."""
    limit = rt.settings.max_batch_bytes
    kind = media_type(content_type)
    arrival = Arrival.now("json" if kind == JSON else "binary")
    credit = rt.producer.admit(reservation(content_length, limit), request_timeout(rt, timeout))
    keyed: Keyed | None = None
    try:
        expected = credit.nbytes if content_length is not None else 0
        body = await read_body(receive, credit.nbytes, rt.settings.body_timeout, expected)
        if key is not None:
            digest = await offload(len(body), body_digest, body)
            first = await first_sending(rt, key_digest(key), digest, credit.deadline)
            if isinstance(first, KeyRecord):
                ack = first.ack()
                if wait == "consumed":
                    left = credit.remaining(asyncio.get_running_loop().time())
                    ack = await rt.producer.wait_consumed(ack, left)
                return ack, True
            keyed = first
        _, batch = await decode(rt, kind, body, credit.deadline)
        del body
        credit.resize(batch.nbytes)
        if keyed is not None:
            keyed.count = batch.count
        gone = asyncio.ensure_future(watch_disconnect(receive))
        try:
            ack = await rt.producer.submit(batch, credit, wait=wait, gone=gone, before_commit=keyed)
        finally:
            gone.cancel()
        rt.batches.acked("http", arrival, ack, wait)
        return ack, False
    finally:
        credit.release()
        if keyed is not None:
            keyed.abandoned()  # a no-op once it was committed


# -- refusals ---------------------------------------------------------------------


def _refused(rt: Runtime | None, exc: RingbridgeError) -> ErrorInfo:
    # The one place a refused batch (or stream) is counted, by its code.
    if rt is not None:
        rt.rejections.add(exc.code)
    _drop_frames(exc)
    return ErrorInfo.of(exc)


def _drop_frames(exc: BaseException) -> None:
    """Let go of what the failed frames held: the body, the batch.

    An error raised through a future (the producer's ack, a decode in a
    worker thread) sits in a reference cycle -- the future holds the error,
    its traceback the frame, the frame the future -- that only the cyclic
    GC breaks, rarely once it is old: every refused 4 MiB batch kept its 4
    MiB until then (measured: 16 timed-out batches held 67 MiB). The answer
    needs only the code and the message.
    """
    traceback.clear_frames(exc.__traceback__)
    exc.__traceback__ = None


def _response(err: ErrorInfo, retry_after: int) -> Response:
    return Response(
        wire.error_json(err),
        status_code=wire.rule(err.code).status,
        headers=wire.error_headers(err.code, retry_after),
        media_type=JSON,
    )


def refuse(app: Starlette, exc: RingbridgeError) -> Response:
    """The HTTP answer to a refused batch or handshake, counted; send it as an ASGI app."""
    return _response(_refused(app.state.runtime, exc), app.state.settings.retry_after)


def refuse_frame(rt: Runtime, frame_id: Any, exc: RingbridgeError) -> bytes:
    """The WebSocket error ack of a refused batch, counted."""
    return wire.frame_error_json(frame_id, _refused(rt, exc))


def error_response(exc: RingbridgeError, retry_after: int) -> Response:
    """The HTTP error answer of the routes that take no batch (not counted)."""
    return _response(ErrorInfo.of(exc), retry_after)
