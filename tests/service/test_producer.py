"""The producer layer on its own: the bounded queue (pure asyncio) and the
producer task against a real kernel ring (no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbridge.core.ring import encode_batch
from ringbridge.errors import OverloadedError, StoppingError
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.kernel.drainer import NativeDrainer
from ringbridge.producer.admission import Admission, BatchLine
from ringbridge.producer.kick import Kicker, TimerWaker
from ringbridge.producer.task import Producer
from ringbridge.ring import EncodedBatch, UserRingBuffer
from ringbridge.wire import Ack

from .conftest import SMALL_RING, eventually, sample

Batch = EncodedBatch


async def submit(p: Producer, b: Batch, timeout: float) -> Ack:
    return await p.submit(b, p.admit(b.nbytes, timeout))


def batch(n: int, kind: int = 1) -> Batch:
    payloads = [sample(kind, i) for i in range(n)]
    records = encode_batch(payloads)
    return Batch(records, n, len(records), 16 * n)


# -- admission (pure asyncio) ----------------------------------------------------


async def test_admission_grants_until_the_budget_is_spent_and_refuses_at_once() -> None:
    gate = Admission(100)
    a = gate.admit(60, 5)
    with pytest.raises(OverloadedError):
        gate.admit(50, 5)  # refused now, never queued
    b = gate.admit(40, 5)
    assert (gate.in_use, gate.free) == (100, 0)
    a.release()
    a.release()  # idempotent: a double release must not mint credit
    assert gate.in_use == 40
    b.resize(10)  # shrinking always works
    c = gate.admit(90, 5)
    with pytest.raises(OverloadedError):
        b.resize(11)  # growing needs free budget
    assert b.nbytes == 10
    b.release()
    c.release()
    st = gate.statistics()
    assert (st.in_use_bytes, st.credits, st.admitted, st.refused) == (0, 0, 3, 2)


async def test_admission_deadline_is_taken_at_admission() -> None:
    gate = Admission(10)
    loop = asyncio.get_running_loop()
    c = gate.admit(1, 2.5)
    assert c.deadline == pytest.approx(loop.time() + 2.5, abs=0.05)
    assert 2.4 < c.remaining(loop.time()) <= 2.5
    assert c.remaining(c.deadline + 1) == 0.0


@pytest.fixture
def loop_lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``[n]``: the calls of ``asyncio.get_running_loop()`` from here on. In
    CPython 3.11 each is a getpid(2): one system call per batch if asked each time."""
    calls = [0]
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        calls[0] += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    return calls


async def test_admission_looks_the_running_loop_up_once(loop_lookups: list[int]) -> None:
    gate = Admission(100)
    deadlines = []
    for _ in range(10):
        c = gate.admit(1, 5)
        deadlines.append(c.deadline)
        c.release()
    assert loop_lookups == [1]
    now = asyncio.get_running_loop().time()
    assert deadlines == sorted(deadlines) and deadlines[-1] <= now + 5


async def test_closed_admission_refuses_with_stopping_and_held_credit_stays_valid() -> None:
    gate = Admission(10)
    held = gate.admit(5, 1)
    gate.close()
    with pytest.raises(StoppingError):
        gate.admit(1, 1)
    held.release()
    assert gate.in_use == 0


async def test_batch_line_is_fifo_and_its_getter_wakes_on_append_and_on_close() -> None:
    line: BatchLine[str] = BatchLine()
    getter = asyncio.create_task(line.get())
    await asyncio.sleep(0)
    line.append("a")
    line.append("b")
    assert await getter == "a"
    assert await line.get() == "b"
    getter = asyncio.create_task(line.get())
    await asyncio.sleep(0)
    line.close()
    with pytest.raises(StoppingError):
        await getter
    with pytest.raises(StoppingError):
        line.append("c")


# -- the producer task on a real ring -------------------------------------------------


@pytest.fixture
def loaded(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadedRingbridge]:
    with load_default(bpf_object_path, pin_dir, SMALL_RING) as lr:
        lr.disarm_timer()
        yield lr


@pytest.fixture
def ring(loaded: LoadedRingbridge) -> Iterator[UserRingBuffer]:
    with UserRingBuffer(loaded.ring_fd, waiting_flag_fd=loaded.ctl_fd) as r:
        yield r


kernel = pytest.mark.kernel


@kernel
async def test_seqs_are_contiguous_and_acks_carry_ring_positions(ring: UserRingBuffer) -> None:
    latencies: list[float] = []
    p = Producer(ring, admission_bytes=4 * SMALL_RING, on_commit=lambda t, a: latencies.append(t))
    p.start()
    acks = await asyncio.gather(*(submit(p, batch(n + 1), 5) for n in range(10)))
    await p.stop(1)
    seq, pos = 0, 0
    for n, a in enumerate(acks):
        assert a == Ack(
            accepted=n + 1,
            first_seq=seq,
            last_seq=seq + n,
            ring_start_pos=pos,
            ring_end_pos=pos + 24 * (n + 1),
        )
        seq += n + 1
        pos += 24 * (n + 1)
    assert ring.producer_pos == pos and len(latencies) == 10
    st = p.statistics()
    assert (st.batches_committed, st.samples_committed, st.bytes_committed) == (10, 55, 55 * 16)


