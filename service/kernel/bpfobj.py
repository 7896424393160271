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

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ringbridge.artifacts import build_artifact
from ringbridge.core import ring as core
from ringbridge.errors import ConfigError, KernelError, PinError, ProducerLockedError
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.counters import (
    COUNTERS_VALUE_SIZE,
    DRAIN_ERROR_NAMES,
    MAX_KINDS,
    KernelCounters,
    read_consistent,
)
from ringbridge.kernel.environment import bpffs_hint
from ringbridge.kernel.libc import libc
from ringbridge.kernel.pinmeta import META_PIN, PinMeta, object_digest, remove_pin_set

from ..closing import Closing

__all__ = [
    "BPF_FS_MAGIC",
    "COUNTERS_VALUE_SIZE",
    "CTL_VALUE_SIZE",
    "DRAIN_ERROR_NAMES",
    "MAX_KINDS",
    "KernelCounters",
    "LoadedRingbridge",
    "RingbridgePins",
    "default_object_path",
    "is_bpffs",
    "load_default",
    "lock_producer",
    "open_pinned_drain",
    "producer_lock_path",
    "unpin",
]

BPF_FS_MAGIC: Final = 0xCAFE4A11

RING_MAP: Final = "ringbridge_ring"
COUNTERS_MAP: Final = "ringbridge_counters"
CTL_MAP: Final = "ringbridge_ctl"
TIMER_MAP: Final = "ringbridge_timer"
DRAIN_PROG: Final = "ringbridge_drain"
ARM_PROG: Final = "ringbridge_arm_timer"
DISARM_PROG: Final = "ringbridge_disarm_timer"

# struct ringbridge_counters: its layout and reader live in kernel/counters.py.
# struct ringbridge_ctl: u32 producer_waiting; u32 drain_budget; u64 period_ns;
# u64 next_seq.
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


@dataclass(frozen=True)
class RingbridgePins:
    """Where each pinned object of the default program set lives."""

    dir: Path
    ring: Path
    counters: Path
    ctl: Path
    timer: Path
    drain: Path
    arm_timer: Path
    disarm_timer: Path
    meta: Path  # identity record: which object made the set (pinmeta)

    @classmethod
    def under(cls, pin_dir: Path) -> RingbridgePins:
        d = Path(pin_dir)
        return cls(
            dir=d,
            ring=d / RING_MAP,
            counters=d / COUNTERS_MAP,
            ctl=d / CTL_MAP,
            timer=d / TIMER_MAP,
            drain=d / DRAIN_PROG,
            arm_timer=d / ARM_PROG,
            disarm_timer=d / DISARM_PROG,
            meta=d / META_PIN,
        )

    def maps(self) -> tuple[Path, ...]:
        return (self.ring, self.counters, self.ctl, self.timer)

    def programs(self) -> tuple[Path, ...]:
        return (self.drain, self.arm_timer, self.disarm_timer)

    def all(self) -> tuple[Path, ...]:
        return (*self.maps(), *self.programs(), self.meta)

    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.all())


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
    def arm_prog_fd(self) -> int:
        return self._arm.fd

    @property
    def disarm_prog_fd(self) -> int:
        return self._disarm.fd

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
        """Re-arms the timer at its base period (after it backed off while idle)."""
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


# --------------------------------------------------------------------------
# Paths and checks
# --------------------------------------------------------------------------


def default_object_path() -> Path:
    return build_artifact("RINGBRIDGE_BPF_OBJECT", "ringbridge.bpf.o")


class _StatFs(ctypes.Structure):
    # Only f_type is read; the padding covers struct statfs on 64-bit Linux
    # (120 bytes) with room to spare.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


def _fs_type(path: Path) -> int:
    # os.statvfs does not expose f_type, which is what identifies bpffs.
    statfs = libc().statfs
    statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_StatFs)]
    statfs.restype = ctypes.c_int
    buf = _StatFs()
    if statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return int(buf.f_type) & 0xFFFFFFFF


