"""One admitted batch on its way through the producer's line."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import RingbridgeError
from ..wire import Ack
from .admission import Credit
from .contract import Batch, BeforeCommit

if TYPE_CHECKING:
    from .regions import Region

__all__ = ["Submission"]


class Submission:
    """One admitted batch in line. ``batch`` is dropped when it is given up, so a
    batch that left early holds no memory while it still sits in the line."""

    __slots__ = ("batch", "before_commit", "credit", "enqueued_at", "future")

    # enqueued_at is time.perf_counter(), not loop.time(): uvloop's clock is
    # libuv's, in whole milliseconds and cached per loop pass, too coarse for
    # a latency histogram whose first buckets are tens of microseconds.

    def __init__(
        self,
        batch: Batch,
        credit: Credit,
        enqueued_at: float,
        future: asyncio.Future[Ack],
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.batch: Batch | None = batch
        self.credit = credit
        self.enqueued_at = enqueued_at
        self.future = future
        self.before_commit = before_commit

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

    # As the owner of the region the producer task copies the batch into
    # (a RegionOwner, ringbridge.producer.regions).

    @property
    def wanted(self) -> bool:
        return not self.future.done()

    def region_published(self, region: Region, ack: Ack) -> None:
        self.future.set_result(ack)
        self.batch = None

    def region_failed(self, region: Region, exc: RingbridgeError) -> None:
        self.give_up(exc)

    def region_evict(self, region: Region) -> None:  # pragma: no cover - ready at once
        raise AssertionError("a batch copied in whole is never still receiving")
