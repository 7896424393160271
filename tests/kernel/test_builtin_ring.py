"""The library on the built-in consumer's ring: its drain budget and the
"producer waiting" flag that decides when the consumer wakes a producer.

The consumer (``bpf/ringbridge.bpf.c``) drains with ``BPF_RB_NO_WAKEUP``
unless the producer set ``ringbridge_ctl.producer_waiting``; the library sets
it for as long as a wait runs when given the map (``waiting_flag_fd``).
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.ring import RingClosedError, UserRingBuffer

pytestmark = pytest.mark.kernel

SAMPLE = struct.Struct("<IIQ")


@pytest.fixture
def lr(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadedRingbridge]:
    with load_default(bpf_object_path, pin_dir, 4096) as loaded:
        loaded.disarm_timer()
        yield loaded


def sample(kind: int, value: int) -> bytes:
    return SAMPLE.pack(kind, 0, value)


def test_budget_bounds_each_drain_call(bpf_object_path: Path, pin_dir: Path) -> None:
    with load_default(bpf_object_path, pin_dir, 1 << 16) as lr:
        lr.set_budget(100)
        with UserRingBuffer(lr.ring_fd, waiting_flag_fd=lr.ctl_fd) as rb:
            rb.commit_samples([sample(1, 1)] * 1000)
            assert lr.drain() == 1000
        # 10 full calls of 100, then one that finds the ring empty.
        assert lr.read_counters().drain_calls == 11


def test_blocking_reserve_sets_the_flag_and_is_woken_by_the_drain(lr: LoadedRingbridge) -> None:
    # A re-check interval far beyond the test: only the kernel's wake-up
    # (asked for because producer_waiting is set) can end the wait in time.
    with UserRingBuffer(lr.ring_fd, waiting_flag_fd=lr.ctl_fd, recheck_interval=30.0) as rb:
        rb.commit_samples([bytes(4000)])
        assert lr.read_ctl()[0] == 0
        seen: list[int] = []

        def drain_later() -> None:
            time.sleep(0.2)
            seen.append(lr.read_ctl()[0])  # the producer said it waits
            lr.drain()

        async def go() -> float:
            t = threading.Thread(target=drain_later)
            t0 = time.monotonic()
            t.start()
            s = await rb.reserve_async(200, timeout=10)
            elapsed = time.monotonic() - t0
            s.view[:16] = sample(4, 4)
            s.submit()
            t.join()
            return elapsed

        elapsed = asyncio.run(go())
        assert seen == [1]
        assert 0.15 < elapsed < 5
        assert rb.statistics().wakeups >= 1
        assert lr.read_ctl()[0] == 0  # cleared once the wait ended
        assert lr.drain() == 1

        # Blocking, in a thread: the same flag, the same wake-up.
        rb.commit_samples([bytes(3800)])
        t = threading.Thread(target=drain_later)
        t0 = time.monotonic()
        t.start()
        rb.reserve_blocking(400, timeout=10).discard()
        elapsed = time.monotonic() - t0
        t.join()
        assert seen == [1, 1]
        assert 0.15 < elapsed < 5
        assert lr.read_ctl()[0] == 0


def test_no_wakeup_requested_when_no_producer_waits(lr: LoadedRingbridge) -> None:
    with UserRingBuffer(lr.ring_fd, waiting_flag_fd=lr.ctl_fd) as rb:

        async def go() -> tuple[bool, bool]:
            waits = rb._waits
            assert waits is not None and waits._epoll is not None
            waiter = waits._epoll
            waiter.arm()
            await asyncio.sleep(0.05)  # take the initial edge, if any
            token = waiter.arm()
            rb.commit_samples([sample(1, 1)] * 10)
            lr.drain()  # no producer waits: drained with BPF_RB_NO_WAKEUP
            quiet = not await waiter.wait(token, 0.3)
            rb.commit_samples([sample(1, 1)] * 10)
            consumed = rb.wait_consumed_async(rb.producer_pos, timeout=5)
            task = asyncio.ensure_future(consumed)
            await asyncio.sleep(0.05)
            token = waiter.arm()
            lr.drain()  # the flag is set now: the kernel wakes us
            woke = await waiter.wait(token, 2)
            await task
            return quiet, woke

        quiet, woke = asyncio.run(go())
        assert quiet, "the kernel woke the producer though none was waiting"
        assert woke, "the kernel did not wake a waiting producer"


def test_closing_clears_the_flag_of_a_wait_in_progress(lr: LoadedRingbridge) -> None:
    rb = UserRingBuffer(lr.ring_fd, waiting_flag_fd=lr.ctl_fd)
    rb.commit_samples([bytes(4000)])

    async def go() -> None:
        waiting = asyncio.ensure_future(rb.reserve_async(200, timeout=10))
        await asyncio.sleep(0.1)
        assert lr.read_ctl()[0] == 1
        rb.close()  # never leave the consumer forcing wake-ups for a producer gone
        assert lr.read_ctl()[0] == 0
        with pytest.raises(RingClosedError):
            await waiting

    asyncio.run(go())
    assert rb.closed
