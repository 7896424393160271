"""A validated batch in ring record format, whatever it was sent as."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RingbridgeError

__all__ = ["EncodedBatch", "frame_id_of", "set_frame_id"]


@dataclass(frozen=True)
class EncodedBatch:
    """A validated batch in ring record format, ready for ``commit_batch``.

    ``nbytes`` is the ring space it takes (``len(records)``), ``payload_bytes``
    the sum of the sample payload lengths (what the kernel counts as bytes).
    """

    records: bytes | bytearray
    count: int
    nbytes: int
    payload_bytes: int


def frame_id_of(exc: BaseException) -> Any:
    """The ``id`` of the WebSocket frame an error came from, or None."""
    return getattr(exc, "frame_id", None)


def set_frame_id(exc: RingbridgeError, frame_id: Any) -> None:
    # errors.py is shared and has no frame_id slot; the WS layer reads it
    # back through frame_id_of() to answer {"id", "error"} for that frame.
    setattr(exc, "frame_id", frame_id)  # noqa: B010
