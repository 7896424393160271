"""Ring protocol core: the arithmetic of a BPF user ring buffer. No I/O.

Nothing here maps memory, calls the kernel or awaits: it computes over
integers and byte buffers, so it is tested in isolation and fuzzed.

Invariants (the kernel's rules, kernel/bpf/ringbuf.c ``__bpf_user_ringbuf_peek``;
breaking any of them poisons the ring, because the kernel never skips an
invalid record -- every later drain fails the same way):

1. ``producer_pos`` and ``consumer_pos`` are byte counters that only grow;
   ``0 <= producer_pos - consumer_pos <= size`` and ``producer_pos % 8 == 0``.
2. A record is an 8-byte header ``{u32 len; u32 pad = 0}`` then ``len``
   payload bytes, padded with zeros to a multiple of 8. It occupies
   ``round_up(len + 8, 8)`` bytes of the ring.
3. ``len`` bit 31 is BUSY (the kernel stops there: head-of-line), bit 30 is
   DISCARD (the kernel skips the record). The 30 low bits are the length.
4. A published record fits both the region ``[consumer_pos, producer_pos)``
   and the ring (``record_size(len) <= size``) and its payload is at most
   :data:`MAX_SAMPLE_LEN` bytes (the dynptr limit).
5. Headers and payloads are written before ``producer_pos`` is published
   (release order): a record is visible to the kernel once, whole.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import ConfigError, InvalidBatchError, RecordTooLargeError

HDR_SIZE = 8
BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
LEN_MASK = DISCARD_BIT - 1
#: Largest payload a BPF dynptr can describe (``DYNPTR_MAX_SIZE``).
MAX_SAMPLE_LEN = (1 << 24) - 1
#: Records one ``bpf_user_ringbuf_drain()`` call processes at most (discards count).
MAX_DRAIN_SAMPLES = 128 * 1024

#: A record's header: payload length (with the BUSY and DISCARD bits), pad word.
RECORD_HEADER = struct.Struct("<II")
#: The zero bytes after a payload of ``n`` bytes: ``PADDING[-n % 8]``.
PADDING = tuple(bytes(i) for i in range(8))
_U32 = struct.Struct("<I")


def round_up8(n: int) -> int:
    return (n + 7) & ~7


def record_size(payload_len: int) -> int:
    """Bytes one record of ``payload_len`` payload bytes takes in the ring."""
    return round_up8(payload_len + HDR_SIZE)


def check_ring_size(size: int, page_size: int) -> None:
    """The kernel's rule for ``max_entries``: a power of two, a page multiple."""
    if size <= 0 or size & (size - 1) or size % page_size:
        raise ConfigError(
            f"ring size {size} is invalid: it must be a power of two and a multiple "
            f"of the page size ({page_size})"
        )


def max_payload(ring_size: int) -> int:
    """Largest payload a ring of ``ring_size`` bytes can ever hold in one record."""
    return min(MAX_SAMPLE_LEN, ring_size - HDR_SIZE)


def free_space(ring_size: int, producer_pos: int, consumer_pos: int) -> int:
    return ring_size - (producer_pos - consumer_pos)


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    busy: bool
    discard: bool

    @classmethod
    def decode(cls, word: int) -> Header:
        return cls(word & LEN_MASK, bool(word & BUSY_BIT), bool(word & DISCARD_BIT))


def check_payload_len(length: int, ring_size: int, index: int = -1) -> None:
    """Refuse a record the kernel would reject (E2BIG) or could never hold."""
    if length > MAX_SAMPLE_LEN:
        raise RecordTooLargeError(
            f"payload of {length} bytes exceeds the kernel's limit of {MAX_SAMPLE_LEN}", index
        )
    if record_size(length) > ring_size:
        raise RecordTooLargeError(
            f"record of {record_size(length)} bytes can never fit a ring of {ring_size}", index
        )


def encode_record(payload: bytes) -> bytes:
    """One committed (not BUSY) record: header, payload, zero padding."""
    n = len(payload)
    return b"".join((RECORD_HEADER.pack(n, 0), payload, bytes(record_size(n) - HDR_SIZE - n)))


