"""The producer's contract with the rest of the service: what it takes (a
:data:`Batch`, a :data:`BeforeCommit` hook), what it needs (a :class:`SeqStore`)
and what it reports (:class:`ProducerStatistics`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..ring import EncodedBatch
from .admission import AdmissionStatistics
from .kick import KickStatistics

__all__ = ["Batch", "BeforeCommit", "ProducerStatistics", "SeqStore"]


#: A validated batch in the record format (the schema's decoders make them):
#: the ring commits it as it is.
Batch = EncodedBatch


#: Called with the ``producer_pos`` a batch's publish reaches, once nothing can
#: stop it any more (see :mod:`ringbridge.producer.regions`); e.g. to record
#: it with the pins. Raising a RingbridgeError refuses the batch (its region
#: publishes as DISCARD).
BeforeCommit = Callable[[int], None]


class SeqStore(Protocol):
    """Where the next sample seq survives a restart, kept with the pins.

    ``store_seq`` runs before every publish (make it a store into a mapping,
    not a syscall). Implemented by the built-in consumer's ctl map and a pin
    set's identity record; a backend offers one as ``Backend.seq_store``.
    """

    def load_seq(self) -> int: ...
    def store_seq(self, next_seq: int) -> None: ...


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
    batches_abandoned: int  # submitter gone before the commit: not committed
    batches_failed: dict[str, int]  # by error code
    queued_batches: int
    admission: AdmissionStatistics
    #: Claimed regions not yet published (receiving, or ready behind one that is).
    regions_pending: int = 0
    #: Ring bytes of regions refused in place (published as DISCARD, or given back).
    discarded_bytes: int = 0
    crashed: bool = False
    kick: KickStatistics | None = None
