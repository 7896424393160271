"""A deadline that moves with every request or frame and rarely passes: :class:`LazyTimer`.

Keep-alive, a body's arrival, a stream's idleness: each is a deadline pushed
back by every request or frame, which almost never passes. A loop timer per
push (``call_later`` then ``cancel``: ~2-3 µs with uvloop) was paid by every
request and frame; here a push only notes the new deadline, and one loop
timer, armed while none is, looks at it when it fires: gone -- it lapses;
later -- it is armed again for the rest; passed -- the callback runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LazyTimer"]


class LazyTimer:
    """One deadline and the callback due when it passes; one loop timer at most."""

    __slots__ = ("_armed_at", "_callback", "_deadline", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._deadline: float | None = None
        self._callback: Callable[[], None] | None = None

    @property
    def deadline(self) -> float | None:
        """The loop time at which the callback is due, or None (cleared)."""
        return self._deadline

    def set(self, deadline: float, callback: Callable[[], None]) -> None:
        """``callback()`` at loop time ``deadline`` unless set or cleared before."""
        self._deadline = deadline
        self._callback = callback
        if self._handle is None or deadline < self._armed_at:
            # None armed, or armed too late for this earlier deadline.
            if self._handle is not None:
                self._handle.cancel()
            self._arm(deadline)

    def clear(self) -> None:
        """Nothing is due (the timer, if armed, lapses when it fires)."""
        self._deadline = None
        self._callback = None

    def close(self) -> None:
        """Cleared, and the loop timer cancelled now."""
        self.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, at: float) -> None:
        self._armed_at = at
        self._handle = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._handle = None
        deadline, callback = self._deadline, self._callback
        if deadline is None or callback is None:
            return
        if deadline > self._loop.time():
            self._arm(deadline)
            return
        self.clear()
        callback()
