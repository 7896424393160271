"""The running event loop, looked up once per holder.

In CPython 3.11, ``asyncio.get_running_loop()`` makes a ``getpid(2)`` system
call on every call (it checks that the loop was not inherited across a
fork). On the data plane that is one system call more per request -- as
many as the request's own ``read`` and ``write`` -- and on a virtual CPU just
woken from idle a system call costs microseconds. The producer's objects
live and die on one loop, so each looks it up at first use and keeps it.
"""

from __future__ import annotations

import asyncio

__all__ = ["LoopRef"]


class LoopRef:
    """:meth:`get` is ``asyncio.get_running_loop()``, looked up at the first call."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop
