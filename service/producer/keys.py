"""Idempotency keys: a resent batch is answered with its first ack, never committed twice.

A client that lost its connection after sending a batch cannot tell whether
it was committed. With an ``Idempotency-Key`` (its own unique name for the
batch, :mod:`ringbridge.wire`), it sends the batch again under the same key
and the service recognises it:

- the batch was committed: the resend gets the original ack (same seqs),
  nothing is written again;
- it is still in flight (waiting for ring space): the resend waits for
  that outcome;
- it was not committed (refused, given up): the resend is a new batch.

:class:`KeyTable` remembers the last ``capacity`` keyed batches committed.
Each is recorded by the batch's ``before_commit`` hook (:class:`Keyed`),
which the publisher runs once nothing can stop the publish any more, with
the seq and the ``producer_pos`` the publish reaches -- and *before* that
store of ``producer_pos``, so the record counts only once the ring's
``producer_pos`` has reached it: the commit is that store, and the record and
the commit cannot disagree, whatever crashes between them. With a
:class:`KeyStore` (a map kept with the pins,
:mod:`ringbridge.kernel.pins.keys`) the records survive a restart: at start
each is checked against the ring's ``producer_pos`` and dropped if its
commit never happened.

No I/O here but the store's, which is a store into a mapping.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..wire import Ack

__all__ = ["KeyRecord", "KeyStore", "KeyTable", "Keyed", "key_digest"]


def key_digest(key: str) -> bytes:
    """The 16 bytes a key is remembered by."""
    return hashlib.blake2b(key.encode(), digest_size=16, person=b"rb-idem-key").digest()


def body_digest(body: bytes | bytearray | memoryview) -> bytes:
    """The 16 bytes a keyed batch's body is remembered by (a resend must match)."""
    return hashlib.blake2b(body, digest_size=16, person=b"rb-idem-body").digest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A keyed batch as remembered: counted once ``producer_pos >= end_pos``."""

    key: bytes
    body: bytes
    first_seq: int
    count: int
    end_pos: int

    def ack(self) -> Ack:
        """The batch's ack, as committed (a ``wait=consumed`` waits on ``ring_end_pos``)."""
        return Ack(
            accepted=self.count,
            first_seq=self.first_seq,
            last_seq=self.first_seq + self.count - 1,
            ring_end_pos=self.end_pos,
        )


class KeyStore(Protocol):
    """Where key records survive a restart: ``capacity`` numbered slots
    (:class:`ringbridge.kernel.pins.keys.PinnedKeys`)."""

    @property
    def capacity(self) -> int: ...
    def records(self) -> Iterable[tuple[int, bytes, bytes, int, int, int]]:
        """``(slot, key, body, first_seq, count, end_pos)`` of every slot in use."""

    def put(
        self, slot: int, key: bytes, body: bytes, first_seq: int, count: int, end_pos: int
    ) -> None: ...
    def clear(self, slot: int) -> None: ...


class Keyed:
    """A keyed batch in flight; the batch's ``before_commit`` hook
    (:data:`ringbridge.producer.contract.BeforeCommit`) records it."""

    __slots__ = ("_table", "body", "count", "done", "key")

    def __init__(self, table: KeyTable, key: bytes, body: bytes) -> None:
        self._table = table
        self.key = key
        self.body = body
        #: The batch's samples: set once it is decoded or validated.
        self.count = 0
        #: The outcome: its record once committed, None when it was not.
        self.done: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()

    def __call__(self, end_pos: int) -> None:
        """The batch publishes now, ending at ``end_pos`` (nothing can stop it any
        more): recorded with its seq before the publish, and committed."""
        self._table._commit(self, end_pos)

    def abandoned(self) -> None:
        """Refused or given up: nothing of it was committed; a resend is a new batch.
        A no-op once it was committed."""
        self._table._settle(self, None)


@dataclass(frozen=True, slots=True)
class KeyStatistics:
    capacity: int
    remembered: int
    in_flight: int
    replayed: int
    persistent: bool


class KeyTable:
    """The last ``capacity`` keyed batches committed, and the keyed batches in flight."""

    def __init__(self, capacity: int, store: KeyStore | None = None, producer_pos: int = 0) -> None:
        if store is not None:
            capacity = store.capacity
        if capacity <= 0:
            raise ValueError(f"key table capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._store = store
        self._slots: list[KeyRecord | None] = [None] * capacity
        self._by_key: dict[bytes, int] = {}  # committed: key -> slot
        self._pending: dict[bytes, Keyed] = {}  # in flight
        self._next = 0
        self._seq: Callable[[], int] = lambda: 0
        self.replayed = 0
        if store is not None:
            self._load(store, producer_pos)

    def bind(self, seq: Callable[[], int]) -> None:
        """Where the seq of a batch being published is read (the producer's publisher)."""
        self._seq = seq

    def _load(self, store: KeyStore, producer_pos: int) -> None:
        newest = -1
        for slot, key, body, first_seq, count, end_pos in store.records():
            rec = KeyRecord(key, body, first_seq, count, end_pos)
            if rec.end_pos > producer_pos or slot >= self.capacity:
                store.clear(slot)  # recorded, then the process died before the commit
                continue
            self._slots[slot] = rec
            self._by_key[rec.key] = slot
            if rec.first_seq > newest:
                newest, self._next = rec.first_seq, (slot + 1) % self.capacity

    # -- what a request asks -----------------------------------------------------

    def committed(self, key: bytes) -> KeyRecord | None:
        slot = self._by_key.get(key)
        return self._slots[slot] if slot is not None else None

    def in_flight(self, key: bytes) -> Keyed | None:
        return self._pending.get(key)

    def begin(self, key: bytes, body: bytes) -> Keyed:
        """A new keyed batch in flight (the key must be neither committed nor in flight)."""
        keyed = Keyed(self, key, body)
        self._pending[key] = keyed
        return keyed

    # -- what the producer tells -------------------------------------------------

    def _commit(self, keyed: Keyed, end_pos: int) -> None:
        # Stored before the publish (the hook runs before producer_pos moves):
        # a crash in between leaves a record past producer_pos, dropped at
        # the next start; the oldest key's slot is taken over.
        slot = self._next
        self._next = (slot + 1) % self.capacity
        old = self._slots[slot]
        if old is not None and self._by_key.get(old.key) == slot:
            del self._by_key[old.key]
        rec = KeyRecord(keyed.key, keyed.body, self._seq(), keyed.count, end_pos)
        if self._store is not None:
            self._store.put(slot, rec.key, rec.body, rec.first_seq, rec.count, rec.end_pos)
        self._slots[slot] = rec
        self._by_key[rec.key] = slot
        self._settle(keyed, rec)

    def _settle(self, keyed: Keyed, rec: KeyRecord | None) -> None:
        if keyed.done.done():
            return  # settled already (committed, then the request's own cleanup)
        if self._pending.get(keyed.key) is keyed:
            del self._pending[keyed.key]
        keyed.done.set_result(rec)

    def statistics(self) -> KeyStatistics:
        return KeyStatistics(
            capacity=self.capacity,
            remembered=len(self._by_key),
            in_flight=len(self._pending),
            replayed=self.replayed,
            persistent=self._store is not None,
        )
