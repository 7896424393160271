"""Whether a pin dir can hold pins (it must be on a BPF filesystem, bpffs), and
that nobody else looks into one of ours."""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from pathlib import Path
from typing import Final

from ...errors import PinError
from ..environment import bpffs_hint
from ..libc import libc

__all__ = ["BPF_FS_MAGIC", "check_pin_dir", "is_bpffs", "keep_private"]

BPF_FS_MAGIC: Final = 0xCAFE4A11


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


def check_pin_dir(pin_dir: Path) -> None:
    """PinError unless ``pin_dir`` is (or would be) a directory on bpffs."""
    if not is_bpffs(pin_dir):
        raise PinError(f"pin dir {pin_dir} is not on a BPF filesystem; {bpffs_hint()}")
    if pin_dir.exists() and not pin_dir.is_dir():
        raise PinError(f"pin dir {pin_dir} exists and is not a directory")


def keep_private(pin_dir: Path) -> None:
    """Makes a pin dir of ours that others could enter 0700 (made by an older
    version, or by hand): nobody else needs to look in."""
    try:
        st = os.stat(pin_dir)
    except OSError:
        return
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(pin_dir, 0o700)
