"""Memory mappings of BPF map fds, through libc's mmap.

Python's ``mmap`` module cannot give us the raw address the ordering helper
needs for a read-only page (``from_buffer`` refuses read-only buffers), so we
map with libc directly and expose both the address and a memoryview.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap as _mmap
import os

from ..errors import KernelError
from .libc import libc

_libc = libc()
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.restype = ctypes.c_int

_MAP_FAILED = ctypes.c_void_p(-1).value
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class Mapping:
    """One mmap of ``length`` bytes of ``fd`` at ``offset``; idempotent close."""

    def __init__(self, fd: int, length: int, offset: int, *, writable: bool, what: str) -> None:
        prot = _mmap.PROT_READ | (_mmap.PROT_WRITE if writable else 0)
        addr = _libc.mmap(None, length, prot, _mmap.MAP_SHARED, fd, offset)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise KernelError("mmap", what, err, f"length={length} offset={offset}")
        self.addr: int = addr
        self.length = length
        self.what = what
        self._view: memoryview | None = memoryview(
            (ctypes.c_char * length).from_address(addr)
        ).cast("B")

    @property
    def view(self) -> memoryview:
        if self._view is None:
            raise KernelError("access", self.what, 9, "mapping is closed")  # EBADF
        return self._view

    def close(self) -> None:
        if self._view is None:
            return
        self._view.release()
        self._view = None
        if _libc.munmap(self.addr, self.length) != 0:
            err = ctypes.get_errno()
            raise KernelError("munmap", self.what, err)
