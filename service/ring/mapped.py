"""One BPF user ring buffer, mapped, and its one-producer rule: :class:`MappedRing`.

Layout (kernel/bpf/ringbuf.c, ``ringbuf_map_mmap_user``), page size P, data
size S: offset 0, one read-only page whose first u64 is ``consumer_pos``;
offset P, P + 2*S read-write bytes: ``producer_pos`` then the data area mapped
twice in a row, so a record that wraps past the end stays contiguous.

``consumer_pos`` is read with an acquire load (pairs with
``smp_store_release(&rb->consumer_pos)`` in
``__bpf_user_ringbuf_sample_release``), through
:mod:`ringbridge.kernel.native`. It is cached and re-read only when the
cached view says the ring lacks room: re-reading it per record fights the
consumer for its cache line.

One producer per ring: the constructor takes the ring's producer lock
(:mod:`.lock`) before it maps anything. A writer that bypasses the lock is
caught all the same: the kernel never writes ``producer_pos``, so before each
commit the mapped ``producer_pos`` must still be what this producer last
published, and ``consumer_pos`` may never pass it; :meth:`MappedRing.verify`
also walks the records pending in the ring. Once a foreign writer is seen the
ring refuses every commit (:class:`ForeignWriterError`): what it would write
could only be torn.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Self

from ..closing import Closing
from ..core import ring as core
from ..errors import ForeignWriterError, KernelError, RingClosedError, RingFullError
from ..kernel import libbpf as lb
from ..kernel.mapping import PAGE_SIZE, Mapping
from ..kernel.native import ops
from ..kernel.ringmap import check_user_ringbuf
from .lock import ProducerLock
from .sample import Sample
from .waits import DEFAULT_RECHECK_INTERVAL, SpaceWaiter

__all__ = ["VERIFY_RECORDS", "MappedRing"]

#: Records :meth:`MappedRing.verify` walks at most (from ``consumer_pos``).
VERIFY_RECORDS = 4096

_U32 = struct.Struct("<I")


class MappedRing(Closing):
    """The single producer of one ``BPF_MAP_TYPE_USER_RINGBUF``, mapped; idempotent close.

    Open it from a map fd (it keeps a dup of its own), a pin
    (:meth:`from_pin`) or a loaded object (:meth:`from_object`).

    - ``lock``: take the ring's producer lock (:mod:`ringbridge.ring.lock`);
      ``lock_dir`` where it lives (default ``/run/ringbridge``).
    - ``recover``: mark records a dead producer left BUSY as DISCARD, so the
      kernel gets past them (:attr:`recovered_busy` says how many).
    - ``waiting_flag_fd``: an mmapable array map whose first u32 the producer
      sets while it waits, for a consumer that asks for wake-ups only then.
    - ``recheck_interval``: waits re-check at least this often without a wake-up.
    - ``name``: how the ring was reached, for messages (a pin path...).
    """

    def __init__(
        self,
        fd: int,
        *,
        lock: bool = True,
        lock_dir: str | os.PathLike[str] | None = None,
        recover: bool = True,
        waiting_flag_fd: int | None = None,
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
        name: str | None = None,
    ) -> None:
        self._closed = False
        self._fd: lb.Fd | None = None
        self._lock: ProducerLock | None = None
        self._cons_map: Mapping | None = None
        self._prod_map: Mapping | None = None
        self._waits: SpaceWaiter | None = None
        self._outstanding: dict[int, Sample] = {}
        self._fault: str | None = None
        self.recovered_busy = 0
        try:
            self._open(fd, name, lock, lock_dir, waiting_flag_fd, recheck_interval)
            if recover:
                self.recovered_busy = self.recover()
        except BaseException:
            self._release()
            raise

    def _open(
        self,
        fd: int,
        name: str | None,
        lock: bool,
        lock_dir: str | os.PathLike[str] | None,
        flag_fd: int | None,
        recheck: float,
    ) -> None:
        where = name or f"fd {fd}"
        try:
            self._fd = lb.Fd(os.dup(fd), where)
        except OSError as exc:
            raise KernelError("dup", where, exc.errno or 0) from exc
        self.info = check_user_ringbuf(self._fd, where)
        self.size = self.info.max_entries
        self.map_id = self.info.id
        self.name = self.info.name
        reached = f", {name}" if name else ""
        self.what = f"user ring buffer {self.info.name!r} (map id {self.info.id}{reached})"
        core.check_ring_size(self.size, PAGE_SIZE)
        self._mask = self.size - 1
        if lock:
            # Before anything that writes: recovery rewrites headers.
            self._lock = ProducerLock.acquire(self.map_id, what=self.what, lock_dir=lock_dir)
        num = self._fd.fd
        self._cons_map = Mapping(
            num, PAGE_SIZE, 0, writable=False, what=f"{self.what} consumer page"
        )
        self._prod_map = Mapping(
            num, PAGE_SIZE + 2 * self.size, PAGE_SIZE, writable=True, what=f"{self.what} data"
        )
        self._waits = SpaceWaiter(num, flag_fd=flag_fd, recheck_interval=recheck, what=self.what)
        self._cons_addr = self._cons_map.addr
        self._prod_addr = self._prod_map.addr
        self._data_addr = self._prod_map.addr + PAGE_SIZE
        self._data = self._prod_map.view[PAGE_SIZE:]
        # producer_pos as a u64 item: one aligned 8-byte load, for the check
        # that nobody else moved it (no ordering needed to compare).
        self._prod_word = self._prod_map.view[0:8].cast("Q")
        self._ops = ops()
        # The kernel never writes producer_pos: our copy is the truth from here.
        self._prod = self._ops.load_acquire_u64(self._prod_addr)
        # End of the space claimed and not yet published (ringbridge.ring.claims):
        # == _prod when nothing is claimed. Claimed space counts as used.
        self._claimed = self._prod
        self._cons = self._ops.load_acquire_u64(self._cons_addr)

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str], **options: Any) -> Self:
        """The ring pinned at ``path`` (bpffs); ``options`` as for the constructor."""
        with lb.obj_get(path) as fd:
            return cls(fd.fd, name=options.pop("name", None) or os.fspath(path), **options)

    @classmethod
    def from_object(cls, obj: lb.BpfObject, map_name: str, **options: Any) -> Self:
        """The map ``map_name`` of a loaded :class:`ringbridge.kernel.libbpf.BpfObject`."""
        where = f"map {map_name!r} of {Path(obj.path).name}"
        return cls(obj.map(map_name).fd, name=options.pop("name", None) or where, **options)

    # -- positions ---------------------------------------------------------

    @property
    def producer_pos(self) -> int:
        """What this producer last published."""
        return self._prod

    def consumer_pos(self) -> int:
        """Fresh ``consumer_pos`` (acquire load); also refreshes the cache."""
        self._check_open()
        cons = self._ops.load_acquire_u64(self._cons_addr)
        if not 0 <= self._prod - cons <= self.size:
            self._fence(
                f"consumer_pos {cons} is past the producer_pos {self._prod} this producer "
                "published: the kernel consumed records someone else published"
            )
        self._cons = cons
        return cons

    def position_addresses(self) -> tuple[int, int]:
        """Addresses of ``producer_pos`` and ``consumer_pos`` in this mapping, for a
        native reader (the drain worker); valid until :meth:`close`."""
        self._check_open()
        return self._prod_addr, self._cons_addr

    def free_bytes(self) -> int:
        return core.free_space(self.size, self._prod, self.consumer_pos())

    def pending_bytes(self) -> int:
        """Published bytes the kernel has not consumed yet."""
        return self._prod - self.consumer_pos()

    def _has_room(self, need: int) -> bool:
        if core.free_space(self.size, self._claimed, self._cons) >= need:
            return True
        return core.free_space(self.size, self._claimed, self.consumer_pos()) >= need

    def _require_room(self, need: int, what: str) -> None:
        if not self._has_room(need):
            free = core.free_space(self.size, self._claimed, self._cons)
            raise RingFullError(f"{self.what} has {free} bytes free, {what} needs {need}")

    def _check_open(self) -> None:
        if self._closed:
            raise RingClosedError(f"{self.what} is closed")

    # -- one producer ------------------------------------------------------

    @property
    def fault(self) -> ForeignWriterError | None:
        """Why this ring refuses to commit (a foreign writer was seen), or None."""
        return None if self._fault is None else ForeignWriterError(self._fault)

    def _fence(self, why: str) -> None:
        if self._fault is None:
            self._fault = (
                f"{self.what}: {why}. A user ring buffer takes one producer: this one "
                "stopped committing. Stop the other writer, then start the producer "
                "again (a ring the kernel refuses to drain must be recreated)"
            )
        raise ForeignWriterError(self._fault)

    def _writable(self) -> None:
        """Open, and nobody else wrote: raised before anything is written."""
        self._check_open()
        if self._fault is not None:
            raise ForeignWriterError(self._fault)
        mapped = self._prod_word[0]
        if mapped != self._prod:
            self._fence(
                f"producer_pos is {mapped}, but this producer last published {self._prod}: "
                "another writer moved it"
            )

    def verify(self) -> None:
        """Checks that nobody else writes this ring; raises :class:`ForeignWriterError`
        (and refuses every later commit) if someone did.

        ``producer_pos`` is checked before every commit anyway; this also walks
        up to :data:`VERIFY_RECORDS` records pending in the ring: each must be
        whole, end at ``producer_pos``, and be BUSY only where this producer
        holds a reservation. Call it now and then (the service does, every second).
        """
        self._writable()
        pos = self.consumer_pos()
        prod, data, mask, unpack = self._prod, self._data, self._mask, _U32.unpack_from
        # core.Header's fields by hand: a Header object a record made this walk
        # (up to 4096 records every second, on the event loop) 3.3 ms, not 0.9.
        flags, lmask, most = core.BUSY_BIT | core.DISCARD_BIT, core.LEN_MASK, core.MAX_SAMPLE_LEN
        for _ in range(VERIFY_RECORDS):
            if pos >= prod:
                return
            (word,) = unpack(data, pos & mask)
            length = word & lmask
            step = core.record_size(length)
            if length > most or step > prod - pos:
                self._fence(
                    f"the record at position {pos} claims {length} bytes, past the "
                    f"producer_pos {prod} this producer published: another writer wrote it"
                )
            if word & flags == core.BUSY_BIT and pos not in self._outstanding:
                self._fence(
                    f"the record at position {pos} is BUSY, but this producer holds no "
                    "reservation there: another writer wrote it"
                )
            pos += step

    # -- recovery ----------------------------------------------------------

    def recover(self) -> int:
        """Mark BUSY records left by a dead producer DISCARD; returns how many.

        Only safe while no other producer writes this ring: the producer lock
        is held from before this runs (at open).
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

    @property
    def closed(self) -> bool:
        return self._closed

    def _release(self) -> None:
        if self._waits is not None:
            self._waits.close()
            self._waits = None
        if self._prod_map is not None:
            self._prod_map.close()
            self._prod_map = None
        if self._cons_map is not None:
            self._cons_map.close()
            self._cons_map = None
        if self._fd is not None:
            self._fd.close()
            self._fd = None
        # Last: the lock guards everything above.
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        """Unmap, close, release the producer lock. Unfinished reservations stay
        BUSY in the ring; the next producer on this ring recovers them."""
        if self._closed:
            return
        self._closed = True
        for s in self._outstanding.values():
            s._finish()
        self._outstanding.clear()
        if self._prod_map is not None:
            self._data.release()
            self._prod_word.release()
        self._release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.size} bytes"
        return f"{type(self).__name__}({self.what}, {state})"