def is_bpffs(path: Path) -> bool:
    """Whether ``path`` (or, if missing, its nearest existing parent) is on bpffs."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return _fs_type(p) == BPF_FS_MAGIC
    except OSError:
        return False


def _unpin_hint(pin_dir: Path) -> str:
    return (
        f"run `ringbridge unpin --pin-dir {pin_dir}` to remove the old pins "
        "(this drops the ring's contents and the kernel counters), or use another --pin-dir"
    )


# --------------------------------------------------------------------------
# Load / re-open / unpin
# --------------------------------------------------------------------------


def load_default(obj_path: Path, pin_dir: Path, ring_size: int) -> LoadedRingbridge:
    """Opens the default program set pinned under ``pin_dir``, loading it if absent.

    - A complete set of our pins is re-opened as is (no load): the ring keeps
      its contents and the counters keep counting. Its ring size must match.
    - An existing, non-empty directory that is not our complete set is never
      touched: :class:`PinError`.
    - Otherwise the object is loaded with the ring resized, and its 4 maps
      and 3 programs are pinned (all or nothing).
    """
    core.check_ring_size(ring_size, mmap.PAGESIZE)
    pins = RingbridgePins.under(pin_dir)
    if not is_bpffs(pin_dir):
        raise PinError(f"pin dir {pin_dir} is not on a BPF filesystem; {bpffs_hint()}")
    if pin_dir.exists():
        if not pin_dir.is_dir():
            raise PinError(f"pin dir {pin_dir} exists and is not a directory")
        present = {p.name for p in pin_dir.iterdir()}
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
                f"(has {', '.join(ours)}; missing {', '.join(missing)}); " + _unpin_hint(pin_dir)
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
                + _unpin_hint(pins.dir)
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
            "it was pinned by another version or program; " + _unpin_hint(path.parent)
        )


def _expect_prog(fd: lb.Fd, path: Path) -> None:
    try:
        info = lb.prog_info(fd, name=path.name)
    except KernelError as exc:
        raise PinError(f"pin {path} is not a BPF program: {exc.message}") from exc
    if info.type != lb.BPF_PROG_TYPE_SYSCALL:
        raise PinError(
            f"pin {path} is a program of type {info.type}, not a syscall program; "
            + _unpin_hint(path.parent)
        )


def _staging_dir(pin_dir: Path, pid: int) -> Path:
    # No dots: bpffs refuses names containing "." (reserved).
    return pin_dir.parent / f"{pin_dir.name}-staging-{pid}"


def _remove_stale_staging(pin_dir: Path) -> None:
    # A loader killed while pinning leaves its staging dir behind; it never
    # blocks anyone (the pin dir itself was not touched), but is tidied here.
    prefix = f"{pin_dir.name}-staging-"
    for entry in pin_dir.parent.glob(prefix + "*"):
        pid = entry.name[len(prefix) :]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(PinError):
            unpin(entry)


def _load_and_pin(obj_path: Path, pins: RingbridgePins, ring_size: int) -> LoadedRingbridge:
    """Load, pin into a staging dir, then rename it into place.

    The rename makes the pin set appear whole or not at all: a loader killed
    half-way never leaves an incomplete set under the real pin dir, and of
    two loaders racing for a fresh dir exactly one wins (rename onto a
    non-empty directory fails).
    """
    try:
        pins.dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PinError(f"cannot create the parent of pin dir {pins.dir}: {exc}") from exc
    # Re-checked on the directory itself: a symlink could point off bpffs.
    if not is_bpffs(pins.dir.parent):
        raise PinError(f"pin dir {pins.dir} is not on a BPF filesystem")
    _remove_stale_staging(pins.dir)
    staging = RingbridgePins.under(_staging_dir(pins.dir, os.getpid()))
    try:
        # 0700: another local user must not fill it or hold it open.
        staging.dir.mkdir(mode=0o700)
    except OSError as exc:
        raise PinError(f"cannot create staging dir {staging.dir}: {exc}") from exc

    opened: list[lb.Fd] = []
    try:
        with lb.BpfObject.open(obj_path) as obj:
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
        try:
            # Replaces pins.dir only if it is missing or empty.
            os.rename(staging.dir, pins.dir)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise PinError(f"pin dir {pins.dir} appeared while loading; retry") from None
            raise PinError(f"cannot move pins into {pins.dir}: {exc}") from exc
    except BaseException:
        for fd in opened:
            fd.close()
        # Never mask the original error with a cleanup failure.
        with contextlib.suppress(PinError):
            unpin(staging.dir)
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


def unpin(pin_dir: Path) -> list[Path]:
    """Removes our pins under ``pin_dir`` (only our names), then the dir if empty.

    For a user object's pin set (identity record, no built-in ring) every
    entry goes: ringbridge made that dir whole.

    Returns what was removed. Objects still held open elsewhere (a running
    service) stay alive until their last fd closes.
    """
    if (pin_dir / META_PIN).exists() and not (pin_dir / RING_MAP).exists():
        # A pin set made for a user's object: every entry is ours.
        gone = remove_pin_set(pin_dir)
        if pin_dir in gone:
            with contextlib.suppress(OSError):
                producer_lock_path(pin_dir).rmdir()
        return gone
    pins = RingbridgePins.under(pin_dir)
    removed: list[Path] = []
    for path in pins.all():
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PinError(f"cannot remove pin {path}: {exc}") from exc
        removed.append(path)
    try:
        pin_dir.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise PinError(f"cannot remove pin dir {pin_dir}: {exc}") from exc
    else:
        removed.append(pin_dir)
        # The producer lock goes with its pin dir (a holder keeps its fd).
        with contextlib.suppress(OSError):
            producer_lock_path(pin_dir).rmdir()
    return removed


def producer_lock_path(pin_dir: Path) -> Path:
    """The producer lock of ``pin_dir``: a private directory next to it on bpffs."""
    # bpffs refuses names with dots.
    return pin_dir.with_name(f"{pin_dir.name}_producer_lock")


def _private_dir_fd(path: Path) -> int:
    """An fd of directory ``path``, created 0700; one others could open is replaced.

    Anybody who can open a directory can ``flock`` it, and a lock held through
    an fd opened while the directory was accessible outlives any chmod. So a
    lock directory that is not ours alone (another owner, group/other bits, a
    symlink, not a directory) is removed and created afresh: a stale fd keeps
    its lock on the old inode, which no longer matters.
    """
    for _ in range(3):
        try:
            os.mkdir(path, 0o700)  # umask can only take bits away
        except FileExistsError:
            pass
        except OSError as exc:
            raise PinError(f"cannot create producer lock {path}: {exc}") from exc
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                st = os.fstat(fd)
                if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0:
                    return fd
                os.close(fd)
                os.rmdir(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue  # raced with another starter: try again
        except OSError as exc:
            raise PinError(f"cannot replace producer lock {path} (not private): {exc}") from exc
    raise PinError(f"producer lock {path} keeps being replaced by someone else")


def lock_producer(pin_dir: Path) -> lb.Fd:
    """Take the pin dir's producer lock: one producer per ring.

    A user ring buffer has exactly one producer by contract: two processes
    advancing producer_pos would overwrite each other's records and can
    poison the ring. The lock is ``flock`` on a directory only this user can
    open (:func:`producer_lock_path`, mode 0700, on bpffs next to the pin dir:
    the lock is per inode, so it also holds across containers sharing the
    host's bpffs), released by the kernel when the holder exits, even on a
    crash. Another local user can neither take it nor keep a restart from
    taking it. The pin dir itself is made 0700 when it is ours and was not.
    """
    try:
        st = os.stat(pin_dir)
    except OSError as exc:
        raise PinError(f"cannot open pin dir {pin_dir} to lock it: {exc}") from exc
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        # Made by an older version, or by hand: nobody else needs to look in.
        with contextlib.suppress(OSError):
            os.chmod(pin_dir, 0o700)
    path = producer_lock_path(pin_dir)
    fd = _private_dir_fd(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ProducerLockedError(
            f"another ringbridge producer holds the ring pinned under {pin_dir}; "
            "a user ring buffer takes one producer only: stop it or use another --pin-dir"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise PinError(f"cannot lock {path}: {exc}") from exc
    return lb.Fd(fd, f"{pin_dir} (producer lock)")


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
