"""A validated batch in ring record format, whatever it was sent as."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EncodedBatch"]


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
