"""Undo a failed start with the privileges it was made with: :class:`StartJanitor`.

A start pins its maps and programs as root, then gives up its privileges
(``--user``). If anything fails after that -- the drain worker's thread
cannot be created, a bug -- the process can no longer remove the pins it
made: the pin dir is root's, 0700, and bpffs unlinks need write permission
on it (a directory fd opened earlier does not help: ``unlinkat`` checks the
caller's credentials, not the fd's). A restart would then find a pin set it
did not make.

So a start that is about to drop forks a janitor first: a child process
that keeps the parent's privileges, does nothing but wait on a pipe, and
lives only until the start is over. :meth:`StartJanitor.dismiss` (the start
succeeded) lets it exit untouched; :meth:`StartJanitor.undo` (the start
failed) has it run ``undo`` -- forget the pins -- and waits for it. If the
parent dies during the start (the pipe closes without a word) the janitor
undoes too: the start did not complete.

The child inherits the parent's fds, the producer lock among them, and
closes them by exiting; it touches neither the event loop nor the ring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable

__all__ = ["StartJanitor"]

log = logging.getLogger("ringbridge.janitor")

_DISMISS = b"d"
_UNDO = b"u"


class StartJanitor:
    """A privileged child that runs ``undo`` unless the start is dismissed as done."""

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self._pipe: int | None = pipe

    @classmethod
    def fork(cls, undo: Callable[[], None]) -> StartJanitor:
        """Forks the janitor (call while still privileged, before any thread starts)."""
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the janitor
            code = 1
            try:
                os.close(w)
                code = _wait_and_undo(r, undo)
            finally:
                os._exit(code)
        os.close(r)
        return cls(pid, w)

    def _tell(self, word: bytes) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        with contextlib.suppress(OSError):
            os.write(pipe, word)
        os.close(pipe)
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(self.pid, 0)
            if word == _UNDO and os.waitstatus_to_exitcode(status) != 0:
                log.warning("the start's janitor could not undo it", extra={"pid": self.pid})

    def dismiss(self) -> None:
        """The start succeeded: the janitor exits without doing anything."""
        self._tell(_DISMISS)

    def undo(self) -> None:
        """The start failed: the janitor runs ``undo`` privileged; returns when it is done."""
        self._tell(_UNDO)


def _wait_and_undo(pipe: int, undo: Callable[[], None]) -> int:
    # Signals meant for the service (Ctrl-C reaches the whole process group)
    # must neither kill the janitor before it answers nor, through the
    # event loop's wake-up fd it shares, look like the parent's own.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        word = os.read(pipe, 1)
    except OSError:
        word = b""
    if word == _DISMISS:
        return 0
    try:
        undo()  # the parent failed to start, or died while starting
    except BaseException:  # report and exit, whatever it was
        log.exception("undoing a failed start failed")
        return 1
    return 0
