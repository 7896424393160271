"""What waits in the producer's line: an admitted batch in memory (:class:`Submission`),
or a batch still unread in its socket that waits for ring space to be received
into (:class:`ClaimRequest`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RingbridgeError
from ..wire import Ack
from .admission import Credit
from .contract import Batch, BeforeCommit
from .owner import RegionOwner

if TYPE_CHECKING:
    from .regions import Region

__all__ = ["ClaimOwner", "ClaimRequest", "InLine", "Submission"]


def _end(future: asyncio.Future[Any], exc: RingbridgeError | None) -> bool:
    """End ``future`` with ``exc`` (None: cancelled) unless it ended; True if so."""
    if future.done():
        return False
    if exc is None:
        future.cancel()
    else:
        future.set_exception(exc)
    return True


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
        if not _end(self.future, exc):
            return False
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

    arriving = False  # copied in whole: never receiving

    def region_evict(self, region: Region) -> None:  # pragma: no cover - ready at once
        raise AssertionError("a batch copied in whole is never still receiving")


class ClaimOwner(RegionOwner, Protocol):
    """Who waits, its batch unread, for the region a :class:`ClaimRequest` asks for
    (then owns it as any :class:`~ringbridge.producer.regions.RegionOwner`). Called
    on the loop's thread, from the producer task or a timer."""

    def claim_granted(self, region: Region) -> None:
        """``region`` is claimed (RECEIVING, holding the request's credit): receive
        the batch into it now, then ``ready`` or ``discard`` it."""

    def claim_failed(self, exc: RingbridgeError) -> None:
        """No region will come (deadline, shutdown, crash); the credit went back."""


class ClaimRequest:
    """A batch of ``nbytes`` whose bytes are still in its socket, in line for ring
    space: at its turn the producer task claims the region (waiting for space
    as for any batch) and hands it to ``owner``, who receives the bytes into it.
    Nothing of the batch is in memory meanwhile; ``credit`` is its batch's."""

    __slots__ = ("credit", "future", "nbytes", "owner", "started")

    def __init__(
        self,
        nbytes: int,
        credit: Credit,
        owner: ClaimOwner,
        started: float | None,
        future: asyncio.Future[None],
    ) -> None:
        self.nbytes = nbytes
        self.credit = credit
        self.owner = owner
        self.started = started
        self.future = future  # done once granted or given up

    def grant(self, region: Region) -> None:
        """The region is claimed: the owner's from here (it holds the credit)."""
        self.future.set_result(None)
        self.owner.claim_granted(region)

    def give_up(self, exc: RingbridgeError | None) -> bool:
        """Out of play unless it was granted or given up already; True if so. The
        owner hears ``exc`` (None: it withdrew the request itself)."""
        if not _end(self.future, exc):
            return False
        if exc is not None:
            self.future.exception()  # retrieved: the owner hears it below
        self.credit.release()
        if exc is not None:
            self.owner.claim_failed(exc)
        return True


#: One item of the producer's line.
InLine = Submission | ClaimRequest
