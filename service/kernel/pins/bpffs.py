"""Whether a pin dir can hold pins: it must be on a BPF filesystem (bpffs)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Final

from ...errors import PinError
from ..environment import bpffs_hint
from ..libc import libc

__all__ = ["BPF_FS_MAGIC", "check_pin_dir", "is_bpffs"]

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
