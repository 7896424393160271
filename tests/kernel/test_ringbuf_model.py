"""Stateful property test: random producer operations against the real kernel.

Hypothesis drives reserve / submit / discard / batch commit / drain in random
orders and sizes on a small real ring, and checks after every step that the
kernel's counters and positions match a plain model: what was submitted (in
order, up to the first record still BUSY) is what the kernel counted, nothing
twice, nothing lost, discards never counted -- and the ring never poisoned.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from ringbridge.core import ring as core
from ringbridge.errors import RingFullError
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.kernel.counters import KernelCounters
from ringbridge.ring import Sample, UserRingBuffer

pytestmark = pytest.mark.kernel

RING = 4096
SAMPLE = struct.Struct("<IIQ")


@pytest.fixture
def loaded(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadedRingbridge]:
    lr = load_default(bpf_object_path, pin_dir, RING)
    yield lr
    lr.close()


class RingModel(RuleBasedStateMachine):
    lr: LoadedRingbridge

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.rb = UserRingBuffer(self.lr.ring_fd, waiting_flag_fd=self.lr.ctl_fd)
        self.lr.drain()
        self.base: KernelCounters = self.lr.read_counters()
        # Records in ring order: (pos, state, kind, value, length); state is
        # "busy", "done" or "discard".
        self.queue: list[list[object]] = []
        self.consumed = 0  # records of self.queue the kernel has taken
        self.expect_samples = 0
        self.expect_bytes = 0
        self.expect_kind: dict[int, tuple[int, int]] = {}

    def _payload(self, kind: int, value: int, extra: int) -> bytes:
        return SAMPLE.pack(kind, 0, value) + bytes(extra)

    @rule(
        target=reservations,
        kind=st.integers(0, 7),
        value=st.integers(0, 2**64 - 1),
        extra=st.integers(0, 300),
    )
    def reserve(self, kind: int, value: int, extra: int) -> object:
        payload = self._payload(kind, value, extra)
        try:
            r = self.rb.reserve(len(payload))
        except RingFullError:
            assert self.rb.free_bytes() < core.record_size(len(payload))
            return None
        r.view[:] = payload
        entry: list[object] = [r.pos, "busy", kind, value, len(payload)]
        self.queue.append(entry)
        return (r, entry)

    @rule(item=consumes(reservations), keep=st.booleans())
    def finish(self, item: object, keep: bool) -> None:
        if item is None:
            return
        assert isinstance(item, tuple)
        r: object = item[0]
        entry: object = item[1]
        assert isinstance(r, Sample) and isinstance(entry, list)
        if keep:
            self.rb.submit(r)
            entry[1] = "done"
        else:
            self.rb.discard(r)
            entry[1] = "discard"

    @rule(
        samples=st.lists(
            st.tuples(st.integers(0, 7), st.integers(0, 2**64 - 1), st.integers(0, 100)),
            min_size=1,
            max_size=20,
        )
    )
    def commit_batch(self, samples: list[tuple[int, int, int]]) -> None:
        payloads = [self._payload(k, v, e) for k, v, e in samples]
        start = self.rb.producer_pos
        try:
            self.rb.commit_samples(payloads)
        except RingFullError:
            assert self.rb.producer_pos == start
            return
        pos = start
        for (k, v, _), p in zip(samples, payloads, strict=True):
            self.queue.append([pos, "done", k, v, len(p)])
            pos += core.record_size(len(p))

    @precondition(lambda self: bool(self.queue))
    @rule()
    def drain(self) -> None:
        got = self.lr.drain()
        want = 0
        while self.consumed < len(self.queue):
            _, state, kind, value, length = self.queue[self.consumed]
            if state == "busy":
                break  # head-of-line: the kernel stops at a BUSY record
            self.consumed += 1
            if state == "discard":
                continue
            assert isinstance(kind, int) and isinstance(value, int)
            assert isinstance(length, int)
            want += 1
            self.expect_samples += 1
            self.expect_bytes += length
            cnt, tot = self.expect_kind.get(kind, (0, 0))
            self.expect_kind[kind] = (cnt + 1, tot + value)  # exact: carried past 2**64
        assert got == want

    @invariant()
    def kernel_matches_model(self) -> None:
        c = self.lr.read_counters()
        assert c.samples - self.base.samples == self.expect_samples
        assert c.bytes - self.base.bytes == self.expect_bytes
        assert sum(c.drain_errors.values()) == sum(self.base.drain_errors.values())
        for kind, (cnt, tot) in self.expect_kind.items():
            assert c.kind_count[kind] - self.base.kind_count[kind] == cnt
            assert c.kind_value[kind] - self.base.kind_value[kind] == tot
        pending = self.queue[self.consumed :]
        first = pending[0][0] if pending else self.rb.producer_pos
        assert self.rb.consumer_pos() == first

    def teardown(self) -> None:
        # Leave no BUSY record behind for the next example.
        for entry in self.queue[self.consumed :]:
            if entry[1] == "busy":
                pos = entry[0]
                assert isinstance(pos, int)
                r = self.rb._outstanding[pos]
                self.rb.discard(r)
        self.lr.drain()
        self.rb.close()


def test_producer_matches_model_on_real_ring(loaded: LoadedRingbridge) -> None:
    RingModel.lr = loaded
    run = RingModel.TestCase
    run.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()
