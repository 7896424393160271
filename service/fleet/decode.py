"""One JetStream message -> one validated batch, exactly as ``POST /v1/samples`` takes it.

The body format is chosen by the message's ``Content-Type`` header:
``application/json`` (``{"samples": [...]}``, typed by the node's sample
codec) or ``application/octet-stream`` (ring records). Validation is the
schema layer's, whole batch before anything is committed, with the index and
path of the first bad sample; the limits are the service's
(``max_batch_bytes``, ``max_sample_bytes``, the ring size).

A message without the header is refused (415): guessing a format would turn
a typo in a publisher into samples in the kernel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from .. import schema
from ..errors import RecordTooLargeError, RingbridgeError, SampleError, UnsupportedMediaTypeError

__all__ = ["CONTENT_TYPE", "Limits", "content_type", "decode_message"]

log = logging.getLogger("ringbridge.fleet")

CONTENT_TYPE = "Content-Type"
JSON = "application/json"
BINARY = "application/octet-stream"
#: Bodies larger than this are decoded in a worker thread (as over HTTP).
THREAD_DECODE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    ring_size: int
    max_sample_bytes: int
    max_batch_bytes: int


def content_type(headers: Mapping[str, str] | None) -> str:
    """The media type of a message (``application/json``...); 415 if absent or another."""
    value = None
    for key, v in (headers or {}).items():
        if str(key).lower() == "content-type":
            value = v
            break
    media = (value or "").split(";", 1)[0].strip().lower()
    if media not in (JSON, BINARY):
        what = f"Content-Type {media}" if media else "no Content-Type header"
        raise UnsupportedMediaTypeError(
            f"{what}: a fleet message must say {CONTENT_TYPE}: {JSON} or {BINARY}"
        )
    return media


def _decode_now(
    codec: schema.SampleCodec, limits: Limits, media: str, body: bytes
) -> schema.EncodedBatch:
    if len(body) > limits.max_batch_bytes:
        raise RecordTooLargeError(
            f"message of {len(body)} bytes exceeds max_batch_bytes {limits.max_batch_bytes}"
        )
    if media == JSON:
        batch = codec.decode_json_batch(
            body,
            ring_size=limits.ring_size,
            max_sample_bytes=limits.max_sample_bytes,
            max_samples=codec.max_samples(limits.max_batch_bytes),
        )
    else:
        batch = schema.validate_binary_batch(
            body, ring_size=limits.ring_size, max_sample_bytes=limits.max_sample_bytes
        )
    if batch.nbytes > limits.max_batch_bytes:
        raise RecordTooLargeError(
            f"batch takes {batch.nbytes} ring bytes, over the limit of {limits.max_batch_bytes}"
        )
    return batch


async def decode_message(
    codec: schema.SampleCodec, limits: Limits, headers: Mapping[str, str] | None, body: bytes
) -> schema.EncodedBatch:
    """The batch a message carries; a RingbridgeError (4xx) when it is invalid."""
    media = content_type(headers)
    try:
        if len(body) > THREAD_DECODE_BYTES:
            return await asyncio.to_thread(_decode_now, codec, limits, media, body)
        return _decode_now(codec, limits, media, body)
    except RingbridgeError:
        raise
    except Exception as exc:
        # As over HTTP: whatever else a decoder raises is this message's fault
        # (and logged), so one bad message never stops the node's stream.
        log.warning("decoder failed", exc_info=exc)
        raise SampleError(f"batch could not be decoded: {type(exc).__name__}") from exc
