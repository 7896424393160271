"""The JSON envelopes around samples: a batch ``{"samples": [...]}``, a
WebSocket text frame ``{"id": ..., "samples": [...]}``, and the raw
``{"data": "<base64>"}`` sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from .jsonkeys import id_member

__all__ = ["DATA", "Decoders", "decoders", "frame_id", "raw_field"]

#: The key of a raw sample's bytes.
DATA: Final = "data"


def raw_field() -> tuple[str, Any, Any]:
    """The ``data`` member of a sample that may be raw bytes (``UNSET`` when absent)."""
    return ("raw", bytes | UnsetType, msgspec.field(default=UNSET, name=DATA))


@dataclass(frozen=True)
class Decoders:
    batch: msgspec.json.Decoder[Any]
    frame: msgspec.json.Decoder[Any]


def decoders(sample: Any, prefix: str) -> Decoders:
    """The batch and frame decoders of samples of type ``sample``."""
    batch = msgspec.defstruct(
        f"{prefix}Batch", [("samples", list[sample])], forbid_unknown_fields=True
    )
    frame = msgspec.defstruct(
        f"{prefix}Frame", [("samples", list[sample]), ("id", Any, None)], forbid_unknown_fields=True
    )
    return Decoders(msgspec.json.Decoder(batch), msgspec.json.Decoder(frame))


_ID_ONLY: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    msgspec.defstruct("FrameId", [("id", Any, None)])
)


def frame_id(data: str | bytes) -> Any:
    """The ``id`` of a text frame that was refused, if the frame is JSON at all (else None)."""
    try:
        return _ID_ONLY.decode(data).id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # Another part of the frame defeats the decoder: read the id alone.
        return id_member(data)
