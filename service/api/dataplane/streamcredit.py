"""What a data-plane stream holds and for how long: :class:`StreamCredit`.

The rules of :mod:`ringbridge.api.wslimits` on the data plane's
:class:`~ringbridge.api.dataplane.stream.Stream` (mixed into it): a data
frame is reserved at its header, before its payload is read, or waits in
line with the connection's reading paused; the reservation pays for the
frame's buffer or ring space and then its batch, until the ack; a binary
frame that finds the ring full waits unread for its region, reading paused
(busy, not idle); a stream with no frame received and no ack owed for
``ws_idle_timeout`` is closed.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ... import wire
from ...errors import RecordTooLargeError, RingbridgeError
from ...producer.admission import Credit
from ...runtime import Runtime
from ..wslimits import FrameCredit, IdleTimer
from . import wsframes as wf

if TYPE_CHECKING:
    from .connection import DataPlaneProtocol

__all__ = ["StreamCredit"]


class StreamCredit:
    """Mixed into the data plane's ``Stream`` (which sets these up)."""

    c: DataPlaneProtocol
    rt: Runtime
    line: FrameCredit
    pending: deque[Any]
    frag: bytearray | None
    frag_credit: Credit | None
    granted: Credit | None
    waiting_credit: bool
    ring_wait: bool
    closing: int
    stopping: bool
    close_reason: str
    max_frame: int
    max_batch: int
    submit_timeout: float
    idle: IdleTimer

    def init_credit(self, line: FrameCredit, idle_timeout: float) -> None:
        """No credit held, no frame waiting; idle from now."""
        self.line = line
        self.frag_credit = None  # a fragmented message's
        self.waiting_credit = False  # the next frame waits in line (reading paused)
        self.granted = None  # the credit that frame waited for
        self.ring_wait = False  # the last frame taken waits unread for ring space
        self.close_reason = ""
        self.idle = IdleTimer(self.c.loop, idle_timeout, self._idle_out)
        self.idle.idle()

    def resume(self) -> None:
        raise NotImplementedError

    def _close_when_acked(self, code: int) -> None:
        raise NotImplementedError

    # -- a frame's credit ------------------------------------------------------------

    def _credit_need(self, head: wf.Head) -> int:
        """Bytes a frame is reserved for before its payload is read: a data frame's
        size, but for one refused unread (a binary batch over the limit) or closed."""
        if head.opcode >= wf.CLOSE or head.length > self.max_frame:
            return 0
        plain = head.opcode == wf.BINARY and head.fin and self.frag is None
        return 0 if plain and head.length > self.max_batch else head.length

    def _frame_credit(self, head: wf.Head) -> tuple[bool, Credit | None]:
        """(whether the frame of ``head`` may be read now, its credit). Not yet:
        it waits in line with reading paused (a data frame is busy: not idle)."""
        need = self._credit_need(head)
        if not need:
            return True, None
        self.idle.busy()
        granted, self.granted = self.granted, None
        if granted is not None:
            return True, granted
        try:
            credit = self.line.reserve(self, need, self.rt.producer.admission)
        except RingbridgeError as exc:  # stopping
            self.credit_refused(exc)
            return False, None
        if credit is None:
            self.waiting_credit = True
            self.c.pause()
            return False, None
        return True, credit

    def credit_granted(self, credit: Credit) -> None:
        """The line's credit for the frame whose header waits: read it now."""
        self.waiting_credit = False
        if self.c.gone or self.closing or self.stopping:
            credit.release()
            return
        self.granted = credit
        self.c.unpause()
        self.resume()

    def credit_refused(self, exc: RingbridgeError) -> None:
        self.waiting_credit = False
        self._close_when_acked(wire.rule(exc.code).close)

    # -- a frame waiting unread for ring space (api/dataplane/frame.py) ----------------

    def wait_for_ring(self) -> None:
        """The frame just taken waits unread for its region: stop reading."""
        self.ring_wait = True
        self.c.pause()

    def ring_wait_over(self) -> None:
        """That frame got its region (read its payload now) or was refused (its
        payload is skipped, or never read if the stream reads no more)."""
        self.ring_wait = False
        c = self.c
        if c.gone or c.transport.is_closing():
            return
        if c.sink is None and (self.closing or self.stopping):
            return  # stays paused: the close follows the acks
        c.unpause()  # a payload being received is read whatever the window
        if c.sink is None:
            self.resume()

    def leave_line(self) -> None:
        """The stream takes no more frames (stopping): out of the line."""
        if self.waiting_credit:
            self.line.forget(self)
            self.waiting_credit = False

    def release_credit(self) -> None:
        """The stream ended: out of the line, and what it held goes back."""
        self.idle.close()
        self.line.forget(self)
        self.waiting_credit = False
        for credit in (self.granted, self.frag_credit):
            if credit is not None:
                credit.release()
        self.granted = self.frag_credit = None

    def batch_credit(self, nbytes: int) -> Credit:
        """Credit for a batch whose frame had none (an empty frame): taken now."""
        return self.rt.producer.admit(nbytes, self.submit_timeout)

    def too_large(self, nbytes: int) -> RingbridgeError | None:
        if nbytes > self.max_batch:
            return RecordTooLargeError(
                f"batch of {nbytes} bytes exceeds the limit of {self.max_batch}"
            )
        return None

    # -- idle --------------------------------------------------------------------------

    def _idle_out(self, code: int, reason: str) -> None:
        """No frame received and no ack owed for ``ws_idle_timeout``: close (1001)."""
        c = self.c
        if self.pending or self.frag is not None or self.waiting_credit or c.sink is not None:
            return  # busy after all (the timer is re-armed once it is idle again)
        if c.gone or self.closing or self.stopping:
            return
        self.close_reason = reason
        self._close_when_acked(code)
