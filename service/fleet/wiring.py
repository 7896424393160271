"""The fleet front door in a running service: two steps of :func:`ringbridge.assemble.assemble`.

1. :func:`open_cursor`, after the ring is mapped and before the producer
   starts (nothing may commit before the cursor is resolved against the
   ring, see :mod:`.cursor`), and before the privilege drop (it may create
   and pin the cursor's map): the cursor record lives with the backend's
   pins (``Backend.state_pin``) -- in the built-in set, in a user object's
   set, or in ``--pin-dir`` beside a ring another loader pinned -- and has
   one writer: the lock of its map (:mod:`ringbridge.ring.lock`, keyed by
   the map's id like a ring's), so two services never share one cursor;
2. :func:`start_front_door`, once the producer runs: the front door starts
   pulling, and its stop is registered so that it unwinds *before* the
   producer's (an exit stack unwinds in reverse): the message in hand is
   finished and acked while the producer still takes batches.

Without ``--nats`` neither does anything, and nats-py is not imported.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from ..backends import Backend
from ..kernel.pins import CURSOR_PIN
from ..ring import UserRingBuffer
from ..ring.lock import ProducerLock
from ..runtime import FleetDoor, Runtime
from .cursor import Cursor, PinnedCursorStore

__all__ = ["open_cursor", "start_front_door"]


def open_cursor(
    backend: Backend, ring: UserRingBuffer, stack: AsyncExitStack, *, enabled: bool
) -> Cursor | None:
    """The node's cursor, resolved against ``ring`` (None when fleet delivery is off)."""
    if not enabled:
        return None
    store = PinnedCursorStore.open(backend.state_pin(CURSOR_PIN))
    stack.callback(store.close)
    lock = ProducerLock.acquire(store.map_id, what=f"the fleet cursor pinned at {store.path}")
    stack.callback(lock.close)
    return Cursor.open(store, ring.map_id, ring.producer_pos)


def start_front_door(
    runtime: Runtime, cursor: Cursor | None, stack: AsyncExitStack
) -> FleetDoor | None:
    """Starts the JetStream front door on the runtime's producer (None without a cursor)."""
    if cursor is None:
        return None
    from .config import FleetConfig
    from .frontdoor import FrontDoor

    observe = runtime.batches.acked
    door = FrontDoor(
        FleetConfig.from_settings(runtime.settings),
        runtime.producer,
        runtime.codec,
        cursor,
        on_ack=lambda arrival, ack: observe("nats", arrival, ack, "committed"),
    )
    door.start()
    stack.push_async_callback(door.stop, runtime.settings.shutdown_grace)
    return door
