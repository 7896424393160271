"""Make freed large buffers go back to the kernel: fixed ``malloc`` thresholds.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB
at first) with its own ``mmap``, unmapped when freed. But the threshold is
*dynamic*: after the first such block is freed it rises to that block's size
(up to 32 MiB), so from then on multi-megabyte request bodies come from the
heap, whose freed space is kept and fragmented. Measured: 16 bodies of 4 MiB
waiting on a full ring grew the service by 94 MiB, of which 67 MiB stayed
after they were gone. Fixing the threshold stops the rise: buffers of
:data:`MMAP_THRESHOLD` or more (the multi-megabyte bodies and batches that
make up the budget) are mmap'd, and resident memory follows what is in use.
Smaller ones (a 256 KiB body) stay on the heap, whose reuse is cheaper than
a fresh mapping's page faults (measured: a 256 KiB threshold cost a quarter
more CPU per sample on 256 KiB bodies), and :data:`TRIM_THRESHOLD` keeps the
heap from shrinking and growing again around every request.
"""

from __future__ import annotations

import ctypes
import logging

from .libc import libc

__all__ = ["MMAP_THRESHOLD", "return_freed_memory"]

log = logging.getLogger("ringbridge.heap")

#: Blocks of at least this size are mmap'd: big request bodies, frames, batches.
MMAP_THRESHOLD = 1024 * 1024
#: Free space at the top of the heap kept for reuse rather than returned at
#: once. Setting the mmap threshold fixes this one too (at 128 KiB): the heap
#: would shrink and grow again around every request of a few hundred KiB
#: (measured: 25-30% more CPU per sample on 256 KiB bodies).
TRIM_THRESHOLD = 8 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
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
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or (
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1
    ):
        log.warning("mallopt refused: freed buffers may stay resident")
        return False
    return True