def encode_batch(payloads: Iterable[bytes]) -> bytes:
    """Records for ``payloads`` laid out back to back, ready to copy into a ring."""
    parts: list[bytes] = []
    pads = PADDING
    for p in payloads:
        n = len(p)
        parts.append(RECORD_HEADER.pack(n, 0))
        parts.append(p)
        parts.append(pads[-n % 8])
    return b"".join(parts)


#: The most bytes one DISCARD record covers: payload ``2**24 - 8`` (a
#: multiple of 8 within the dynptr limit, which the kernel checks before it
#: looks at the DISCARD bit) plus its header.
MAX_DISCARD_SPAN = 1 << 24


def discard_headers(nbytes: int) -> list[tuple[int, int]]:
    """(offset, header word) of the DISCARD records that cover ``nbytes`` of ring space.

    A region of reserved, unpublished space whose bytes must never be read
    (an invalid body, a client gone) is published as records the kernel
    skips: one, or one per :data:`MAX_DISCARD_SPAN` bytes, since even a
    DISCARD record must pass the kernel's size checks. ``nbytes`` is a
    positive multiple of 8.
    """
    if nbytes <= 0 or nbytes % 8:
        raise ValueError(f"a ring region is a positive multiple of 8 bytes, not {nbytes}")
    out: list[tuple[int, int]] = []
    off = 0
    while off < nbytes:
        span = min(nbytes - off, MAX_DISCARD_SPAN)
        out.append((off, (span - HDR_SIZE) | DISCARD_BIT))
        off += span
    return out


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A validated binary batch: ``count`` records, ``nbytes`` of ring space."""

    count: int
    nbytes: int
    payload_bytes: int


def validate_batch(
    buf: bytes | bytearray | memoryview,
    ring_size: int,
    max_sample_len: int = MAX_SAMPLE_LEN,
) -> BatchInfo:
    """Check a binary batch in the record format, as a whole.

    Raises :class:`InvalidBatchError` (422) naming the first bad record, or
    :class:`RecordTooLargeError` (413) when the batch or a record can never
    fit. Only committed records are accepted: BUSY or DISCARD bits, a non-zero
    pad word or non-zero padding bytes are refused, so what is accepted is
    copied into the ring byte for byte.
    """
    mv = memoryview(buf).cast("B")
    total = len(mv)
    if total == 0:
        raise InvalidBatchError("empty batch: at least one record is required")
    if total > ring_size:
        raise RecordTooLargeError(
            f"batch of {total} bytes can never fit a ring of {ring_size} bytes"
        )
    limit = min(max_sample_len, MAX_SAMPLE_LEN)
    unpack = RECORD_HEADER.unpack_from
    off = 0
    count = 0
    payload = 0
    while off < total:
        if total - off < HDR_SIZE:
            raise InvalidBatchError("truncated header", count)
        word, pad = unpack(mv, off)
        if word & (BUSY_BIT | DISCARD_BIT):
            raise InvalidBatchError("BUSY or DISCARD bit set in header", count)
        if pad:
            raise InvalidBatchError("header pad word is not zero", count)
        if word > limit:
            raise RecordTooLargeError(
                f"payload of {word} bytes exceeds the limit of {limit}", count
            )
        end = off + HDR_SIZE + word
        step = record_size(word)
        if off + step > total:
            raise InvalidBatchError(
                f"payload of {word} bytes runs past the end of the batch", count
            )
        if step != HDR_SIZE + word and any(mv[end : off + step]):
            raise InvalidBatchError("padding bytes are not zero", count)
        payload += word
        count += 1
        off += step
    return BatchInfo(count=count, nbytes=total, payload_bytes=payload)


def iter_records(buf: bytes | bytearray | memoryview) -> Iterable[tuple[int, int]]:
    """(payload offset, payload length) of each record in a validated batch."""
    mv = memoryview(buf).cast("B")
    off = 0
    while off < len(mv):
        (word,) = _U32.unpack_from(mv, off)
        length = word & LEN_MASK
        yield off + HDR_SIZE, length
        off += record_size(length)


def split_batch(buf: bytes | bytearray | memoryview, max_bytes: int) -> list[memoryview]:
    """Cut a validated batch at record boundaries into chunks of <= ``max_bytes``.

    Each chunk is a batch of its own (committed all or nothing); ``ringbridge
    push`` uses it to frame a large record file into WebSocket batches. A
    single record larger than ``max_bytes`` becomes a chunk alone.
    """
    mv = memoryview(buf).cast("B")
    chunks: list[memoryview] = []
    start = 0
    off = 0
    for poff, length in iter_records(mv):
        rec_end = poff + round_up8(length)
        if rec_end - start > max_bytes and off > start:
            chunks.append(mv[start:off])
            start = off
        off = rec_end
    if off > start:
        chunks.append(mv[start:off])
    return chunks


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """Records left BUSY by a dead producer, to be marked DISCARD on start."""

    busy_offsets: tuple[int, ...]
    records: int


def plan_recovery(
    read_u32: Callable[[int], int], ring_size: int, consumer_pos: int, producer_pos: int
) -> RecoveryPlan:
    """Walk ``[consumer_pos, producer_pos)`` and find BUSY records.

    ``read_u32(pos)`` reads the header word at ring position ``pos`` (masked
    by the caller). A BUSY record blocks the kernel forever; marking it
    BUSY|DISCARD makes the kernel skip it. Raises :class:`RingCorruptError`
    when the region does not parse as records, since then no safe repair
    exists.
    """
    from ..errors import RingCorruptError

    pending = producer_pos - consumer_pos
    if producer_pos % 8 or consumer_pos % 8 or not 0 <= pending <= ring_size:
        raise RingCorruptError(
            f"ring positions are inconsistent: consumer_pos={consumer_pos} "
            f"producer_pos={producer_pos} size={ring_size}"
        )
    pos = consumer_pos
    busy: list[int] = []
    n = 0
    while pos < producer_pos:
        h = Header.decode(read_u32(pos))
        step = record_size(h.length)
        if step > producer_pos - pos or h.length > MAX_SAMPLE_LEN:
            raise RingCorruptError(
                f"record at position {pos} claims {h.length} bytes, past producer_pos "
                f"{producer_pos}: the ring cannot be repaired, recreate it"
            )
        if h.busy:
            busy.append(pos)
        pos += step
        n += 1
    return RecoveryPlan(busy_offsets=tuple(busy), records=n)


def kernel_view_problem(
    producer_pos: int, consumer_pos: int, ring_size: int, head_word: int | None
) -> str | None:
    """Why this ring is corrupt, or None when the kernel's next drain would go through.

    The checks of ``__bpf_user_ringbuf_peek``, in its order, over the
    positions as the kernel reads them (``producer_pos`` from the shared
    page, not a producer's own copy) and ``head_word``, the header word at
    ``consumer_pos`` (None when the ring is empty); and the invariant the
    kernel does not check but every producer must keep,
    ``0 <= producer_pos - consumer_pos <= size``. A record the kernel
    refuses fails every drain from then on: the ring is poisoned.
    """
    pending = producer_pos - consumer_pos
    if producer_pos % 8:
        return f"producer_pos {producer_pos} is not a multiple of 8 (drains fail with EINVAL)"
    if not 0 <= pending <= ring_size:
        return (
            f"producer_pos {producer_pos} and consumer_pos {consumer_pos} are {pending} bytes "
            f"apart in a ring of {ring_size} bytes"
        )
    if pending == 0 or head_word is None:
        return None
    length = Header.decode(head_word).length  # BUSY and DISCARD records are checked too
    if record_size(length) > pending:
        return (
            f"the record at consumer_pos {consumer_pos} claims {length} bytes, past "
            f"producer_pos {producer_pos} (drains fail with EINVAL)"
        )
    if record_size(length) > ring_size or length > MAX_SAMPLE_LEN:
        return (
            f"the record at consumer_pos {consumer_pos} claims {length} bytes, more than "
            "the ring or a dynptr can hold (drains fail with E2BIG)"
        )
    return None
