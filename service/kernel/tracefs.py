"""tracefs, which tracepoint attachment reads: find it, mount it where it is missing.

libbpf attaches a ``tracepoint/CATEGORY/NAME`` (or ``tp/...``) program by
reading the tracepoint's id from ``events/CATEGORY/NAME/id`` under tracefs:
``/sys/kernel/debug/tracing`` when that path exists (debugfs mounted), else
``/sys/kernel/tracing``. A host that never mounted tracefs (minimal VMs,
containers) makes every such attach fail with ENOENT, which says nothing
about the cause. So before attaching tracepoints the service makes sure
tracefs is there, and mounts it at ``/sys/kernel/tracing`` when it is not --
what ``mount -t tracefs nodev /sys/kernel/tracing`` does, and what the
kernel would auto-mount there on access on most distributions. Where the
mount is refused (a container without CAP_SYS_ADMIN), the start-up error
names the fix (:func:`ringbridge.kernel.environment.tracefs_hint`).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from pathlib import Path
from typing import Final

from ..errors import KernelError
from .environment import tracefs_hint
from .libc import libc

__all__ = ["DEBUGFS_TRACING", "TRACEFS", "ensure_tracefs", "find_tracefs", "is_mounted"]

log = logging.getLogger("ringbridge.kernel")

TRACEFS: Final = Path("/sys/kernel/tracing")
DEBUGFS_TRACING: Final = Path("/sys/kernel/debug/tracing")
_MOUNTS: Final = Path("/proc/self/mounts")


def is_mounted(path: Path, fstype: str, mounts: Path = _MOUNTS) -> bool:
    """Whether a filesystem of ``fstype`` is mounted exactly at ``path``."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return False
    want = str(path)
    for line in lines:
        fields = line.split()
        # Mount points with spaces are octal-escaped (\040); ours have none.
        if len(fields) >= 3 and fields[1] == want and fields[2] == fstype:
            return True
    return False


def find_tracefs() -> Path | None:
    """The tracefs libbpf will read, if it is usable; None when it is not mounted.

    Mirrors libbpf's choice: the debugfs path when it exists, else
    /sys/kernel/tracing; usable when its ``events`` directory is there.
    """
    if os.access(DEBUGFS_TRACING, os.F_OK):
        return DEBUGFS_TRACING if (DEBUGFS_TRACING / "events").is_dir() else None
    if is_mounted(TRACEFS, "tracefs") or (TRACEFS / "events").is_dir():
        return TRACEFS
    return None


def _mount_tracefs(target: Path) -> None:
    mount = libc().mount
    mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    mount.restype = ctypes.c_int
    if mount(b"nodev", os.fsencode(target), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        if err == errno.EBUSY and find_tracefs() is not None:
            return  # someone else mounted it meanwhile
        raise KernelError("mount tracefs", str(target), err, tracefs_hint())


def ensure_tracefs(*, mount: bool = True) -> Path:
    """The tracefs to attach tracepoints through; mounts it when it is missing.

    With ``mount=False`` (or when mounting fails) a missing tracefs is a
    :class:`KernelError` whose message says how to provide it.
    """
    found = find_tracefs()
    if found is not None:
        return found
    if not mount:
        raise KernelError("find tracefs", str(TRACEFS), errno.ENOENT, tracefs_hint())
    if not TRACEFS.is_dir():
        raise KernelError(
            "mount tracefs",
            str(TRACEFS),
            errno.ENOENT,
            "the kernel has no tracefs mount point (CONFIG_TRACING is off?): "
            "tracepoint programs cannot attach here; use raw_tp instead",
        )
    _mount_tracefs(TRACEFS)
    found = find_tracefs()
    if found is None:
        raise KernelError(
            "mount tracefs", str(TRACEFS), errno.ENOENT, "mounted, but it has no events directory"
        )
    log.info("mounted tracefs for tracepoint programs", extra={"path": str(found)})
    return found
