"""Claimed ring space, published in claim order: the one place ``producer_pos`` moves.

Every batch lands in the ring through a :class:`Region`: space claimed after
every earlier claim (``UserRingBuffer.claim``, :mod:`ringbridge.ring.claims`), filled in place, then
published. Two kinds of writer fill regions, both on the event loop's thread:

- the producer task, for batches that waited in line (decoded elsewhere:
  WebSocket text frames, the fleet front door, bodies that could not go
  straight in): it claims, copies the records in and marks the region ready
  at once;
- the data plane (:mod:`ringbridge.api.dataplane`), which claims a region
  when a body's or frame's length is known and lets the socket's bytes land
  in it; the region is ready once the whole payload arrived and validated,
  or it is discarded.

:meth:`Publisher.publish` walks the regions from the oldest and stops at the
first one still receiving: everything before it is published with **one**
release store of ``producer_pos``. That is the whole ordering argument:

- *Order.* Regions publish in claim order; seqs are assigned at publish, in
  that order, so they are contiguous in ring order whatever order the
  regions were filled in.
- *All or nothing, never poisoned.* A region is published either as the
  validated records written into it, or covered with DISCARD records
  (``core.discard_headers``) that the kernel skips -- an invalid body, a
  client gone, a deadline passed, a hook that refused. Nothing unvalidated
  is ever behind ``producer_pos``.
- *Exactly once.* A region publishes as data only if its owner still wants
  it at that moment (``owner.wanted``): a client that left, or whose
  deadline passed, gets no ack, and its region becomes DISCARD -- a resend
  cannot duplicate it. An owner told "published" has its samples in the
  ring (the ack follows the store). A crash before the store leaves the
  claims unpublished: the next producer starts at ``producer_pos`` and
  overwrites them.
- *Seqs survive restarts.* The next seq is stored (``SeqStore``) before the
  store of ``producer_pos``: a crash between leaves a gap, never a seq twice.

Head of line: a region still receiving holds back every later one. A
region that blocks a ready one for :data:`EVICT_AFTER` seconds is *evicted*:
its owner copies what arrived out of the ring (``owner.region_evict``), the
region becomes DISCARD, and the owner finishes that body in memory and puts
it in line. A slow client costs the others at most that delay. One whose
next bytes already wait in its socket (``owner.arriving``) is not slow --
the event loop is behind, busy with other connections -- and is left to
finish in place: evicting it would only move its bytes into memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ..errors import RingbridgeError, RingFullError, RingTimeoutError
from ..ring import UserRingBuffer
from ..wire import Ack
from .admission import Credit
from .contract import BeforeCommit, SeqStore
from .kick import DrainTrigger
from .loopref import LoopRef
from .owner import Part, RegionOwner

log = logging.getLogger("ringbridge.producer")

#: How long a region still receiving may hold back a ready one before it is
#: evicted to memory (see the module docstring). A 256 KiB body over
#: loopback arrives in well under this; a trickling client does not.
EVICT_AFTER: Final = 0.005

RECEIVING: Final = 0
READY: Final = 1
DISCARD: Final = 2


class Region:
    """Claimed ring space ``[pos, end)`` and what became of it."""

    __slots__ = (
        "before_commit",
        "claimed_at",
        "count",
        "credit",
        "end",
        "nbytes",
        "owner",
        "parts",
        "payload_bytes",
        "pos",
        "started",
        "state",
    )

    def __init__(
        self,
        pos: int,
        nbytes: int,
        owner: RegionOwner,
        credit: Credit,
        before_commit: BeforeCommit | None,
        claimed_at: float,
        started: float,
    ) -> None:
        self.pos = pos
        self.nbytes = nbytes
        self.end = pos + nbytes
        self.owner = owner
        # None once an evicted region's owner took its credit back.
        self.credit: Credit | None = credit
        self.before_commit = before_commit
        self.claimed_at = claimed_at  # loop time
        # perf_counter() when the batch arrived, for the commit latency
        # (uvloop's loop.time() is libuv's whole milliseconds: too coarse).
        self.started = started
        self.state = RECEIVING
        self.count = 0
        self.payload_bytes = 0
        # Batches that follow one another in the region, each its owner's:
        # (owner, ring bytes, records, payload bytes); None: one batch, owner's.
        self.parts: Sequence[Part] | None = None


@dataclass
class CommitCounts:
    """What the producer committed and refused (its statistics' raw numbers)."""

    batches: int = 0
    samples: int = 0
    bytes: int = 0  # payload bytes, comparable to the kernel's byte counter
    ring_bytes: int = 0  # with headers and padding
    discarded_bytes: int = 0  # ring space published as DISCARD
    abandoned: int = 0  # submitter gone before the commit: not committed
    failed: Counter[str] = field(default_factory=Counter)  # by error code


class Publisher:
    """The regions of one ring, their seqs and their publication (one loop only)."""

    def __init__(
        self,
        ring: UserRingBuffer,
        counts: CommitCounts,
        *,
        seq_store: SeqStore | None = None,
        kick: DrainTrigger | None = None,
        on_commit: Callable[[float, Ack], None] | None = None,
        loop: LoopRef | None = None,
    ) -> None:
        self._ring = ring
        self._counts = counts
        self._seq_store = seq_store
        self._kick = kick
        self._on_commit = on_commit
        self._regions: deque[Region] = deque()
        self._evict_timer: asyncio.TimerHandle | None = None
        self._loop = loop or LoopRef()
        self.next_seq = seq_store.load_seq() if seq_store is not None else 0
        #: The first seq of the region whose ``before_commit`` runs (read it there
        #: only): what an idempotency key records (``producer.keys``).
        self.hook_seq = self.next_seq

    def __len__(self) -> int:
        return len(self._regions)

    def _time(self) -> float:
        """The event loop's clock (the credits' deadlines are in it)."""
        return self._loop.get().time()

    # -- claiming ----------------------------------------------------------------

    def claim(
        self,
        nbytes: int,
        owner: RegionOwner,
        credit: Credit,
        before_commit: BeforeCommit | None = None,
        started: float | None = None,
    ) -> Region:
        """A region of ``nbytes`` after every other; RingFullError when there is no room.

        ``started``: when the batch arrived (``time.perf_counter()``; default now).
        """
        pos = self._ring.claim(nbytes)
        loop_now = self._time()
        t0 = time.perf_counter() if started is None else started
        region = Region(pos, nbytes, owner, credit, before_commit, loop_now, t0)
        self._regions.append(region)
        return region

    def view(self, region: Region) -> memoryview:
        return self._ring.claim_view(region.pos, region.nbytes)

    def address(self, region: Region) -> int:
        return self._ring.claim_address(region.pos)

    def split(
        self, region: Region, nbytes: int, owner: RegionOwner, credit: Credit, started: float
    ) -> Region:
        """The first ``nbytes`` of ``region`` (still receiving) as a region of
        their own, just before it in the line, for ``owner`` with ``credit``;
        ``region`` keeps the rest (a batch read ahead into its space)."""
        if not 0 < nbytes < region.nbytes or nbytes % 8 or region.state != RECEIVING:
            raise ValueError(f"cannot split {nbytes} bytes off a region of {region.nbytes}")
        front = Region(region.pos, nbytes, owner, credit, None, region.claimed_at, started)
        region.pos += nbytes
        region.nbytes -= nbytes
        regions = self._regions
        # Read ahead into the last claim, as a rule: look there first.
        i = len(regions) - 1 if regions[-1] is region else regions.index(region)
        regions.insert(i, front)
        return front

    def ready(
        self,
        region: Region,
        count: int,
        payload_bytes: int,
        publish: bool = True,
        parts: Sequence[Part] | None = None,
    ) -> None:
        """The region holds ``count`` validated records (``parts``: as several
        batches, in order): publish what can be (now, or at the next
        :meth:`publish` of the caller's)."""
        region.state = READY
        region.count = count
        region.payload_bytes = payload_bytes
        region.parts = parts
        if publish:
            self.publish()

    def extend(self, region: Region, nbytes: int) -> bool:
        """Claim ``nbytes`` more right after ``region`` (still receiving) and make
        them its own: False, nothing claimed, unless it is the last claim and
        the ring has the room (RingFullError is not raised: the caller goes on
        without)."""
        if (
            region.state != RECEIVING
            or self._regions[-1] is not region
            or self._ring.claimed_pos != region.end
        ):
            return False
        try:
            self._ring.claim(nbytes)
        except RingFullError:
            return False
        region.nbytes += nbytes
        region.end += nbytes
        return True

    def give_back(self, region: Region) -> None:
        """Space claimed and not needed after all (read ahead; nothing came):
        given back when no claim follows it, else DISCARD in its turn."""
        regions = self._regions
        if regions and regions[-1] is region and self._ring.claimed_pos == region.end:
            regions.pop()
            self._ring.unclaim(region.pos)
            if region.credit is not None:
                region.credit.release()
            return
        region.state = DISCARD

    def discard(self, region: Region, publish: bool = True) -> None:
        """The region must never be read (its owner refused it, or left)."""
        region.state = DISCARD
        if publish:
            self.publish()

    # -- publishing ----------------------------------------------------------------

    def publish(self) -> None:
        """Publish every region before the first still receiving (one store)."""
        regions = self._regions
        if not regions or regions[0].state == RECEIVING:
            self._watch_head()
            return
        ring = self._ring
        now = self._time()  # the credits' clock
        seq = self.next_seq
        done: list[tuple[Region, int, RingbridgeError | None]] = []
        while regions and regions[0].state != RECEIVING:
            r = regions.popleft()
            error: RingbridgeError | None = None
            if r.state == READY and r.owner.wanted:
                if r.credit is not None and now >= r.credit.deadline:
                    error = RingTimeoutError(
                        "batch not committed within its timeout (counted from admission): "
                        "it waited behind a batch still arriving"
                    )
                elif r.before_commit is not None:
                    self.hook_seq = seq
                    try:
                        r.before_commit(r.end)
                    except RingbridgeError as exc:
                        error = exc
                if error is None:
                    done.append((r, seq, None))
                    seq += r.count
                    continue
            r.state = DISCARD
            done.append((r, -1, error))
        # Discarded regions at the very end of what is claimed are given back
        # instead (nothing after them needs them published): the ring keeps
        # the room and producer_pos does not move for a batch that failed.
        end = done[-1][0].end
        if not regions:
            keep = len(done)
            while keep and done[keep - 1][1] < 0:
                keep -= 1
            if keep < len(done):
                end = done[keep - 1][0].end if keep else done[0][0].pos
                ring.unclaim(end)
        for r, first, _ in done:
            if first < 0 and r.end <= end:
                ring.discard_claim(r.pos, r.nbytes)
        if seq != self.next_seq and self._seq_store is not None:
            # Before the publish: a crash in between leaves a gap in the
            # seqs, never a seq given to two samples.
            self._seq_store.store_seq(seq)
        if end > ring.producer_pos:
            ring.publish(end)
            if self._kick is not None:
                self._kick.request()
        self.next_seq = seq
        for r, first, error in done:
            self._settle(r, first, error)
        self._watch_head()

    def _settle(self, r: Region, first: int, error: RingbridgeError | None) -> None:
        if r.credit is not None:
            r.credit.release()
        if r.parts is None:
            self._settled(r, r.owner, r.pos, r.end, r.count, r.payload_bytes, first, error)
            return
        pos = r.pos
        for owner, nbytes, count, payload in r.parts:  # each batch its own ack, in order
            self._settled(r, owner, pos, pos + nbytes, count, payload, first, error)
            pos += nbytes
            first += count if first >= 0 else 0

    def _settled(  # one batch: its ack, or its failure
        self, r: Region, owner: RegionOwner, pos: int, end: int, count: int, payload: int,
        first: int, error: RingbridgeError | None,
    ) -> None:  # fmt: skip
        c = self._counts
        if first < 0:
            c.discarded_bytes += end - pos
            if error is not None:
                c.failed[error.code] += 1
                owner.region_failed(r, error)
            return
        ack = Ack(
            accepted=count, first_seq=first, last_seq=first + count - 1,
            ring_start_pos=pos, ring_end_pos=end,
        )  # fmt: skip
        c.batches += 1
        c.samples += count
        c.bytes += payload
        c.ring_bytes += end - pos
        owner.region_published(r, ack)
        if self._on_commit is not None:
            try:
                self._on_commit(time.perf_counter() - r.started, ack)
            except Exception:
                log.exception("commit observer failed")

    # -- the head of the line ----------------------------------------------------------

    def _watch_head(self) -> None:
        """Arm the eviction check while a receiving region holds back later ones."""
        regions = self._regions
        if self._evict_timer is not None or len(regions) < 2 or regions[0].state != RECEIVING:
            return
        loop = self._loop.get()
        self._evict_timer = loop.call_at(loop.time() + EVICT_AFTER, self._evict_stragglers)

    def _evict_stragglers(self) -> None:
        self._evict_timer = None
        regions = self._regions
        if not regions or regions[0].state != RECEIVING:
            return
        # Regions behind which something waits: every one before the last
        # that is not receiving any more.
        last = max((i for i, r in enumerate(regions) if r.state != RECEIVING), default=-1)
        due = self._time() - EVICT_AFTER
        evicted = 0
        for r in list(regions)[:last]:
            if r.state == RECEIVING and r.claimed_at <= due and not r.owner.arriving:
                r.owner.region_evict(r)
                r.state = DISCARD
                r.credit = None  # the owner's again, for the copy it now holds
                evicted += 1
        if evicted:
            self.publish()
        else:
            self._watch_head()

    def fail_receiving(self, exc: RingbridgeError) -> int:
        """Every region still receiving ends as DISCARD for ``exc`` (shutdown); how many."""
        n = 0
        for r in self._regions:
            if r.state == RECEIVING:
                r.state = DISCARD
                self._counts.failed[exc.code] += 1
                r.owner.region_failed(r, exc)
                n += 1
        if self._regions:
            self.publish()
        return n

    def close(self) -> None:
        if self._evict_timer is not None:
            self._evict_timer.cancel()
            self._evict_timer = None
