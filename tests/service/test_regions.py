"""Regions written in place and published in claim order (producer/regions.py), on a real ring.

The rules the data plane relies on, at the producer's API (no HTTP): claims
publish in claim order whatever order they are filled in, with seqs assigned
at publish; a region whose owner left, whose deadline passed or whose hook
refused publishes as DISCARD and takes no seq; a region still receiving
holds back later ones only until it is evicted; regions, batches in line and
direct commits share one order; a stop fails what is still arriving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ringbridge.core.ring import encode_batch
from ringbridge.errors import RingbridgeError, RingTimeoutError, StoppingError
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.producer import regions
from ringbridge.producer.regions import Region
from ringbridge.producer.task import Producer
from ringbridge.ring import EncodedBatch, UserRingBuffer
from ringbridge.wire import Ack

from .conftest import SMALL_RING, eventually, sample

pytestmark = pytest.mark.kernel


def batch(n: int, kind: int) -> EncodedBatch:
    records = encode_batch([sample(kind, kind * 1000 + i) for i in range(n)])
    return EncodedBatch(records, n, len(records), 16 * n)


@dataclass
class Owner:
    """A region's owner that records what became of it."""

    wanted: bool = True
    acks: list[Ack] = field(default_factory=list)
    errors: list[RingbridgeError] = field(default_factory=list)
    evicted: list[bytes] = field(default_factory=list)
    received: int = 0  # bytes "arrived" so far, copied out on eviction
    arriving: bool = False  # more bytes wait in the socket
    region: Region | None = None
    producer: Producer | None = None

    def region_published(self, region: Region, ack: Ack) -> None:
        self.acks.append(ack)

    def region_failed(self, region: Region, exc: RingbridgeError) -> None:
        self.errors.append(exc)

    def region_evict(self, region: Region) -> None:
        assert self.producer is not None
        self.evicted.append(bytes(self.producer.view(region)[: self.received]))


@pytest.fixture
def loaded(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadedRingbridge]:
    with load_default(bpf_object_path, pin_dir, SMALL_RING) as lr:
        lr.disarm_timer()  # nothing drains unless the test does
        yield lr


@pytest.fixture
async def producer(loaded: LoadedRingbridge) -> AsyncIterator[Producer]:
    with UserRingBuffer(loaded.ring_fd) as ring:
        p = Producer(ring, admission_bytes=SMALL_RING)
        p.start()
        yield p
        await p.stop(1)


def fill(p: Producer, region: Region, b: EncodedBatch) -> None:
    p.view(region)[:] = b.records
    p.ready(region, b.count, b.payload_bytes)


async def test_regions_publish_in_claim_order_with_seqs_at_publish(
    producer: Producer, loaded: LoadedRingbridge
) -> None:
    p = producer
    a, b, c = batch(3, 1), batch(2, 2), batch(1, 3)
    oa, ob, oc = Owner(), Owner(), Owner()
    ra = p.claim(a.nbytes, p.admit(a.nbytes, 5), oa)
    rb = p.claim(b.nbytes, p.admit(b.nbytes, 5), ob)
    rc = p.claim(c.nbytes, p.admit(c.nbytes, 5), oc)
    assert ra is not None and rb is not None and rc is not None
    fill(p, rc, c)
    fill(p, rb, b)
    assert p.ring.producer_pos == 0 and not ob.acks and not oc.acks
    fill(p, ra, a)  # the head: all three publish, in claim order, one store
    assert [o.acks[0].first_seq for o in (oa, ob, oc)] == [0, 3, 5]
    assert p.ring.producer_pos == a.nbytes + b.nbytes + c.nbytes
    assert loaded.drain() == 6
    kc = loaded.read_counters()
    assert [kc.kind_count[k] for k in (1, 2, 3)] == [3, 2, 1]
    assert p.admission.in_use == 0


