"""One JetStream message -> one validated batch, exactly as ``POST /v1/samples`` takes it.

The body format is chosen by the message's ``Content-Type`` header, read
case-insensitively and held to the HTTP rule
(:func:`ringbridge.schema.payload.media_type`); the decoding, the
validation (whole batch, index and path of the first bad sample) and the
limits are the one rule every front door shares
(:func:`ringbridge.schema.payload.decode_payload`).

A message without the header is refused (415): guessing a format would turn
a typo in a publisher into samples in the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..schema import EncodedBatch, SampleCodec
from ..schema.payload import Limits, decode_payload, media_type, offload

__all__ = ["CONTENT_TYPE", "Limits", "content_type", "decode_message"]

CONTENT_TYPE = "Content-Type"


def content_type(headers: Mapping[str, str] | None) -> str:
    """The media type of a message (``application/json``...); 415 if absent or another."""
    for key, value in (headers or {}).items():
        if str(key).lower() == "content-type":
            return media_type(value)
    return media_type(None)


async def decode_message(
    codec: SampleCodec, limits: Limits, headers: Mapping[str, str] | None, body: bytes
) -> tuple[str, EncodedBatch]:
    """(its media type, the batch) a message carries; a RingbridgeError (4xx) when invalid."""
    media = content_type(headers)
    _, batch = await offload(len(body), decode_payload, codec, limits, media, body)
    return media, batch
