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
Each is recorded *before* its commit, with the ``producer_pos`` the commit
will publish; the record counts only once the ring's ``producer_pos`` has
reached that position -- the commit is that store, so the record and the
commit cannot disagree, whatever crashes between them. A record whose
commit did not happen (the ring was full) is cleared before anyone can
commit past its position. With a :class:`KeyStore` (a map kept with the
pins, :mod:`ringbridge.kernel.pins.keys`) the records survive a restart: at
start each is checked against the ring's ``producer_pos`` and dropped if its
commit never happened.

No I/O here but the store's, which is a store into a mapping.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import OverloadedError
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
    """A keyed batch in flight: the producer records it around its commit."""

    __slots__ = ("_table", "body", "done", "key", "slot")

    def __init__(self, table: KeyTable, key: bytes, body: bytes) -> None:
        self._table = table
        self.key = key
        self.body = body
        self.slot = -1
        #: The outcome: its record once committed, None when it was not.
        self.done: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()

    def before_commit(self, first_seq: int, count: int, end_pos: int) -> None:
        """Record it with the position its commit will publish (just before the commit)."""
        self._table._record(self, KeyRecord(self.key, self.body, first_seq, count, end_pos))

    def not_committed(self) -> None:
        """The commit did not happen (ring full): forget the record before anything passes it."""
        self._table._unrecord(self)

    def committed(self, end_pos: int) -> None:
        """Committed, ending at ``end_pos`` (what was recorded, unless the ring said otherwise)."""
        self._table._committed_at(self, end_pos)
        self._table._settle(self, committed=True)

    def abandoned(self) -> None:
        """Refused or given up: nothing of it was committed; a resend is a new batch."""
        self._table._settle(self, committed=False)


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
        self._pending_slot: dict[int, Keyed] = {}  # slots recorded for a commit underway
        self._next = 0
        self.replayed = 0
        if store is not None:
            self._load(store, producer_pos)

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

    def _free_slot(self) -> int:
        # The oldest slot not held by a commit underway (a batch waiting for
        # ring space keeps its slot while newer ones go round).
        for _ in range(self.capacity):
            slot = self._next
            self._next = (self._next + 1) % self.capacity
            if slot not in self._pending_slot:
                return slot
        raise OverloadedError(
            f"all {self.capacity} idempotency key slots are held by batches waiting to commit"
        )

    def _record(self, keyed: Keyed, rec: KeyRecord) -> None:
        if keyed.slot < 0:
            keyed.slot = self._free_slot()
            old = self._slots[keyed.slot]
            if old is not None and self._by_key.get(old.key) == keyed.slot:
                del self._by_key[old.key]  # the oldest key is forgotten
            self._slots[keyed.slot] = None
            self._pending_slot[keyed.slot] = keyed
        if self._store is not None:
            self._store.put(keyed.slot, rec.key, rec.body, rec.first_seq, rec.count, rec.end_pos)
        self._slots[keyed.slot] = rec

    def _committed_at(self, keyed: Keyed, end_pos: int) -> None:
        rec = self._slots[keyed.slot] if keyed.slot >= 0 else None
        if rec is not None and rec.end_pos != end_pos:
            self._record(keyed, KeyRecord(rec.key, rec.body, rec.first_seq, rec.count, end_pos))

    def _unrecord(self, keyed: Keyed) -> None:
        if keyed.slot >= 0:
            self._slots[keyed.slot] = None
            if self._store is not None:
                self._store.clear(keyed.slot)

    def _settle(self, keyed: Keyed, *, committed: bool) -> None:
        if keyed.done.done():
            return  # settled already (the producer, then the request's own cleanup)
        if self._pending.get(keyed.key) is keyed:
            del self._pending[keyed.key]
        self._pending_slot.pop(keyed.slot, None)
        rec = self._slots[keyed.slot] if keyed.slot >= 0 else None
        if committed and rec is not None:
            self._by_key[keyed.key] = keyed.slot
        else:
            self._unrecord(keyed)
            rec = None
        keyed.done.set_result(rec)

    def statistics(self) -> KeyStatistics:
        return KeyStatistics(
            capacity=self.capacity,
            remembered=len(self._by_key),
            in_flight=len(self._pending),
            replayed=self.replayed,
            persistent=self._store is not None,
        )
