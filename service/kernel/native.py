"""Release/acquire accesses on mapped ring memory.

Python has no ordered memory accesses. The producer's ordering points go
through ``libringbridge_native.so`` (``bpf/native.c``: ``__atomic`` builtins,
``stlr``/``ldar`` on arm64, plain ``mov`` on x86-64). Where that library is not
built, x86-64 alone falls back to plain ctypes accesses: single aligned
4/8-byte moves, which TSO keeps in program order (store-store, load-load), so
the ring stays correct. TSO does reorder a store before a later load, so the
"producer waiting" handshake may then miss a wake-up; the producer's periodic
re-check bounds that delay. Any other architecture refuses to run without the
library.
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

from ..artifacts import build_artifact
from ..errors import ConfigError


def _library_path() -> Path:
    return build_artifact("RINGBRIDGE_NATIVE_LIB", "libringbridge_native.so")


class _Ops:
    def __init__(self) -> None:
        path = _library_path()
        self.path: Path | None = None
        self.ordered = True
        if path.exists():
            # PyDLL: the calls keep the GIL. Each is a single instruction;
            # ctypes.CDLL would release and retake the GIL around it, which
            # costs far more than the call and, under load, hands the GIL to
            # another thread mid-commit.
            lib = ctypes.PyDLL(str(path))
            self._store64 = lib.rb_store_release_u64
            self._store64.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
            self._store64.restype = None
            self._load64 = lib.rb_load_acquire_u64
            self._load64.argtypes = [ctypes.c_void_p]
            self._load64.restype = ctypes.c_uint64
            self._store32 = lib.rb_store_release_u32
            self._store32.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
            self._store32.restype = None
            self._load32 = lib.rb_load_acquire_u32
            self._load32.argtypes = [ctypes.c_void_p]
            self._load32.restype = ctypes.c_uint32
            self._xchg32 = lib.rb_xchg_u32
            self._xchg32.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
            self._xchg32.restype = ctypes.c_uint32
            self._fence = lib.rb_fence_seq_cst
            self._fence.argtypes = []
            self._fence.restype = None
            self.path = path
        elif platform.machine() in ("x86_64", "AMD64"):
            self.ordered = False
        else:
            raise ConfigError(
                f"native ordering helper {path} is missing and {platform.machine()} is not "
                "TSO: plain stores could publish producer_pos before the record; run "
                "'make setup' (or make -C bpf) to build it"
            )

    def store_release_u64(self, addr: int, value: int) -> None:
        if self.path is not None:
            self._store64(addr, value)
        else:
            ctypes.c_uint64.from_address(addr).value = value

    def load_acquire_u64(self, addr: int) -> int:
        if self.path is not None:
            return int(self._load64(addr))
        return int(ctypes.c_uint64.from_address(addr).value)

    def store_release_u32(self, addr: int, value: int) -> None:
        if self.path is not None:
            self._store32(addr, value)
        else:
            ctypes.c_uint32.from_address(addr).value = value

    def load_acquire_u32(self, addr: int) -> int:
        if self.path is not None:
            return int(self._load32(addr))
        return int(ctypes.c_uint32.from_address(addr).value)

    def xchg_u32(self, addr: int, value: int) -> int:
        if self.path is not None:
            return int(self._xchg32(addr, value))
        cell = ctypes.c_uint32.from_address(addr)
        old = int(cell.value)
        cell.value = value
        return old


    def fence(self) -> None:
        """A full (seq_cst) barrier: orders an earlier store before a later load.

        Without the library (x86-64 only) there is none: a consumer of a
        kernel ring buffer may then miss a wake-up, which its periodic
        re-check bounds (see :mod:`ringbridge.kernel.eventring`).
        """
        if self.path is not None:
            self._fence()


_ops: _Ops | None = None


def ops() -> _Ops:
    """The process-wide accessor (loaded on first use)."""
    global _ops
    if _ops is None:
        _ops = _Ops()
    return _ops
