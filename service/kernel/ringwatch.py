"""What the service notices of its ring and pins while it serves: :class:`RingWatch`.

Two things can go wrong under a running service without it ever writing a
bad byte itself, and both used to go unnoticed:

- **the ring is corrupt**: someone else wrote into it (a misaligned
  ``producer_pos``, a record that claims more than was published). The
  producer's own copy of ``producer_pos`` still looks fine, so the check
  reads the positions *as the kernel reads them*, from the shared mapping,
  and the header the kernel's next drain looks at
  (:func:`ringbridge.core.ring.kernel_view_problem`);
- **the pins are gone**: the pin dir was removed (``ringbridge unpin
  --force``, ``rm -r``) while the service holds the maps through its fds.
  It goes on working, but whatever the pins kept -- the ring's contents,
  the counters, the next seq -- ends with the process: a restart starts
  from seq 0 with fresh counters. Each pin's inode is noted at start and
  looked up again by path; a service that drops its privileges could not
  look (the pin dir is root's, 0700), so it holds each pin by an ``O_PATH``
  fd opened before the drop instead: an unlinked pin's inode shows
  ``st_nlink == 0`` on it. (Only then: fds count against the connection
  cap, api/connguard.py.)

Each problem is logged once when first seen (an error with the way to
recover), and reported by :meth:`RingWatch.check` for ``/readyz``.
:meth:`RingWatch.run` checks periodically, so the log line does not wait
for a probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..closing import Closing
from ..core import ring as core
from ..errors import RingbridgeError
from .mapping import PAGE_SIZE

__all__ = ["MappedUserRing", "RingChecks", "RingWatch"]

log = logging.getLogger("ringbridge.watch")

#: Seconds between two checks of :meth:`RingWatch.run`.
CHECK_PERIOD = 1.0


@dataclass(frozen=True, slots=True)
class RingChecks:
    """One look at the ring and the pins."""

    #: Why the ring is corrupt as the kernel sees it, or None.
    ring_problem: str | None = None
    #: The kernel's ``producer_pos`` (from the shared page), -1 when unknown.
    producer_pos: int = -1
    #: Pins (or the pin dir) removed since the start.
    pins_missing: tuple[Path, ...] = field(default_factory=tuple)


class MappedUserRing(Protocol):
    """What the watch reads of a mapped ring (``ringbridge.ring.UserRingBuffer``)."""

    @property
    def size(self) -> int: ...
    def position_addresses(self) -> tuple[int, int]: ...


class RingWatch(Closing):
    """Checks ``ring`` as the kernel reads it, and that ``pins`` still exist."""

    def __init__(
        self, ring: MappedUserRing, pins: Sequence[Path], *, recovery: str, hold: bool = False
    ) -> None:
        self._ring = ring
        self._recovery = recovery  # how to recover a corrupt ring, for the log
        self._held: dict[Path, int] = {}  # with hold: an O_PATH fd per pin
        self._inodes: dict[Path, tuple[int, int]] = {}  # else: (st_dev, st_ino)
        for path in pins:
            with contextlib.suppress(OSError):  # not there: nothing to watch
                if hold:
                    self._held[path] = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
                else:
                    st = os.lstat(path)
                    self._inodes[path] = (st.st_dev, st.st_ino)
        self._logged_ring: str | None = None
        self._logged_pins: set[Path] = set()

    @property
    def watched(self) -> tuple[Path, ...]:
        return (*self._held, *self._inodes)

    def _positions(self) -> tuple[int, int, int | None]:
        ring = self._ring
        prod_addr, cons_addr = ring.position_addresses()
        # Plain aligned loads: a diagnosis, not a protocol step (the producer's
        # own ordered accesses are in ringbridge.ring).
        prod = ctypes.c_uint64.from_address(prod_addr).value
        cons = ctypes.c_uint64.from_address(cons_addr).value
        head: int | None = None
        if 0 < prod - cons <= ring.size:
            data = prod_addr + PAGE_SIZE  # the data area follows the producer page
            head = ctypes.c_uint32.from_address(data + (cons & (ring.size - 1))).value
        return prod, cons, head

    def check(self) -> RingChecks:
        """Looks now; logs a problem the first time it is seen."""
        problem: str | None = None
        prod = -1
        try:
            prod, cons, head = self._positions()
        except RingbridgeError:
            pass  # the ring is closed: shutting down, nothing to watch
        else:
            problem = core.kernel_view_problem(prod, cons, self._ring.size, head)
        missing = tuple(p for p, fd in self._held.items() if _unlinked(fd)) + tuple(
            p for p, inode in self._inodes.items() if _replaced(p, inode)
        )
        self._log(problem, missing)
        return RingChecks(problem, prod, missing)

    def _log(self, problem: str | None, missing: tuple[Path, ...]) -> None:
        if problem is not None and problem != self._logged_ring:
            self._logged_ring = problem
            log.error(
                "the ring is corrupt: the kernel refuses its next record, nothing more is consumed",
                extra={"problem": problem, "fix": self._recovery},
            )
        new = [p for p in missing if p not in self._logged_pins]
        if new:
            self._logged_pins.update(new)
            log.error(
                "pins removed while the service runs: it goes on through its fds, but the "
                "ring's contents, the counters and the next seq end with this process "
                "(a restart starts from seq 0 with fresh counters)",
                extra={
                    "missing": ",".join(str(p) for p in new),
                    "fix": "restart the service to pin a new set, at a time when losing "
                    "what the old one held is acceptable",
                },
            )

    async def run(self, period: float = CHECK_PERIOD) -> None:
        """Checks every ``period`` seconds until cancelled."""
        while True:
            await asyncio.sleep(period)
            try:
                self.check()
            except Exception:
                log.exception("ring check failed")

    def close(self) -> None:
        held, self._held = self._held, {}
        for fd in held.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _replaced(path: Path, inode: tuple[int, int]) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell
    return (st.st_dev, st.st_ino) != inode


def _unlinked(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return False
