"""The default program set: load, pin, re-open, timer, counters (real kernel)."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ringbridge import artifacts
from ringbridge.errors import BpfObjectError, ConfigError, PinError
from ringbridge.kernel import bpfobj, counters
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.kernel.pins import RingbridgePins, is_bpffs, unpin

RING = 1 << 16
ALL_NAMES = {
    "ringbridge_ring",
    "ringbridge_counters",
    "ringbridge_ctl",
    "ringbridge_timer",
    "ringbridge_drain",
    "ringbridge_arm_timer",
    "ringbridge_disarm_timer",
    "ringbridge_meta",
}

pytestmark = pytest.mark.kernel


@pytest.fixture
def rb(bpf_object_path: Path, pin_dir: Path) -> Iterator[LoadedRingbridge]:
    loaded = load_default(bpf_object_path, pin_dir, RING)
    try:
        yield loaded
    finally:
        loaded.close()


# -- a minimal producer through libbpf's own API, for this test file only ----


class _UserRing:
    """libbpf's user_ring_buffer__*: enough to put records in for a drain test."""

    def __init__(self, ring_fd: int) -> None:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        lib.user_ring_buffer__new.restype = ctypes.c_void_p
        lib.user_ring_buffer__new.argtypes = [ctypes.c_int, ctypes.c_void_p]
        lib.user_ring_buffer__reserve.restype = ctypes.c_void_p
        lib.user_ring_buffer__reserve.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.user_ring_buffer__submit.restype = None
        lib.user_ring_buffer__submit.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.user_ring_buffer__free.restype = None
        lib.user_ring_buffer__free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._rb = lib.user_ring_buffer__new(ring_fd, None)
        assert self._rb, f"user_ring_buffer__new: {os.strerror(ctypes.get_errno())}"

    def put(self, payload: bytes) -> None:
        ptr = self._lib.user_ring_buffer__reserve(self._rb, len(payload))
        assert ptr, f"user_ring_buffer__reserve: {os.strerror(ctypes.get_errno())}"
        ctypes.memmove(ptr, payload, len(payload))
        self._lib.user_ring_buffer__submit(self._rb, ptr)

    def close(self) -> None:
        if self._rb:
            self._lib.user_ring_buffer__free(self._rb)
            self._rb = None


def _sample(kind: int, value: int, flags: int = 0, extra: bytes = b"") -> bytes:
    return struct.pack("=IIQ", kind, flags, value) + extra


def _put(ring_fd: int, *payloads: bytes) -> None:
    """``payloads`` into the ring through libbpf, in order."""
    ring = _UserRing(ring_fd)
    try:
        for payload in payloads:
            ring.put(payload)
    finally:
        ring.close()


# -- loading and pins ---------------------------------------------------------


def test_fresh_load_pins_every_object(bpf_object_path: Path, pin_dir: Path) -> None:
    assert not pin_dir.exists()
    with load_default(bpf_object_path, pin_dir, RING) as rb:
        assert not rb.reused
        assert {p.name for p in pin_dir.iterdir()} == ALL_NAMES
        pins = RingbridgePins.under(pin_dir)
        assert pins.ring == pin_dir / "ringbridge_ring"
        assert pins.disarm_timer == pin_dir / "ringbridge_disarm_timer"
        assert {p.name for p in pins.all()} == ALL_NAMES
        info = lb.map_info(rb.ring_fd)
        assert (info.type, info.max_entries) == (lb.BPF_MAP_TYPE_USER_RINGBUF, RING)
        assert rb.ring_size == RING
    # close() leaves the pins in place.
    assert {p.name for p in pin_dir.iterdir()} == ALL_NAMES


def test_reopen_from_pins_is_the_same_set(bpf_object_path: Path, pin_dir: Path) -> None:
    with load_default(bpf_object_path, pin_dir, RING) as first:
        ids = [lb.map_info(fd).id for fd in (first.ring_fd, first.counters_fd, first.ctl_fd)]
        drain_id = lb.prog_info(first.drain_prog_fd).id
        first.drain()
    with load_default(bpf_object_path, pin_dir, RING) as second:
        assert second.reused
        assert [
            lb.map_info(fd).id for fd in (second.ring_fd, second.counters_fd, second.ctl_fd)
        ] == ids
        assert lb.prog_info(second.drain_prog_fd).id == drain_id
        # The kernel state carried over: the first session's drain is counted.
        assert second.read_counters().drain_calls == 1


