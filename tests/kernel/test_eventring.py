"""Replies out of the kernel: a selftest-style object's BPF_MAP_TYPE_RINGBUF, read by us.

The object (tests/fixtures/upstream_style/user_ringbuf_proto.bpf.c) is the
upstream message protocol, drained from the sys_enter_prctl tracepoint, with
one reply per request published into ``kernel_ringbuf``. Its request and
reply structs are in no BTF of the object: their types come from the header
beside it, compiled by the schema layer. Requests go in through our producer
(typed JSON: enum ops by name, anonymous-union operands by name), the kernel
mutates its counter, and the replies must come out through
KernelRingReader -> EventHub exactly as the kernel computed them, in order.
Nothing is mocked: the kernel drains, the kernel publishes, we read the mmap.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringbridge.errors import ConfigError
from ringbridge.events import Event, EventFeeds, EventHub, EventMap, Lost, Subscription
from ringbridge.kernel.eventring import KernelRingReader
from ringbridge.kernel.objplan import plan_object
from ringbridge.kernel.userobj import LoadedObject, load_object
from ringbridge.ring import UserRingBuffer
from ringbridge.schema import SampleCodec, TypeDecoder, TypeSources
from ringbridge.schema import btf as btf_reader
from tests.support.upstream import (
    INC32,
    INC64,
    MUL32,
    MUL64,
    OP_NAMES,
    PROTO_HEADER,
    PROTO_OBJ,
    Counter,
    claim,
    ensure_built,
    get_global,
    prctl,
    raw_msg,
)

pytestmark = pytest.mark.kernel

#: One page: 128 replies of 24 bytes (+ 8 header); the tests go round it several times.
KERNEL_RING = 4096
USER_RING = 64 * 1024


@dataclass
class Proto:
    loaded: LoadedObject
    ring: UserRingBuffer
    codec: SampleCodec
    decoder: TypeDecoder
    counter: Counter

    @property
    def kernel_ringbuf_fd(self) -> int:
        return self.loaded.map("kernel_ringbuf").fd

    def requests(self, n: int, rng: random.Random) -> tuple[list[bytes], list[dict[str, object]]]:
        """``n`` typed requests (payloads) and the replies the kernel will publish."""
        payloads: list[bytes] = []
        replies: list[dict[str, object]] = []
        for _ in range(n):
            op = rng.choice((INC64, INC32, MUL64, MUL32, INC64, INC32))
            if op in (INC64, MUL64):
                operand = rng.randint(-(1 << 40), 1 << 40) if op == INC64 else rng.randint(-3, 3)
                payloads.append(self.codec.encode_sample(msg_op=OP_NAMES[op], operand_64=operand))
            else:
                operand = rng.randint(-(1 << 30), 1 << 30) if op == INC32 else rng.randint(-3, 3)
                payloads.append(self.codec.encode_sample(msg_op=OP_NAMES[op], operand_32=operand))
            replies.append(self.counter.apply(op, operand))
        return payloads, replies

    def send(self, payloads: list[bytes]) -> None:
        """Commit the requests and make the syscall whose tracepoint drains them."""
        self.ring.commit_samples(payloads)
        prctl()


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


@pytest.fixture
def proto(pin_dir: Path) -> Iterator[Proto]:
    plan = plan_object(PROTO_OBJ, ring_size=USER_RING, map_sizes={"kernel_ringbuf": KERNEL_RING})
    loaded = load_object(plan, pin_dir)  # attaches the tracepoint (tracefs mounted if missing)
    try:
        assert loaded.attached == ["test_user_ringbuf_protocol"]
        with TypeSources.open(
            primary=(str(PROTO_OBJ), loaded.btf()), header=PROTO_HEADER
        ) as sources:
            codec = sources.codec("test_msg")
            decoder = sources.decoder("struct test_reply")
        ring = UserRingBuffer(loaded.ring_fd)
        claim(loaded.obj)
        try:
            yield Proto(loaded, ring, codec, decoder, Counter())
        finally:
            ring.close()
    finally:
        loaded.close()


@pytest.fixture
async def events(proto: Proto) -> AsyncIterator[tuple[EventMap, EventFeeds]]:
    hub = EventHub()
    emap = hub.add("kernel_ringbuf", decoder=proto.decoder, type_name="struct test_reply")
    feeds = EventFeeds.open(hub, [(emap, proto.kernel_ringbuf_fd)])
    try:
        yield emap, feeds
    finally:
        feeds.close()


async def _take(sub: Subscription, n: int, timeout: float = 10.0) -> list[Event | Lost]:
    out: list[Event | Lost] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await sub.get())
    return out


def test_the_wire_structs_are_in_no_btf_of_the_object(proto: Proto) -> None:
    btf = proto.loaded.btf()
    for name in ("test_msg", "test_reply", "struct sample"):
        assert btf_reader.lookup_type(btf, name) is None, name
    # ...so they come from the header: 16 and 24 bytes, as the C compiler lays them out.
    assert proto.codec.sample_size == 16 and proto.decoder.size == 24


async def test_replies_come_out_typed_exactly_and_in_order(
    proto: Proto, events: tuple[EventMap, EventFeeds]
) -> None:
    emap, feeds = events
    sub = emap.subscribe()
    feeds.start()
    rng = random.Random(14)
    want: list[dict[str, object]] = []
    got: list[dict[str, object]] = []
    # 6 rounds of 50 replies: more than twice round the one-page kernel ring.
    for _ in range(6):
        payloads, replies = proto.requests(50, rng)
        want += replies
        proto.send(payloads)
        for item in await _take(sub, 50):
            assert not isinstance(item, Lost)
            got.append(item.json())
    assert [g["seq"] for g in got] == list(range(300))
    assert [g["value"] for g in got] == want
    assert get_global(proto.loaded.obj, "err") == 0
    assert get_global(proto.loaded.obj, "kern_mutated", signed=True) == proto.counter.value
    stats = emap.statistics()
    assert (stats.events, stats.bytes, stats.subscribers) == (300, 300 * 24, 1)
    assert stats.lost == {"slow_subscriber": 0, "no_subscriber": 0}
    (reader,) = feeds.statistics()
    assert reader.records == 300 and reader.consumer_pos == reader.producer_pos == 300 * 32
    assert reader.wakeups >= 1  # woken by the kernel, not found by the periodic re-check


async def test_an_unknown_op_gets_its_error_reply(
    proto: Proto, events: tuple[EventMap, EventFeeds]
) -> None:
    emap, feeds = events
    sub = emap.subscribe()
    feeds.start()
    payloads = [
        proto.codec.encode_sample(msg_op="TEST_MSG_OP_INC64", operand_64=7),
        raw_msg(9, 1),
        proto.codec.encode_sample(msg_op="TEST_MSG_OP_MUL32", operand_32=-6),
    ]
    want = [
        proto.counter.apply(INC64, 7),
        proto.counter.apply(9, 1),
        proto.counter.apply(MUL32, -6),
    ]
    proto.send(payloads)
    got = [item.json()["value"] for item in await _take(sub, 3)]
    assert got == want
    assert got[1] == {"seq": 2, "msg_op": 9, "status": -22, "kern_mutated": 7}
    assert got[2]["kern_mutated"] == -42


async def test_a_slow_subscriber_loses_the_overflow_while_another_misses_nothing(
    proto: Proto, events: tuple[EventMap, EventFeeds]
) -> None:
    emap, feeds = events
    slow = emap.subscribe(max_events=10)
    fast = emap.subscribe()
    feeds.start()
    rng = random.Random(1414)
    want: list[dict[str, object]] = []
    fast_got: list[dict[str, object]] = []
    for _ in range(2):
        payloads, replies = proto.requests(50, rng)
        want += replies
        proto.send(payloads)
        fast_got += [i.json()["value"] for i in await _take(fast, 50)]
    assert fast_got == want
    # The slow one kept the first 10 and a marker for the 90 that did not fit.
    held = [slow.get_nowait() for _ in range(11)]
    assert [e.json()["value"] for e in held[:10]] == want[:10]
    assert isinstance(held[10], Lost)
    assert held[10].json() == {"lost": 90, "first_seq": 10, "last_seq": 99}
    with pytest.raises(asyncio.QueueEmpty):
        slow.get_nowait()
    assert emap.statistics().lost == {"slow_subscriber": 90, "no_subscriber": 0}
    assert slow.statistics().lost == 90 and fast.statistics().lost == 0
    # Once it reads again it gets what comes next, after the marker.
    payloads, replies = proto.requests(3, rng)
    proto.send(payloads)
    assert [i.json() for i in await _take(slow, 3)] == [
        {"seq": 100 + k, "value": r} for k, r in enumerate(replies)
    ]


async def test_events_without_subscribers_are_counted_and_dropped(
    proto: Proto, events: tuple[EventMap, EventFeeds]
) -> None:
    emap, feeds = events
    feeds.start()
    rng = random.Random(7)
    payloads, _ = proto.requests(20, rng)
    proto.send(payloads)
    async with asyncio.timeout(10):
        while feeds.statistics()[0].records < 20:
            await asyncio.sleep(0.01)
    assert emap.statistics().lost["no_subscriber"] == 20
    sub = emap.subscribe()
    payloads, replies = proto.requests(2, rng)
    proto.send(payloads)
    assert [i.json() for i in await _take(sub, 2)] == [
        {"seq": 20, "value": replies[0]},
        {"seq": 21, "value": replies[1]},
    ]


async def test_records_waiting_before_start_are_read_at_start(
    proto: Proto, events: tuple[EventMap, EventFeeds]
) -> None:
    emap, feeds = events
    sub = emap.subscribe()
    payloads, replies = proto.requests(5, random.Random(3))
    proto.send(payloads)  # published before anyone reads: no wake-up will come for them
    feeds.start()
    assert [i.json()["value"] for i in await _take(sub, 5)] == replies


def test_poll_reads_in_order_and_waits_without_spinning(proto: Proto) -> None:
    with KernelRingReader(proto.kernel_ringbuf_fd, "kernel_ringbuf") as reader:
        assert reader.size == KERNEL_RING
        payloads, replies = proto.requests(40, random.Random(5))
        proto.send(payloads)
        p = reader.poll(5.0)
        assert [proto.decoder.decode(r) for r in p.records] == replies
        cpu = time.process_time()
        wall = time.monotonic()
        empty = reader.poll(0.3)
        assert empty.records == []
        assert time.monotonic() - wall >= 0.25  # it did wait...
        assert time.process_time() - cpu < 0.1  # ...asleep in epoll, not spinning


async def test_the_loop_stays_idle_between_events(
    proto: Proto, events: tuple[EventMap, EventFeeds]
) -> None:
    _, feeds = events
    feeds.start()
    cpu = time.process_time()
    await asyncio.sleep(0.5)
    assert time.process_time() - cpu < 0.1
    assert feeds.statistics()[0].wakeups == 0


def test_only_kernel_ring_buffers_are_read(proto: Proto) -> None:
    with pytest.raises(ConfigError, match="not BPF_MAP_TYPE_RINGBUF"):
        KernelRingReader(proto.loaded.ring_fd, "user_ringbuf")
