"""Admission at the edge, at the ASGI level: what every ingestion handler does.

Plain functions over ASGI ``receive`` callables and header values, so the
FastAPI route, the WebSocket stream and a raw ASGI handler share them:

1. :func:`reservation` -- how many bytes to admit *before* reading a body:
   its ``Content-Length`` (413 at once when over the batch limit), or the
   batch limit itself for a chunked body;
2. ``producer.admit(nbytes, timeout)`` -- the credit, or an immediate 503
   (:class:`~ringbridge.errors.OverloadedError`) with the body left unread;
3. :func:`read_body` -- the body, within the credit's bytes and the body
   timeout (a slow client must not hold credit for long: 408);
4. :func:`decode` -- validation into ring records (a worker thread for big
   bodies), then ``credit.resize(batch.nbytes)``;
5. ``producer.submit(batch, credit, gone=watch_disconnect(receive))`` -- the
   batch is given up (never committed) if the client disconnects first.

:func:`ingest_http` is those steps for one HTTP request, shared by the
FastAPI route (which documents it) and the raw ASGI handler that serves it
(:mod:`ringbridge.api.fastpath`); :func:`ack_json` renders its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .. import schema
from ..errors import (
    ClientGoneError,
    RecordTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from ..producer.task import Ack, WaitFor
from ..runtime import Runtime
from ..settings import Settings

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: Bodies larger than this are decoded in a worker thread: decoding a
#: multi-megabyte JSON batch takes milliseconds, which the event loop (and
#: every other connection) should not wait for.
THREAD_DECODE_BYTES = 256 * 1024

JSON_TYPES = frozenset({"application/json"})
BINARY_TYPES = frozenset({"application/octet-stream"})


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; refuses others (415)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES and media not in BINARY_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or 'none'} is not supported: send application/json or "
            "application/octet-stream"
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


def _decode_now(
    s: Settings, sample_codec: schema.SampleCodec, media: str, body: bytes
) -> schema.EncodedBatch:
    if media in JSON_TYPES:
        batch = sample_codec.decode_json_batch(
            body,
            ring_size=s.ring_size,
            max_sample_bytes=s.max_sample_bytes,
            max_samples=sample_codec.max_samples(s.max_batch_bytes),
        )
    else:
        batch = schema.validate_binary_batch(
            body, ring_size=s.ring_size, max_sample_bytes=s.max_sample_bytes
        )
    check_batch_size(batch, s.max_batch_bytes)
    return batch


def check_batch_size(batch: schema.EncodedBatch, limit: int) -> None:
    if batch.nbytes > limit:
        # JSON may encode to more ring bytes than its own size (small structs).
        raise RecordTooLargeError(
            f"batch takes {batch.nbytes} ring bytes, over the limit of {limit}"
        )


async def decode(
    s: Settings, sample_codec: schema.SampleCodec, media: str, body: bytes
) -> schema.EncodedBatch:
    """A validated batch from a body of ``media`` (as returned by :func:`media_type`)."""
    if len(body) > THREAD_DECODE_BYTES:
        return await asyncio.to_thread(_decode_now, s, sample_codec, media, body)
    return _decode_now(s, sample_codec, media, body)


def request_timeout(rt: Runtime, timeout: float | None) -> float:
    """The request's ``?timeout=`` (or the default), capped by ``max_timeout``."""
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
    media = media_type(content_type)
    credit = rt.producer.admit(reservation(content_length, limit), request_timeout(rt, timeout))
    try:
        body = await read_body(receive, credit.nbytes, rt.settings.body_timeout)
        batch = await decode(rt.settings, rt.codec, media, body)
        del body
        credit.resize(batch.nbytes)
        gone = asyncio.ensure_future(watch_disconnect(receive))
        try:
            return await rt.producer.submit(batch, credit, wait=wait, gone=gone)
        finally:
            gone.cancel()
    finally:
        credit.release()


def ack_json(ack: Ack) -> bytes:
    """``{"accepted", "first_seq", "last_seq", "state"}`` as bytes, without a JSON encoder."""
    return b'{"accepted":%d,"first_seq":%d,"last_seq":%d,"state":"%s"}' % (
        ack.count,
        ack.first_seq,
        ack.last_seq,
        ack.state.encode(),
    )


def ack_status(ack: Ack, wait: WaitFor) -> int:
    """200, or 202 when ``wait=consumed`` ran out with the batch only committed."""
    return 202 if ack.state != wait else 200
