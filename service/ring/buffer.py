"""The producer side of one BPF user ring buffer: :class:`UserRingBuffer`.

Writing, on top of :class:`~ringbridge.ring.mapped.MappedRing` (the mapping,
the positions and the one-producer rule). Ordering points, each paired with
its kernel counterpart, all through :mod:`ringbridge.kernel.native`
(``stlr``/``ldar`` on arm64, plain moves on x86-64, where TSO keeps them in
order):

- header and payload writes (plain), then ``producer_pos`` published with a
  release store -> ``smp_load_acquire(&rb->producer_pos)`` in
  ``__bpf_user_ringbuf_peek``: the kernel reads no header past the
  ``producer_pos`` it acquired;
- ``submit``/``discard`` rewrite the header with a release store ->
  ``smp_load_acquire(hdr)`` in ``__bpf_user_ringbuf_peek``.

A batch is written whole (headers, payloads, padding) and published with one
store: the fast path libbpf lacks. Nothing the kernel would refuse is ever
published (a record the kernel rejects poisons the ring for good): sizes are
checked against the ring and the dynptr limit, and raw batches are validated.

Not thread-safe: drive one ring from one thread (or one event loop).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core import ring as core
from ..errors import InvalidBatchError, RecordTooLargeError
from ..schema.batch import EncodedBatch
from ..schema.binary import validate_binary_batch
from .claims import Claims
from .sample import Sample
from .waits import SpaceWaiter

if TYPE_CHECKING:
    from ..schema.btf import BtfSource
    from .typed import TypedRing

__all__ = ["Commit", "RingStatistics", "UserRingBuffer", "encode_batch"]

#: What :meth:`UserRingBuffer.commit_batch` takes: raw records (validated
#: there) or a batch validated where it was made.
Records = EncodedBatch | bytes | bytearray | memoryview

_HDR = struct.Struct("<II")


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
    #: Published and not yet consumed (what the kernel has still to drain).
    pending_bytes: int
    #: Records committed or submitted / discarded by this producer.
    records_written: int
    records_discarded: int
    outstanding_reservations: int
    #: Claimed (being written in place) and not yet published.
    claimed_bytes: int
    full_waits: int
    wakeups: int
    recovered_busy: int


class UserRingBuffer(Claims):
    """The single producer of one ``BPF_MAP_TYPE_USER_RINGBUF``: reserve, submit,
    discard, commit batches, wait without spinning; idempotent close.

    Open it from a map fd (it keeps a dup of its own), a pin
    (:meth:`from_pin`) or a loaded object (:meth:`from_object`); the options
    are :class:`~ringbridge.ring.mapped.MappedRing`'s (``lock``, ``lock_dir``,
    ``recover``, ``waiting_flag_fd``, ``recheck_interval``, ``name``).
    """

    # Counters (class defaults; each instance counts its own).
    full_waits = 0
    records_written = 0
    records_discarded = 0

    # -- one record --------------------------------------------------------

    def reserve(self, size: int) -> Sample:
        """A :class:`Sample` of ``size`` payload bytes, or :class:`RingFullError` at once.

        :class:`RecordTooLargeError` when it could never fit (the ring, or the
        kernel's 16,777,215-byte dynptr limit). The record is published BUSY at
        once, like libbpf's ``user_ring_buffer__reserve``.
        """
        self._writable()
        self._no_claims("a reservation")
        core.check_payload_len(size, self.size)
        need = core.record_size(size)
        self._require_room(need, "record")
        pos = self._prod
        off = pos & self._mask
        # A plain store of the BUSY header: the release store of producer_pos
        # below orders it first, and the kernel reads no header past the
        # producer_pos it acquired.
        _HDR.pack_into(self._data, off, size | core.BUSY_BIT, 0)
        self._prod = self._claimed = pos + need
        self._ops.store_release_u64(self._prod_addr, self._prod)
        sample = Sample(self, pos, size, self._data[off + 8 : off + 8 + size])
        self._outstanding[pos] = sample
        return sample

    def _finish(self, sample: Sample, word: int) -> None:
        self._check_open()
        if self._outstanding.pop(sample.pos, None) is not sample:
            raise InvalidBatchError(f"the sample at position {sample.pos} was already finished")
        sample._finish()
        # Release: the payload is visible before the kernel sees BUSY cleared.
        self._ops.store_release_u32(self._data_addr + (sample.pos & self._mask), word)

    def submit(self, sample: Sample) -> None:
        """Hands a reserved record to the kernel."""
        self._finish(sample, sample.size)
        self.records_written += 1

    def discard(self, sample: Sample) -> None:
        """Marks a reserved record DISCARD: the kernel skips it."""
        self._finish(sample, sample.size | core.DISCARD_BIT)
        self.records_discarded += 1

    # -- batches -----------------------------------------------------------

    def _batch(self, records: Records) -> EncodedBatch:
        if isinstance(records, EncodedBatch):
            batch = records  # validated where it was made
        else:
            batch = validate_binary_batch(
                records, ring_size=self.size, max_sample_bytes=core.MAX_SAMPLE_LEN
            )
        n = len(batch.records)
        if n > self.size:
            raise RecordTooLargeError(
                f"batch of {n} bytes can never fit a ring of {self.size} bytes"
            )
        if n % 8 or n == 0:
            raise InvalidBatchError(f"batch length {n} is not a positive multiple of 8")
        return batch

    def commit_batch(
        self, records: Records, *, before_publish: Callable[[int], None] | None = None
    ) -> Commit:
        """Writes a batch in the record format and publishes it with one store.

        ``records``: bytes in the record format (each record a u32 little-endian
        length, a u32 zero, the payload, zero padding to 8), validated here
        against the kernel's rules -- or an :class:`EncodedBatch`, validated
        where it was made (:func:`encode_batch`, the schema's decoders). All or
        nothing: on :class:`RingFullError` nothing was written.

        ``before_publish(end_pos)`` runs once every check has passed, before
        anything is written: from there on the commit cannot fail, so a record
        it keeps of ``end_pos`` (the ``producer_pos`` this commit publishes)
        never announces a commit that did not happen. If it raises, nothing is
        written.
        """
        self._writable()
        self._no_claims("a batch commit")
        batch = self._batch(records)
        n = len(batch.records)
        self._require_room(n, "batch")
        start = self._prod
        if before_publish is not None:
            before_publish(start + n)
        off = start & self._mask
        # The data area is mapped twice in a row: [off, off+n) is contiguous
        # even when it wraps past the ring's end.
        self._data[off : off + n] = batch.records
        self._prod = self._claimed = start + n
        self._ops.store_release_u64(self._prod_addr, self._prod)
        self.records_written += batch.count
        return Commit(start, self._prod, batch.count)

    def commit_samples(self, payloads: list[bytes]) -> Commit:
        """Commits each payload as one record, all in one batch (one store)."""
        return self.commit_batch(encode_batch(payloads, self.size))

    # -- waiting -----------------------------------------------------------

    def _waiter(self) -> SpaceWaiter:
        self._check_open()
        assert self._waits is not None
        return self._waits

    def _status(self, what: str) -> Callable[[float], str]:
        """The message of a wait's TimeoutError."""
        return lambda timeout: (
            f"{self.what}: {what}: still not possible after {timeout:g}s "
            f"({self.free_bytes()} bytes free of {self.size})"
        )

    def _space_need(self, nbytes: int) -> int:
        self._writable()
        if nbytes > self.size:
            raise RecordTooLargeError(f"{nbytes} bytes can never fit a ring of {self.size} bytes")
        return nbytes

    def wait_for_space_blocking(self, nbytes: int, timeout: float | None = None) -> None:
        """Until ``nbytes`` are free, in this thread; edge-triggered, never spins.
        :class:`TimeoutError` after ``timeout`` seconds (None: no deadline)."""
        need = self._space_need(nbytes)
        if self._has_room(need):
            return
        self.full_waits += 1
        self._waiter().block_until(
            lambda: self._has_room(need), timeout, self._status(f"waiting for {need} free bytes")
        )

    async def wait_for_space_async(self, nbytes: int, timeout: float | None = None) -> None:
        """:meth:`wait_for_space_blocking` on the running event loop."""
        need = self._space_need(nbytes)
        if self._has_room(need):
            return
        self.full_waits += 1
        await self._waiter().wait_until(
            lambda: self._has_room(need), timeout, self._status(f"waiting for {need} free bytes")
        )

    def reserve_blocking(self, size: int, timeout: float | None = None) -> Sample:
        """:meth:`reserve`, waiting for room up to ``timeout`` seconds (TimeoutError)."""
        core.check_payload_len(size, self.size)
        self.wait_for_space_blocking(core.record_size(size), timeout)
        return self.reserve(size)

    async def reserve_async(self, size: int, timeout: float | None = None) -> Sample:
        """:meth:`reserve_blocking` on the running event loop."""
        core.check_payload_len(size, self.size)
        await self.wait_for_space_async(core.record_size(size), timeout)
        return self.reserve(size)

    def commit_batch_blocking(self, records: Records, timeout: float | None = None) -> Commit:
        """:meth:`commit_batch`, waiting for room up to ``timeout`` seconds (TimeoutError)."""
        batch = self._batch(records)
        self.wait_for_space_blocking(len(batch.records), timeout)
        return self.commit_batch(batch)

    async def commit_batch_async(self, records: Records, timeout: float | None = None) -> Commit:
        """:meth:`commit_batch_blocking` on the running event loop."""
        batch = self._batch(records)
        await self.wait_for_space_async(len(batch.records), timeout)
        return self.commit_batch(batch)

    def wait_consumed_blocking(self, pos: int | None = None, timeout: float | None = None) -> None:
        """Until the kernel's ``consumer_pos`` reaches ``pos`` (default: everything
        published so far), in this thread; TimeoutError after ``timeout`` seconds."""
        target = self._prod if pos is None else pos
        self._waiter().block_until(
            lambda: self.consumer_pos() >= target,
            timeout,
            self._status(f"waiting for consumer_pos {target}"),
        )

    async def wait_consumed_async(
        self, pos: int | None = None, timeout: float | None = None
    ) -> None:
        """:meth:`wait_consumed_blocking` on the running event loop."""
        target = self._prod if pos is None else pos
        await self._waiter().wait_until(
            lambda: self.consumer_pos() >= target,
            timeout,
            self._status(f"waiting for consumer_pos {target}"),
        )

    # -- typed samples -------------------------------------------------------

    def typed(
        self, btf_source: str | os.PathLike[str] | BtfSource | None, type_name: str
    ) -> TypedRing:
        """Samples of the C type ``type_name`` into this ring, as dicts: see
        :class:`~ringbridge.ring.typed.TypedRing`. ``btf_source``: a BPF object
        file, a BTF handle, or None for the ring's own BTF from the kernel."""
        from .typed import TypedRing

        return TypedRing.of(self, btf_source, type_name)

    # -- introspection and close --------------------------------------------

    def statistics(self) -> RingStatistics:
        """Positions and counters; never raises for a foreign writer (it reports)."""
        self._check_open()
        # A raw read: the numbers as they are, even when someone else wrote.
        cons = self._ops.load_acquire_u64(self._cons_addr)
        return RingStatistics(
            size=self.size,
            producer_pos=self._prod,
            consumer_pos=cons,
            free_bytes=core.free_space(self.size, self._prod, cons),
            pending_bytes=self._prod - cons,
            records_written=self.records_written,
            records_discarded=self.records_discarded,
            outstanding_reservations=len(self._outstanding),
            claimed_bytes=self._claimed - self._prod,
            full_waits=self.full_waits,
            wakeups=self._waits.wakeups if self._waits is not None else 0,
            recovered_busy=self.recovered_busy,
        )


def encode_batch(payloads: list[bytes], ring_size: int = 1 << 62) -> EncodedBatch:
    """Payloads as one batch in the record format, checked against the kernel's
    limits (and ``ring_size``): ready for :meth:`UserRingBuffer.commit_batch`."""
    for i, p in enumerate(payloads):
        core.check_payload_len(len(p), ring_size, i)
    if not payloads:
        raise InvalidBatchError("empty batch: at least one record is required")
    records = core.encode_batch(payloads)
    return EncodedBatch(records, len(payloads), len(records), sum(len(p) for p in payloads))
