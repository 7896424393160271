"""The consumer of a kernel ring buffer (``BPF_MAP_TYPE_RINGBUF``), over our own mmap.

A BPF program publishes events (replies, records) with ``bpf_ringbuf_reserve``/
``submit`` or ``bpf_ringbuf_output``; this reads them out, in order, exactly
once. The record walk is :func:`ringbridge.core.kernelring.consume`; here are
the mapping, the ordered accesses and the wake-ups.

Layout (kernel/bpf/ringbuf.c, ``ringbuf_map_mmap_kern``), page size P, data
size S: offset 0, one page the consumer may write (``consumer_pos`` at byte 0;
a writable mapping of anything more is refused); offset P, P + 2*S read-only
bytes: ``producer_pos``, then the data area mapped twice in a row, so a record
that wraps is contiguous. The same rules as libbpf's ``ring_buffer__add``.

Ordering goes through :mod:`ringbridge.kernel.native` (acquire loads of
``producer_pos`` and of each header, a release store of ``consumer_pos`` after
each record, a full fence before the last look): x86-64 and arm64 alike.

Wake-ups: the map fd is registered EPOLLIN|EPOLLET in an epoll fd of our own,
and that epoll fd with the asyncio loop as a reader. The kernel wakes the
ring's waiters for a record committed at ``consumer_pos`` (the consumer had
caught up) unless the program passed BPF_RB_NO_WAKEUP; edge-triggered, so a
record stuck BUSY at the head does not make the loop spin (level-triggered
EPOLLIN would report it over and over until its commit, which wakes us
anyway). A slow periodic re-check (``recheck_interval``) covers producers that
never ask for a wake-up. A pass takes at most ``budget`` records, then yields
to the loop and goes on: a flood of events never starves the HTTP side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
from collections.abc import Callable
from dataclasses import dataclass

from ..closing import Closing
from ..core import kernelring
from ..errors import ConfigError, KernelError, RingbridgeError, RingClosedError
from . import libbpf as lb
from .mapping import PAGE_SIZE, Mapping
from .native import ops

__all__ = ["DEFAULT_BUDGET", "DEFAULT_RECHECK_INTERVAL", "KernelRingReader", "ReaderStatistics"]

log = logging.getLogger("ringbridge.events")

#: Records one pass hands out before it yields to the event loop.
DEFAULT_BUDGET = 1024
#: Re-check for records this often even without a wake-up (BPF_RB_NO_WAKEUP producers), s.
DEFAULT_RECHECK_INTERVAL = 1.0

Sink = Callable[[list[bytes]], None]


@dataclass(frozen=True, slots=True)
class ReaderStatistics:
    name: str
    size: int
    consumer_pos: int
    producer_pos: int
    records: int
    payload_bytes: int
    discarded: int
    wakeups: int
    failed: str | None


class _Mapped:
    """:class:`kernelring.RingAccess` over the two mappings."""

    def __init__(self, cons: Mapping, prod: Mapping, size: int) -> None:
        self._ops = ops()
        self._cons_addr = cons.addr
        self._prod_addr = prod.addr
        self._data_addr = prod.addr + PAGE_SIZE
        self._data = prod.view[PAGE_SIZE:]
        self._mask = size - 1

    def load_producer(self) -> int:
        return self._ops.load_acquire_u64(self._prod_addr)

    def load_consumer(self) -> int:
        return self._ops.load_acquire_u64(self._cons_addr)

    def load_header(self, pos: int) -> int:
        return self._ops.load_acquire_u32(self._data_addr + (pos & self._mask))

    def read(self, pos: int, length: int) -> bytes:
        off = pos & self._mask
        return bytes(self._data[off : off + length])

    def store_consumer(self, pos: int) -> None:
        self._ops.store_release_u64(self._cons_addr, pos)

    def fence(self) -> None:
        self._ops.fence()

    def release(self) -> None:
        self._data.release()


class KernelRingReader(Closing):
    """The one consumer of one kernel ring buffer map; idempotent close.

    Synchronous use: :meth:`read_nowait` / :meth:`poll`. Asynchronous use:
    :meth:`start` hands every batch of records to a sink from the running
    loop until :meth:`stop` or :meth:`close`. Not thread-safe.
    """

    def __init__(
        self,
        map_fd: lb.FdLike,
        name: str,
        *,
        budget: int = DEFAULT_BUDGET,
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
    ) -> None:
        info = lb.map_info(map_fd, name=name)
        if info.type != lb.BPF_MAP_TYPE_RINGBUF:
            raise ConfigError(
                f"map {name!r} is of type {info.type}, not BPF_MAP_TYPE_RINGBUF "
                f"({lb.BPF_MAP_TYPE_RINGBUF}): only kernel ring buffers carry events out"
            )
        if budget <= 0:
            raise ConfigError(f"budget must be positive, got {budget}")
        self.name = name
        self.size = info.max_entries
        self.budget = budget
        self.recheck_interval = recheck_interval
        self._fd = os.dup(map_fd if isinstance(map_fd, int) else map_fd.fileno())
        self._cons_map: Mapping | None = None
        self._prod_map: Mapping | None = None
        self._ring: _Mapped | None = None
        self._ep: select.epoll | None = None
        try:
            self._cons_map = Mapping(
                self._fd, PAGE_SIZE, 0, writable=True, what=f"ring buffer {name} consumer page"
            )
            self._prod_map = Mapping(
                self._fd,
                PAGE_SIZE + 2 * self.size,
                PAGE_SIZE,
                writable=False,
                what=f"ring buffer {name} producer page and data",
            )
            self._ring = _Mapped(self._cons_map, self._prod_map, self.size)
            self._ep = select.epoll()
            self._ep.register(self._fd, select.EPOLLIN | select.EPOLLET)
        except OSError as exc:
            self._release()
            raise KernelError("epoll_ctl(EPOLLIN|EPOLLET)", name, exc.errno or 0) from exc
        except BaseException:
            self._release()
            raise
        # We are the only consumer: our copy of consumer_pos is the truth
        # from here on (the kernel never writes it).
        self._cons = self._ring.load_consumer()
        self.records = 0
        self.payload_bytes = 0
        self.discarded = 0
        self.wakeups = 0
        self.failed: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: Sink | None = None
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    # -- synchronous -------------------------------------------------------

    def _access(self) -> _Mapped:
        if self._ring is None:
            raise RingClosedError(f"ring buffer {self.name} reader is closed")
        return self._ring

    def read_nowait(self, budget: int | None = None) -> kernelring.Pass:
        """One walk: the committed records now in the ring (at most ``budget``)."""
        ring = self._access()
        p = kernelring.consume(ring, self.size, self._cons, budget or self.budget)
        self._cons = p.consumer_pos
        self.records += len(p.records)
        self.payload_bytes += p.payload_bytes
        self.discarded += p.discarded
        return p

    def poll(self, timeout: float) -> kernelring.Pass:
        """Records now, else waits up to ``timeout`` s for a wake-up and reads again.

        Like libbpf's ``ring_buffer__poll``, for callers without an event
        loop (tools, tests); never call it while :meth:`start` is active.
        """
        p = self.read_nowait()
        if p.records or p.more or self._ep is None:
            return p
        if self._ep.poll(timeout):
            self.wakeups += 1
        return self.read_nowait()

    # -- asynchronous ------------------------------------------------------

    def start(self, sink: Sink) -> None:
        """Hands records to ``sink`` from the running loop until :meth:`stop`.

        Records already in the ring are read at once (no wake-up would come
        for them). ``sink`` must not block; an exception from it is logged.
        """
        if self._ep is None:
            raise RingClosedError(f"ring buffer {self.name} reader is closed")
        if self._loop is not None:
            raise RingbridgeError(f"ring buffer {self.name} reader is already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._sink = sink
        loop.add_reader(self._ep.fileno(), self._on_ready)
        self._schedule_pump()
        self._timer = loop.call_later(self.recheck_interval, self._on_timer)

    def stop(self) -> None:
        """Stops handing out records (the ring keeps what was not read)."""
        loop, self._loop = self._loop, None
        self._sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if loop is not None and not loop.is_closed() and self._ep is not None:
            loop.remove_reader(self._ep.fileno())

    @property
    def running(self) -> bool:
        return self._loop is not None

    def _on_ready(self) -> None:
        if self._ep is None:
            return
        # Take the queued event: with EPOLLET the epoll fd stays readable
        # for the loop until it is taken, and it is reported once.
        try:
            got = self._ep.poll(0)
        except OSError:
            got = []
        if got:
            self.wakeups += 1
        self._pump()

    def _on_timer(self) -> None:
        if self._loop is None:
            return
        self._timer = self._loop.call_later(self.recheck_interval, self._on_timer)
        self._pump()

    def _schedule_pump(self) -> None:
        if self._loop is not None and not self._pump_scheduled:
            self._pump_scheduled = True
            self._loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        sink = self._sink
        if sink is None or self.failed is not None:
            return
        try:
            p = self.read_nowait()
        except RingbridgeError as exc:
            # A ring we cannot walk stays so (someone else moved consumer_pos):
            # stop reading it, say so, and keep serving everything else.
            self.failed = exc.message
            log.error(
                "kernel ring buffer reader stopped", extra={"map": self.name, "error": exc.message}
            )
            self.stop()
            return
        if p.records:
            try:
                sink(p.records)
            except Exception:
                log.exception("event sink failed", extra={"map": self.name})
        if p.more:
            self._schedule_pump()

    # -- state -------------------------------------------------------------

    def statistics(self) -> ReaderStatistics:
        prod = self._ring.load_producer() if self._ring is not None else self._cons
        return ReaderStatistics(
            name=self.name,
            size=self.size,
            consumer_pos=self._cons,
            producer_pos=prod,
            records=self.records,
            payload_bytes=self.payload_bytes,
            discarded=self.discarded,
            wakeups=self.wakeups,
            failed=self.failed,
        )

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _release(self) -> None:
        if self._ring is not None:
            self._ring.release()
            self._ring = None
        for m in (self._prod_map, self._cons_map):
            if m is not None:
                m.close()
        self._prod_map = self._cons_map = None
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self.stop()
        self._release()

    def __repr__(self) -> str:
        return f"KernelRingReader({self.name!r}, {self.size} bytes)"
