"""The kick drain's worker: one native thread running the on-demand drain program.

``bpf/drainer.c`` (``libringbridge_drainer.so``) owns a pthread that sleeps in
``read(2)`` on an eventfd and runs the drain program through
``BPF_PROG_TEST_RUN`` when kicked. Compared with a Python worker thread per
kick it needs no executor hand-off and never takes the GIL, so the event loop
keeps it while the kernel drains. A kick is one atomic exchange, and one
eventfd write only when no drain is already due; an idle drainer costs
nothing. The calls go through ``ctypes.PyDLL`` (GIL held: each is a few
hundred nanoseconds) except :meth:`NativeDrainer.close`, which joins the
thread and so may wait for a running drain.

The thread reads ``producer_pos`` and ``consumer_pos`` through the ring's
mapping (to run another drain while bytes stay pending): the ring must stay
mapped until :meth:`NativeDrainer.close` has returned.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

from ..errors import KernelError
from ..nativelib import DRAINER


class _Stats(ctypes.Structure):
    _fields_ = (
        ("runs", ctypes.c_uint64),
        ("samples", ctypes.c_uint64),
        ("errors", ctypes.c_uint64),
        ("last_error", ctypes.c_int64),
    )


@dataclass(frozen=True, slots=True)
class DrainerStatistics:
    runs: int  # drain program runs that succeeded
    samples: int  # samples they drained
    errors: int  # runs that failed
    last_error: int  # errno of the latest failure (0: none)


# A start and a kick take a few hundred nanoseconds: the GIL stays held.
_START = DRAINER.function(
    "rb_drainer_start", ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
)
_KICK = DRAINER.function("rb_drainer_kick", None, ctypes.c_void_p)
# Joins the thread: may wait for a drain in progress, so the GIL is released.
_STOP = DRAINER.function(
    "rb_drainer_stop", None, ctypes.c_void_p, ctypes.POINTER(_Stats), releases_gil=True
)


class NativeDrainer:
    """Runs the drain program ``prog_fd`` on a native thread after each :meth:`kick`.

    ``producer_pos_addr`` and ``consumer_pos_addr`` are the addresses of the
    two positions in the ring's mapping (see
    :meth:`~ringbridge.ring.UserRingBuffer.position_addresses`).
    """

    def __init__(self, prog_fd: int, producer_pos_addr: int, consumer_pos_addr: int) -> None:
        start, self._kick, self._stop = _START.get(), _KICK.get(), _STOP.get()
        # Our own fd: the thread may still run while the owner closes theirs.
        self._fd = os.dup(prog_fd)
        handle = start(self._fd, producer_pos_addr, consumer_pos_addr)
        if not handle:
            err = ctypes.get_errno() or errno.EIO
            os.close(self._fd)
            raise KernelError("pthread_create", "drain worker thread", err)
        self._handle: int | None = handle
        self._stats = _Stats.from_address(handle)

    @property
    def closed(self) -> bool:
        return self._handle is None

    def kick(self) -> None:
        """Ask for a drain that starts after this call (never blocks)."""
        if self._handle is not None:
            self._kick(self._handle)

    def statistics(self) -> DrainerStatistics:
        s = self._stats
        return DrainerStatistics(int(s.runs), int(s.samples), int(s.errors), int(s.last_error))

    def close(self) -> None:
        """Run the drains already asked for, stop the thread. Idempotent; blocks
        for as long as a drain in progress takes (milliseconds at most)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        # The live counters are freed with the handle: keep the final values.
        final = _Stats()
        self._stop(handle, ctypes.byref(final))
        self._stats = final
        os.close(self._fd)
