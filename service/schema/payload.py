"""One payload of the network contract -> one validated batch: the decode rule, written once.

Every front door -- ``POST /v1/samples``, a WebSocket frame, a JetStream
message -- hands its payload here with what it is (:data:`JSON`,
:data:`BINARY` or :data:`TEXT_FRAME`) and the service's :class:`Limits`:

1. a payload over ``max_batch_bytes`` is refused before it is parsed (413);
2. JSON (a body or a text frame) is decoded and typed by the node's
   :class:`~ringbridge.schema.SampleCodec`; binary is validated as ring
   records, as it is; the whole batch before anything is committed, with
   the index and path of the first bad sample;
3. whatever else a decoder raises is this payload's fault: refused as a
   :class:`~ringbridge.errors.SampleError` (and logged), so one bad payload
   never costs a connection, a stream or a 500;
4. a batch taking more ring bytes than ``max_batch_bytes`` is refused (JSON
   may pack into more than its own size: small structs).

:func:`media_type` is the ``Content-Type`` rule (a parameter such as
``charset`` is ignored; anything but the two media types is 415), and
:func:`offload` moves a large decode off the event loop. What is transport
specific -- reading a body within its credit, a frame's id, a message's
headers -- stays with each front door.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar

from ..errors import RecordTooLargeError, RingbridgeError, SampleError, UnsupportedMediaTypeError
from .batch import EncodedBatch
from .binary import validate_binary_batch
from .jsoncodec import SampleCodec

__all__ = [
    "BINARY",
    "JSON",
    "TEXT_FRAME",
    "THREAD_DECODE_BYTES",
    "Limits",
    "NativeScan",
    "decode_payload",
    "media_type",
    "offload",
]

log = logging.getLogger("ringbridge.ingest")

_P = ParamSpec("_P")
_T = TypeVar("_T")

JSON: Final = "application/json"
BINARY: Final = "application/octet-stream"
#: A WebSocket text frame (``{"id", "samples"}``); a binary frame is a binary body.
TEXT_FRAME: Final = "text frame"

#: Payloads larger than this are decoded in a worker thread: decoding a
#: multi-megabyte JSON batch takes milliseconds, which the event loop (and
#: every other connection) should not wait for.
THREAD_DECODE_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The service's limits a payload is decoded within (from ``Settings``)."""

    ring_size: int
    max_sample_bytes: int
    max_batch_bytes: int

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """From a ``ringbridge.settings.Settings`` (any object with the three fields)."""
        return cls(settings.ring_size, settings.max_sample_bytes, settings.max_batch_bytes)


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; refuses others (415)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != JSON and media != BINARY:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or 'none'} is not supported: send {JSON} or {BINARY}"
        )
    return media


def _json_sizes(codec: SampleCodec, limits: Limits) -> dict[str, int]:
    """The limits a JSON decode -- native or exact -- runs within."""
    return {
        "ring_size": limits.ring_size,
        "max_sample_bytes": limits.max_sample_bytes,
        "max_samples": codec.max_samples(limits.max_batch_bytes),
    }


class NativeScan:
    """:func:`decode_payload`'s result for JSON that the native scanner
    (:mod:`ringbridge.schema.jsonscan`) accepts, else None (then
    ``decode_payload(..., native=False)`` decides, and names any error), for
    one codec under fixed limits worked out once: ``scan(kind, data)``. A
    service keeps one (``Runtime.native_scan``): this is the typed JSON hot
    path, one call from the payload to the scanner.

    The scanner holds nothing but the records it writes (no object per
    sample), so a caller charging a JSON decode for its working set
    (``ringbridge.api.decodecost``) need not charge this one -- nor scan
    the body to price it, which cost more than the scan itself.
    """

    __slots__ = ("_bound", "_max_batch_bytes")

    def __init__(self, codec: SampleCodec, limits: Limits) -> None:
        self._max_batch_bytes = limits.max_batch_bytes
        sizes = _json_sizes(codec, limits)
        self._bound = (
            None
            if codec.scanner is None
            else codec.scanner.bound(
                ring_size=sizes["ring_size"],
                limit=sizes["max_sample_bytes"],
                max_samples=sizes["max_samples"],
                # A batch taking more ring bytes than this is the exact path's
                # to refuse (rule 4), so the scanner gives up on it.
                max_batch_bytes=limits.max_batch_bytes,
            )
        )

    def __call__(self, kind: str, data: bytes | str) -> tuple[Any, EncodedBatch] | None:
        if self._bound is None or kind == BINARY or len(data) > self._max_batch_bytes:
            return None
        return self._bound(data, kind == TEXT_FRAME)


def decode_payload(
    codec: SampleCodec, limits: Limits, kind: str, data: bytes | str, native: bool = True
) -> tuple[Any, EncodedBatch]:
    """(the text frame's id, or None; the validated batch) of ``data``, a ``kind`` payload.

    Any failure is a :class:`~ringbridge.errors.RingbridgeError` (see the module doc).
    ``native=False``: JSON skips the native scanner (:class:`NativeScan` tried it).
    """
    if len(data) > limits.max_batch_bytes:
        unit = "characters" if isinstance(data, str) else "bytes"
        raise RecordTooLargeError(
            f"batch of {len(data)} {unit} exceeds the limit of {limits.max_batch_bytes}"
        )
    fid: Any = None
    try:
        if kind in (TEXT_FRAME, JSON):
            sizes = _json_sizes(codec, limits)
            if kind == TEXT_FRAME:
                fid, batch = codec.decode_ws_text_frame(data, **sizes, native=native)
            else:
                batch = codec.decode_json_batch(data, **sizes, native=native)
        else:
            # Binary payloads are bytes; only a text frame is str.
            raw = data.encode() if isinstance(data, str) else data
            batch = validate_binary_batch(
                raw, ring_size=limits.ring_size, max_sample_bytes=limits.max_sample_bytes
            )
    except RingbridgeError:
        raise
    except Exception as exc:
        log.warning("decoder failed", exc_info=exc)
        raise SampleError(f"batch could not be decoded: {type(exc).__name__}") from exc
    if batch.nbytes > limits.max_batch_bytes:
        raise RecordTooLargeError(
            f"batch takes {batch.nbytes} ring bytes, over the limit of {limits.max_batch_bytes}"
        )
    return fid, batch


async def offload(size: int, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args)``, in a worker thread when it decodes more than THREAD_DECODE_BYTES."""
    if size > THREAD_DECODE_BYTES:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