async def test_a_region_whose_owner_left_or_whose_deadline_passed_takes_no_seq(
    producer: Producer, loaded: LoadedRingbridge
) -> None:
    p = producer
    gone, late, ok, after = Owner(), Owner(), Owner(), Owner()
    b = batch(2, 4)
    regs = [p.claim(b.nbytes, p.admit(b.nbytes, t), o) for o, t in
            ((gone, 5), (late, 0.01), (ok, 5), (after, 5))]  # fmt: skip
    assert all(r is not None for r in regs)
    await asyncio.sleep(0.05)  # late's deadline passes
    gone.wanted = False
    for r in regs:
        assert r is not None
        fill(p, r, b)
    assert not gone.acks and not gone.errors  # it left: nobody to tell
    assert isinstance(late.errors[0], RingTimeoutError) and not late.acks
    assert (ok.acks[0].first_seq, after.acks[0].first_seq) == (0, 2)
    # Both refused regions are in the ring as DISCARD records, skipped.
    assert p.ring.producer_pos == 4 * b.nbytes
    assert loaded.drain() == 4
    assert loaded.read_counters().kind_count[4] == 4
    st = p.statistics()
    assert st.discarded_bytes == 2 * b.nbytes and st.batches_failed == {"ring_full_timeout": 1}


async def test_a_region_of_several_batches_acks_each_in_order(
    producer: Producer, loaded: LoadedRingbridge
) -> None:
    """``ready(parts=...)`` (frames read ahead together): each batch its own
    ack -- seqs, ring positions -- counted as a batch; one deadline for all."""
    p = producer
    a, b, c = batch(3, 6), batch(1, 7), batch(2, 8)
    oa, ob, oc = Owner(), Owner(), Owner()
    n = a.nbytes + b.nbytes + c.nbytes
    first = p.claim(a.nbytes, p.admit(a.nbytes, 5), Owner())
    assert first is not None
    fill(p, first, a)
    r = p.claim(n, p.admit(n, 5), oa)
    assert r is not None
    p.view(r)[:] = a.records + b.records + c.records
    parts = [(o, x.nbytes, x.count, x.payload_bytes) for o, x in ((oa, a), (ob, b), (oc, c))]
    p.ready(r, 6, a.payload_bytes + b.payload_bytes + c.payload_bytes, parts=parts)
    acks = [o.acks[0] for o in (oa, ob, oc)]
    assert [(k.accepted, k.first_seq, k.last_seq) for k in acks] == [
        (3, 3, 5),
        (1, 6, 6),
        (2, 7, 8),
    ]
    start = a.nbytes
    assert [(k.ring_start_pos, k.ring_end_pos) for k in acks] == [
        (start, start + a.nbytes),
        (start + a.nbytes, start + a.nbytes + b.nbytes),
        (start + a.nbytes + b.nbytes, start + n),
    ]
    st = p.statistics()
    assert (st.batches_committed, st.samples_committed) == (4, 9)
    assert p.admission.in_use == 0
    assert loaded.drain() == 9
    kc = loaded.read_counters()
    assert [kc.kind_count[k] for k in (6, 7, 8)] == [6, 1, 2]
    # Past its deadline, every batch of it fails; none takes a seq.
    late = [Owner(), Owner()]
    r = p.claim(2 * b.nbytes, p.admit(2 * b.nbytes, 0.01), late[0])
    assert r is not None
    await asyncio.sleep(0.05)
    p.view(r)[:] = b.records + b.records
    p.ready(r, 2, 2 * b.payload_bytes, parts=[(o, b.nbytes, 1, b.payload_bytes) for o in late])
    assert all(isinstance(o.errors[0], RingTimeoutError) and not o.acks for o in late)
    assert p.statistics().batches_failed == {"ring_full_timeout": 2}


async def test_a_refused_region_at_the_end_is_given_back(producer: Producer) -> None:
    p = producer
    b = batch(1, 5)
    o = Owner()
    r = p.claim(b.nbytes, p.admit(b.nbytes, 5), o)
    assert r is not None
    p.view(r)[:] = b"\xff" * b.nbytes
    p.discard(r)
    # Nothing claimed after it: producer_pos does not move, the room is back.
    assert (p.ring.producer_pos, p.ring.claimed_pos) == (0, 0)
    assert p.admission.in_use == 0


async def test_a_straggler_is_evicted_and_holds_the_others_back_only_briefly(
    producer: Producer, loaded: LoadedRingbridge
) -> None:
    p = producer
    slow, fast = Owner(producer=p), Owner()
    bs, bf = batch(4, 6), batch(1, 7)
    rs = p.claim(bs.nbytes, p.admit(bs.nbytes, 5), slow)
    rf = p.claim(bf.nbytes, p.admit(bf.nbytes, 5), fast)
    assert rs is not None and rf is not None
    p.view(rs)[:16] = bs.records[:16]
    slow.received = 16  # 16 bytes arrived, then the client stalls
    fill(p, rf, bf)
    assert not fast.acks
    await eventually(lambda: bool(fast.acks), timeout=2, what="the fast region published")
    assert slow.evicted == [bs.records[:16]]
    assert fast.acks[0].first_seq == 0  # the straggler took no seq
    assert p.ring.producer_pos == bs.nbytes + bf.nbytes  # its space went as DISCARD
    # The straggler's body goes on in memory and into line: it commits after.
    sub = p.line_up(bs, p.admit(bs.nbytes, 5))
    ack = await sub.future
    assert ack.first_seq == 1
    assert loaded.drain() == 5


