"""Our producer against the real kernel: the upstream user_ringbuf selftest cases.

Ported from tools/testing/selftests/bpf/prog_tests/user_ringbuf.c (mappings,
misaligned, wrong offset, larger than ring, basic, full ring, alignment
auto-adjust, overfill, discards ignored, loop, message protocol, blocking
reserve), plus wrap-around, zero-length samples, the dynptr size limit, the
per-drain cap, crash recovery, and the no-spin wait. Nothing here is mocked:
each test loads the default BPF object, maps its ring and drains it with the
kernel's bpf_user_ringbuf_drain through the pinned syscall program.

The "poisoning" cases write the ring by hand (bypassing our producer) to show
what the kernel rejects, then show that our producer refuses to create that
state.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ringbridge.core import ring as core
from ringbridge.errors import (
    KernelError,
    RecordTooLargeError,
    RingCorruptError,
    RingFullError,
    RingTimeoutError,
)
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.kernel.mapping import PAGE_SIZE, Mapping
from ringbridge.kernel.ringbuf import UserRingBuffer

pytestmark = pytest.mark.kernel

LoadFn = Callable[[int], LoadedRingbridge]
SAMPLE = struct.Struct("<IIQ")


@pytest.fixture
def load(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadFn]:
    """Load the default program with a ring of the given size (one per test)."""
    opened: list[LoadedRingbridge] = []

    def _load(ring_size: int) -> LoadedRingbridge:
        lr = load_default(bpf_object_path, pin_dir, ring_size)
        opened.append(lr)
        return lr

    yield _load
    for lr in opened:
        lr.close()


def ring_of(lr: LoadedRingbridge, **kw: object) -> UserRingBuffer:
    return UserRingBuffer(lr.ring_fd, lr.ring_size, ctl_fd=lr.ctl_fd, **kw)  # type: ignore[arg-type]


def sample(kind: int, value: int, extra: bytes = b"") -> bytes:
    return SAMPLE.pack(kind, 0, value) + extra


class RawRing:
    """Hand access to the ring, bypassing our producer (to show kernel rules)."""

    def __init__(self, lr: LoadedRingbridge) -> None:
        self.size = lr.ring_size
        self.prod = Mapping(
            lr.ring_fd, PAGE_SIZE + 2 * self.size, PAGE_SIZE, writable=True, what="raw producer"
        )
        self.view = self.prod.view

    def set_producer_pos(self, pos: int) -> None:
        struct.pack_into("<Q", self.view, 0, pos)

    def write_header(self, pos: int, word: int) -> None:
        struct.pack_into("<II", self.view, PAGE_SIZE + (pos & (self.size - 1)), word, 0)

    def close(self) -> None:
        self.prod.close()


# -- mappings -------------------------------------------------------------


def test_mappings(load: LoadFn) -> None:
    lr = load(4096)
    # The consumer page is the kernel's: a writable mapping is refused.
    with pytest.raises(KernelError) as ei:
        Mapping(lr.ring_fd, PAGE_SIZE, 0, writable=True, what="consumer page")
    assert ei.value.errno == 1  # EPERM
    assert "EPERM" in str(ei.value) and "consumer page" in str(ei.value)

    cons = Mapping(lr.ring_fd, PAGE_SIZE, 0, writable=False, what="consumer page")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(cons.addr, PAGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE) == -1
    assert ctypes.get_errno() == 13  # EACCES: VM_MAYWRITE was cleared
    assert libc.mprotect(cons.addr, PAGE_SIZE, mmap.PROT_EXEC) == -1
    cons.close()

    # Producer page and data are writable, and the data is mapped twice.
    raw = RawRing(lr)
    raw.view[PAGE_SIZE : PAGE_SIZE + 4] = b"abcd"
    assert bytes(raw.view[PAGE_SIZE + 4096 : PAGE_SIZE + 4096 + 4]) == b"abcd"
    raw.close()


# -- what poisons a ring ---------------------------------------------------


def test_post_misaligned_poisons_and_our_producer_refuses(load: LoadFn) -> None:
    lr = load(4096)
    raw = RawRing(lr)
    raw.write_header(0, 4)
    raw.set_producer_pos(12)  # not a multiple of 8
    with pytest.raises(KernelError, match="EINVAL"):
        lr.drain()
    with pytest.raises(KernelError, match="EINVAL"):
        lr.drain()  # never skipped: every later drain fails the same way
    assert lr.read_counters().drain_errors["EINVAL"] >= 2
    with pytest.raises(RingCorruptError, match="inconsistent"):
        ring_of(lr)
    raw.close()


def test_post_producer_wrong_offset_poisons(load: LoadFn) -> None:
    lr = load(4096)
    raw = RawRing(lr)
    raw.write_header(0, 64)  # claims 72 bytes of record...
    raw.set_producer_pos(16)  # ...but only 16 are advertised
    with pytest.raises(KernelError, match="EINVAL"):
        lr.drain()
    with pytest.raises(RingCorruptError, match="cannot be repaired"):
        ring_of(lr)
    raw.close()


def test_post_larger_than_ringbuf_poisons_and_our_producer_refuses(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb, pytest.raises(RecordTooLargeError, match="never fit"):
        rb.reserve_nowait(4096)
    raw = RawRing(lr)
    raw.write_header(0, 8192)
    raw.set_producer_pos(8192 + 8)
    with pytest.raises(KernelError, match="E2BIG"):
        lr.drain()
    assert lr.read_counters().drain_errors["E2BIG"] >= 1
    raw.close()


# -- the basic cases -------------------------------------------------------


def test_basic(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        r = rb.reserve_nowait(16)
        r.view[:] = sample(7, 42)
        # BUSY until submitted: the kernel stops at it.
        assert lr.drain() == 0
        rb.submit(r)
        assert lr.drain() == 1
        assert rb.consumer_pos() == rb.producer_pos == 24
    c = lr.read_counters()
    assert (c.samples, c.bytes, c.kind_count[7], c.kind_value[7]) == (1, 16, 1, 42)


def test_sample_full_ring(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        n = 0
        with pytest.raises(RingFullError):
            while True:
                r = rb.reserve_nowait(16)
                r.view[:] = sample(1, n)
                rb.submit(r)
                n += 1
        assert n == 4096 // 24 and rb.free_bytes() == 4096 % 24
        assert lr.drain() == n
        # After the drain the whole ring is free again.
        assert rb.free_bytes() == 4096
    c = lr.read_counters()
    assert c.kind_count[1] == n and c.kind_value[1] == n * (n - 1) // 2


def test_post_alignment_autoadjust(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        r = rb.reserve_nowait(17)
        r.view[:] = sample(2, 9, b"!")
        rb.submit(r)
        assert rb.producer_pos == 32 and rb.producer_pos % 8 == 0
        assert lr.drain() == 1
    assert lr.read_counters().bytes == 17


def test_overfill_refused_without_loss(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        rb.commit_samples_nowait([sample(3, i) for i in range(100)])
        before = rb.producer_pos
        with pytest.raises(RingFullError, match="bytes free"):
            rb.commit_samples_nowait([sample(3, 1000 + i) for i in range(100)])
        assert rb.producer_pos == before  # all or nothing
        assert lr.drain() == 100
    c = lr.read_counters()
    assert c.kind_count[3] == 100 and c.kind_value[3] == sum(range(100))


def test_discards_properly_ignored(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        for _ in range(10):
            rb.discard(rb.reserve_nowait(16))
        assert lr.drain() == 0  # discards are excluded from the count
        assert rb.consumer_pos() == 240  # ...but their space is consumed
    assert lr.read_counters().samples == 0


def test_loop_8192_samples_through_4k_ring(load: LoadFn) -> None:
    lr = load(4096)
    drained = 0
    with ring_of(lr) as rb:
        for i in range(8192):
            try:
                rb.commit_samples_nowait([sample(i % 4, i)])
            except RingFullError:
                drained += lr.drain()
                rb.commit_samples_nowait([sample(i % 4, i)])
        drained += lr.drain()
    assert drained == 8192
    c = lr.read_counters()
    for k in range(4):
        assert c.kind_count[k] == 2048
        assert c.kind_value[k] == sum(range(k, 8192, 4))


def test_msg_protocol_content(load: LoadFn) -> None:
    """Samples of several kinds, sizes and values; the kernel sums them exactly."""
    lr = load(1 << 16)
    sent: dict[int, tuple[int, int]] = {}
    payloads = []
    for i in range(500):
        kind, value = (i * 7) % 256, (i * 0x9E3779B97F4A7C15) % (1 << 64)
        payloads.append(sample(kind, value, bytes(i % 40)))
        cnt, tot = sent.get(kind, (0, 0))
        sent[kind] = (cnt + 1, tot + value)  # exact: the kernel carries past 2**64
    payloads.append(b"short")  # < 16 bytes: counted, not parsed
    payloads.append(sample(300, 5))  # kind out of range
    with ring_of(lr) as rb:
        rb.commit_samples_nowait(payloads)
        assert lr.drain() == 502
    c = lr.read_counters()
    assert c.short_samples == 1 and c.kind_overflow == 1
    assert c.bytes == sum(len(p) for p in payloads)
    for kind, (cnt, tot) in sent.items():
        assert (c.kind_count[kind], c.kind_value[kind]) == (cnt, tot), kind


# -- beyond upstream -------------------------------------------------------


def test_wrap_around_across_ring_end(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        rb.commit_samples_nowait([sample(5, 1, bytes(4000))])  # 4024 bytes
        assert lr.drain() == 1
        # The next record starts 72 bytes before the end and wraps; the
        # double mapping keeps it contiguous for us and for the kernel.
        big = sample(6, 77, bytes(range(256)) * 3)
        start = rb.producer_pos
        rb.commit_samples_nowait([big])
        assert (start & 4095) + core.record_size(len(big)) > 4096
        assert lr.drain() == 1
    c = lr.read_counters()
    assert (c.kind_count[6], c.kind_value[6], c.bytes) == (1, 77, 4016 + len(big))


def test_zero_length_samples(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        rb.commit_samples_nowait([b""] * 100)
        assert rb.producer_pos == 800
        rb.submit(rb.reserve_nowait(0))
        assert lr.drain() == 101
    c = lr.read_counters()
    assert (c.samples, c.bytes, c.short_samples) == (101, 0, 101)


def test_dynptr_size_limit(load: LoadFn) -> None:
    lr = load(32 << 20)
    with ring_of(lr) as rb:
        with pytest.raises(RecordTooLargeError, match="16777215"):
            rb.reserve_nowait(core.MAX_SAMPLE_LEN + 1)
        r = rb.reserve_nowait(core.MAX_SAMPLE_LEN)
        r.view[:16] = sample(9, 3)
        rb.submit(r)
        assert lr.drain() == 1
    c = lr.read_counters()
    assert c.bytes == core.MAX_SAMPLE_LEN and c.kind_value[9] == 3


def test_dynptr_size_limit_enforced_by_kernel(load: LoadFn) -> None:
    lr = load(32 << 20)
    raw = RawRing(lr)
    n = core.MAX_SAMPLE_LEN + 1
    raw.write_header(0, n)
    raw.set_producer_pos(core.record_size(n))
    with pytest.raises(KernelError, match="E2BIG"):
        lr.drain()
    raw.close()


def test_per_drain_call_cap(load: LoadFn) -> None:
    lr = load(2 << 20)
    lr.set_budget(1 << 20)  # larger than the kernel's own cap
    total = core.MAX_DRAIN_SAMPLES + 1000
    with ring_of(lr) as rb:
        rb.commit_samples_nowait([b""] * total)
        # One bpf_user_ringbuf_drain() call stops at 131,072 records; a short
        # call ends the drain program's loop, so the rest stays queued.
        assert lr.drain() == core.MAX_DRAIN_SAMPLES
        assert lr.drain() == 1000


def test_budget_bounds_each_drain_call(load: LoadFn) -> None:
    lr = load(1 << 16)
    lr.set_budget(100)
    with ring_of(lr) as rb:
        rb.commit_samples_nowait([sample(1, 1)] * 1000)
        assert lr.drain() == 1000
    # 10 full calls of 100, then one that finds the ring empty.
    assert lr.read_counters().drain_calls == 11


def test_crash_recovery_of_busy_record(load: LoadFn) -> None:
    lr = load(4096)
    pid = os.fork()
    if pid == 0:  # the "crashed" producer: reserves, never submits, dies
        try:
            rb = ring_of(lr, recover=False)
            rb.commit_samples_nowait([sample(1, 1)])
            rb.reserve_nowait(16)
            rb.commit_samples_nowait([sample(1, 2)])
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert lr.drain() == 1  # head-of-line blocked at the BUSY record
    with ring_of(lr) as rb:
        assert rb.recovered_busy == 1
        assert lr.drain() == 1  # BUSY|DISCARD skipped, the record behind it lands
        assert rb.free_bytes() == 4096
    c = lr.read_counters()
    assert (c.kind_count[1], c.kind_value[1]) == (2, 3)


# -- waiting ---------------------------------------------------------------


def test_blocking_reserve_times_out(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        rb.commit_samples_nowait([bytes(4000)])

        async def go() -> None:
            with pytest.raises(RingTimeoutError, match=r"after 0\.2s"):
                await rb.reserve(200, timeout=0.2)

        asyncio.run(go())
        assert rb.full_waits == 1


def test_blocking_reserve_woken_by_drain_from_another_thread(load: LoadFn) -> None:
    lr = load(4096)
    # A re-check interval far beyond the test: only the kernel's wake-up
    # (asked for because producer_waiting is set) can end the wait in time.
    with ring_of(lr, recheck_interval=30.0) as rb:
        rb.commit_samples_nowait([bytes(4000)])
        assert lr.read_ctl()[0] == 0

        def drain_later() -> None:
            time.sleep(0.2)
            assert lr.read_ctl()[0] == 1  # the producer said it waits
            lr.drain()

        async def go() -> float:
            t = threading.Thread(target=drain_later)
            t0 = time.monotonic()
            t.start()
            r = await rb.reserve(200, timeout=10)
            elapsed = time.monotonic() - t0
            r.view[:16] = sample(4, 4)
            rb.submit(r)
            t.join()
            return elapsed

        elapsed = asyncio.run(go())
        assert 0.15 < elapsed < 5
        assert rb.statistics().wakeups >= 1
        assert lr.read_ctl()[0] == 0  # cleared once the wait ended
        assert lr.drain() == 1


def test_no_wakeup_requested_when_no_producer_waits(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:

        async def go() -> tuple[bool, bool]:
            waiter = rb._waiter
            assert waiter is not None
            waiter.arm()
            await asyncio.sleep(0.05)  # take the initial edge, if any
            token = waiter.arm()
            rb.commit_samples_nowait([sample(1, 1)] * 10)
            lr.drain()  # no producer waits: drained with BPF_RB_NO_WAKEUP
            quiet = not await waiter.wait(token, 0.3)
            rb.commit_samples_nowait([sample(1, 1)] * 10)
            consumed = rb.wait_consumed(rb.producer_pos, timeout=5)
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


def test_waiting_on_partly_full_ring_does_not_spin(load: LoadFn) -> None:
    lr = load(4096)
    with ring_of(lr) as rb:
        # Partly full: poll() reports EPOLLOUT (not completely full), yet the
        # next record does not fit -- where a level-triggered wait spins.
        rb.commit_samples_nowait([bytes(3000)])
        assert 0 < rb.free_bytes() < core.record_size(2000)

        async def go() -> None:
            with pytest.raises(RingTimeoutError):
                await rb.reserve(2000, timeout=1.0)

        cpu0, t0 = time.process_time(), time.monotonic()
        asyncio.run(go())
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    assert wall >= 1.0
    assert cpu / wall < 0.05, f"waiting used {cpu / wall:.1%} of a core"
