"""The default ringbridge BPF program set: load once, pin, re-open from pins.

Pins make the kernel side outlive the service: a restarted service (or a
second tool such as ``ringbridge drain``) re-opens the same ring and counters
from bpffs instead of loading a fresh, empty set. The pin directory is
therefore treated as owned state: it is re-used only when it holds exactly
our complete, compatible set, and never overwritten otherwise.

Map value layouts mirror ``bpf/ringbridge.h``; ``tests/kernel/test_btf.py``
checks them against the object's BTF, and :func:`load_default` checks the
value sizes of the maps it opens.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from pathlib import Path
from typing import Final

from ..artifacts import build_artifact
from ..closing import Closing
from ..core import ring as core
from ..errors import ConfigError, KernelError, PinError
from . import libbpf as lb
from .counters import COUNTERS_VALUE_SIZE, KernelCounters, read_consistent
from .pins import (
    ARM_PROG,
    COUNTERS_MAP,
    CTL_MAP,
    DISARM_PROG,
    DRAIN_PROG,
    RING_MAP,
    STATE_PINS,
    PinMeta,
    RingbridgePins,
    check_pin_dir,
    object_digest,
    refuse_orphan_state,
    staged,
    unpin_hint,
)

__all__ = [
    "CTL_VALUE_SIZE",
    "LoadedRingbridge",
    "default_object_path",
    "load_default",
    "open_pinned_drain",
]

# struct ringbridge_ctl: u32 producer_waiting; u32 drain_budget; u64 period_ns;
# u64 next_seq; u32 idle_drains; u64 idle_period_ns.
CTL_VALUE_SIZE: Final = 40
_CTL_BUDGET: Final = struct.Struct("=I")
_CTL_BUDGET_OFF: Final = 4
_CTL_PERIOD: Final = struct.Struct("=Q")
_CTL_PERIOD_OFF: Final = 8
_CTL_SEQ: Final = struct.Struct("=Q")
_CTL_SEQ_OFF: Final = 16
_CTL_IDLE_DRAINS: Final = struct.Struct("=I")
_CTL_IDLE_DRAINS_OFF: Final = 24
_CTL_IDLE_PERIOD: Final = struct.Struct("=Q")
_CTL_IDLE_PERIOD_OFF: Final = 32
_KEY0: Final = b"\0\0\0\0"
_U32_MAX: Final = 2**32 - 1
_U64_MASK: Final = 2**64 - 1


class LoadedRingbridge(Closing):
    """Open fds to a loaded (and pinned) default program set.

    Owns its fds; :meth:`close` releases them but leaves the pins, so the
    kernel side (ring contents, counters, an armed timer) stays alive.
    """

    def __init__(
        self,
        pins: RingbridgePins,
        ring_size: int,
        *,
        ring: lb.Fd,
        counters: lb.Fd,
        ctl: lb.Fd,
        drain: lb.Fd,
        arm: lb.Fd,
        disarm: lb.Fd,
        reused: bool,
    ) -> None:
        self.pins = pins
        self.ring_size = ring_size
        # True when re-opened from existing pins rather than freshly loaded.
        self.reused = reused
        self._ring = ring
        self._counters = counters
        self._ctl = ctl
        self._drain = drain
        self._arm = arm
        self._disarm = disarm
        self._ctl_map: mmap.mmap | None = None

    @property
    def ring_fd(self) -> int:
        return self._ring.fd

    @property
    def counters_fd(self) -> int:
        return self._counters.fd

    @property
    def ctl_fd(self) -> int:
        return self._ctl.fd

    @property
    def drain_prog_fd(self) -> int:
        return self._drain.fd

    @property
    def closed(self) -> bool:
        return self._ring.closed

    def drain(self) -> int:
        """Drains the ring now (bounded); returns the samples drained."""
        return _run_checked(self._drain, DRAIN_PROG)

    def arm_timer(self, period_ns: int, budget: int, idle_period_ns: int = 0) -> None:
        """Sets the timer period, idle back-off limit (0 = the BPF default) and
        per-call budget, then (re-)arms the timer."""
        if not 0 < period_ns <= _U64_MASK:
            raise ConfigError(f"timer period must be 1..2**64-1 ns, got {period_ns}")
        if not 0 <= idle_period_ns <= _U64_MASK:
            raise ConfigError(f"idle timer period must be 0..2**64-1 ns, got {idle_period_ns}")
        self.set_budget(budget)
        self._write_ctl(_CTL_PERIOD, _CTL_PERIOD_OFF, period_ns)
        self._write_ctl(_CTL_IDLE_PERIOD, _CTL_IDLE_PERIOD_OFF, idle_period_ns)
        _run_checked(self._arm, ARM_PROG)

    def timer_idle_drains(self) -> int:
        """Timer drains in a row that found the ring empty (its period has
        doubled with each); read from the mapped ctl value, no syscall."""
        return int(_CTL_IDLE_DRAINS.unpack_from(self._ctl_mapping(), _CTL_IDLE_DRAINS_OFF)[0])

    def wake_timer(self) -> None:
        """Re-arms the timer at its base period, counted from its last drain
        (at once if that is past); its back-off restarts."""
        _run_checked(self._arm, ARM_PROG)

    def disarm_timer(self) -> bool:
        """Stops the periodic drain; returns whether the timer was running."""
        rc = lb.prog_test_run(self._disarm, name=DISARM_PROG)
        if rc == -errno.EINVAL:
            # bpf_timer_cancel on a timer never initialised (never armed):
            # nothing to stop. The program's own -EINVAL (no map element)
            # cannot happen for a one-entry array.
            return False
        if rc < 0:
            raise KernelError("run", DISARM_PROG, -rc)
        return rc == 1

    def set_budget(self, n: int) -> None:
        """Max samples per bpf_user_ringbuf_drain() call (0 = the BPF default)."""
        if not 0 <= n <= _U32_MAX:
            raise ConfigError(f"drain budget must be 0..{_U32_MAX}, got {n}")
        self._write_ctl(_CTL_BUDGET, _CTL_BUDGET_OFF, n)

    def read_ctl(self) -> tuple[int, int, int]:
        """(producer_waiting, drain_budget, period_ns) as the kernel sees them."""
        raw = lb.map_lookup(self._ctl, _KEY0, CTL_VALUE_SIZE, name=CTL_MAP)
        waiting, budget, period = struct.unpack_from("=IIQ", raw)
        return waiting, budget, period

    def load_seq(self) -> int:
        """The next sample seq stored with the pins (0 for a fresh set)."""
        raw = lb.map_lookup(self._ctl, _KEY0, CTL_VALUE_SIZE, name=CTL_MAP)
        return int(_CTL_SEQ.unpack_from(raw, _CTL_SEQ_OFF)[0])

    def store_seq(self, next_seq: int) -> None:
        """Store the next sample seq (before the commit that uses the ones below)."""
        self._write_ctl(_CTL_SEQ, _CTL_SEQ_OFF, next_seq)

    def read_counters(self) -> KernelCounters:
        return read_consistent(
            lambda: lb.lookup_percpu(self._counters, _KEY0, COUNTERS_VALUE_SIZE, name=COUNTERS_MAP)
        )

    def _write_ctl(self, fmt: struct.Struct, offset: int, value: int) -> None:
        # Written in place through the mmap rather than by a whole-value map
        # update: the producer flips producer_waiting in the same value
        # concurrently, and a read-modify-write would lose its flag (leaving
        # it asleep with the consumer never asking for a wake-up).
        fmt.pack_into(self._ctl_mapping(), offset, value)

    def _ctl_mapping(self) -> mmap.mmap:
        if self._ctl_map is None:
            try:
                self._ctl_map = mmap.mmap(self._ctl.fd, mmap.PAGESIZE, mmap.MAP_SHARED)
            except OSError as exc:
                raise KernelError("mmap", CTL_MAP, exc.errno or errno.EIO) from exc
        return self._ctl_map

    def close(self) -> None:
        if self._ctl_map is not None:
            self._ctl_map.close()
            self._ctl_map = None
        for fd in (self._ring, self._counters, self._ctl, self._drain, self._arm, self._disarm):
            fd.close()

    def __repr__(self) -> str:
        return f"LoadedRingbridge({str(self.pins.dir)!r}, ring_size={self.ring_size})"


def _run_checked(prog: lb.Fd, name: str) -> int:
    rc = lb.prog_test_run(prog, name=name)
    if rc < 0:
        raise KernelError("run", name, -rc)
    return rc


def default_object_path() -> Path:
    return build_artifact("RINGBRIDGE_BPF_OBJECT", "ringbridge.bpf.o")


def load_default(obj_path: Path, pin_dir: Path, ring_size: int) -> LoadedRingbridge:
    """Opens the default program set pinned under ``pin_dir``, loading it if absent.

    - A complete set of our pins is re-opened as is (no load): the ring keeps
      its contents and the counters keep counting. Its ring size must match.
      ringbridge's own state records (``STATE_PINS``) may be there too.
    - An existing, non-empty directory that is not our complete set is never
      touched: :class:`PinError`.
    - Otherwise the object is loaded with the ring resized, and its 4 maps
      and 3 programs are pinned (all or nothing).
    """
    core.check_ring_size(ring_size, mmap.PAGESIZE)
    pins = RingbridgePins.under(pin_dir)
    check_pin_dir(pin_dir)
    if pin_dir.exists():
        everything = {p.name for p in pin_dir.iterdir()}
        refuse_orphan_state(pin_dir, everything)
        # ringbridge's own state records may sit in a complete set (optional).
        present = everything - STATE_PINS
        if present:
            if present == pins.names():
                return _reopen(pins, ring_size, obj_path)
            ours = sorted(present & pins.names())
            foreign = sorted(present - pins.names())
            if foreign:
                raise PinError(
                    f"pin dir {pin_dir} holds entries that are not ringbridge's "
                    f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                    "refusing to pin there: use another --pin-dir"
                )
            missing = sorted(pins.names() - present)
            raise PinError(
                f"pin dir {pin_dir} holds an incomplete ringbridge pin set "
                f"(has {', '.join(ours)}; missing {', '.join(missing)}); " + unpin_hint(pin_dir)
            )
    return _load_and_pin(obj_path, pins, ring_size)


def _reopen(pins: RingbridgePins, ring_size: int, obj_path: Path) -> LoadedRingbridge:
    # First: pins of another build must not run against this one's layouts
    # (or the other way round); they are refused before anything is opened.
    meta = PinMeta.open(pins.meta)
    try:
        meta.check(object_digest(obj_path), obj_path)
    finally:
        meta.close()
    opened: list[lb.Fd] = []

    def get(path: Path) -> lb.Fd:
        try:
            fd = lb.obj_get(path)
        except KernelError as exc:
            raise PinError(f"cannot open pin {path}: {exc.message}") from exc
        opened.append(fd)
        return fd

    try:
        ring = get(pins.ring)
        counters = get(pins.counters)
        ctl = get(pins.ctl)
        _expect_map(ring, pins.ring, lb.BPF_MAP_TYPE_USER_RINGBUF, None)
        _expect_map(counters, pins.counters, lb.BPF_MAP_TYPE_PERCPU_ARRAY, COUNTERS_VALUE_SIZE)
        _expect_map(ctl, pins.ctl, lb.BPF_MAP_TYPE_ARRAY, CTL_VALUE_SIZE)
        pinned_size = lb.map_info(ring, name=RING_MAP).max_entries
        if pinned_size != ring_size:
            raise PinError(
                f"the ring pinned at {pins.ring} has {pinned_size} bytes but "
                f"{ring_size} were asked for; either set the ring size to {pinned_size}, "
                + unpin_hint(pins.dir)
            )
        drain = get(pins.drain)
        arm = get(pins.arm_timer)
        disarm = get(pins.disarm_timer)
        for fd, path in ((drain, pins.drain), (arm, pins.arm_timer), (disarm, pins.disarm_timer)):
            _expect_prog(fd, path)
    except BaseException:
        for fd in opened:
            fd.close()
        raise
    return LoadedRingbridge(
        pins,
        ring_size,
        ring=ring,
        counters=counters,
        ctl=ctl,
        drain=drain,
        arm=arm,
        disarm=disarm,
        reused=True,
    )


def _expect_map(fd: lb.Fd, path: Path, map_type: int, value_size: int | None) -> None:
    try:
        info = lb.map_info(fd, name=path.name)
    except KernelError as exc:
        raise PinError(f"pin {path} is not a BPF map: {exc.message}") from exc
    if info.type != map_type or (value_size is not None and info.value_size != value_size):
        raise PinError(
            f"pin {path} is a map of type {info.type} with {info.value_size}-byte values, "
            f"not what this ringbridge expects (type {map_type}"
            f"{f', {value_size}-byte values' if value_size is not None else ''}): "
            "it was pinned by another version or program; " + unpin_hint(path.parent)
        )


def _expect_prog(fd: lb.Fd, path: Path) -> None:
    try:
        info = lb.prog_info(fd, name=path.name)
    except KernelError as exc:
        raise PinError(f"pin {path} is not a BPF program: {exc.message}") from exc
    if info.type != lb.BPF_PROG_TYPE_SYSCALL:
        raise PinError(
            f"pin {path} is a program of type {info.type}, not a syscall program; "
            + unpin_hint(path.parent)
        )


def _load_and_pin(obj_path: Path, pins: RingbridgePins, ring_size: int) -> LoadedRingbridge:
    """Load, pin into a staging dir, then rename it into place (see :mod:`.pins.staging`)."""
    opened: list[lb.Fd] = []
    try:
        with staged(pins.dir) as staging_dir, lb.BpfObject.open(obj_path) as obj:
            staging = RingbridgePins.under(staging_dir)
            obj.map(RING_MAP).set_max_entries(ring_size)
            obj.load()
            maps = {p.name: obj.map(p.name) for p in staging.maps()}
            progs = {p.name: obj.program(p.name) for p in staging.programs()}
            for name, m in maps.items():
                m.pin(staging.dir / name)
            for name, prog in progs.items():
                prog.pin(staging.dir / name)
            PinMeta.create(object_digest(obj_path), staging.meta).close()
            # The object's own fds die with it: keep duplicates.
            fds = {n: lb.Fd(os.dup(m.fd), n) for n, m in maps.items()}
            opened.extend(fds.values())
            pfds = {n: lb.Fd(os.dup(prog.fd), n) for n, prog in progs.items()}
            opened.extend(pfds.values())
    except BaseException:
        for fd in opened:
            fd.close()
        raise
    return LoadedRingbridge(
        pins,
        ring_size,
        ring=fds[RING_MAP],
        counters=fds[COUNTERS_MAP],
        ctl=fds[CTL_MAP],
        drain=pfds[DRAIN_PROG],
        arm=pfds[ARM_PROG],
        disarm=pfds[DISARM_PROG],
        reused=False,
    )


def open_pinned_drain(pin_dir: Path) -> int:
    """Runs the pinned drain program once (``ringbridge drain``); returns the count."""
    path = RingbridgePins.under(pin_dir).drain
    try:
        fd = lb.obj_get(path)
    except KernelError as exc:
        raise PinError(
            f"no ringbridge drain program pinned at {path} ({exc.message}); "
            "is the service running with this --pin-dir?"
        ) from exc
    with fd:
        _expect_prog(fd, path)
        return _run_checked(fd, DRAIN_PROG)
