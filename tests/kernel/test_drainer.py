"""The kick drain's native worker thread against the real kernel."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbridge.core.ring import encode_batch
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.kernel.drainer import NativeDrainer
from ringbridge.ring import UserRingBuffer

RING = 1 << 16

pytestmark = pytest.mark.kernel


@pytest.fixture
def loaded(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadedRingbridge]:
    with load_default(bpf_object_path, pin_dir, RING) as lr:
        lr.disarm_timer()
        yield lr


@pytest.fixture
def ring(loaded: LoadedRingbridge) -> Iterator[UserRingBuffer]:
    with UserRingBuffer(loaded.ring_fd, waiting_flag_fd=loaded.ctl_fd) as r:
        yield r


def _batch(n: int, kind: int) -> bytes:
    return encode_batch(
        kind.to_bytes(4, "little") + bytes(4) + i.to_bytes(8, "little") for i in range(n)
    )


def _drainer(loaded: LoadedRingbridge, ring: UserRingBuffer) -> NativeDrainer:
    return NativeDrainer(loaded.drain_prog_fd, *ring.position_addresses())


def test_a_kick_before_close_is_drained(loaded: LoadedRingbridge, ring: UserRingBuffer) -> None:
    d = _drainer(loaded, ring)
    ring.commit_batch(_batch(100, kind=4))
    d.kick()
    d.close()  # runs the requested drain before the thread ends
    assert ring.consumer_pos() == ring.producer_pos
    stats = d.statistics()
    assert stats.samples == 100 and stats.runs >= 1 and stats.errors == 0
    assert loaded.read_counters().kind_count[4] == 100


def test_one_kick_drains_past_one_runs_bound(
    loaded: LoadedRingbridge, ring: UserRingBuffer
) -> None:
    # 2 samples per drain call, at most 256 calls per program run: 512 a run.
    loaded.set_budget(2)
    n = 2500  # 2500 * 24 B fits the 64 KiB ring; needs 5 runs
    ring.commit_batch(_batch(n, kind=5))
    d = _drainer(loaded, ring)
    d.kick()
    d.close()
    assert ring.consumer_pos() == ring.producer_pos
    stats = d.statistics()
    assert stats.samples == n and stats.runs >= n // 512
    assert loaded.read_counters().kind_count[5] == n


def test_kicks_without_data_are_harmless_and_close_is_idempotent(
    loaded: LoadedRingbridge, ring: UserRingBuffer
) -> None:
    d = _drainer(loaded, ring)
    for _ in range(1000):
        d.kick()  # folds into at most a few runs; never blocks
    d.close()
    d.close()
    d.kick()  # after close: ignored
    stats = d.statistics()
    assert stats.samples == 0 and stats.errors == 0 and 1 <= stats.runs <= 1000
    assert d.closed


def test_a_failing_drain_is_counted_with_its_errno(
    loaded: LoadedRingbridge, ring: UserRingBuffer
) -> None:
    # A map fd is not a program: BPF_PROG_TEST_RUN fails with EINVAL.
    d = NativeDrainer(loaded.ctl_fd, *ring.position_addresses())
    d.kick()
    d.close()
    stats = d.statistics()
    assert stats.errors == 1 and stats.runs == 0
    assert stats.last_error == errno.EINVAL
