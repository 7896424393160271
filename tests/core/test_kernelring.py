"""The kernel ring buffer consumer's record walk, over a model of the ring.

The walk (ringbridge.core.kernelring.consume) has no I/O: here it runs over a
bytearray that a model of the kernel's producer (reserve: header BUSY and
producer_pos advanced; commit: BUSY cleared, maybe DISCARD) writes into,
with every access recorded, so the ordering points are checked too. The
same walk over the real mmapped ring is tested in tests/kernel/test_eventring.py.
"""

from __future__ import annotations

import struct
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbridge.core import kernelring
from ringbridge.core import ring as core
from ringbridge.errors import RingCorruptError

_U32 = struct.Struct("<I")


class ModelRing:
    """A kernel ring buffer of ``size`` bytes and the kernel's producer side."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.data = bytearray(size)
        self.prod = 0
        self.cons = 0
        self.log: list[tuple[str, int]] = []

    # -- the kernel's side ----------------------------------------------------

    def reserve(self, payload: bytes) -> int:
        pos = self.prod
        need = core.record_size(len(payload))
        assert self.size - (self.prod - self.cons) >= need, "model ring full"
        self._write(pos, _U32.pack(len(payload) | core.BUSY_BIT) + b"\xaa\xbb\xcc\xdd")
        self._write(pos + core.HDR_SIZE, payload)
        self.prod += need
        return pos

    def commit(self, pos: int, *, discard: bool = False) -> None:
        (word,) = _U32.unpack(self._read(pos, 4))
        word &= ~core.BUSY_BIT
        if discard:
            word |= core.DISCARD_BIT
        self._write(pos, _U32.pack(word))

    def output(self, payload: bytes, *, discard: bool = False) -> None:
        self.commit(self.reserve(payload), discard=discard)

    def _write(self, pos: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.data[(pos + i) % self.size] = b

    def _read(self, pos: int, n: int) -> bytes:
        return bytes(self.data[(pos + i) % self.size] for i in range(n))

    # -- RingAccess (what the mmapped ring gives the walk) --------------------

    def load_producer(self) -> int:
        self.log.append(("load_producer", self.prod))
        return self.prod

    def load_header(self, pos: int) -> int:
        self.log.append(("load_header", pos))
        (word,) = _U32.unpack(self._read(pos, 4))
        return int(word)

    def read(self, pos: int, length: int) -> bytes:
        return self._read(pos, length)

    def store_consumer(self, pos: int) -> None:
        self.log.append(("store_consumer", pos))
        self.cons = pos

    def fence(self) -> None:
        self.log.append(("fence", 0))


def test_empty_ring_gives_nothing_and_looks_twice_around_a_fence() -> None:
    r = ModelRing()
    p = kernelring.consume(r, r.size, 0, 100)
    assert p.records == [] and p.consumer_pos == 0 and not p.busy and not p.more
    assert r.log == [("load_producer", 0), ("fence", 0), ("load_producer", 0)]


def test_committed_records_come_out_in_order_and_consumer_pos_follows_each() -> None:
    r = ModelRing()
    payloads = [b"a", b"", b"0123456789abcdef", b"xyz" * 7]
    for pl in payloads:
        r.output(pl)
    p = kernelring.consume(r, r.size, 0, 100)
    assert p.records == payloads
    assert p.payload_bytes == sum(map(len, payloads))
    assert p.consumer_pos == r.prod == r.cons
    stores = [v for op, v in r.log if op == "store_consumer"]
    assert stores == list(accumulate(core.record_size(len(pl)) for pl in payloads))
    # Each header is read before consumer_pos moves past it.
    ops = [op for op, _ in r.log]
    assert ops.index("load_header") < ops.index("store_consumer")


def test_discarded_records_are_skipped_and_counted() -> None:
    r = ModelRing()
    r.output(b"keep1")
    r.output(b"drop", discard=True)
    r.output(b"keep2")
    p = kernelring.consume(r, r.size, 0, 100)
    assert p.records == [b"keep1", b"keep2"] and p.discarded == 1
    assert p.consumer_pos == r.prod


def test_a_busy_record_stops_the_walk_until_it_is_committed() -> None:
    r = ModelRing()
    r.output(b"first")
    held = r.reserve(b"second")
    r.output(b"third")  # committed, but behind a BUSY one
    p = kernelring.consume(r, r.size, 0, 100)
    assert p.records == [b"first"] and p.busy
    assert p.consumer_pos == held == r.cons
    # Before giving up on the BUSY header: a fence, then a second look.
    tail = r.log[-3:]
    assert tail == [("load_header", held), ("fence", 0), ("load_header", held)]
    r.commit(held)
    p2 = kernelring.consume(r, r.size, p.consumer_pos, 100)
    assert p2.records == [b"second", b"third"] and not p2.busy
    assert p2.consumer_pos == r.prod


def test_budget_stops_early_and_says_more() -> None:
    r = ModelRing()
    for i in range(10):
        r.output(bytes([i]) * 3)
    p = kernelring.consume(r, r.size, 0, 4)
    assert [x[0] for x in p.records] == [0, 1, 2, 3] and p.more
    p = kernelring.consume(r, r.size, p.consumer_pos, 100)
    assert [x[0] for x in p.records] == list(range(4, 10)) and not p.more


def test_records_published_during_the_walk_are_taken_in_the_same_pass() -> None:
    class Racing(ModelRing):
        extra = 3

        def load_producer(self) -> int:
            if self.extra and self.log and self.log[-1][0] == "fence":
                self.extra -= 1
                self.output(b"late%d" % self.extra)
            return super().load_producer()

    r = Racing()
    r.output(b"early")
    p = kernelring.consume(r, r.size, 0, 100)
    assert p.records == [b"early", b"late2", b"late1", b"late0"]
    assert p.consumer_pos == r.prod


def test_records_that_wrap_around_the_end_come_out_whole() -> None:
    r = ModelRing(4096)
    cons = 0
    seen: list[bytes] = []
    want: list[bytes] = []
    for i in range(300):
        pl = bytes([i % 251]) * (i % 57)
        r.output(pl)
        want.append(pl)
        if i % 7 == 6:
            p = kernelring.consume(r, r.size, cons, 1000)
            seen += p.records
            cons = p.consumer_pos
    seen += kernelring.consume(r, r.size, cons, 1000).records
    assert seen == want and r.prod > 2 * r.size


@pytest.mark.parametrize(
    ("cons", "prod"),
    [(0, 4), (8, 0), (0, 4096 + 8), (4, 12)],
)
def test_inconsistent_positions_are_refused(cons: int, prod: int) -> None:
    r = ModelRing(4096)
    r.prod = prod
    with pytest.raises(RingCorruptError, match="inconsistent"):
        kernelring.consume(r, r.size, cons, 10)


def test_a_record_running_past_producer_pos_is_refused() -> None:
    r = ModelRing(4096)
    r.output(b"x" * 8)
    r.data[0:4] = _U32.pack(100)  # claims more than was published
    with pytest.raises(RingCorruptError, match="past producer_pos"):
        kernelring.consume(r, r.size, 0, 10)


ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("out"), st.binary(max_size=90), st.booleans()),
        st.tuples(st.just("read"), st.integers(1, 20), st.just(False)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops_st)
def test_any_interleaving_delivers_every_committed_record_once_in_order(
    ops: list[tuple[str, object, bool]],
) -> None:
    r = ModelRing(2048)
    cons = 0
    want: list[bytes] = []
    got: list[bytes] = []
    for op, arg, discard in ops:
        if op == "out":
            assert isinstance(arg, bytes)
            if r.size - (r.prod - cons) < core.record_size(len(arg)):
                continue  # the kernel's reserve would fail: nothing published
            r.output(arg, discard=discard)
            if not discard:
                want.append(arg)
        else:
            assert isinstance(arg, int)
            p = kernelring.consume(r, r.size, cons, arg)
            got += p.records
            cons = p.consumer_pos
    while True:
        p = kernelring.consume(r, r.size, cons, 7)
        got += p.records
        cons = p.consumer_pos
        if not p.more:
            break
    assert got == want and cons == r.prod
