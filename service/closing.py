"""One base for what owns a resource: ``with Thing(...) as t:`` closes it on the way out
(``async with`` for what closes asynchronously).

It stands outside the layers (it imports nothing of ours), so the kernel binding
and the client share it without the client depending on the server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """``__enter__`` returns the object; ``__exit__`` calls :meth:`close`."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object owns; calling it again does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClosing(ABC):
    """``__aenter__`` returns the object; ``__aexit__`` awaits :meth:`aclose`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the object owns; calling it again does nothing."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
