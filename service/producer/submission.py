"""One admitted batch on its way through the producer's line."""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..errors import RingbridgeError
from ..wire import Ack
from .admission import Credit

__all__ = ["Batch", "Submission"]


class Batch(Protocol):
    """What the producer needs of a validated batch (``codec.EncodedBatch``)."""

    @property
    def records(self) -> bytes | bytearray | memoryview: ...
    @property
    def count(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def payload_bytes(self) -> int: ...


class Submission:
    """One admitted batch in line. ``batch`` is dropped when it is given up, so a
    batch that left early holds no memory while it still sits in the line."""

    __slots__ = ("batch", "credit", "enqueued_at", "future")

    def __init__(
        self, batch: Batch, credit: Credit, enqueued_at: float, future: asyncio.Future[Ack]
    ) -> None:
        self.batch: Batch | None = batch
        self.credit = credit
        self.enqueued_at = enqueued_at
        self.future = future

    def give_up(self, exc: RingbridgeError | None) -> bool:
        """Take the batch out of play (not committed) unless it already was; True if so."""
        if self.future.done():
            return False
        if exc is None:
            self.future.cancel()
        else:
            self.future.set_exception(exc)
        self.batch = None
        self.credit.release()
        return True
