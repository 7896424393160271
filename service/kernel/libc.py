"""The C library, loaded once for the few calls Python's os module lacks.

Each user declares the argument types of the functions it calls (mmap,
statfs, prctl, capset, vsnprintf); errno is kept for every call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