@kernel
async def test_stop_fails_waiting_and_queued_batches_and_commits_nothing_of_them(
    ring: UserRingBuffer,
) -> None:
    p = Producer(ring, admission_bytes=4 * SMALL_RING)
    p.start()
    await submit(p, batch(2700), 5)  # 64800 of 65536 bytes
    pos = ring.producer_pos
    waiting = asyncio.create_task(submit(p, batch(100), 30))
    queued = asyncio.create_task(submit(p, batch(1), 30))
    await eventually(
        lambda: p.statistics().ring_full_waits == 1 and p.statistics().queued_batches == 1,
        what="one batch waiting for space, one in line",
    )
    assert not waiting.done() and not queued.done()
    await p.stop(0.2)
    for t in (waiting, queued):
        with pytest.raises(StoppingError):
            await t
    assert ring.producer_pos == pos
    with pytest.raises(StoppingError):
        await submit(p, batch(1), 1)
    assert p.statistics().batches_failed["stopping"] == 2  # the third was refused at admission
    assert not p.alive


@kernel
async def test_stop_lets_queued_batches_commit_within_the_grace(
    ring: UserRingBuffer, loaded: LoadedRingbridge
) -> None:
    p = Producer(ring, admission_bytes=4 * SMALL_RING)
    p.start()
    await submit(p, batch(2700), 5)
    waiting = asyncio.create_task(submit(p, batch(100), 30))
    await eventually(lambda: p.statistics().ring_full_waits == 1, what="the batch to wait")

    async def consume_later() -> None:
        # The kernel consumes once the stop has begun: the grace lets it commit.
        await eventually(lambda: p.statistics().stopping, what="the stop to begin")
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
    p = Producer(ring, admission_bytes=4 * SMALL_RING)
    p.start()
    await submit(p, batch(2700), 5)
    first = asyncio.create_task(submit(p, batch(100), 30))
    gone = asyncio.create_task(submit(p, batch(5, kind=9), 30))
    await eventually(lambda: p.statistics().queued_batches == 1, what="the batch in line")
    gone.cancel()
    await asyncio.to_thread(loaded.drain)
    assert (await first).first_seq == 2700
    last = await submit(p, batch(1), 5)
    assert last.first_seq == 2800  # the abandoned batch took no seqs
    await asyncio.to_thread(loaded.drain)
    assert loaded.read_counters().kind_count[9] == 0
    assert p.statistics().batches_abandoned == 1
    await p.stop(1)


@kernel
async def test_batches_in_line_do_not_look_the_loop_up_each(
    ring: UserRingBuffer, loop_lookups: list[int]
) -> None:
    p = Producer(ring, admission_bytes=4 * SMALL_RING)
    p.start()
    await submit(p, batch(10), 5)  # the first looks it up
    before = loop_lookups[0]
    acks = [await submit(p, batch(10), 5) for _ in range(5)]  # through the line
    for _ in range(2):  # as the data plane puts a batch in line
        b = batch(10)
        acks.append(await p.line_up(b, p.admit(b.nbytes, 5)).future)
    assert loop_lookups[0] == before
    assert [a.first_seq for a in acks] == [10, 20, 30, 40, 50, 60, 70]
    await p.stop(1)


@kernel
async def test_kick_mode_drains_after_commits(
    ring: UserRingBuffer, loaded: LoadedRingbridge
) -> None:
    drainer = NativeDrainer(loaded.drain_prog_fd, *ring.position_addresses())
    p = Producer(ring, admission_bytes=4 * SMALL_RING, kick=Kicker(drainer))
    p.start()
    # Ten times the ring: only possible because every commit is kicked.
    for _ in range(27):
        await submit(p, batch(1000, kind=3), 5)
    await p.stop(1)
    assert ring.consumer_pos() == ring.producer_pos
    kc = loaded.read_counters()
    assert kc.kind_count[3] == 27_000
    assert sum(kc.drain_errors.values()) == 0
    kick = p.statistics().kick
    assert kick is not None and kick.kicks > 0 and kick.samples == 27_000
    assert drainer.closed  # the producer's stop joined the worker


@kernel
async def test_a_backed_off_timer_is_rearmed_after_the_callback_that_asked_once_per_pass(
    loaded: LoadedRingbridge,
) -> None:
    # A 200 ms base period backed off three times: its next drain is 0.8 s
    # after its last; re-armed, one base period after it.
    period = 0.2
    loaded.arm_timer(period_ns=int(period * 1e9), budget=64, idle_period_ns=10_000_000_000)
    loop = asyncio.get_running_loop()
    try:
        await eventually(lambda: loaded.timer_idle_drains() >= 3)
        seen = loop.time()  # the last drain was before this
        waker = TimerWaker(loaded.timer_idle_drains, loaded.wake_timer)
        before = loaded.read_counters().drain_calls
        for _ in range(3):  # three commits in one callback
            waker.request()
        # Not yet: the acks of those commits are written before the syscall.
        assert waker.statistics().kicks == 0
        assert loaded.timer_idle_drains() >= 3
        await asyncio.sleep(0)
        assert waker.statistics().kicks == 1  # one re-arm for the three
        assert loaded.timer_idle_drains() == 0  # its back-off restarted
        waker.request()  # at its base period: due anyway, nothing to do
        await asyncio.sleep(0)
        assert waker.statistics().kicks == 1
        await eventually(lambda: loaded.read_counters().drain_calls > before, timeout=5)
        assert loop.time() - seen < 3 * period, "the re-armed timer kept its backed-off period"
        # That drain found the ring empty: one step of back-off, so a commit re-arms.
        await eventually(lambda: loaded.timer_idle_drains() >= 1)
        waker.request()
        await asyncio.sleep(0)
        assert waker.statistics().kicks == 2
        await eventually(lambda: loaded.timer_idle_drains() >= 1)
        waker.request()
        await waker.aclose()  # a re-arm still due runs at close, then none
        assert waker.statistics().kicks == 3
        await eventually(lambda: loaded.timer_idle_drains() >= 1)
        waker.request()
        await asyncio.sleep(0)
        assert waker.statistics().kicks == 3 and waker.statistics().errors == 0
    finally:
        loaded.disarm_timer()
