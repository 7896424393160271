"""Owned file descriptors of BPF maps, programs and links."""

from __future__ import annotations

import errno as _errno
import os

from ...closing import Closing
from ...errors import KernelError


class Fd(Closing):
    """An owned file descriptor: closes once, usable as a context manager.

    There is deliberately no ``__del__``: a collected temporary would close a
    number someone still uses (and the kernel may reuse it for another file).
    """

    __slots__ = ("_fd", "_what")

    def __init__(self, fd: int, what: str = "") -> None:
        if fd < 0:
            raise ValueError(f"invalid fd {fd}")
        self._fd: int = fd
        self._what = what

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise KernelError("use fd", self._what or "closed fd", _errno.EBADF)
        return self._fd

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Gives up ownership and returns the raw fd."""
        fd = self.fd
        self._fd = -1
        return fd

    def dup(self) -> Fd:
        return Fd(os.dup(self.fd), self._what)

    def __repr__(self) -> str:
        state = "closed" if self.closed else str(self._fd)
        return f"Fd({state}{', ' + self._what if self._what else ''})"


FdLike = int | Fd


def fd_num(fd: FdLike) -> int:
    return fd.fd if isinstance(fd, Fd) else fd


def fd_target(fd: FdLike, name: str | None) -> str:
    return name if name else f"fd {fd_num(fd)}"