def test_reopen_with_another_ring_size_is_refused(bpf_object_path: Path, pin_dir: Path) -> None:
    load_default(bpf_object_path, pin_dir, RING).close()
    with pytest.raises(PinError) as info:
        load_default(bpf_object_path, pin_dir, RING * 2)
    msg = str(info.value)
    assert str(RING) in msg and str(RING * 2) in msg
    assert f"ringbridge unpin --pin-dir {pin_dir}" in msg
    assert {p.name for p in pin_dir.iterdir()} == ALL_NAMES  # untouched


def test_foreign_non_empty_dir_is_never_clobbered(bpf_object_path: Path, pin_dir: Path) -> None:
    (pin_dir / "someone_elses").mkdir(parents=True)
    with pytest.raises(PinError) as info:
        load_default(bpf_object_path, pin_dir, RING)
    assert "someone_elses" in str(info.value)
    assert [p.name for p in pin_dir.iterdir()] == ["someone_elses"]


def test_incomplete_pin_set_is_refused(bpf_object_path: Path, pin_dir: Path) -> None:
    load_default(bpf_object_path, pin_dir, RING).close()
    (pin_dir / "ringbridge_timer").unlink()
    with pytest.raises(PinError) as info:
        load_default(bpf_object_path, pin_dir, RING)
    assert "ringbridge_timer" in str(info.value)
    assert "ringbridge unpin" in str(info.value)


