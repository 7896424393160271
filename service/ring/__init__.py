"""``ringbridge.ring``: the producer side of a BPF user ring buffer, as a library.

What libbpf gives C programs (``user_ring_buffer__new/reserve/
reserve_blocking/submit/discard/free``), for Python, plus what libbpf lacks:
a batch written and published with one ``producer_pos`` store, waits that do
not spin, recovery of records a crashed producer left BUSY, one producer per
ring enforced, and a foreign writer detected. The ringbridge service
produces through it; nothing here needs the service::

    from ringbridge.ring import UserRingBuffer

    with UserRingBuffer.from_pin("/sys/fs/bpf/myprog/user_ringbuf") as ring:
        with ring.reserve(16) as view:          # RingFullError if no room now
            view[:] = payload
        ring.commit_batch(records)              # many records, one store
        ring.typed("prog.bpf.o", "struct sample").send({"kind": 1, "value": 5})

Claims (:mod:`.claims`): space written in place -- many records, or bytes
arriving from a socket -- and published later, in claim order, with one
store; what must never be read is covered with DISCARD records first::

    pos = ring.claim(len(records))
    ring.claim_view(pos, len(records))[:] = records
    ring.publish(pos + len(records))

Modules: :mod:`.buffer` (:class:`UserRingBuffer`), :mod:`.claims`, :mod:`.sample`
(:class:`Sample`), :mod:`.waits` (edge-triggered waits), :mod:`.lock` (the
producer lock), :mod:`.typed` (:class:`TypedRing`). It sits on the ring
protocol core, the kernel binding and (for typed samples) the schema layer;
the service's producer sits on it.

Errors come from the one hierarchy of :mod:`ringbridge.errors` and are
re-exported here; a deadline passed is Python's own :class:`TimeoutError`.
"""

from __future__ import annotations

from ..core.ring import MAX_SAMPLE_LEN
from ..errors import (
    ForeignWriterError,
    InvalidBatchError,
    KernelError,
    MapTypeError,
    PinError,
    ProducerLockedError,
    RecordTooLargeError,
    RingbridgeError,
    RingClosedError,
    RingCorruptError,
    RingFullError,
    SampleError,
    SchemaError,
)
from ..schema.batch import EncodedBatch
from .buffer import Commit, RingStatistics, UserRingBuffer, encode_batch
from .lock import DEFAULT_LOCK_DIR, ProducerLock
from .sample import Sample
from .typed import TypedRing

__all__ = [
    "DEFAULT_LOCK_DIR",
    "MAX_SAMPLE_LEN",
    "Commit",
    "EncodedBatch",
    "ForeignWriterError",
    "InvalidBatchError",
    "KernelError",
    "MapTypeError",
    "PinError",
    "ProducerLock",
    "ProducerLockedError",
    "RecordTooLargeError",
    "RingClosedError",
    "RingCorruptError",
    "RingFullError",
    "RingStatistics",
    "RingbridgeError",
    "Sample",
    "SampleError",
    "SchemaError",
    "TypedRing",
    "UserRingBuffer",
    "encode_batch",
]
