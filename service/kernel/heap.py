"""Make freed large buffers go back to the kernel: a fixed ``malloc`` mmap threshold.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB
at first) with its own ``mmap``, unmapped when freed. But the threshold is
*dynamic*: after the first such block is freed it rises to that block's size
(up to 32 MiB), so from then on multi-megabyte request bodies come from the
heap, whose freed space is kept and fragmented. Measured: 16 bodies of 4 MiB
waiting on a full ring grew the service by 94 MiB, of which 67 MiB stayed
after they were gone. Setting the threshold fixes it (no more rising) and
makes large buffers mmap'd: resident memory follows what is in use, and a
growing body buffer is extended with ``mremap`` instead of copied.
"""

from __future__ import annotations

import ctypes
import logging

from .libc import libc

__all__ = ["MMAP_THRESHOLD", "return_freed_memory"]

log = logging.getLogger("ringbridge.heap")

#: Blocks of at least this size are mmap'd: request bodies, frames, batches.
MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3


def return_freed_memory() -> bool:
    """Fixes glibc's mmap threshold at :data:`MMAP_THRESHOLD`; False where ``mallopt``
    is not there (another C library) or refused."""
    try:
        mallopt = libc().mallopt
    except AttributeError:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused: freed buffers may stay resident")
        return False
    return True
