"""The single producer task: the only writer of the user ring buffer.

Every batch, from any HTTP request or WebSocket, is admitted first (its
:class:`~ringbridge.producer.admission.Credit`, taken before its bytes were
read, see :mod:`ringbridge.producer.admission`), then appended to one FIFO
(:class:`BatchLine`) that one asyncio task commits strictly in order. One
writer means no locking on the ring, a global sample sequence that is
contiguous across batches in commit order, and FIFO for free.

Per batch the task:

1. skips it if its submitter already gave up (client gone, cancelled, or its
   deadline passed while it waited in line): a client that got no ack must
   not find its batch in the ring -- it would resend it;
2. claims ring space for it and copies it in at once when the ring has room
   (the common case, no await);
3. otherwise waits for space -- edge-triggered, see
   :mod:`ringbridge.ring.waits`, so a full ring costs no CPU -- until the
   batch's deadline or until its submitter gives up, whichever comes first,
   and then fails it (:class:`RingTimeoutError`) having committed nothing;
4. marks the region ready: it publishes in claim order
   (:mod:`ringbridge.producer.regions`, which assigns ``first_seq..last_seq``
   then, resolves the submitter's future and returns the batch's credit) --
   at once, or behind regions the data plane claimed earlier and still
   fills (:mod:`ringbridge.producer.writes`).

The deadline is the credit's: set once, at admission, before the body was
read. Reading the body, waiting behind other batches and waiting for ring
space all count against the client's ``timeout``.

After every commit (and before waiting for space) the producer tells its
drain trigger (:mod:`ringbridge.producer.kick`): in ``kick`` mode that runs
the on-demand drain program on a native thread, in ``timer`` mode it re-arms
a timer that backed off while the ring was empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import (
    ClientGoneError,
    InvalidBatchError,
    RecordTooLargeError,
    RingbridgeError,
    RingClosedError,
    RingFullError,
    RingTimeoutError,
    StoppingError,
)
from ..ring import UserRingBuffer
from ..wire import Ack, WaitFor
from .admission import Admission, BatchLine, Credit
from .consumed import wait_consumed
from .contract import Batch, BeforeCommit, ProducerStatistics, SeqStore
from .keys import KeyTable
from .kick import DrainTrigger
from .loopref import LoopRef
from .regions import CommitCounts, Publisher
from .submission import InLine, Submission
from .writes import InPlaceWrites

#: Idempotency keys remembered when the caller gives no table (``Settings.idempotency_keys``).
DEFAULT_KEYS = 16384

log = logging.getLogger("ringbridge.producer")


class Producer(InPlaceWrites):
    """Owns the writing side of ``ring``: admission, line, task, seqs, acks, shutdown;
    and the calls that write in place (:class:`~ringbridge.producer.writes.InPlaceWrites`)."""

    def __init__(
        self,
        ring: UserRingBuffer,
        *,
        admission_bytes: int,
        kick: DrainTrigger | None = None,
        on_commit: Callable[[float, Ack], None] | None = None,
        seq_store: SeqStore | None = None,
        keys: KeyTable | None = None,
    ) -> None:
        self._ring = ring
        self._loop = LoopRef()  # shared by the gate, the line and the publisher (loopref.py)
        self._admission = Admission(admission_bytes, self._loop)
        self._line: BatchLine[InLine] = BatchLine(self._loop)
        self._kicker = kick
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._crashed: BaseException | None = None
        self._stopped = asyncio.Event()
        self._counts = CommitCounts()
        # Every batch lands through a region it publishes, in claim order.
        self._pub = Publisher(
            ring, self._counts, seq_store=seq_store, kick=kick, on_commit=on_commit, loop=self._loop
        )
        #: Idempotency keys of the batches committed and in flight (keys.py): a
        #: keyed batch's ``before_commit`` records it with the seq it publishes at.
        self.keys = keys if keys is not None else KeyTable(DEFAULT_KEYS)
        self.keys.bind(lambda: self._pub.hook_seq)
        self._full_waits = 0
        # The task waits for ring space: batches arriving now queue behind it.
        self._waiting_for_space = False

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("producer already started")
        self._task = asyncio.create_task(self._run(), name="ringbridge-producer")

    @property
    def alive(self) -> bool:
        """Running and taking batches (False while stopping and after a crash)."""
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def crashed(self) -> BaseException | None:
        """Why the producer task died, if it did (``/healthz`` fails then)."""
        return self._crashed

    @property
    def ring(self) -> UserRingBuffer:
        return self._ring

    @property
    def admission(self) -> Admission:
        return self._admission

    async def stop(self, grace: float) -> None:
        """Stop admitting, let batches in line commit for ``grace`` s, fail the rest.

        Idempotent. Does not close the ring: the owner frees it after this
        returns, when nothing can touch it any more.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._admission.close()  # new batches get StoppingError at admission
        self._line.close()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                pass  # a crash: logged by the task, remembered in self._crashed
        stopped = StoppingError("the service stopped before this batch was committed")
        left = self._fail_line(stopped)
        left += self._pub.fail_receiving(stopped)
        self._pub.close()
        if left:
            log.warning("batches failed at shutdown", extra={"batches": left})
        if self._kicker is not None:
            await self._kicker.aclose()
        self._stopped.set()

    # -- submitting --------------------------------------------------------------

    def admit(self, nbytes: int, timeout: float) -> Credit:
        """Admission credit for ``nbytes`` with a deadline ``timeout`` s from now.

        Take it *before* reading the bytes it pays for. Raises at once:
        :class:`OverloadedError` (budget spent), :class:`StoppingError`,
        :class:`RingClosedError` (the producer task died).
        """
        self._check_running()
        return self._admission.admit(nbytes, timeout)

    def _check_running(self) -> None:
        fault = self._ring.fault
        if fault is not None:
            raise fault  # another writer touched the ring: nothing commits any more
        if self._crashed is not None:
            raise RingClosedError(f"the producer task crashed: {self._crashed!r}")
        if self._stopping:
            raise StoppingError("the service is stopping and takes no new batches")

    def enqueue(self, batch: Batch, credit: Credit) -> asyncio.Future[Ack]:
        """Put ``batch`` in line, paid by ``credit`` (sized to ``batch.nbytes`` by now).

        Never waits. The producer owns the credit from here and returns it
        when the batch leaves the line. Returns the future of its :class:`Ack`;
        the producer fails it with :class:`RingTimeoutError` once the credit's
        deadline passes uncommitted. Enqueue order is commit order.
        """
        return self._enqueue(batch, credit).future

    def _enqueue(
        self, batch: Batch, credit: Credit, before_commit: BeforeCommit | None = None
    ) -> Submission:
        try:
            self._check_running()
            self._check_batch(batch)
            future = self._loop.get().create_future()
            sub = Submission(batch, credit, time.perf_counter(), future, before_commit)
            self._line.append(sub)
        except RingbridgeError as exc:
            credit.release()
            self._counts.failed[exc.code] += 1
            raise
        return sub

    def _check_batch(self, batch: Batch) -> None:
        if batch.count <= 0:
            raise InvalidBatchError("empty batch: at least one sample is required")
        if batch.nbytes > self._ring.size:
            raise RecordTooLargeError(
                f"batch of {batch.nbytes} bytes can never fit a ring of {self._ring.size} bytes"
            )

    async def submit(
        self,
        batch: Batch,
        credit: Credit,
        *,
        wait: WaitFor = "committed",
        gone: asyncio.Future[Any] | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> Ack:
        """Enqueue ``batch`` and wait for its ack, until the credit's deadline.

        If ``gone`` completes first (the client went away), or this call is
        cancelled, the batch is given up: not committed unless it already was.
        With ``wait="consumed"`` the ack says ``"consumed"`` if the kernel
        consumed the batch before the deadline, else ``"committed"``.
        ``before_commit(end_pos)`` runs in the producer task right before the
        batch is published (see :data:`BeforeCommit`); if it raises a
        RingbridgeError the batch fails with it, uncommitted.
        """
        loop = self._loop.get()
        sub = self._enqueue(batch, credit, before_commit)
        fut = sub.future
        sub_timeout = credit.remaining(loop.time())
        try:
            if not fut.done():
                waiters: set[asyncio.Future[Any]] = {fut} if gone is None else {fut, gone}
                await asyncio.wait(
                    waiters, timeout=sub_timeout, return_when=asyncio.FIRST_COMPLETED
                )
        except BaseException:
            self._give_up(sub, None)
            raise
        if not fut.done():
            if gone is not None and gone.done():
                self._give_up(sub, None)
                raise ClientGoneError("the client went away before the batch was committed")
            self._give_up(
                sub,
                RingTimeoutError(
                    "batch not committed within its timeout (counted from admission); "
                    f"{len(self._line)} batches in line"
                ),
            )
        ack = fut.result()
        if wait == "consumed":
            ack = await wait_consumed(
                self._ring, ack, credit.remaining(loop.time()), self._stopped, gone
            )
        return ack

    def _give_up(self, sub: InLine, exc: RingbridgeError | None) -> None:
        if sub.give_up(exc):
            if exc is None:
                self._counts.abandoned += 1
            else:
                self._counts.failed[exc.code] += 1

    async def wait_consumed(self, ack: Ack, timeout: float) -> Ack:
        """``ack`` as ``"consumed"`` once the kernel's consumer passed it, within
        ``timeout`` seconds; else ``ack`` as it is (``"committed"``)."""
        return await wait_consumed(self._ring, ack, timeout, self._stopped, None)

    # -- the task -------------------------------------------------------------------

    def _fail_line(self, exc: RingbridgeError) -> int:
        left = 0
        while (rest := self._line.get_nowait()) is not None:
            if rest.give_up(exc):
                left += 1
                self._counts.failed[exc.code] += 1
        return left

    async def _run(self) -> None:
        try:
            while True:
                try:
                    sub = await self._line.get()
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
            # them all and refuse new batches; /healthz reports the dead task.
            log.exception("producer task crashed")
            self._crashed = self._crashed or exc
            self._admission.close()
            self._line.close()
            self._fail_line(RingClosedError(f"the producer task crashed: {exc!r}"))
            raise

    def _crash(self, exc: BaseException) -> None:
        """A bug where producer_pos moves, outside the task: as if the task died."""
        if self._crashed is None:
            log.error("producer crashed", exc_info=exc)
            self._crashed = exc
        self._admission.close()
        self._line.close()
        self._fail_line(RingClosedError(f"the producer task crashed: {exc!r}"))
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _commit(self, sub: InLine) -> None:
        if not isinstance(sub, Submission):
            await self._grant(sub)  # a batch still unread: its region, to receive into
            return
        loop = self._loop.get()
        b = sub.batch
        if b is None or sub.future.done():
            return  # given up while in line: counted where it was given up
        if loop.time() >= sub.credit.deadline:
            self._fail(
                sub, RingTimeoutError("batch not committed within its timeout: it waited in line")
            )
            return
        pub = self._pub
        try:
            try:
                region = pub.claim(b.nbytes, sub, sub.credit, sub.before_commit, sub.enqueued_at)
            except RingFullError:
                if not await self._wait_for_space(sub, b.nbytes):
                    return  # given up while we waited: nothing of it was written
                region = pub.claim(b.nbytes, sub, sub.credit, sub.before_commit, sub.enqueued_at)
        except RingbridgeError as exc:
            self._fail(sub, exc)
            return
        pub.view(region)[:] = b.records
        # Published now, or once the regions claimed before it are (the
        # submitter's future resolves then).
        pub.ready(region, b.count, b.payload_bytes)

    async def _wait_for_space(self, sub: InLine, nbytes: int) -> bool:
        """Until ``nbytes`` are free (True) or ``sub`` was given up (False);
        RingTimeoutError / RingClosedError as the ring's wait raises them."""
        loop = self._loop.get()
        self._full_waits += 1
        if self._kicker is not None:
            self._kicker.request()
        self._waiting_for_space = True
        space = asyncio.ensure_future(
            self._ring.wait_for_space_async(nbytes, sub.credit.remaining(loop.time()))
        )
        try:
            # Ends early when the submitter gives up (client gone, deadline).
            both: set[asyncio.Future[Any]] = {space, sub.future}
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting_for_space = False
            if not space.done():
                space.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await space
        if sub.future.done():
            return False
        try:
            space.result()  # RingClosedError, ForeignWriterError...
        except TimeoutError as exc:
            raise RingTimeoutError(
                f"batch not committed within its timeout: the ring stayed full ({exc})"
            ) from exc
        return True

    def _fail(self, sub: InLine, exc: RingbridgeError) -> None:
        if sub.give_up(exc):
            self._counts.failed[exc.code] += 1

    # -- introspection -----------------------------------------------------------

    def statistics(self) -> ProducerStatistics:
        c = self._counts
        return ProducerStatistics(
            running=self.alive,
            stopping=self._stopping,
            next_seq=self._pub.next_seq,
            batches_committed=c.batches,
            samples_committed=c.samples,
            bytes_committed=c.bytes,
            ring_bytes_committed=c.ring_bytes,
            ring_full_waits=self._full_waits,
            batches_abandoned=c.abandoned,
            batches_failed=dict(c.failed),
            queued_batches=len(self._line),
            regions_pending=len(self._pub),
            discarded_bytes=c.discarded_bytes,
            admission=self._admission.statistics(),
            crashed=self._crashed is not None,
            kick=self._kicker.statistics() if self._kicker is not None else None,
        )
