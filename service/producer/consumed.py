"""An ack upgraded to ``"consumed"`` once the kernel's consumer has passed it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from ..errors import RingbridgeError
from ..ring import UserRingBuffer
from ..wire import Ack

__all__ = ["wait_consumed"]

log = logging.getLogger("ringbridge.producer")


async def wait_consumed(
    ring: UserRingBuffer,
    ack: Ack,
    left: float,
    stopped: asyncio.Event,
    gone: asyncio.Future[Any] | None,
) -> Ack:
    """``ack`` as ``"consumed"`` once ``ring``'s consumer passed its end within
    ``left`` seconds; else ``ack`` as it is (``"committed"``).

    Also ends when ``stopped`` is set (the producer stopped, after its grace)
    or ``gone`` completes (the client went away): the answer is then the
    committed ack.
    """
    consumed = asyncio.ensure_future(ring.wait_consumed_async(ack.ring_end_pos, left))
    stopping = asyncio.ensure_future(stopped.wait())
    waiters: set[asyncio.Future[Any]] = {consumed, stopping}
    if gone is not None:
        waiters.add(gone)
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in (consumed, stopping):
            f.cancel()
    if consumed.done() and not consumed.cancelled():
        exc = consumed.exception()
        if exc is None:
            return replace(ack, state="consumed")
        if isinstance(exc, TimeoutError):
            return ack  # not consumed in time: the committed ack (202)
        if not isinstance(exc, RingbridgeError):
            raise exc  # a bug: not to be hidden
        # The ring closing or failing while we watched it changes nothing
        # for this batch: it is committed. Anything short of a confirmed
        # consume is the committed ack (202), never an error that would
        # invite a resend.
        log.warning("consume wait ended early", extra={"error": exc.message})
    return ack