async def test_a_region_whose_bytes_wait_in_its_socket_is_not_evicted(
    producer: Producer, loaded: LoadedRingbridge
) -> None:
    """Its client is not slow, the event loop is behind: evicting it would only
    move its bytes into memory. Evicted once nothing more is arriving."""
    p = producer
    busy, fast = Owner(producer=p, arriving=True), Owner()
    bb, bf = batch(4, 6), batch(1, 7)
    rb = p.claim(bb.nbytes, p.admit(bb.nbytes, 5), busy)
    rf = p.claim(bf.nbytes, p.admit(bf.nbytes, 5), fast)
    assert rb is not None and rf is not None
    p.view(rb)[:16] = bb.records[:16]
    busy.received = 16
    fill(p, rf, bf)
    await asyncio.sleep(20 * regions.EVICT_AFTER)
    assert not busy.evicted and not fast.acks  # held back, in place
    busy.arriving = False  # the socket ran dry: now it is a straggler
    await eventually(lambda: bool(fast.acks), timeout=2, what="the fast region published")
    assert busy.evicted == [bb.records[:16]]
    assert fast.acks[0].first_seq == 0
    assert loaded.drain() == 1


async def test_batches_in_line_and_regions_share_one_order(
    producer: Producer, loaded: LoadedRingbridge
) -> None:
    p = producer
    head, o = batch(1, 8), Owner()
    r = p.claim(head.nbytes, p.admit(head.nbytes, 5), o)
    assert r is not None
    # A batch in line while the region receives: claimed after it, so
    # published after it even though its bytes are all there.
    lined = asyncio.ensure_future(p.submit(batch(2, 9), p.admit(96, 5)))
    await asyncio.sleep(0.001)
    assert p.statistics().regions_pending == 2 and not lined.done()
    fill(p, r, head)
    ack = await lined
    assert (o.acks[0].first_seq, ack.first_seq) == (0, 1)
    assert loaded.drain() == 3


async def test_nothing_is_claimed_past_a_batch_waiting_for_space(
    producer: Producer, loaded: LoadedRingbridge
) -> None:
    p = producer
    big = batch(2000, 11)  # 48,000 bytes: fits the 64 KiB ring once
    first = await p.submit(big, p.admit(big.nbytes, 5))
    waiting = asyncio.ensure_future(p.submit(big, p.admit(big.nbytes, 5)))
    await eventually(lambda: p.statistics().ring_full_waits == 1, what="the batch to wait")
    small = batch(1, 12)
    # Room for it now, but it would overtake the waiting batch: in line it goes.
    assert p.claim(small.nbytes, p.admit(small.nbytes, 5), Owner()) is None
    later = asyncio.ensure_future(p.submit(small, p.admit(small.nbytes, 5)))
    await asyncio.sleep(0.01)
    assert not waiting.done() and not later.done()
    assert loaded.drain() == 2000
    second, third = await waiting, await later
    assert (first.first_seq, second.first_seq, third.first_seq) == (0, 2000, 4000)
    assert loaded.drain() == 2001


async def test_a_stop_fails_what_still_arrives(producer: Producer) -> None:
    p = producer
    o, done = Owner(), Owner()
    b = batch(1, 10)
    r = p.claim(b.nbytes, p.admit(b.nbytes, 5), o)
    r2 = p.claim(b.nbytes, p.admit(b.nbytes, 5), done)
    assert r is not None and r2 is not None
    fill(p, r2, b)
    await p.stop(0.1)
    assert isinstance(o.errors[0], StoppingError)
    # The one received whole behind it was published, not lost.
    assert done.acks and done.acks[0].first_seq == 0
    assert p.admission.in_use == 0


def test_evict_after_is_short() -> None:
    # A slow client may hold the others back this long at most (the tests
    # above wait on it): milliseconds, not a body timeout.
    assert regions.EVICT_AFTER <= 0.01
