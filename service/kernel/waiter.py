"""Edge-triggered wait for free space on a user ring buffer.

The map fd's poll reports EPOLLOUT whenever the ring is not *completely*
full (``ringbuf_map_poll_user``), so a level-triggered wait -- what libbpf's
``user_ring_buffer__reserve_blocking`` does -- returns at once, again and
again, while a partly full ring lacks room for the next record: a spin.
We register the map fd EPOLLOUT|EPOLLET in an epoll fd of our own: an event is
queued only when the kernel wakes the ring's waitqueue (a drain that consumed
records, see ``bpf_user_ringbuf_drain``'s ``irq_work_queue``), and every
wake-up is followed by a re-check of the actual free space by the caller.

The epoll fd itself is registered with the asyncio loop as a reader, so the
wait never blocks the loop; :meth:`EpollWaiter.wait_blocking` waits on it in
the calling thread instead (for a producer without an event loop). Wake-ups
are counted in a generation number: a waiter takes a token with :meth:`arm`
*before* its last re-check, and :meth:`wait` returns at once if a wake-up
came in between -- no lost wake-up, however many coroutines wait.
"""

from __future__ import annotations

import asyncio
import select

from ..errors import KernelError


class EpollWaiter:
    """Wake-ups of one map fd for one asyncio loop; idempotent close."""

    def __init__(self, map_fd: int, what: str = "user ring buffer") -> None:
        self._what = what
        try:
            self._ep: select.epoll | None = select.epoll()
            self._ep.register(map_fd, select.EPOLLOUT | select.EPOLLET)
        except OSError as exc:
            raise KernelError("epoll_ctl(EPOLLOUT|EPOLLET)", what, exc.errno or 0) from exc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._futures: list[asyncio.Future[None]] = []
        self.generation = 0

    def _on_ready(self) -> None:
        if self._ep is None:
            return
        # Take the queued events: with EPOLLET each is reported once, and
        # the epoll fd stays readable for the loop until they are taken.
        try:
            events = self._ep.poll(0)
        except OSError:
            events = []
        if not events:
            return
        self.generation += 1
        futures, self._futures = self._futures, []
        for fut in futures:
            if not fut.done():
                fut.set_result(None)

    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        if self._ep is None:
            raise KernelError("epoll_wait", self._what, 9, "waiter is closed")
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._ep.fileno())
        loop.add_reader(self._ep.fileno(), self._on_ready)
        self._loop = loop
        self._futures = []
        return loop

    def arm(self) -> int:
        """A token for :meth:`wait`; take it before the last re-check of space."""
        self._attach()
        return self.generation

    async def wait(self, token: int, timeout: float) -> bool:
        """Until a wake-up newer than ``token`` (True) or ``timeout`` s (False)."""
        loop = self._attach()
        if self.generation != token:
            return True
        fut: asyncio.Future[None] = loop.create_future()
        self._futures.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            if fut in self._futures:
                self._futures.remove(fut)
        return True

    def wait_blocking(self, token: int, timeout: float) -> bool:
        """:meth:`wait` in the calling thread (no event loop): epoll_wait itself."""
        if self._ep is None:
            raise KernelError("epoll_wait", self._what, 9, "waiter is closed")
        if self.generation != token:
            return True
        try:
            events = self._ep.poll(max(timeout, 0.0))
        except InterruptedError:
            events = []
        if not events:
            return False
        self.generation += 1
        return True

    def close(self) -> None:
        if self._ep is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._ep.fileno())
        # Woken, not cancelled: a waiter re-checks and finds the ring closed
        # (a CancelledError would look like its own task was cancelled).
        for fut in self._futures:
            if not fut.done():
                fut.set_result(None)
        self._futures = []
        self._loop = None
        self._ep.close()
        self._ep = None
