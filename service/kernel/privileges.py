"""Drop every capability once the kernel objects are open.

Loading and pinning a BPF object needs CAP_BPF (and CAP_SYS_ADMIN for bpffs);
using it afterwards does not: since Linux 5.19 the fds are the capability --
map lookups, BPF_PROG_TEST_RUN of the drain and timer programs, and the ring's
mmap all work for a process holding them, even with
``kernel.unprivileged_bpf_disabled=2`` (measured on 6.18). So a service that
has loaded, mapped and locked its ring gives up all privilege: a compromise of
the HTTP side can then no longer load BPF programs or touch other pins.

Capabilities are per *thread* in Linux (``capset`` acts on the caller), so the
drop is only meaningful while the process has one thread; it refuses
otherwise rather than leave a privileged thread behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from ..errors import ConfigError, KernelError
from .libc import libc

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc = libc()
_libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
_libc.prctl.restype = ctypes.c_int
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capset.restype = ctypes.c_int


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        raise KernelError("prctl", what, ctypes.get_errno())


def capability_sets(status: Path = Path("/proc/self/status")) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb and NoNewPrivs of a process, as ints."""
    out: dict[str, int] = {}
    for line in status.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
        elif key == "NoNewPrivs":
            out[key] = int(value.strip())
    return out


def drop_all_capabilities() -> None:
    """Empty every capability set of this (single-threaded) process, for good."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise ConfigError(
            f"cannot drop privileges: the process has {threads} threads and capabilities "
            "are per thread; drop them before any thread starts"
        )
    # No execve may ever give them back (setuid binaries, file capabilities).
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL")
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    # The bounding set first: dropping from it needs CAP_SETPCAP, which the
    # capset below takes away. Without CAP_SETPCAP (a least-privilege
    # container) it stays: with no_new_privs set, nothing can use it.
    for cap in range(last + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                break
            raise KernelError("prctl", f"PR_CAPBSET_DROP({cap})", err)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # v3 takes two 32-bit halves, all zero
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise KernelError("capset", "all capability sets", ctypes.get_errno())
    left = capability_sets()
    if left.get("CapEff") or left.get("CapPrm") or left.get("CapInh") or left.get("CapAmb"):
        raise KernelError("capset", "all capability sets", 0, f"still held: {left}")
