"""The producer's calls for writing in place: what the data plane uses (:class:`InPlaceWrites`).

A connection that knows a batch's length before its bytes arrive claims ring
space for it (:meth:`InPlaceWrites.claim`), lets the bytes land there, and
marks the region :meth:`~InPlaceWrites.ready` (validated) or
:meth:`~InPlaceWrites.discard` s it; a batch decoded in memory is copied in
at once with :meth:`~InPlaceWrites.commit_now`. Either way the region
publishes in claim order (:mod:`ringbridge.producer.regions`), behind every
batch the producer task claimed before it.

Claiming directly is allowed only while nothing waits in the producer's line
or for ring space -- a region claimed then would overtake those batches --
and the ring has the room now. Otherwise the caller either leaves the batch
unread in its socket and puts a claim request in line
(:meth:`~InPlaceWrites.request_claim`: at its turn the task claims the region,
waiting for space edge-triggered, and hands it over to be received into), or
receives the batch into memory and puts it in line
(:meth:`~InPlaceWrites.line_up`).

These calls run on the event loop's thread, as the task does: producer_pos
has one writer (the :class:`~ringbridge.producer.regions.Publisher`), and no
await separates a claim from the cursor it moved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import (
    RecordTooLargeError,
    RingbridgeError,
    RingClosedError,
    RingFullError,
    RingTimeoutError,
)
from ..ring import UserRingBuffer
from .admission import BatchLine, Credit
from .contract import Batch, BeforeCommit
from .kick import DrainTrigger
from .loopref import LoopRef
from .owner import Part, RegionOwner
from .regions import CommitCounts, Publisher, Region
from .submission import ClaimOwner, ClaimRequest, InLine, Submission

__all__ = ["InPlaceWrites"]

log = logging.getLogger("ringbridge.producer")


class InPlaceWrites:
    """Mixed into :class:`~ringbridge.producer.task.Producer` (which sets these up)."""

    _ring: UserRingBuffer
    _pub: Publisher
    _line: BatchLine[InLine]
    _kicker: DrainTrigger | None
    _loop: LoopRef
    _counts: CommitCounts
    _waiting_for_space: bool

    def _check_running(self) -> None:
        raise NotImplementedError

    def _crash(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _check_batch(self, batch: Batch) -> None:
        raise NotImplementedError

    def _enqueue(
        self, batch: Batch, credit: Credit, before_commit: BeforeCommit | None = None
    ) -> Submission:
        raise NotImplementedError

    def _give_up(self, sub: InLine, exc: RingbridgeError | None) -> None:
        raise NotImplementedError

    def _fail(self, sub: InLine, exc: RingbridgeError) -> None:
        raise NotImplementedError

    async def _wait_for_space(self, sub: InLine, nbytes: int) -> bool:
        raise NotImplementedError

    def claim(
        self, nbytes: int, credit: Credit, owner: RegionOwner, started: float | None = None
    ) -> Region | None:
        """Ring space to receive a batch of ``nbytes`` into, or None: put it in line.

        The region holds ``credit`` until it is published; fill :meth:`view`
        (or :meth:`address`), then :meth:`ready` or :meth:`discard` it.
        ``started``: when the batch arrived (``time.perf_counter()``), for the
        commit latency. Raises what ``admit`` raises once the producer
        stopped or died.
        """
        self._check_running()
        if self._line or self._waiting_for_space or nbytes > self._ring.size:
            return None
        try:
            return self._pub.claim(nbytes, owner, credit, started=started)
        except RingFullError:
            # In line it goes; the task counts the wait (ring_full_waits).
            if self._kicker is not None:
                self._kicker.request()
            return None

    def view(self, region: Region) -> memoryview:
        """The region's bytes in the ring (never touch them once it ended)."""
        return self._pub.view(region)

    def address(self, region: Region) -> int:
        return self._pub.address(region)

    def ready(
        self,
        region: Region,
        count: int,
        payload_bytes: int,
        before_commit: BeforeCommit | None = None,
        publish: bool = True,
        parts: Sequence[Part] | None = None,
    ) -> None:
        """``region`` holds ``count`` validated records: it publishes in its turn
        (``before_commit`` runs right before, see :data:`BeforeCommit`).
        ``publish=False``: not before the caller's :meth:`publish`. ``parts``:
        the records are several batches, in order, each acked to its owner
        (frames read ahead together); the region's owner decides ``wanted``."""
        if before_commit is not None:
            region.before_commit = before_commit
        self._publishing(self._pub.ready, region, count, payload_bytes, publish, parts)

    def discard(self, region: Region, publish: bool = True) -> None:
        """``region`` must never be read: it publishes as DISCARD in its turn."""
        self._publishing(self._pub.discard, region, publish)

    def split(
        self, region: Region, nbytes: int, owner: RegionOwner, credit: Credit, started: float
    ) -> Region:
        """The first ``nbytes`` of ``region``, still receiving, as a region of
        their own for ``owner`` (a frame read ahead into it); ``region`` keeps
        the rest."""
        return self._pub.split(region, nbytes, owner, credit, started)

    def extend(self, region: Region, credit: Credit) -> bool:
        """``credit``'s bytes more ring space for ``region``, still receiving,
        right after it (a frame read ahead that did not fit): False when it is
        not the last claim, batches wait in line, or the ring lacks the room;
        else ``region``'s credit absorbs ``credit``."""
        self._check_running()
        if self._line or self._waiting_for_space or region.credit is None:
            return False
        if not self._pub.extend(region, credit.nbytes):
            return False
        region.credit.absorb(credit)
        return True

    @property
    def regions_in_flight(self) -> int:
        """Regions claimed and not yet published."""
        return len(self._pub)

    def give_back(self, region: Region) -> None:
        """``region``, still receiving, is not needed after all (see ``split``):
        given back now if no claim follows it, else DISCARD in its turn."""
        self._publishing(self._pub.give_back, region)

    def publish(self) -> None:
        """Publish what the calls with ``publish=False`` made ready."""
        self._publishing(self._pub.publish)

    def commit_now(
        self,
        batch: Batch,
        credit: Credit,
        owner: RegionOwner,
        started: float | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> Region | None:
        """``batch`` copied into a region at once (see :meth:`claim`), or None."""
        self._check_batch(batch)
        region = self.claim(batch.nbytes, credit, owner, started)
        if region is not None:
            self._pub.view(region)[:] = batch.records
            self.ready(region, batch.count, batch.payload_bytes, before_commit)
        return region

    def keep_credit(self, region: Region) -> Credit | None:
        """Take ``region``'s credit back from it before it is discarded: its owner
        goes on with the batch in memory (paid by that credit), as an evicted one does."""
        credit, region.credit = region.credit, None
        return credit

    def line_up(
        self, batch: Batch, credit: Credit, before_commit: BeforeCommit | None = None
    ) -> Submission:
        """:meth:`enqueue`, returning the submission (its ``future``, and a handle
        for :meth:`withdraw`); it fails with :class:`RingTimeoutError` at its
        credit's deadline if it is not committed by then."""
        sub = self._enqueue(batch, credit, before_commit)
        if math.isfinite(credit.deadline):
            timer = self._loop.get().call_at(credit.deadline, self._expire, sub)
            sub.future.add_done_callback(lambda _: timer.cancel())
        return sub

    def request_claim(
        self, nbytes: int, credit: Credit, owner: ClaimOwner, started: float | None = None
    ) -> ClaimRequest:
        """Put a batch of ``nbytes``, still unread, in line for ring space (see
        :class:`ClaimRequest`): ``owner.claim_granted(region)`` at its turn, or
        ``owner.claim_failed(exc)`` -- at its credit's deadline, at shutdown.
        Raises (the credit released) when it can never be claimed or the
        producer stopped."""
        try:
            self._check_running()
            if nbytes > self._ring.size:
                raise RecordTooLargeError(
                    f"batch of {nbytes} bytes can never fit a ring of {self._ring.size} bytes"
                )
            loop = self._loop.get()
            req = ClaimRequest(nbytes, credit, owner, started, loop.create_future())
            self._line.append(req)
        except RingbridgeError as exc:
            credit.release()
            self._counts.failed[exc.code] += 1
            raise
        if math.isfinite(credit.deadline):
            timer = loop.call_at(credit.deadline, self._expire, req)
            req.future.add_done_callback(lambda _: timer.cancel())
        return req

    async def _grant(self, req: ClaimRequest) -> None:
        """The task's turn for ``req``: claim its region (waiting for space) and hand it over."""
        if req.future.done():
            return  # given up while in line: counted where it was given up
        if self._loop.get().time() >= req.credit.deadline:
            self._fail(
                req, RingTimeoutError("batch not committed within its timeout: it waited in line")
            )
            return
        pub = self._pub
        try:
            try:
                region = pub.claim(req.nbytes, req.owner, req.credit, started=req.started)
            except RingFullError:
                if not await self._wait_for_space(req, req.nbytes):
                    return  # given up while we waited
                region = pub.claim(req.nbytes, req.owner, req.credit, started=req.started)
        except RingbridgeError as exc:
            self._fail(req, exc)
            return
        req.grant(region)

    def _expire(self, sub: InLine) -> None:
        self._give_up(
            sub,
            RingTimeoutError(
                "batch not committed within its timeout (counted from admission); "
                f"{len(self._line)} batches in line"
            ),
        )

    def withdraw(self, sub: InLine) -> None:
        """Give ``sub`` up (its client left): not committed unless it already was."""
        self._give_up(sub, None)

    def note_abandoned(self) -> None:
        """Count a batch whose client left before its commit (a region it held
        publishes as DISCARD; a body being read is dropped)."""
        self._counts.abandoned += 1

    def _publishing(self, step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except BaseException as exc:
            # A bug where producer_pos moves: stop everything, as a crash of
            # the task would (healthz reports it).
            self._crash(exc)
            raise RingClosedError(f"the producer crashed: {exc!r}") from exc
