"""Waiting for a user ring buffer: edge-triggered, in a thread or on an event loop.

A wait ends when its condition holds (room for a record, ``consumer_pos``
past a position). The condition is re-checked after every wake-up of the
map fd (:class:`~ringbridge.kernel.waiter.EpollWaiter`: EPOLLOUT|EPOLLET, so
a partly full ring does not spin the waiter the way libbpf's level-triggered
``user_ring_buffer__reserve_blocking`` does), and at least every
``recheck_interval`` seconds even without one -- for consumers that never
ask for wake-ups (``BPF_RB_NO_WAKEUP``). A few checks a second: not a spin.

A consumer that drains with ``BPF_RB_NO_WAKEUP`` unless a producer waits
(the built-in one) reads a :class:`WaitingFlag` the producer sets for as
long as it waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..errors import RingClosedError
from ..kernel.mapping import PAGE_SIZE, Mapping
from ..kernel.native import ops
from ..kernel.waiter import EpollWaiter

__all__ = ["DEFAULT_RECHECK_INTERVAL", "SpaceWaiter", "WaitingFlag"]

#: While waiting, re-check at least this often even without a wake-up.
DEFAULT_RECHECK_INTERVAL = 0.05


class WaitingFlag:
    """A u32 in an mmapable array map that tells the consumer a producer waits.

    Counted: the flag is set while at least one wait runs and cleared when the
    last one ends.
    """

    def __init__(self, map_fd: int, offset: int = 0) -> None:
        self._map = Mapping(map_fd, PAGE_SIZE, 0, writable=True, what="producer waiting flag")
        self._addr = self._map.addr + offset
        self._count = 0

    def acquire(self) -> None:
        self._count += 1
        if self._count == 1:
            # seq_cst exchange: the flag is visible before our next load of
            # consumer_pos (store-load order; pairs with the consumer's
            # fetching atomic on the flag after its drain).
            ops().xchg_u32(self._addr, 1)

    def release(self) -> None:
        self._count -= 1
        if self._count == 0:
            ops().xchg_u32(self._addr, 0)

    def clear_all(self) -> None:
        self._count = 0
        ops().xchg_u32(self._addr, 0)

    def close(self) -> None:
        self._map.close()


class SpaceWaiter:
    """The waits of one ring: :meth:`block_until` and :meth:`wait_until`; idempotent close."""

    def __init__(
        self, map_fd: int, *, flag_fd: int | None, recheck_interval: float, what: str
    ) -> None:
        self.recheck_interval = recheck_interval
        self._epoll: EpollWaiter | None = EpollWaiter(map_fd, what)
        self._flag: WaitingFlag | None = None
        try:
            if flag_fd is not None:
                self._flag = WaitingFlag(flag_fd)
        except BaseException:
            self.close()
            raise

    @property
    def wakeups(self) -> int:
        return self._epoll.generation if self._epoll is not None else 0

    def _waiter(self) -> EpollWaiter:
        if self._epoll is None:
            raise RingClosedError("the user ring buffer was closed while waiting")
        return self._epoll

    def block_until(
        self, ready: Callable[[], bool], timeout: float | None, status: Callable[[float], str]
    ) -> None:
        """Until ``ready()``, in this thread; :class:`TimeoutError` (its message
        ``status(timeout)``) after ``timeout`` seconds (None: no deadline)."""
        if ready():
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._flag is not None:
            self._flag.acquire()
        try:
            while True:
                waiter = self._waiter()
                token = waiter.generation  # no loop to attach to: the token alone
                if ready():
                    return
                step = self._step(deadline, timeout, status)
                waiter.wait_blocking(token, step)
        finally:
            if self._flag is not None:
                self._flag.release()

    async def wait_until(
        self, ready: Callable[[], bool], timeout: float | None, status: Callable[[float], str]
    ) -> None:
        """:meth:`block_until` on the running event loop, which it never blocks."""
        if ready():
            return
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._flag is not None:
            self._flag.acquire()
        try:
            while True:
                waiter = self._waiter()
                token = waiter.arm()
                if ready():
                    return
                step = self._step(deadline, timeout, status, loop.time())
                await waiter.wait(token, step)
        finally:
            if self._flag is not None:
                self._flag.release()

    def _step(
        self,
        deadline: float | None,
        timeout: float | None,
        status: Callable[[float], str],
        now: float | None = None,
    ) -> float:
        """How long the next wait may sleep; TimeoutError once the deadline passed."""
        if deadline is None:
            return self.recheck_interval
        left = deadline - (time.monotonic() if now is None else now)
        if left <= 0:
            raise TimeoutError(status(timeout or 0.0))
        return min(self.recheck_interval, left)

    def close(self) -> None:
        if self._flag is not None:
            # Never leave the consumer forcing wake-ups for a producer gone.
            self._flag.clear_all()
            self._flag.close()
            self._flag = None
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
