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
from collections.abc import Callable
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


def _plain_store64(addr: int, value: int) -> None:
    ctypes.c_uint64.from_address(addr).value = value


def _plain_load64(addr: int) -> int:
    return int(ctypes.c_uint64.from_address(addr).value)


def _plain_store32(addr: int, value: int) -> None:
    ctypes.c_uint32.from_address(addr).value = value


def _plain_load32(addr: int) -> int:
    return int(ctypes.c_uint32.from_address(addr).value)


def _plain_xchg32(addr: int, value: int) -> int:
    cell = ctypes.c_uint32.from_address(addr)
    old = int(cell.value)
    cell.value = value
    return old


def _no_fence() -> None:
    pass


class _Ops:
    """The accessors, each the ctypes function itself (no Python layer in between:
    the producer calls them per record)."""

    store_release_u64: Callable[[int, int], None]
    load_acquire_u64: Callable[[int], int]
    store_release_u32: Callable[[int, int], None]
    load_acquire_u32: Callable[[int], int]
    xchg_u32: Callable[[int, int], int]
    #: A full (seq_cst) barrier: orders an earlier store before a later load.
    #: Without the library (x86-64 only) there is none: a consumer of a kernel
    #: ring buffer may then miss a wake-up, which its periodic re-check bounds
    #: (see :mod:`ringbridge.kernel.eventring`).
    fence: Callable[[], None]

    def __init__(self) -> None:
        self.path: Path | None = None
        self.ordered = True
        try:
            self.store_release_u64 = _STORE64.get()
            self.load_acquire_u64 = _LOAD64.get()
            self.store_release_u32 = _STORE32.get()
            self.load_acquire_u32 = _LOAD32.get()
            self.xchg_u32 = _XCHG32.get()
            self.fence = _FENCE.get()
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
            self.store_release_u64 = _plain_store64
            self.load_acquire_u64 = _plain_load64
            self.store_release_u32 = _plain_store32
            self.load_acquire_u32 = _plain_load32
            self.xchg_u32 = _plain_xchg32
            self.fence = _no_fence
        else:
            self.path = ORDERING.path


_ops: _Ops | None = None


def ops() -> _Ops:
    """The process-wide accessor (loaded on first use)."""
    global _ops
    if _ops is None:
        _ops = _Ops()
    return _ops
