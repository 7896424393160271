"""Exactly once per node: the stream sequence of the last message this node resolved.

The fleet front door commits JetStream messages into the ring in stream
order, one at a time, and acks each only after its commit. What survives a
crash is kernel state: the ring's ``producer_pos`` (in the ring map's pages)
and the :class:`CursorRecord` below (in a pinned map, see
:class:`PinnedCursorStore`). The record is written **before** the commit's
``producer_pos`` store, from inside the ring's commit, once the commit can no
longer fail (``UserRingBuffer.commit_batch``'s ``before_publish``)::

    {seq: S, end_pos: T, prev_seq: P, ...}     T = producer_pos after S's commit

On restart, before the producer commits anything, :meth:`Cursor.open`
resolves it against the ring:

- ``producer_pos >= T`` (same ring): S's commit was published -> S is done
  (its redelivery is acked, not committed again);
- ``producer_pos < T``: the process died between the record and the publish
  -> S was not committed; the node is at P and S will be committed.

Why this is sound: the record is the last write before the publish and
nothing else commits in between (one producer task, and the hook runs only
once the commit is certain), so ``producer_pos`` reaches T exactly when S's
commit was published. After a restart nothing may commit before the record
is resolved (later HTTP commits would push ``producer_pos`` past T): hence
:meth:`Cursor.open` before the producer starts, and the record written back
resolved (``end_pos`` 0). ``producer_pos`` only grows while the ring map
lives; a record about another ring (its map id differs: the ring was unpinned
and made anew) is resolved as "not committed".

A message refused for good (invalid: terminated) is resolved too, with no
commit (``end_pos`` 0), so a restart does not take it up again. The record
also names the stream (:func:`stream_identity`): a stream deleted and made
again restarts its sequences at 1, and a cursor from the old one would make
the node skip them.

The pure part (record layout and rule) has no I/O; the store is a protocol
so that every backend can keep the record where it keeps its pins.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Protocol

from ..closing import Closing
from ..kernel.statemap import PinnedRecord

__all__ = [
    "CURSOR_MAP_NAME",
    "Cursor",
    "CursorRecord",
    "CursorStore",
    "PinnedCursorStore",
    "Resolution",
    "resolve",
    "stream_identity",
]

log = logging.getLogger("ringbridge.fleet")

CURSOR_MAP_NAME: Final = "rb_fleet_cursor"
_MAGIC: Final = int.from_bytes(b"RBCURS01", "little")
# magic, stream_id, ring_id, seq, end_pos, prev_seq, committed, prev_committed
_LAYOUT: Final = struct.Struct("<8Q")


def stream_identity(name: str, created: str) -> int:
    """A 64-bit id of one incarnation of a stream: its name and creation time."""
    digest = hashlib.blake2b(f"{name}\0{created}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


@dataclass(frozen=True, slots=True)
class CursorRecord:
    """What is kept with the pins (see the module doc)."""

    stream_id: int = 0
    ring_id: int = 0
    #: The last message resolved, once ``end_pos`` is reached.
    seq: int = 0
    #: ``producer_pos`` after ``seq``'s commit; 0 when ``seq`` needs no commit.
    end_pos: int = 0
    #: What holds instead when ``seq``'s commit never happened.
    prev_seq: int = 0
    #: The last message committed (``seq`` itself when it is a commit).
    committed: int = 0
    prev_committed: int = 0

    def pack(self) -> bytes:
        return _LAYOUT.pack(
            _MAGIC,
            self.stream_id,
            self.ring_id,
            self.seq,
            self.end_pos,
            self.prev_seq,
            self.committed,
            self.prev_committed,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> CursorRecord | None:
        """The record, or None for a never-written (all zeros) value."""
        magic, *fields = _LAYOUT.unpack(raw)
        if magic == 0 and not any(fields):
            return None
        if magic != _MAGIC:
            raise ValueError(f"not a ringbridge fleet cursor (magic {magic:#x})")
        return cls(*fields)


RECORD_SIZE: Final = _LAYOUT.size


@dataclass(frozen=True, slots=True)
class Resolution:
    seq: int
    committed: int
    stream_id: int
    #: The recorded message whose commit did not happen (to be committed again), if any.
    undone: int | None = None


def resolve(record: CursorRecord | None, ring_id: int, producer_pos: int) -> Resolution:
    """The rule: where this node is, given the record and the ring it is read with."""
    if record is None:
        return Resolution(0, 0, 0)
    if record.end_pos == 0 or (record.ring_id == ring_id and producer_pos >= record.end_pos):
        return Resolution(record.seq, record.committed, record.stream_id)
    return Resolution(record.prev_seq, record.prev_committed, record.stream_id, record.seq)


class CursorStore(Protocol):
    """Where a node's :class:`CursorRecord` survives the process (with the pins)."""

    def load_cursor(self) -> CursorRecord | None: ...
    def store_cursor(self, record: CursorRecord) -> None: ...


