"""The bounded batch queue between the API handlers and the producer task.

Bounded by bytes, not items: a batch's weight is the ring space it will take,
so the queue never holds more than ``max_bytes`` of samples in memory however
the clients size their batches. Modelled on anyio's memory object streams:
``put_nowait`` raises when full (:class:`QueueFullError`), ``put`` is a thin
async wrapper that waits up to a timeout, ``statistics()`` is a snapshot and
``close()`` is idempotent.

Fairness: waiting putters are admitted strictly in arrival order, and
``put_nowait`` refuses while anyone waits, so a small batch never overtakes
a large one that arrived first (the network contract promises arrival order).
Admission is a hand-off: the getter that frees space moves waiting items into
the queue itself, so a woken putter never races a newcomer for the space.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..errors import QueueFullError, StoppingError


class Weighted(Protocol):
    @property
    def nbytes(self) -> int: ...


T = TypeVar("T", bound=Weighted)


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    current_bytes: int
    max_bytes: int
    items: int
    waiting_putters: int
    waiting_getters: int
    closed: bool


class BatchQueue(Generic[T]):
    """FIFO of weighted items, at most ``max_bytes`` in total; one loop only."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: deque[T] = deque()
        self._bytes = 0
        self._putters: deque[tuple[asyncio.Future[None], T]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    # -- put ---------------------------------------------------------------

    def _check_item(self, item: T) -> None:
        if self._closed:
            raise StoppingError("the service is stopping and takes no new batches")
        if item.nbytes > self.max_bytes:
            # Cannot happen with consistent settings (checked there); refuse
            # rather than wait forever for space that never comes.
            raise QueueFullError(
                f"batch of {item.nbytes} bytes exceeds the queue limit of {self.max_bytes}"
            )

    def _fits(self, item: T) -> bool:
        return self._bytes + item.nbytes <= self.max_bytes

    def _append(self, item: T) -> None:
        self._items.append(item)
        self._bytes += item.nbytes
        self._wake_getter()

    def _wake_getter(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def put_nowait(self, item: T) -> None:
        """Enqueue now or raise :class:`QueueFullError` / :class:`StoppingError`."""
        self._check_item(item)
        if self._putters or not self._fits(item):
            raise QueueFullError(
                f"batch queue is full ({self._bytes} of {self.max_bytes} bytes queued, "
                f"{len(self._putters)} batches waiting)"
            )
        self._append(item)

    async def put(self, item: T, timeout: float | None) -> None:
        """Enqueue, waiting up to ``timeout`` s for space (FIFO among waiters)."""
        try:
            self.put_nowait(item)
            return
        except QueueFullError:
            if timeout is not None and timeout <= 0:
                raise
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (fut, item)
        self._putters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return  # admitted just as the timeout fired: it is queued
            self._forget(entry)
            raise QueueFullError(
                f"batch queue stayed full for {timeout:g}s ({self._bytes} bytes queued)"
            ) from None
        except BaseException:
            self._forget(entry)
            raise

    def _forget(self, entry: tuple[asyncio.Future[None], T]) -> None:
        try:
            self._putters.remove(entry)
        except ValueError:
            return  # already admitted or failed by close()
        # Our departure may unblock smaller batches queued behind us.
        self._admit()

    def _admit(self) -> None:
        while self._putters:
            fut, item = self._putters[0]
            if fut.done():
                self._putters.popleft()
                continue
            if not self._fits(item):
                return
            self._putters.popleft()
            self._append(item)
            fut.set_result(None)

    # -- get ---------------------------------------------------------------

    def get_nowait(self) -> T | None:
        """The oldest item, or None when empty (whether closed or not)."""
        if not self._items:
            return None
        item = self._items.popleft()
        self._bytes -= item.nbytes
        self._admit()
        return item

    async def get(self) -> T:
        """The oldest item; raises :class:`StoppingError` once closed and empty."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed:
                raise StoppingError("batch queue is closed")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    # Woken, then cancelled before taking the item: pass the
                    # wake-up on so no other getter sleeps on a full queue.
                    if self._items:
                        self._wake_getter()
                else:
                    fut.cancel()
                    self._getters.remove(fut)
                raise

    # -- state ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    @property
    def current_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Refuse new items and fail waiting putters; queued items stay gettable."""
        if self._closed:
            return
        self._closed = True
        putters, self._putters = self._putters, deque()
        for fut, _ in putters:
            if not fut.done():
                fut.set_exception(StoppingError("the service is stopping"))
        getters, self._getters = self._getters, deque()
        for g in getters:
            if not g.done():
                g.set_result(None)

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            current_bytes=self._bytes,
            max_bytes=self.max_bytes,
            items=len(self._items),
            waiting_putters=len(self._putters),
            waiting_getters=len(self._getters),
            closed=self._closed,
        )
