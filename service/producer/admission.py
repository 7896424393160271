"""Admission: the byte-credit budget every batch holds from before its bytes are read to its ack.

Memory in the service is spent on batches: bodies being read, frames being
decoded, records queued for the producer. All of it is paid for out of one
budget of ``budget`` bytes, owned by the producer side:

- an HTTP request takes its credit **before its body is read**: the
  ``Content-Length``, or the batch limit for a chunked body;
- a WebSocket frame is reserved whole when its header arrives, and the
  reservation becomes its batch's credit (an idle connection holds none; a
  connection whose next frame finds no credit waits in line with its
  reading stopped, :mod:`ringbridge.api.wslimits`);
- a decoded batch resizes its credit to the ring bytes it will take (JSON
  may shrink or grow; growing needs free budget like any other credit);
- the credit is returned when the batch leaves the system: committed (the
  ack), failed, abandoned, or refused while decoding.

No free credit means an immediate refusal (:class:`OverloadedError`, 503 with
Retry-After) with the body unread: no request waits for credit, so waiting
requests cannot grow without bound either (a WebSocket frame waits unread, in
line, its connection's reading paused: TCP pushes back). Every credit carries the batch's
deadline (taken at admission from ``?timeout=`` or the default), which bounds
everything after it: reading the body, waiting behind other batches, waiting
for ring space.

Admitted batches wait in a plain FIFO (:class:`BatchLine`): the credit gate in
front of it already bounds what it holds. No I/O and no ASGI here: an HTTP
route, a raw ASGI handler or a WebSocket reader use the same three calls --
``admit``, ``Credit.resize``, ``Credit.release``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import OverloadedError, StoppingError
from .loopref import LoopRef


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    budget_bytes: int
    in_use_bytes: int
    credits: int  # credits held now
    admitted: int  # credits granted since start
    refused: int  # credits refused (budget spent) since start
    closed: bool


class Credit:
    """Bytes of the admission budget held by one batch (or one connection's read buffer).

    ``deadline`` is in the event loop's clock (``loop.time()``). ``release``
    is idempotent; every holder calls it in a ``finally`` without harm.
    """

    __slots__ = ("_gate", "deadline", "nbytes")

    def __init__(self, gate: Admission, nbytes: int, deadline: float) -> None:
        self._gate: Admission | None = gate
        self.nbytes = nbytes
        self.deadline = deadline

    @property
    def held(self) -> bool:
        return self._gate is not None

    def remaining(self, now: float) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(0.0, self.deadline - now)

    def resize(self, nbytes: int) -> None:
        """Hold ``nbytes`` instead: shrinking always works, growing needs free budget."""
        gate = self._gate
        if gate is None:
            raise RuntimeError("resize of a released credit")
        gate._resize(self, nbytes)

    def split(self, nbytes: int, deadline: float) -> Credit:
        """A new credit of ``nbytes`` for a batch read with this (connection) credit.

        Taken from free budget, not from this credit: the connection keeps its
        read buffer for the next frame. Raises :class:`OverloadedError`.
        """
        gate = self._gate
        if gate is None:
            raise RuntimeError("split of a released credit")
        return gate.take(nbytes, deadline)

    def carve(self, nbytes: int) -> Credit:
        """``nbytes`` of this credit as a credit of their own, with its deadline:
        a frame read ahead into ring space its connection's credit paid for."""
        gate = self._gate
        if gate is None or not 0 <= nbytes <= self.nbytes:
            raise RuntimeError(f"carve of {nbytes} bytes from a released or smaller credit")
        self.nbytes -= nbytes
        gate._credits += 1
        return Credit(gate, nbytes, self.deadline)

    def absorb(self, other: Credit) -> None:
        """Hold ``other``'s bytes too (``other`` is spent): the frames of one message."""
        gate = self._gate
        if gate is None or other._gate is not gate:
            raise RuntimeError("absorb of a released credit or one of another budget")
        other._gate = None
        self.nbytes += other.nbytes
        gate._credits -= 1

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._give_back(self.nbytes)


class Admission:
    """The byte budget; grants or refuses credits at once, never queues."""

    def __init__(self, budget: int, loop: LoopRef | None = None) -> None:
        if budget <= 0:
            raise ValueError(f"admission budget must be positive, got {budget}")
        self.budget = budget
        self._in_use = 0
        self._credits = 0
        self._admitted = 0
        self._refused = 0
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self._loop = loop or LoopRef()  # the deadlines' clock

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def free(self) -> int:
        return self.budget - self._in_use

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Refuse every new credit (shutdown); credits held stay valid until released."""
        self._closed = True

    def admit(self, nbytes: int, timeout: float) -> Credit:
        """A credit of ``nbytes`` whose deadline is ``timeout`` s from now, or an error now.

        Raises :class:`StoppingError` once closed and :class:`OverloadedError`
        when the budget lacks ``nbytes``.
        """
        return self.take(nbytes, self._loop.get().time() + timeout)

    def take(self, nbytes: int, deadline: float) -> Credit:
        if self._closed:
            raise StoppingError("the service is stopping and takes no new batches")
        if nbytes > self.budget - self._in_use:
            self._refused += 1
            raise OverloadedError(
                f"no admission credit for {nbytes} bytes: {self._in_use} of {self.budget} "
                f"bytes are held by batches in flight"
            )
        self._in_use += nbytes
        self._credits += 1
        self._admitted += 1
        return Credit(self, nbytes, deadline)

    def add_release_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called whenever credit goes back (a waiter may now fit)."""
        self._listeners.append(listener)

    def _released(self) -> None:
        for listener in self._listeners:
            listener()

    def _resize(self, credit: Credit, nbytes: int) -> None:
        grow = nbytes - credit.nbytes
        if grow > 0 and grow > self.budget - self._in_use:
            self._refused += 1
            raise OverloadedError(
                f"no admission credit for {grow} more bytes (batch decodes to {nbytes}): "
                f"{self._in_use} of {self.budget} bytes are held by batches in flight"
            )
        self._in_use += grow
        credit.nbytes = nbytes
        if grow < 0:
            self._released()

    def _give_back(self, nbytes: int) -> None:
        self._in_use -= nbytes
        self._credits -= 1
        self._released()

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            budget_bytes=self.budget,
            in_use_bytes=self._in_use,
            credits=self._credits,
            admitted=self._admitted,
            refused=self._refused,
            closed=self._closed,
        )


T = TypeVar("T")


class BatchLine(Generic[T]):
    """The FIFO of admitted batches in front of the producer task; one loop only.

    Unbounded by itself on purpose: everything in it holds admission credit.
    """

    def __init__(self, loop: LoopRef | None = None) -> None:
        self._items: deque[T] = deque()
        self._loop = loop or LoopRef()
        self._getter: asyncio.Future[None] | None = None
        self._closed = False

    def append(self, item: T) -> None:
        if self._closed:
            raise StoppingError("the service is stopping and takes no new batches")
        self._items.append(item)
        g = self._getter
        if g is not None and not g.done():
            g.set_result(None)

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> T:
        """The oldest item; :class:`StoppingError` once closed and empty. One getter."""
        while True:
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise StoppingError("the batch line is closed")
            self._getter = self._loop.get().create_future()
            try:
                await self._getter
            finally:
                self._getter = None

    def close(self) -> None:
        """Refuse new items; what is queued stays gettable; wakes the getter."""
        self._closed = True
        g = self._getter
        if g is not None and not g.done():
            g.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