def test_pin_dir_not_on_bpffs(bpf_object_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "pins"
    with pytest.raises(PinError) as info:
        load_default(bpf_object_path, target, RING)
    assert "BPF filesystem" in str(info.value)
    assert not target.exists()
    assert not is_bpffs(tmp_path)
    assert is_bpffs(Path("/sys/fs/bpf"))


PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("size", [0, -PAGE, 1000, PAGE // 2, PAGE * 3])
def test_invalid_ring_size(bpf_object_path: Path, pin_dir: Path, size: int) -> None:
    with pytest.raises(ConfigError):
        load_default(bpf_object_path, pin_dir, size)
    assert not pin_dir.exists()


def test_failed_load_leaves_nothing_behind(tmp_path: Path, pin_dir: Path) -> None:
    with pytest.raises(BpfObjectError) as info:
        load_default(tmp_path / "missing.bpf.o", pin_dir, RING)
    assert info.value.errno == errno.ENOENT
    assert not pin_dir.exists()


def test_unpin_removes_only_our_names(bpf_object_path: Path, pin_dir: Path) -> None:
    load_default(bpf_object_path, pin_dir, RING).close()
    removed = unpin(pin_dir)
    assert {p.name for p in removed} == ALL_NAMES | {pin_dir.name}
    assert not pin_dir.exists()
    assert unpin(pin_dir) == []

    load_default(bpf_object_path, pin_dir, RING).close()
    (pin_dir / "keep_me").mkdir()
    removed = unpin(pin_dir)
    assert {p.name for p in removed} == ALL_NAMES
    assert [p.name for p in pin_dir.iterdir()] == ["keep_me"]


def test_default_object_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RINGBRIDGE_BPF_OBJECT", raising=False)
    package = Path(bpfobj.__file__).resolve().parents[1] / "_bpf"
    # The package's own copy (installed there by bpf/Makefile, shipped in the wheel).
    assert bpfobj.default_object_path() == package / "ringbridge.bpf.o"
    assert bpfobj.default_object_path().is_file()
    monkeypatch.setenv("RINGBRIDGE_BPF_OBJECT", "/x/y.bpf.o")
    assert bpfobj.default_object_path() == Path("/x/y.bpf.o")


def test_artifact_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """env, then the package's _bpf/, then the source tree's build/, else the package path."""
    pkg, build = tmp_path / "_bpf", tmp_path / "build"
    monkeypatch.setattr(artifacts, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(artifacts, "SOURCE_BUILD_DIR", build)
    monkeypatch.delenv("RINGBRIDGE_X", raising=False)
    assert artifacts.build_artifact("RINGBRIDGE_X", "x.o") == pkg / "x.o"  # neither exists
    build.mkdir()
    (build / "x.o").touch()
    assert artifacts.build_artifact("RINGBRIDGE_X", "x.o") == build / "x.o"
    pkg.mkdir()
    (pkg / "x.o").touch()
    assert artifacts.build_artifact("RINGBRIDGE_X", "x.o") == pkg / "x.o"
    monkeypatch.setenv("RINGBRIDGE_X", "/elsewhere/x.o")
    assert artifacts.build_artifact("RINGBRIDGE_X", "x.o") == Path("/elsewhere/x.o")


# -- programs and counters ----------------------------------------------------


def test_drain_on_empty_ring(rb: LoadedRingbridge) -> None:
    before = rb.read_counters()
    assert rb.drain() == 0
    after = rb.read_counters()
    assert after.drain_calls == before.drain_calls + 1
    assert after.samples == 0
    assert after.drain_errors == {"EINVAL": 0, "E2BIG": 0, "EBUSY": 0, "OTHER": 0}


def test_open_pinned_drain(rb: LoadedRingbridge, pin_dir: Path) -> None:
    assert bpfobj.open_pinned_drain(pin_dir) == 0
    assert rb.read_counters().drain_calls == 1


def test_open_pinned_drain_without_pins(pin_dir: Path) -> None:
    with pytest.raises(PinError) as info:
        bpfobj.open_pinned_drain(pin_dir)
    assert "ringbridge_drain" in str(info.value)


def test_timer_drains_on_its_own(rb: LoadedRingbridge) -> None:
    assert rb.disarm_timer() is False  # never armed
    before = rb.read_counters().drain_calls
    # No back-off (idle period = period): it drains every period, empty or not.
    rb.arm_timer(period_ns=1_000_000, budget=64, idle_period_ns=1_000_000)
    assert rb.read_ctl()[1:] == (64, 1_000_000)
    time.sleep(0.05)
    armed = rb.read_counters().drain_calls
    assert armed - before >= 5, f"timer drained {armed - before} times in 50 ms at 1 kHz"
    assert rb.disarm_timer() is True
    stopped = rb.read_counters().drain_calls
    time.sleep(0.02)
    assert rb.read_counters().drain_calls == stopped
    assert rb.disarm_timer() is False
    # Re-arming an initialised timer works (bpf_timer_init's -EBUSY path).
    rb.arm_timer(period_ns=2_000_000, budget=0)
    assert rb.disarm_timer() is True


def _until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.005)


def test_idle_timer_backs_off_and_a_wake_restores_the_period(rb: LoadedRingbridge) -> None:
    # 100 us while busy, at most 20 ms while the ring stays empty.
    rb.arm_timer(period_ns=100_000, budget=64, idle_period_ns=20_000_000)
    try:
        # 100 us doubling 8 times reaches 25.6 ms > 20 ms: fully backed off.
        _until(lambda: rb.timer_idle_drains() >= 8, "timer backed off on an empty ring")
        before = rb.read_counters().drain_calls
        time.sleep(0.2)
        idle_calls = rb.read_counters().drain_calls - before
        # ~10 at 20 ms; the base period would have made ~2000.
        assert 1 <= idle_calls <= 40, idle_calls
        _put(rb.ring_fd, _sample(kind=6, value=1))
        rb.wake_timer()  # what the producer does after a pass that committed
        _until(lambda: rb.read_counters().kind_count[6] == 1, "sample consumed after the wake")
        assert rb.read_ctl()[1:] == (64, 100_000)  # period and budget unchanged
    finally:
        rb.disarm_timer()


def _next_drain_after(rb: LoadedRingbridge, calls: int) -> float:
    """When (time.monotonic, to a few ms) the timer's drain calls passed ``calls``."""
    _until(lambda: rb.read_counters().drain_calls > calls, f"a drain after {calls}")
    return time.monotonic()


def test_a_wake_drains_a_period_after_the_last_drain_at_once_if_that_is_past(
    rb: LoadedRingbridge,
) -> None:
    period = 0.3
    rb.arm_timer(period_ns=int(period * 1e9), budget=64, idle_period_ns=20_000_000_000)
    try:
        _until(lambda: rb.timer_idle_drains() >= 1, "a first empty drain")
        # Just after a drain (the next one two periods away, backed off):
        # a wake brings it to one period after that drain, not sooner.
        last = _next_drain_after(rb, rb.read_counters().drain_calls)
        calls = rb.read_counters().drain_calls
        rb.wake_timer()
        assert rb.timer_idle_drains() == 0
        drained = _next_drain_after(rb, calls)
        assert period - 0.05 < drained - last < 1.5 * period, drained - last
        # Backed off further (its next drain 1.2 s or more after its last):
        # woken more than a period after its last drain, it drains at once.
        _until(lambda: rb.timer_idle_drains() >= 3, "backed off three steps")
        time.sleep(period + 0.05)
        calls = rb.read_counters().drain_calls
        woke = time.monotonic()
        rb.wake_timer()
        assert _next_drain_after(rb, calls) - woke < period / 2
    finally:
        rb.disarm_timer()


def test_a_drain_that_empties_the_ring_waits_two_periods(rb: LoadedRingbridge) -> None:
    """Samples left behind (a drain stopped at its budget): the next drain after
    one period (idle_drains 0). The ring emptied: after two (idle_drains 1:
    one step of back-off), then doubling while it stays empty (2, ...)."""
    period = 50_000_000
    rb.arm_timer(period_ns=period, budget=4, idle_period_ns=2_000_000_000)
    try:
        _until(lambda: rb.timer_idle_drains() >= 2, "timer backed off on an empty ring")
        _put(rb.ring_fd, *(_sample(kind=9, value=i) for i in range(10)))
        rb.wake_timer()  # drains of 4, 4 and 2, a period apart at most
        seen: dict[int, tuple[int, int]] = {}  # samples consumed -> (idle_drains, drain calls)
        deadline = time.monotonic() + 5
        while 11 not in seen and time.monotonic() < deadline:
            idle = rb.timer_idle_drains()
            c = rb.read_counters()
            if rb.timer_idle_drains() != idle:
                continue  # a drain between the reads: not one state
            if c.kind_count[9] == 10 and idle == 2:
                seen[11] = (idle, c.drain_calls)  # the empty drain after the emptying one
            elif c.kind_count[9] not in seen:
                seen[c.kind_count[9]] = (idle, c.drain_calls)
            time.sleep(0.001)
        assert [k for k in seen if k] == [4, 8, 10, 11], seen
        assert seen[4][0] == seen[8][0] == 0, seen  # samples left: the base period next
        assert seen[10][0] == 1, seen  # emptied: two periods next
        assert seen[11][1] == seen[10][1] + 1, seen  # then one empty drain, and more back-off
    finally:
        rb.disarm_timer()


def test_ctl_writes_keep_producer_waiting(rb: LoadedRingbridge) -> None:
    lb.map_update(
        rb.ctl_fd, b"\0" * 4, struct.pack("=IIQ", 1, 0, 0).ljust(bpfobj.CTL_VALUE_SIZE, b"\0")
    )
    rb.set_budget(9)
    rb.arm_timer(period_ns=50_000_000, budget=10)
    assert rb.read_ctl() == (1, 10, 50_000_000)
    rb.disarm_timer()
    with pytest.raises(ConfigError):
        rb.set_budget(-1)
    with pytest.raises(ConfigError):
        rb.arm_timer(period_ns=0, budget=1)


def test_read_counters_sums_per_cpu(rb: LoadedRingbridge) -> None:
    ncpus = lb.num_possible_cpus()
    words = counters.WORDS
    assert words * 8 == counters.COUNTERS_VALUE_SIZE
    big = 2**63 + 5
    per_cpu = []
    for cpu in range(ncpus):
        v = [0] * words
        v[0] = cpu + 1  # samples
        v[2] = 10  # drain_calls
        v[counters.DRAIN_ERRORS + 2] = cpu  # drain_errors["EBUSY"]
        v[counters.KIND_COUNT + 7] = 3  # kind_count[7]
        v[counters.KIND_VALUE + 7] = big  # kind_value[7]: past 2**64 once there are 2 CPUs
        v[counters.KIND_VALUE_HI + 8] = cpu + 1  # kind 8: (cpu + 1) * 2**64 + 1
        v[counters.KIND_VALUE + 8] = 1
        per_cpu.append(struct.pack(f"={words}Q", *v))
    lb.map_update(rb.counters_fd, b"\0" * 4, b"".join(per_cpu))
    c = rb.read_counters()
    assert c.samples == ncpus * (ncpus + 1) // 2
    assert c.drain_calls == 10 * ncpus
    assert c.drain_errors["EBUSY"] == sum(range(ncpus))
    assert c.kind_count[7] == 3 * ncpus
    assert c.kind_value[7] == big * ncpus  # exact, not modulo 2**64
    assert c.kind_value[8] == sum((cpu + 1) * 2**64 + 1 for cpu in range(ncpus))
    assert len(c.kind_count) == len(c.kind_value) == 256


def _drain_on(rb: LoadedRingbridge, cpu: int) -> int:
    """Runs the drain program on ``cpu`` (it counts into that CPU's copy)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        return rb.drain()
    finally:
        os.sched_setaffinity(0, before)


def test_per_kind_sums_carry_past_2_64_on_every_cpu(rb: LoadedRingbridge) -> None:
    """u64max + 3 reads 2**64 + 2, not 2: the program carries, per CPU."""
    u64max = 2**64 - 1
    values = (u64max, 3, u64max, u64max, 2**63)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    ring = _UserRing(rb.ring_fd)
    expect = 0
    try:
        for value in values:
            for cpu in cpus:  # the same samples drained on each CPU
                ring.put(_sample(kind=5, value=value))
                ring.put(_sample(kind=6, value=1))
                assert _drain_on(rb, cpu) == 2
                expect += value
                c = rb.read_counters()
                assert c.kind_value[5] == expect  # never modulo 2**64, never backwards
    finally:
        ring.close()
    assert c.kind_value[5] == len(cpus) * sum(values)
    assert c.kind_value[5] == len(cpus) * (3 * 2**64 + 2**63)
    assert c.kind_count[5] == 5 * len(cpus) and c.kind_value[6] == 5 * len(cpus)
    raw = lb.lookup_percpu(rb.counters_fd, b"\0" * 4, counters.COUNTERS_VALUE_SIZE)

    def words(r: bytes, at: int) -> int:
        return int(struct.unpack_from("=Q", r, 8 * (at + 5))[0])

    # Each CPU carried on its own words: 3 carries each, the low word 2**63.
    assert [(words(raw[c], counters.KIND_VALUE_HI), words(raw[c], counters.KIND_VALUE))
            for c in cpus] == [(3, 2**63)] * len(cpus)  # fmt: skip
    assert not any(counters.in_carry(r) for r in raw)


def test_drain_counts_content_per_kind(rb: LoadedRingbridge) -> None:
    _put(
        rb.ring_fd,
        *(_sample(kind=3, value=1000 + i) for i in range(10)),
        _sample(kind=255, value=2**64 - 1, extra=b"payload!"),
        _sample(kind=300, value=1),  # beyond RINGBRIDGE_MAX_KINDS
        b"short!!!",  # 8 bytes < sizeof(struct ringbridge_sample)
    )
    assert rb.drain() == 13
    c = rb.read_counters()
    assert c.samples == 13
    assert c.bytes == 10 * 16 + 24 + 16 + 8
    assert c.kind_count[3] == 10
    assert c.kind_value[3] == sum(1000 + i for i in range(10))
    assert c.kind_count[255] == 1
    assert c.kind_value[255] == 2**64 - 1
    assert c.kind_overflow == 1
    assert c.short_samples == 1
    assert sum(c.kind_count) == 11
    assert rb.drain() == 0


def test_drain_respects_budget(rb: LoadedRingbridge) -> None:
    rb.set_budget(4)
    _put(rb.ring_fd, *(_sample(kind=1, value=i) for i in range(10)))
    before = rb.read_counters().drain_calls
    # The kick program loops bounded calls until one comes back short.
    assert rb.drain() == 10
    assert rb.read_counters().drain_calls - before == 3  # 4 + 4 + 2


def test_close_is_idempotent(rb: LoadedRingbridge) -> None:
    rb.set_budget(1)  # maps the ctl value
    rb.close()
    rb.close()
    assert rb.closed


@pytest.mark.kernel
def test_next_seq_is_kept_with_the_pins(bpf_object_path: Path, pin_dir: Path) -> None:
    with load_default(bpf_object_path, pin_dir, 4096) as lr:
        assert lr.load_seq() == 0
        lr.store_seq(12345)
        assert lr.read_ctl()[0] == 0  # the neighbouring fields are untouched
    with load_default(bpf_object_path, pin_dir, 4096) as lr:
        assert lr.reused
        assert lr.load_seq() == 12345


def test_pins_of_another_build_refuse_to_reopen(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    """Pins made from one build are not re-opened for another: the identity record differs."""
    with load_default(bpf_object_path, pin_dir, RING):
        pass
    rebuilt = tmp_path / "ringbridge.bpf.o"
    # Same ELF, one byte more: any change of the file is another object.
    rebuilt.write_bytes(bpf_object_path.read_bytes() + b"\0")
    with pytest.raises(PinError, match=r"made from another BPF object.*ringbridge unpin --pin-dir"):
        load_default(rebuilt, pin_dir, RING)
    assert {p.name for p in pin_dir.iterdir()} == ALL_NAMES  # untouched
    with load_default(bpf_object_path, pin_dir, RING) as rb:
        assert rb.reused