class PinnedCursorStore(Closing):
    """The record in a one-entry array map ringbridge makes and pins at ``path``.

    Works for every backend, a ring pinned by another loader included: it
    needs nothing of the object. Each store is one ``bpf()`` syscall.
    """

    def __init__(self, record: PinnedRecord) -> None:
        self._record = record

    @classmethod
    def open(cls, path: Path) -> PinnedCursorStore:
        return cls(PinnedRecord.open_or_create(path, CURSOR_MAP_NAME, RECORD_SIZE))

    @property
    def path(self) -> Path:
        return self._record.path

    @property
    def map_id(self) -> int:
        """The id of the record's map (what its one-writer lock is keyed by)."""
        return self._record.map_id

    def load_cursor(self) -> CursorRecord | None:
        return CursorRecord.unpack(self._record.load())

    def store_cursor(self, record: CursorRecord) -> None:
        self._record.store(record.pack())

    def close(self) -> None:
        self._record.close()


class Cursor:
    """The node's position in the stream, kept consistent with the ring's commits.

    Single writer: the front door, one message at a time.
    """

    def __init__(self, store: CursorStore, ring_id: int, resolution: Resolution) -> None:
        self._store = store
        self._ring_id = ring_id
        self.seq = resolution.seq
        self.committed = resolution.committed
        self.stream_id = resolution.stream_id
        #: Set by :meth:`open` when the record announced a commit that never happened.
        self.undone = resolution.undone

    @classmethod
    def open(cls, store: CursorStore, ring_id: int, producer_pos: int) -> Cursor:
        """Resolves the stored record against the ring; call before anything commits."""
        res = resolve(store.load_cursor(), ring_id, producer_pos)
        cursor = cls(store, ring_id, res)
        cursor._write_resolved()
        if res.undone is not None:
            log.warning(
                "fleet message recorded but not committed before a crash: it will be committed",
                extra={"stream_seq": res.undone, "resolved_seq": res.seq},
            )
        return cursor

    def _record(self) -> CursorRecord:
        return CursorRecord(
            self.stream_id, self._ring_id, self.seq, 0, self.seq, self.committed, self.committed
        )

    def _write_resolved(self) -> None:
        self._store.store_cursor(self._record())

    def bind_stream(self, stream_id: int) -> bool:
        """Ties the cursor to this incarnation of the stream; False if it was reset.

        A cursor of another incarnation (the stream was deleted and made
        again: sequences start over) restarts at 0.
        """
        if self.stream_id == stream_id:
            return True
        reset = self.stream_id != 0
        if reset:
            log.warning(
                "fleet cursor was kept for another incarnation of the stream: starting over",
                extra={"old_seq": self.seq},
            )
            self.seq = self.committed = 0
        self.stream_id = stream_id
        self._write_resolved()
        return not reset

    def stamp(self, seq: int, end_pos: int) -> None:
        """Records that ``seq``'s commit publishes ``end_pos`` (the ring's before_publish)."""
        if seq <= self.seq:
            raise ValueError(f"stream seq {seq} is not after the cursor's {self.seq}")
        rec = replace(self._record(), seq=seq, end_pos=end_pos, committed=seq)
        self._store.store_cursor(rec)

    def committed_now(self, seq: int) -> None:
        """``seq``'s commit returned: the node is at ``seq``."""
        self.seq = self.committed = seq

    def terminated(self, seq: int) -> None:
        """``seq`` is resolved without a commit (refused for good, or known to be applied
        already): recorded as resolved."""
        if seq <= self.seq:
            raise ValueError(f"stream seq {seq} is not after the cursor's {self.seq}")
        self.seq = seq
        self._write_resolved()
