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
import logging
import platform
from pathlib import Path

from ..errors import ConfigError
from ..nativelib import ORDERING

log = logging.getLogger("ringbridge.native")

# Each call is a single instruction: the GIL stays held (see nativelib).
_STORE64 = ORDERING.function("rb_store_release_u64", None, ctypes.c_void_p, ctypes.c_uint64)
_LOAD64 = ORDERING.function("rb_load_acquire_u64", ctypes.c_uint64, ctypes.c_void_p)
_STORE32 = ORDERING.function("rb_store_release_u32", None, ctypes.c_void_p, ctypes.c_uint32)
_LOAD32 = ORDERING.function("rb_load_acquire_u32", ctypes.c_uint32, ctypes.c_void_p)
_XCHG32 = ORDERING.function("rb_xchg_u32", ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)
_FENCE = ORDERING.function("rb_fence_seq_cst", None)

_TSO = ("x86_64", "AMD64")


class _Ops:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.ordered = True
        try:
            self._store64 = _STORE64.get()
            self._load64 = _LOAD64.get()
            self._store32 = _STORE32.get()
            self._load32 = _LOAD32.get()
            self._xchg32 = _XCHG32.get()
            self._fence = _FENCE.get()
        except ConfigError as exc:
            machine = platform.machine()
            if machine not in _TSO:
                raise ConfigError(
                    f"{exc.message}. {machine} is not TSO: plain stores could publish "
                    "producer_pos before the record"
                ) from exc
            log.warning(
                "native ordering helper unavailable: plain moves (x86-64 keeps their order)",
                extra={"error": exc.message},
            )
            self.ordered = False
        else:
            self.path = ORDERING.path

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
