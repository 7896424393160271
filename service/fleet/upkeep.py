"""What a fleet session does on the side: progress acks, pending counts, receipts.

- Held deliveries (waiting for their turn or for ring space) get a progress
  ack (``+WPI``) every third of the ack wait, so JetStream does not redeliver
  what the node still has in hand.
- Consumer info is read every ``info_interval``: the messages of the node's
  subjects not yet delivered (``pending``) and delivered but unacked.
- In pins mode, the node's receipt is written when its cursor moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from nats.js.client import JetStreamContext

from .config import FleetConfig
from .cursor import Cursor
from .outbox import Receipts
from .sequencer import Sequencer
from .source import PullSource
from .stats import FleetCounters

__all__ = ["quietly", "upkeep"]

log = logging.getLogger("ringbridge.fleet")


async def quietly(coro: Coroutine[Any, Any, None]) -> None:
    """Sends an ack; one that cannot be sent (connection down, already acked) is not an
    error: the message comes again and is recognised as a duplicate."""
    try:
        await coro
    except Exception as exc:
        log.debug("ack not sent", extra={"error": repr(exc)})


async def upkeep(
    cfg: FleetConfig,
    js: JetStreamContext,
    seq: Sequencer,
    sources: list[PullSource],
    cursor: Cursor,
    counters: FleetCounters,
) -> None:
    """Runs until cancelled; writes the last receipt on the way out."""
    receipts = None
    if cfg.mode == "pins":
        receipts = Receipts(js, cfg.receipts, cfg.node, cfg.stream, tuple(cfg.subjects))
    keepalive = max(0.5, cfg.ack_wait / 3)
    loop = asyncio.get_running_loop()
    last_info = 0.0
    try:
        while True:
            now = loop.time()
            for d in list(seq.held()):
                if d.handle is not None and now - d.held_since >= keepalive:
                    d.held_since = now
                    await quietly(d.handle.in_progress())
            if receipts is not None:
                await receipts.write(cursor.seq, cursor.committed)
            if now - last_info >= cfg.info_interval:
                last_info = now
                await _poll_pending(cfg, sources, counters)
            await asyncio.sleep(min(keepalive, cfg.receipt_interval))
    finally:
        if receipts is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(receipts.write(cursor.seq, cursor.committed), 2.0)


async def _poll_pending(
    cfg: FleetConfig, sources: list[PullSource], counters: FleetCounters
) -> None:
    pending: dict[str, int] = {}
    ack_pending: dict[str, int] = {}
    try:
        for src in sources:
            info = await src.info()
            if info is None:
                return
            pending[src.label] = info.num_pending or 0
            ack_pending[src.label] = info.num_ack_pending or 0
    except Exception as exc:
        log.debug("consumer info failed", extra={"error": repr(exc)})
        return
    counters.pending_by_consumer = pending
    counters.pending = sum(pending.values())
    if cfg.mode == "durable":
        counters.ack_pending_by_consumer = ack_pending
        counters.ack_pending = sum(ack_pending.values())
