"""The producer side of a BPF user ring buffer, over our own mmap of the map fd.

Layout (kernel/bpf/ringbuf.c, ``ringbuf_map_mmap_user``), page size P, data
size S: offset 0, one read-only page whose first u64 is ``consumer_pos``;
offset P, P + 2*S read-write bytes: ``producer_pos`` then the data area mapped
twice in a row, so a record that wraps past the end stays contiguous.

Ordering points, each paired with its kernel counterpart:

- header and payload writes, then ``producer_pos`` published with a release
  store -> ``smp_load_acquire(&rb->producer_pos)`` in ``__bpf_user_ringbuf_peek``;
- ``submit``/``discard`` rewrite the header with a release store ->
  ``smp_load_acquire(hdr)`` in ``__bpf_user_ringbuf_peek``;
- ``consumer_pos`` read with an acquire load -> ``smp_store_release(
  &rb->consumer_pos)`` in ``__bpf_user_ringbuf_sample_release``.

All of them go through :mod:`ringbridge.kernel.native` (see there for x86-64 and
arm64). ``consumer_pos`` is cached and re-read only when the cached view says
the ring lacks room: re-reading it per record fights the consumer for its
cache line.

This object owns the ring as its only producer. It is not thread-safe: the
service drives it from one asyncio task.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..closing import Closing
from ..core import ring as core
from ..errors import (
    InvalidBatchError,
    RecordTooLargeError,
    RingClosedError,
    RingFullError,
    RingTimeoutError,
)
from .mapping import PAGE_SIZE, Mapping
from .native import ops
from .waiter import EpollWaiter

_HDR = struct.Struct("<II")

#: While waiting, re-check space at least this often even without a wake-up:
#: covers consumers that never ask for one (an external drainer passing
#: BPF_RB_NO_WAKEUP). Not a spin: a few checks per second.
DEFAULT_RECHECK_INTERVAL = 0.05


@dataclass(eq=False)
class Reservation:
    """Space for one record, reserved and published BUSY; fill ``view``, then submit."""

    pos: int
    length: int
    view: memoryview
    done: bool = False


@dataclass(frozen=True, slots=True)
class Commit:
    """Where a batch went: ring positions ``[start, end)``, ``count`` records."""

    start: int
    end: int
    count: int


@dataclass(frozen=True, slots=True)
class RingStatistics:
    size: int
    producer_pos: int
    consumer_pos: int
    free_bytes: int
    outstanding_reservations: int
    claimed_bytes: int  # claimed, written in place, not yet published
    full_waits: int
    wakeups: int
    recovered_busy: int


class WaitingFlag:
    """``ringbridge_ctl.producer_waiting`` in the mmapped ctl array map.

    Counted: the flag is set while at least one coroutine waits (for space or
    for consumption) and cleared when the last one stops.
    """

    def __init__(self, ctl_fd: int, offset: int = 0) -> None:
        self._map = Mapping(ctl_fd, PAGE_SIZE, 0, writable=True, what="ringbridge_ctl")
        self._addr = self._map.addr + offset
        self._count = 0

    def acquire(self) -> None:
        self._count += 1
        if self._count == 1:
            # seq_cst exchange: the flag is visible before our next load of
            # consumer_pos (store-load order; pairs with the consumer's
            # fetching atomic on the flag after its drain).
            ops().xchg_u32(self._addr, 1)

    def release(self) -> None:
        self._count -= 1
        if self._count == 0:
            ops().xchg_u32(self._addr, 0)

    def clear_all(self) -> None:
        self._count = 0
        ops().xchg_u32(self._addr, 0)

    def close(self) -> None:
        self._map.close()


class UserRingBuffer(Closing):
    """Single producer over one ``BPF_MAP_TYPE_USER_RINGBUF``; idempotent close."""

    def __init__(
        self,
        map_fd: int,
        size: int,
        *,
        ctl_fd: int | None = None,
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
        recover: bool = True,
    ) -> None:
        core.check_ring_size(size, PAGE_SIZE)
        self.size = size
        self._mask = size - 1
        self.recheck_interval = recheck_interval
        self._closed = False
        self._fd = os.dup(map_fd)
        self._cons_map: Mapping | None = None
        self._prod_map: Mapping | None = None
        self._waiter: EpollWaiter | None = None
        self._flag: WaitingFlag | None = None
        try:
            self._cons_map = Mapping(
                self._fd, PAGE_SIZE, 0, writable=False, what="user ring buffer consumer page"
            )
            self._prod_map = Mapping(
                self._fd,
                PAGE_SIZE + 2 * size,
                PAGE_SIZE,
                writable=True,
                what="user ring buffer producer page and data",
            )
            self._waiter = EpollWaiter(self._fd)
            if ctl_fd is not None:
                self._flag = WaitingFlag(ctl_fd)
        except BaseException:
            self._release()
            raise
        self._cons_addr = self._cons_map.addr
        self._prod_addr = self._prod_map.addr
        self._data_addr = self._prod_map.addr + PAGE_SIZE
        self._data = self._prod_map.view[PAGE_SIZE:]
        self._ops = ops()
        # The kernel never writes producer_pos: our copy is the truth.
        self._prod = self._ops.load_acquire_u64(self._prod_addr)
        # End of the space claimed (see claim_nowait): == _prod with no claims.
        self._claimed = self._prod
        self._cons = self._ops.load_acquire_u64(self._cons_addr)
        self._outstanding: dict[int, Reservation] = {}
        self.full_waits = 0
        self.recovered_busy = 0
        if recover:
            self.recovered_busy = self.recover()

    # -- positions ---------------------------------------------------------

    @property
    def producer_pos(self) -> int:
        return self._prod

    def consumer_pos(self) -> int:
        """Fresh ``consumer_pos`` (acquire load); also refreshes the cache."""
        self._check_open()
        self._cons = self._ops.load_acquire_u64(self._cons_addr)
        return self._cons

    def position_addresses(self) -> tuple[int, int]:
        """Addresses of ``producer_pos`` and ``consumer_pos`` in this mapping, for a
        native reader (the drain worker); valid until :meth:`close`."""
        self._check_open()
        return self._prod_addr, self._cons_addr

    def free_bytes(self) -> int:
        return core.free_space(self.size, self._prod, self.consumer_pos())

    def _has_room(self, need: int) -> bool:
        # Claimed space counts as used: it is written, just not published yet.
        if core.free_space(self.size, self._claimed, self._cons) >= need:
            return True
        return core.free_space(self.size, self._claimed, self.consumer_pos()) >= need

    def _require_room(self, need: int, what: str) -> None:
        if not self._has_room(need):
            free = core.free_space(self.size, self._claimed, self._cons)
            raise RingFullError(f"user ring buffer has {free} bytes free, {what} needs {need}")

    def _check_open(self) -> None:
        if self._closed:
            raise RingClosedError("user ring buffer is closed")

    # -- recovery ----------------------------------------------------------

    def recover(self) -> int:
        """Mark BUSY records left by a dead producer DISCARD; returns how many.

        Only safe while no other producer writes this ring -- we are its only
        producer by construction (one service per pin dir).
        """
        self._check_open()
        cons = self.consumer_pos()
        plan = core.plan_recovery(
            lambda pos: self._ops.load_acquire_u32(self._data_addr + (pos & self._mask)),
            self.size,
            cons,
            self._prod,
        )
        for pos in plan.busy_offsets:
            addr = self._data_addr + (pos & self._mask)
            word = self._ops.load_acquire_u32(addr)
            # BUSY|DISCARD is skipped by the kernel (DISCARD is tested first).
            self._ops.store_release_u32(addr, word | core.DISCARD_BIT)
        return len(plan.busy_offsets)

    # -- claims: space written in place, published later, in order ---------

    @property
    def claimed_pos(self) -> int:
        """End of the space claimed so far (``producer_pos`` when nothing is)."""
        return self._claimed

    def claim_nowait(self, nbytes: int) -> int:
        """Claim ``nbytes`` (a positive multiple of 8) after every earlier claim; its position.

        Nothing is published: the kernel does not see the space until
        :meth:`publish` passes it, so whatever is written there meanwhile --
        a body arriving from a socket, a frame being unmasked -- is invisible
        until it has been validated, and a claim never published costs
        nothing after a crash (the next producer starts at ``producer_pos``).
        Claims are published in claim order; one that must never be read is
        covered with DISCARD records first (:meth:`discard_region`).
        Raises :class:`RingFullError` when the ring lacks the room now.
        """
        self._check_open()
        if nbytes <= 0 or nbytes % 8 or nbytes > self.size:
            raise InvalidBatchError(
                f"a claim is a positive multiple of 8 bytes up to the ring's {self.size}, "
                f"not {nbytes}"
            )
        self._require_room(nbytes, "claim")
        pos = self._claimed
        self._claimed = pos + nbytes
        return pos

    def region(self, pos: int, nbytes: int) -> memoryview:
        """The ``nbytes`` of ring space at ``pos`` (contiguous: the data area is
        mapped twice); valid until :meth:`close`."""
        off = pos & self._mask
        return self._data[off : off + nbytes]

    def address(self, pos: int) -> int:
        """The address of ring position ``pos`` in this mapping (for native code)."""
        self._check_open()
        return self._data_addr + (pos & self._mask)

    def discard_region(self, pos: int, nbytes: int) -> None:
        """Cover the claimed ``[pos, pos + nbytes)`` with DISCARD records (the kernel
        skips them); plain stores, ordered by the release of :meth:`publish`."""
        self._check_open()
        if not (self._prod <= pos and pos + nbytes <= self._claimed):
            raise InvalidBatchError(f"[{pos}, {pos + nbytes}) is not claimed, unpublished space")
        for off, word in core.discard_headers(nbytes):
            at = (pos + off) & self._mask
            _HDR.pack_into(self._data, at, word, 0)

    def unclaim(self, pos: int) -> None:
        """Give back every claim from ``pos`` on (none of it was published): the
        space is claimed again next, as if those claims never were."""
        self._check_open()
        if not self._prod <= pos <= self._claimed or pos % 8:
            raise InvalidBatchError(
                f"cannot unclaim from {pos}: producer_pos is {self._prod}, "
                f"claimed up to {self._claimed}"
            )
        self._claimed = pos

    def publish(self, end: int) -> None:
        """Publish every claim up to ``end`` with one release store of ``producer_pos``.

        ``end`` is a claim boundary the caller tracks; everything in
        ``[producer_pos, end)`` must be whole records by now (validated data
        or DISCARD records).
        """
        self._check_open()
        if not self._prod < end <= self._claimed or end % 8:
            raise InvalidBatchError(
                f"cannot publish up to {end}: producer_pos is {self._prod}, "
                f"claimed up to {self._claimed}"
            )
        self._prod = end
        # Release: every header and payload byte of the claims is visible to
        # the kernel before it sees the new producer_pos.
        self._ops.store_release_u64(self._prod_addr, end)

    def _no_claims(self, what: str) -> None:
        if self._claimed != self._prod:
            raise InvalidBatchError(
                f"{what} while {self._claimed - self._prod} claimed bytes are unpublished: "
                "publish them first (records land after every claim)"
            )

    # -- one record --------------------------------------------------------

    def reserve_nowait(self, length: int) -> Reservation:
        """Reserve one record of ``length`` bytes or raise :class:`RingFullError`.

        The record is published BUSY at once (the kernel stops at it), like
        libbpf's ``user_ring_buffer__reserve``; records reserved later queue
        behind it until it is submitted or discarded.
        """
        self._check_open()
        self._no_claims("a reservation")
        core.check_payload_len(length, self.size)
        need = core.record_size(length)
        self._require_room(need, "record")
        pos = self._prod
        off = pos & self._mask
        self._data[off + 4 : off + 8] = b"\0\0\0\0"
        self._ops.store_release_u32(self._data_addr + off, length | core.BUSY_BIT)
        self._prod = self._claimed = pos + need
        self._ops.store_release_u64(self._prod_addr, self._prod)
        r = Reservation(pos, length, self._data[off + 8 : off + 8 + length])
        self._outstanding[pos] = r
        return r

    def _finish(self, r: Reservation, word: int) -> None:
        self._check_open()
        if r.done:
            raise InvalidBatchError(f"reservation at position {r.pos} was already finished")
        r.done = True
        r.view.release()
        del self._outstanding[r.pos]
        # Release: the payload is visible before the kernel sees BUSY cleared.
        self._ops.store_release_u32(self._data_addr + (r.pos & self._mask), word)

    def submit(self, r: Reservation) -> None:
        self._finish(r, r.length)

    def discard(self, r: Reservation) -> None:
        self._finish(r, r.length | core.DISCARD_BIT)

    # -- batches -----------------------------------------------------------

    def _check_batch_len(self, n: int) -> None:
        if n > self.size:
            raise RecordTooLargeError(
                f"batch of {n} bytes can never fit a ring of {self.size} bytes"
            )
        if n % 8:
            raise InvalidBatchError(f"batch length {n} is not a multiple of 8")

    def commit_batch_nowait(
        self,
        records: bytes | bytearray | memoryview,
        count: int,
        before_publish: Callable[[int], None] | None = None,
    ) -> Commit:
        """Copy a validated batch of ``count`` records in and publish it once.

        ``records`` must have passed :func:`core.validate_batch` (or come from
        :func:`core.encode_batch`); all or nothing: on RingFullError nothing
        was written.

        ``before_publish(end_pos)`` runs once every check has passed, before
        anything is written: from there on the commit cannot fail, so a record
        it keeps of ``end_pos`` (the ``producer_pos`` this commit publishes)
        never announces a commit that did not happen in this process. If it
        raises, nothing is written.
        """
        self._check_open()
        self._no_claims("a batch commit")
        n = len(records)
        self._check_batch_len(n)
        self._require_room(n, "batch")
        start = self._prod
        if before_publish is not None:
            before_publish(start + n)
        off = start & self._mask
        # The data area is mapped twice in a row: [off, off+n) is contiguous
        # even when it wraps past the ring's end.
        self._data[off : off + n] = records
        self._prod = self._claimed = start + n
        self._ops.store_release_u64(self._prod_addr, self._prod)
        return Commit(start, self._prod, count)

    def commit_samples_nowait(self, payloads: list[bytes]) -> Commit:
        for i, p in enumerate(payloads):
            core.check_payload_len(len(p), self.size, i)
        return self.commit_batch_nowait(core.encode_batch(payloads), len(payloads))

    # -- waiting -----------------------------------------------------------

    async def _wait_until(
        self, ready: Callable[[], bool], timeout: float | None, what: str
    ) -> None:
        if ready():
            return
        waiter = self._waiter
        assert waiter is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._flag is not None:
            self._flag.acquire()
        try:
            while True:
                token = waiter.arm()
                if ready():
                    return
                remaining = self.recheck_interval
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise RingTimeoutError(
                            f"{what}: still not possible after {timeout:g}s "
                            f"({self.free_bytes()} bytes free of {self.size})"
                        )
                    remaining = min(remaining, left)
                await waiter.wait(token, remaining)
                self._check_open()
        finally:
            if self._flag is not None and not self._closed:
                self._flag.release()

    async def wait_for_space(self, nbytes: int, timeout: float | None = None) -> None:
        """Until ``nbytes`` are free; edge-triggered, never spins."""
        self._check_open()
        if nbytes > self.size:
            core.check_payload_len(nbytes - core.HDR_SIZE, self.size)
        if self._has_room(nbytes):
            return
        self.full_waits += 1
        await self._wait_until(
            lambda: self._has_room(nbytes), timeout, f"waiting for {nbytes} free bytes"
        )

    async def wait_consumed(self, pos: int, timeout: float | None = None) -> None:
        """Until the kernel's ``consumer_pos`` has reached ``pos``."""
        self._check_open()
        await self._wait_until(
            lambda: self.consumer_pos() >= pos, timeout, f"waiting for consumer_pos {pos}"
        )

    async def reserve(self, length: int, timeout: float | None = None) -> Reservation:
        core.check_payload_len(length, self.size)
        await self.wait_for_space(core.record_size(length), timeout)
        return self.reserve_nowait(length)

    async def commit_batch(
        self, records: bytes | bytearray | memoryview, count: int, timeout: float | None = None
    ) -> Commit:
        self._check_batch_len(len(records))
        await self.wait_for_space(len(records), timeout)
        return self.commit_batch_nowait(records, count)

    # -- introspection and close --------------------------------------------

    def statistics(self) -> RingStatistics:
        cons = self.consumer_pos()
        return RingStatistics(
            size=self.size,
            producer_pos=self._prod,
            consumer_pos=cons,
            free_bytes=core.free_space(self.size, self._prod, cons),
            outstanding_reservations=len(self._outstanding),
            claimed_bytes=self._claimed - self._prod,
            full_waits=self.full_waits,
            wakeups=self._waiter.generation if self._waiter else 0,
            recovered_busy=self.recovered_busy,
        )

    def _release(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        if self._flag is not None:
            self._flag.close()
            self._flag = None
        if self._prod_map is not None:
            self._prod_map.close()
            self._prod_map = None
        if self._cons_map is not None:
            self._cons_map.close()
            self._cons_map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Unmap and close. Unfinished reservations stay BUSY in the ring; the
        next producer on this ring recovers them (marks them DISCARD)."""
        if self._closed:
            return
        self._closed = True
        if self._flag is not None:
            # Never leave the consumer forcing wake-ups for a producer gone.
            self._flag.clear_all()
        for r in self._outstanding.values():
            r.view.release()
        self._outstanding.clear()
        self._data.release()
        self._release()
