"""The producer layer on its own: the bounded queue (pure asyncio) and the
producer task against a real kernel ring (no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringbridge.core.ring import encode_batch
from ringbridge.errors import QueueFullError, StoppingError
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.kernel.drainer import NativeDrainer
from ringbridge.kernel.ringbuf import UserRingBuffer
from ringbridge.producer.kick import Kicker
from ringbridge.producer.queue import BatchQueue
from ringbridge.producer.task import Ack, Producer

from .conftest import SMALL_RING, sample


@dataclass(frozen=True)
class Item:
    nbytes: int
    name: str = ""


@dataclass(frozen=True)
class Batch:
    records: bytes
    count: int
    nbytes: int
    payload_bytes: int


def batch(n: int, kind: int = 1) -> Batch:
    payloads = [sample(kind, i) for i in range(n)]
    records = encode_batch(payloads)
    return Batch(records, n, len(records), 16 * n)


# -- the queue ------------------------------------------------------------------


async def test_queue_is_bounded_by_bytes_and_fifo_among_waiters() -> None:
    q: BatchQueue[Item] = BatchQueue(100)
    q.put_nowait(Item(60, "a"))
    with pytest.raises(QueueFullError):
        q.put_nowait(Item(50))
    big = asyncio.create_task(q.put(Item(80, "big"), timeout=5))
    await asyncio.sleep(0.01)
    # 30 bytes would fit, but a putter arrived first: no overtaking.
    with pytest.raises(QueueFullError):
        q.put_nowait(Item(30))
    assert q.statistics().waiting_putters == 1
    assert (await q.get()).name == "a"
    await big
    assert q.current_bytes == 80 and (await q.get()).name == "big"
    assert q.current_bytes == 0


async def test_queue_put_times_out_and_its_departure_admits_the_next() -> None:
    q: BatchQueue[Item] = BatchQueue(100)
    q.put_nowait(Item(90))
    with pytest.raises(QueueFullError):
        await q.put(Item(50), timeout=0.05)
    assert q.statistics().waiting_putters == 0
    big = asyncio.create_task(q.put(Item(95, "big"), timeout=0.1))
    await asyncio.sleep(0.01)
    small = asyncio.create_task(q.put(Item(10, "small"), timeout=1))
    await asyncio.sleep(0.01)
    assert not small.done()  # behind big
    with pytest.raises(QueueFullError):
        await big
    await small  # fits once big left the line
    assert q.current_bytes == 100


async def test_queue_close_fails_putters_and_drains_then_stops() -> None:
    q: BatchQueue[Item] = BatchQueue(10)
    q.put_nowait(Item(10, "kept"))
    waiting = asyncio.create_task(q.put(Item(5), timeout=None))
    await asyncio.sleep(0.01)
    q.close()
    q.close()  # idempotent
    with pytest.raises(StoppingError):
        await waiting
    with pytest.raises(StoppingError):
        q.put_nowait(Item(1))
    assert (await q.get()).name == "kept"
    with pytest.raises(StoppingError):
        await q.get()


async def test_queue_getter_wakes_on_put_and_on_close() -> None:
    q: BatchQueue[Item] = BatchQueue(10)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.put_nowait(Item(1, "x"))
    assert (await getter).name == "x"
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.close()
    with pytest.raises(StoppingError):
        await getter


# -- the producer task on a real ring -------------------------------------------------


@pytest.fixture
def loaded(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadedRingbridge]:
    with load_default(bpf_object_path, pin_dir, SMALL_RING) as lr:
        lr.disarm_timer()
        yield lr


@pytest.fixture
def ring(loaded: LoadedRingbridge) -> Iterator[UserRingBuffer]:
    with UserRingBuffer(loaded.ring_fd, SMALL_RING, ctl_fd=loaded.ctl_fd) as r:
        yield r


kernel = pytest.mark.kernel


@kernel
async def test_seqs_are_contiguous_and_acks_carry_ring_positions(ring: UserRingBuffer) -> None:
    latencies: list[float] = []
    p = Producer(ring, queue_max_bytes=SMALL_RING, on_commit=lambda t, a: latencies.append(t))
    p.start()
    acks = await asyncio.gather(*(p.submit(batch(n + 1), timeout=5) for n in range(10)))
    await p.stop(1)
    seq, pos = 0, 0
    for n, a in enumerate(acks):
        assert a == Ack(seq, seq + n, n + 1, pos, pos + 24 * (n + 1))
        seq += n + 1
        pos += 24 * (n + 1)
    assert ring.producer_pos == pos and len(latencies) == 10
    st = p.statistics()
    assert (st.batches_committed, st.samples_committed, st.bytes_committed) == (10, 55, 55 * 16)


@kernel
async def test_stop_fails_waiting_and_queued_batches_and_commits_nothing_of_them(
    ring: UserRingBuffer,
) -> None:
    p = Producer(ring, queue_max_bytes=SMALL_RING)
    p.start()
    await p.submit(batch(2700), timeout=5)  # 64800 of 65536 bytes
    pos = ring.producer_pos
    waiting = asyncio.create_task(p.submit(batch(100), timeout=30))
    queued = asyncio.create_task(p.submit(batch(1), timeout=30))
    await asyncio.sleep(0.2)
    assert not waiting.done() and not queued.done()
    await p.stop(0.2)
    for t in (waiting, queued):
        with pytest.raises(StoppingError):
            await t
    assert ring.producer_pos == pos
    with pytest.raises(StoppingError):
        await p.submit(batch(1), timeout=1)
    assert p.statistics().batches_failed["stopping"] == 3
    assert not p.alive


@kernel
async def test_stop_lets_queued_batches_commit_within_the_grace(
    ring: UserRingBuffer, loaded: LoadedRingbridge
) -> None:
    p = Producer(ring, queue_max_bytes=SMALL_RING)
    p.start()
    await p.submit(batch(2700), timeout=5)
    waiting = asyncio.create_task(p.submit(batch(100), timeout=30))
    await asyncio.sleep(0.1)

    async def consume_later() -> None:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(loaded.drain)

    drainer = asyncio.create_task(consume_later())
    await p.stop(5)
    await drainer
    ack = await waiting
    assert (ack.first_seq, ack.last_seq) == (2700, 2799)


@kernel
async def test_a_batch_whose_submitter_gave_up_is_not_committed(
    ring: UserRingBuffer, loaded: LoadedRingbridge
) -> None:
    p = Producer(ring, queue_max_bytes=SMALL_RING)
    p.start()
    await p.submit(batch(2700), timeout=5)
    first = asyncio.create_task(p.submit(batch(100), timeout=30))
    gone = asyncio.create_task(p.submit(batch(5, kind=9), timeout=30))
    await asyncio.sleep(0.1)
    gone.cancel()
    await asyncio.to_thread(loaded.drain)
    assert (await first).first_seq == 2700
    last = await p.submit(batch(1), timeout=5)
    assert last.first_seq == 2800  # the abandoned batch took no seqs
    await asyncio.to_thread(loaded.drain)
    assert loaded.read_counters().kind_count[9] == 0
    assert p.statistics().batches_abandoned == 1
    await p.stop(1)


@kernel
async def test_kick_mode_drains_after_commits(
    ring: UserRingBuffer, loaded: LoadedRingbridge
) -> None:
    drainer = NativeDrainer(loaded.drain_prog_fd, *ring.position_addresses())
    p = Producer(ring, queue_max_bytes=SMALL_RING, kick=Kicker(drainer))
    p.start()
    # Ten times the ring: only possible because every commit is kicked.
    for _ in range(27):
        await p.submit(batch(1000, kind=3), timeout=5)
    await p.stop(1)
    assert ring.consumer_pos() == ring.producer_pos
    kc = loaded.read_counters()
    assert kc.kind_count[3] == 27_000
    assert sum(kc.drain_errors.values()) == 0
    kick = p.statistics().kick
    assert kick is not None and kick.kicks > 0 and kick.samples == 27_000
    assert drainer.closed  # the producer's stop joined the worker
