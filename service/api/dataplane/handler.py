"""What a connection hands its bytes and its events to: :class:`Sink` and :class:`Handler`."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Handler", "Sink"]


class Sink:
    """Where the next ``need`` bytes of a payload go; ``done`` runs when they are
    there. Reads may fill it up to ``room`` bytes (at least ``need``): a frame's
    ring space with room for the frames after it (read ahead)."""

    __slots__ = ("buf", "done", "got", "need", "room", "skip")

    def __init__(
        self,
        buf: memoryview,
        need: int,
        done: Callable[[], None],
        skip: bool = False,
        room: int = 0,
    ) -> None:
        self.buf = buf
        self.need = need
        self.room = room if room > need else need
        self.got = 0
        self.done = done
        self.skip = skip  # bytes are dropped (buf is a scratch buffer, reused)


class Handler:
    """What runs a connection after its head: a request or a stream."""

    def lost(self) -> None:
        """The connection is gone: give up whatever is in flight."""

    def shutdown(self) -> None:
        """The server is stopping: finish what was taken, take nothing new."""

    def resume(self) -> None:
        """Staged bytes may be processed again (a stream: after a pause)."""
