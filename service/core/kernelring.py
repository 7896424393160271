"""Consumer side of a kernel ring buffer (``BPF_MAP_TYPE_RINGBUF``): the record walk. No I/O.

The kernel produces, user space consumes (the other direction from the user
ring buffer of :mod:`.ring`). Records have the same 8-byte header -- ``len``
with bit 31 BUSY (reserved, not yet committed) and bit 30 DISCARD -- then the
payload, the whole padded to 8; the kernel advances ``producer_pos`` by the
whole record at *reserve* time, so a record between ``consumer_pos`` and
``producer_pos`` may still be BUSY.

:func:`consume` is libbpf's ``ringbuf_process_ring`` (src/ringbuf.c) over an
abstract :class:`RingAccess`, so the same walk runs over the mmapped ring
(:mod:`ringbridge.kernel.eventring`) and over a bytearray in the unit tests:

1. acquire-load ``producer_pos`` (pairs with the kernel's
   ``smp_store_release(&rb->producer_pos)`` in ``__bpf_ringbuf_reserve``);
2. for each record, acquire-load its header (pairs with the ``xchg`` on the
   header in ``bpf_ringbuf_commit``); BUSY stops the walk: records are handed
   out in order, and the kernel wakes the consumer when that one commits;
3. copy the payload out, then release-store ``consumer_pos`` past the record
   (pairs with ``smp_load_acquire(&rb->consumer_pos)`` in the reserve): from
   then on the kernel may overwrite it;
4. when the ring looks empty (or a header BUSY), a full fence and one more
   look: the kernel only wakes the consumer for a record committed *at*
   ``consumer_pos``, so our store and our last load must not be reordered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..errors import RingCorruptError
from .ring import BUSY_BIT, DISCARD_BIT, HDR_SIZE, LEN_MASK, record_size

__all__ = ["Pass", "RingAccess", "consume"]


class RingAccess(Protocol):
    """The ordered accesses the walk needs; positions are ring positions (unmasked)."""

    def load_producer(self) -> int:
        """``producer_pos`` with acquire order."""
        ...

    def load_header(self, pos: int) -> int:
        """The header's ``len`` word at ``pos``, with acquire order."""
        ...

    def read(self, pos: int, length: int) -> bytes:
        """A copy of ``length`` bytes at ``pos`` (contiguous even when they wrap)."""
        ...

    def store_consumer(self, pos: int) -> None:
        """``consumer_pos = pos`` with release order."""
        ...

    def fence(self) -> None:
        """A full barrier (store-load order)."""
        ...


@dataclass(slots=True)
class Pass:
    """What one :func:`consume` call did."""

    consumer_pos: int
    records: list[bytes] = field(default_factory=list)
    payload_bytes: int = 0
    discarded: int = 0
    #: Stopped at a record the kernel has reserved but not committed yet.
    busy: bool = False
    #: Stopped because ``budget`` records were taken; more may be waiting.
    more: bool = False


def _check_positions(size: int, consumer_pos: int, producer_pos: int) -> None:
    pending = producer_pos - consumer_pos
    if producer_pos % 8 or consumer_pos % 8 or not 0 <= pending <= size:
        raise RingCorruptError(
            f"kernel ring positions are inconsistent: consumer_pos={consumer_pos} "
            f"producer_pos={producer_pos} size={size}"
        )


def consume(ring: RingAccess, size: int, consumer_pos: int, budget: int) -> Pass:
    """Takes up to ``budget`` committed records from ``consumer_pos`` on, in order.

    ``consumer_pos`` is the caller's view (it is the only consumer); the new
    position is both stored into the ring after each record and returned.
    Raises :class:`RingCorruptError` for positions or a record length the
    kernel never produces (another consumer moved ``consumer_pos``).
    """
    out = Pass(consumer_pos)
    cons = consumer_pos
    prod = ring.load_producer()
    _check_positions(size, cons, prod)
    while True:
        while cons < prod:
            if len(out.records) >= budget:
                out.more = True
                return out
            word = ring.load_header(cons)
            if word & BUSY_BIT:
                # Our last consumer_pos store must be visible before we give
                # up on this record, or its commit may not wake us (step 4).
                ring.fence()
                word = ring.load_header(cons)
                if word & BUSY_BIT:
                    out.busy = True
                    return out
            length = word & LEN_MASK
            step = record_size(length)
            if step > prod - cons:
                raise RingCorruptError(
                    f"kernel ring record at position {cons} claims {length} bytes, past "
                    f"producer_pos {prod}"
                )
            if word & DISCARD_BIT:
                out.discarded += 1
            else:
                out.records.append(ring.read(cons + HDR_SIZE, length))
                out.payload_bytes += length
            cons += step
            ring.store_consumer(cons)
            out.consumer_pos = cons
        ring.fence()
        newer = ring.load_producer()
        if newer == prod:
            return out
        _check_positions(size, cons, newer)
        prod = newer
