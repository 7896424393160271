"""The single producer task: the only writer of the user ring buffer.

Every accepted batch, from any HTTP request or WebSocket, goes through one
:class:`BatchQueue` to one asyncio task, which commits batches strictly in
queue order. One writer means no locking on the ring, a global sample
sequence that is contiguous across batches in commit order, and FIFO for free.

Per batch the task:

1. skips it if its submitter already gave up (cancelled future): a client
   that got no answer must not find its batch half-way through the system;
2. commits it at once when the ring has room (the common case, no await);
3. otherwise waits for space -- edge-triggered, see
   :mod:`ringbridge.kernel.waiter`, so a full ring costs no CPU -- until the
   batch's own deadline, then fails it with :class:`RingTimeoutError` having
   committed nothing, and moves on to the next batch;
4. assigns ``first_seq..last_seq`` and resolves the submitter's future.

The deadline is set once, when the batch is submitted: time spent waiting for
queue space, behind other batches and for ring space all counts against the
client's ``timeout``.

After every commit (and before waiting for space) the producer tells its
drain trigger (:mod:`ringbridge.producer.kick`): in ``kick`` mode that runs
the on-demand drain program on a native thread, in ``timer`` mode it re-arms
a timer that backed off while the ring was empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from ..errors import (
    ConsumeTimeoutError,
    InvalidBatchError,
    RecordTooLargeError,
    RingbridgeError,
    RingClosedError,
    RingFullError,
    RingTimeoutError,
    StoppingError,
)
from ..kernel.ringbuf import UserRingBuffer
from .kick import DrainTrigger, KickStatistics
from .queue import BatchQueue, QueueStatistics

log = logging.getLogger("ringbridge.producer")

WaitFor = Literal["committed", "consumed"]


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


class SeqStore(Protocol):
    """Where the next sample seq survives a restart (the pinned ctl map)."""

    def load_seq(self) -> int: ...
    def store_seq(self, next_seq: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Ack:
    """A committed batch: samples ``first_seq..last_seq``, ring bytes ``[start, end)``."""

    first_seq: int
    last_seq: int
    count: int
    ring_start_pos: int
    ring_end_pos: int
    state: WaitFor = "committed"


@dataclass(eq=False, slots=True)
class _Submission:
    batch: Batch
    deadline: float
    enqueued_at: float
    future: asyncio.Future[Ack]

    @property
    def nbytes(self) -> int:
        return self.batch.nbytes


@dataclass(frozen=True, slots=True)
class ProducerStatistics:
    running: bool
    stopping: bool
    next_seq: int
    batches_committed: int
    samples_committed: int
    bytes_committed: int  # payload bytes, comparable to the kernel's byte counter
    ring_bytes_committed: int  # with headers and padding
    ring_full_waits: int
    batches_abandoned: int
    batches_failed: dict[str, int]  # by error code
    queue: QueueStatistics
    kick: KickStatistics | None = None


class Producer:
    """Owns the writing side of ``ring``: queue, task, seqs, acks, shutdown."""

    def __init__(
        self,
        ring: UserRingBuffer,
        *,
        queue_max_bytes: int,
        kick: DrainTrigger | None = None,
        on_commit: Callable[[float, Ack], None] | None = None,
        seq_store: SeqStore | None = None,
    ) -> None:
        self._ring = ring
        self._queue: BatchQueue[_Submission] = BatchQueue(queue_max_bytes)
        self._kicker = kick
        self._on_commit = on_commit
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._seq_store = seq_store
        self._next_seq = seq_store.load_seq() if seq_store is not None else 0
        self._batches = 0
        self._samples = 0
        self._bytes = 0
        self._ring_bytes = 0
        self._full_waits = 0
        self._abandoned = 0
        self._failed: Counter[str] = Counter()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("producer already started")
        self._task = asyncio.create_task(self._run(), name="ringbridge-producer")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def ring(self) -> UserRingBuffer:
        return self._ring

    async def stop(self, grace: float) -> None:
        """Stop taking batches, let queued ones commit for ``grace`` s, fail the rest.

        Idempotent. Does not close the ring: the owner frees it after this
        returns, when nothing can touch it any more.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._queue.close()  # new and waiting submitters get StoppingError
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        left = 0
        while (rest := self._queue.get_nowait()) is not None:
            left += 1
            self._fail(rest, StoppingError("the service stopped before this batch was committed"))
        if left:
            log.warning("batches failed at shutdown", extra={"batches": left})
        if self._kicker is not None:
            await self._kicker.aclose()
        self._stopped.set()

    # -- submitting --------------------------------------------------------------

    async def enqueue(self, batch: Batch, *, timeout: float) -> asyncio.Future[Ack]:
        """Queue ``batch`` (waiting up to ``timeout`` s for queue space).

        Returns the future of its :class:`Ack`; the same ``timeout``, counted
        from now, bounds the wait for ring space. Enqueue order is commit order.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        sub = _Submission(batch, now + timeout, now, loop.create_future())
        try:
            self._check_batch(batch)
            await self._queue.put(sub, timeout)
        except RingbridgeError as exc:
            self._failed[exc.code] += 1
            raise
        return sub.future

    def _check_batch(self, batch: Batch) -> None:
        if self._stopping:
            raise StoppingError("the service is stopping and takes no new batches")
        if batch.count <= 0:
            raise InvalidBatchError("empty batch: at least one sample is required")
        if batch.nbytes > self._ring.size:
            raise RecordTooLargeError(
                f"batch of {batch.nbytes} bytes can never fit a ring of {self._ring.size} bytes"
            )

    async def submit(self, batch: Batch, *, wait: WaitFor = "committed", timeout: float) -> Ack:
        """Queue ``batch`` and wait for its ack (and, if asked, for the kernel to consume it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        fut = await self.enqueue(batch, timeout=timeout)
        ack = await fut
        if wait == "consumed":
            await self._wait_consumed(ack, max(0.0, deadline - loop.time()), timeout)
            ack = replace(ack, state="consumed")
        return ack

    async def _wait_consumed(self, ack: Ack, left: float, timeout: float) -> None:
        # Also ends when the producer has stopped (after its grace): the
        # server is going away and must answer rather than be cancelled.
        consumed = asyncio.ensure_future(self._ring.wait_consumed(ack.ring_end_pos, left))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({consumed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (consumed, stopped):
                f.cancel()
        what = f"batch committed as samples {ack.first_seq}..{ack.last_seq} but not consumed"
        if not consumed.done() or consumed.cancelled():
            raise ConsumeTimeoutError(f"{what} before the service stopped", ack)
        try:
            consumed.result()
        except RingTimeoutError as exc:
            raise ConsumeTimeoutError(f"{what} by the kernel within {timeout:g}s", ack) from exc

    # -- the task -------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                try:
                    sub = await self._queue.get()
                except StoppingError:
                    return  # closed and empty: a clean stop
                try:
                    await self._commit(sub)
                except asyncio.CancelledError:
                    self._fail(
                        sub,
                        StoppingError("the service stopped while this batch waited for ring space"),
                    )
                    raise
                except BaseException as exc:
                    self._fail(sub, RingClosedError(f"the producer task crashed: {exc!r}"))
                    raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # A bug here would leave every submitter waiting forever: fail
            # them all and refuse new batches; readyz reports the dead task.
            log.exception("producer task crashed")
            self._stopping = True
            self._queue.close()
            err = RingClosedError(f"the producer task crashed: {exc!r}")
            while (rest := self._queue.get_nowait()) is not None:
                self._fail(rest, err)
            raise

    def _store_seq(self, count: int) -> None:
        # Stored *before* the commit: a crash in between leaves a gap in the
        # seqs, never a seq given to two samples.
        if self._seq_store is not None:
            self._seq_store.store_seq(self._next_seq + count)

    async def _commit(self, sub: _Submission) -> None:
        if sub.future.done():
            self._abandoned += 1
            return
        loop = asyncio.get_running_loop()
        b = sub.batch
        try:
            try:
                self._store_seq(b.count)
                commit = self._ring.commit_batch_nowait(b.records, b.count)
            except RingFullError:
                self._full_waits += 1
                if self._kicker is not None:
                    self._kicker.request()
                await self._ring.wait_for_space(b.nbytes, max(0.0, sub.deadline - loop.time()))
                if sub.future.done():
                    # Gave up while we waited: nothing of it was written.
                    self._abandoned += 1
                    return
                self._store_seq(b.count)
                commit = self._ring.commit_batch_nowait(b.records, b.count)
        except RingbridgeError as exc:
            self._fail(sub, exc)
            return
        first = self._next_seq
        self._next_seq += b.count
        ack = Ack(first, first + b.count - 1, b.count, commit.start, commit.end)
        self._batches += 1
        self._samples += b.count
        self._bytes += b.payload_bytes
        self._ring_bytes += b.nbytes
        if self._kicker is not None:
            self._kicker.request()
        sub.future.set_result(ack)
        if self._on_commit is not None:
            try:
                self._on_commit(loop.time() - sub.enqueued_at, ack)
            except Exception:
                log.exception("commit observer failed")

    def _fail(self, sub: _Submission, exc: RingbridgeError) -> None:
        self._failed[exc.code] += 1
        if not sub.future.done():
            sub.future.set_exception(exc)

    # -- introspection -----------------------------------------------------------

    def statistics(self) -> ProducerStatistics:
        return ProducerStatistics(
            running=self.alive,
            stopping=self._stopping,
            next_seq=self._next_seq,
            batches_committed=self._batches,
            samples_committed=self._samples,
            bytes_committed=self._bytes,
            ring_bytes_committed=self._ring_bytes,
            ring_full_waits=self._full_waits,
            batches_abandoned=self._abandoned,
            batches_failed=dict(self._failed),
            queue=self._queue.statistics(),
            kick=self._kicker.statistics() if self._kicker is not None else None,
        )
