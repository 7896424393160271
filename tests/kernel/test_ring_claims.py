"""Claims (ringbridge.ring.claims) against the kernel's drain, on rings bpftool made.

What is claimed is invisible until published; claims publish in order with
one store; a claim covered with DISCARD records is skipped by the kernel (one
record per 16 MiB: even a DISCARD record must pass the kernel's size check);
claims given back were never visible; reservations and batch commits refuse
to land behind unpublished claims; a producer that dies holding claims
leaves nothing the kernel reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from ringbridge.core import ring as core
from ringbridge.ring import InvalidBatchError, RingFullError, UserRingBuffer
from tests.support.bpftool_ring import BpftoolRing

pytestmark = pytest.mark.kernel

SAMPLE = struct.Struct("<IIQ")


@pytest.fixture
def br() -> Iterator[BpftoolRing]:
    with BpftoolRing(64 * 1024) as ring:
        yield ring


def records(kind: int, *values: int) -> bytes:
    return core.encode_batch([SAMPLE.pack(kind, 0, v) for v in values])


def test_a_claim_is_invisible_until_published_and_claims_publish_in_order(
    br: BpftoolRing,
) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        a, b = records(1, 10, 11), records(2, 20)
        pa = rb.claim(len(a))
        pb = rb.claim(len(b))
        assert (pa, pb, rb.claimed_pos) == (0, len(a), len(a) + len(b))
        # Filled out of order: b first, a later.
        rb.claim_view(pb, len(b))[:] = b
        assert rb.producer_pos == 0
        assert br.drain() == 0, "the kernel read claimed, unpublished space"
        rb.claim_view(pa, len(a))[:] = a
        rb.publish(pa + len(a))
        assert br.drain() == 2
        rb.publish(pb + len(b))
        assert br.drain() == 1
        c = br.counters()
        assert (c.kind_count[1], c.kind_value[1], c.kind_count[2], c.kind_value[2]) == (
            2, 21, 1, 20,
        )  # fmt: skip
        assert rb.statistics().claimed_bytes == 0


def test_a_discarded_claim_is_skipped_and_the_ring_stays_healthy(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        bad = rb.claim(4096)
        # Whatever landed there (garbage a client sent) is never read.
        rb.claim_view(bad, 4096)[:] = b"\xff" * 4096
        good = records(3, 30)
        pg = rb.claim(len(good))
        rb.claim_view(pg, len(good))[:] = good
        rb.discard_claim(bad, 4096)
        rb.publish(pg + len(good))
        assert br.drain() == 1
        c = br.counters()
        assert (c.samples, c.kind_value[3]) == (1, 30)
        assert sum(c.drain_errors.values()) == 0
        assert rb.consumer_pos() == rb.producer_pos == 4096 + len(good)


def test_a_discarded_claim_larger_than_the_dynptr_limit_is_cut_in_records() -> None:
    # 32 MiB of ring, one 24 MiB claim discarded: one DISCARD record of it
    # would be -E2BIG for the kernel (it checks sizes before the DISCARD bit)
    # and poison the ring.
    size = 32 << 20
    assert core.MAX_DISCARD_SPAN < 24 << 20 <= size
    with BpftoolRing(size) as ring, UserRingBuffer.from_pin(ring.ring_pin) as rb:
        pos = rb.claim(24 << 20)
        rb.discard_claim(pos, 24 << 20)
        tail = records(4, 40)
        pt = rb.claim(len(tail))
        rb.claim_view(pt, len(tail))[:] = tail
        rb.publish(pt + len(tail))
        assert ring.drain() == 1
        c = ring.counters()
        assert sum(c.drain_errors.values()) == 0 and c.kind_value[4] == 40
        assert rb.consumer_pos() == rb.producer_pos


def test_claims_given_back_were_never_visible(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        p = rb.claim(1024)
        rb.claim_view(p, 1024)[:] = b"\xee" * 1024
        rb.unclaim(p)
        assert rb.claimed_pos == rb.producer_pos == 0
        ok = records(5, 50)
        rb.commit_batch(ok)  # no claims pending: a commit publishes at once
        assert br.drain() == 1 and br.counters().kind_value[5] == 50


def test_claimed_space_counts_as_used(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        rb.claim(60 * 1024)
        with pytest.raises(RingFullError):
            rb.claim(8 * 1024)
        assert rb.claim(4 * 1024) == 60 * 1024


def test_reserve_and_commit_refuse_to_land_behind_unpublished_claims(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        p = rb.claim(64)
        with pytest.raises(InvalidBatchError, match="unpublished"):
            rb.commit_batch(records(1, 1))
        with pytest.raises(InvalidBatchError, match="unpublished"):
            rb.reserve(16)
        with pytest.raises(InvalidBatchError):
            rb.claim(12)  # not a multiple of 8
        with pytest.raises(InvalidBatchError):
            rb.publish(p + 128)  # past what is claimed
        rb.discard_claim(p, 64)
        rb.publish(p + 64)
        with rb.reserve(16) as view:
            view[:] = SAMPLE.pack(6, 0, 60)
        assert br.drain() == 1


def test_a_producer_gone_with_claims_leaves_nothing_to_read(br: BpftoolRing) -> None:
    rb = UserRingBuffer.from_pin(br.ring_pin)
    done = records(7, 70)
    p = rb.claim(len(done))
    rb.claim_view(p, len(done))[:] = done
    rb.publish(p + len(done))
    half = rb.claim(512)
    rb.claim_view(half, 256)[:] = b"\xab" * 256  # a body half received
    rb.close()  # the process dies here: no publish
    with UserRingBuffer.from_pin(br.ring_pin) as again:
        assert again.producer_pos == len(done)
        assert again.recovered_busy == 0
        again.commit_batch(records(8, 80))
    assert br.drain() == 2
    c = br.counters()
    assert (c.samples, c.kind_value[7], c.kind_value[8]) == (2, 70, 80)
    assert sum(c.drain_errors.values()) == 0
