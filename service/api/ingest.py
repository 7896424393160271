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
4. :func:`decode` -- the one decode dispatch, for a JSON body, a binary body
   or frame and a WebSocket text frame: validation into ring records (a
   worker thread for big ones), then the credit resized to the batch;
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
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ParamSpec, TypeVar

from starlette.applications import Starlette
from starlette.responses import Response

from .. import schema, wire
from ..errors import (
    ClientGoneError,
    RecordTooLargeError,
    RequestTimeoutError,
    RingbridgeError,
    SampleError,
    UnsupportedMediaTypeError,
)
from ..producer.observe import Arrival
from ..runtime import Runtime
from ..wire import Ack, ErrorInfo, WaitFor

log = logging.getLogger("ringbridge.ingest")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Payloads larger than this are decoded in a worker thread: decoding a
#: multi-megabyte JSON batch takes milliseconds, which the event loop (and
#: every other connection) should not wait for.
THREAD_DECODE_BYTES = 256 * 1024

#: What a payload is, for :func:`decode`: a body's media type, or a WebSocket
#: text frame (``{"id", "samples"}``; a binary frame is a binary body).
JSON = "application/json"
BINARY = "application/octet-stream"
TEXT_FRAME = "text frame"


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; refuses others (415)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != JSON and media != BINARY:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or 'none'} is not supported: send {JSON} or {BINARY}"
        )
    return media


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


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The request body, refused (413) as soon as it outgrows ``limit``.

    ``limit`` is the credit's size: a body that lied about its length is not
    read past what was admitted. ``timeout`` (``body_timeout``) bounds the
    whole read (408): a client trickling its body does not hold credit for
    long. It is not the batch's ``?timeout=``: a server slow to get to the
    body (busy) must not answer that the client was slow.
    """
    chunks: list[bytes] = []
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
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestTimeoutError(
            f"body not received within {timeout:g}s of admission ({size} bytes so far)"
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def watch_disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (call once the body has been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def decode_now(rt: Runtime, kind: str, data: bytes | str) -> tuple[Any, schema.EncodedBatch]:
    """(the text frame's id, or None; the validated batch) of ``data``, a ``kind`` payload.

    Any failure is a :class:`~ringbridge.errors.RingbridgeError`: whatever
    else a decoder raises is refused as this batch's fault (and logged), so
    one bad payload never costs a connection or a 500.
    """
    s, codec = rt.settings, rt.codec
    if len(data) > s.max_batch_bytes:
        unit = "characters" if isinstance(data, str) else "bytes"
        raise RecordTooLargeError(
            f"batch of {len(data)} {unit} exceeds the limit of {s.max_batch_bytes}"
        )
    fid: Any = None
    try:
        if kind in (TEXT_FRAME, JSON):
            limits = {
                "ring_size": s.ring_size,
                "max_sample_bytes": s.max_sample_bytes,
                "max_samples": codec.max_samples(s.max_batch_bytes),
            }
            if kind == TEXT_FRAME:
                fid, batch = codec.decode_ws_text_frame(data, **limits)
            else:
                batch = codec.decode_json_batch(data, **limits)
        else:
            # Binary payloads are bytes; only a text frame is str.
            raw = data.encode() if isinstance(data, str) else data
            batch = schema.validate_binary_batch(
                raw, ring_size=s.ring_size, max_sample_bytes=s.max_sample_bytes
            )
    except RingbridgeError:
        raise
    except Exception as exc:
        log.warning("decoder failed", exc_info=exc)
        raise SampleError(f"batch could not be decoded: {type(exc).__name__}") from exc
    if batch.nbytes > s.max_batch_bytes:
        # JSON may encode to more ring bytes than its own size (small structs).
        raise RecordTooLargeError(
            f"batch takes {batch.nbytes} ring bytes, over the limit of {s.max_batch_bytes}"
        )
    return fid, batch


async def offload(size: int, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args)``, in a worker thread when it decodes more than THREAD_DECODE_BYTES."""
    if size > THREAD_DECODE_BYTES:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


async def decode(rt: Runtime, kind: str, data: bytes | str) -> tuple[Any, schema.EncodedBatch]:
    """:func:`decode_now`, off the event loop for big payloads."""
    return await offload(len(data), decode_now, rt, kind, data)


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
) -> Ack:
    """One ``POST /v1/samples``: admit, read, decode, submit; the ack or a RingbridgeError."""
    limit = rt.settings.max_batch_bytes
    kind = media_type(content_type)
    arrival = Arrival.now("json" if kind == JSON else "binary")
    credit = rt.producer.admit(reservation(content_length, limit), request_timeout(rt, timeout))
    try:
        body = await read_body(receive, credit.nbytes, rt.settings.body_timeout)
        _, batch = await decode(rt, kind, body)
        del body
        credit.resize(batch.nbytes)
        gone = asyncio.ensure_future(watch_disconnect(receive))
        try:
            ack = await rt.producer.submit(batch, credit, wait=wait, gone=gone)
        finally:
            gone.cancel()
        rt.batches.acked("http", arrival, ack, wait)
        return ack
    finally:
        credit.release()


# -- refusals ---------------------------------------------------------------------


def _refused(rt: Runtime | None, exc: RingbridgeError) -> ErrorInfo:
    # The one place a refused batch (or stream) is counted, by its code.
    if rt is not None:
        rt.rejections.add(exc.code)
    return ErrorInfo.of(exc)


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
