"""Start-up and shutdown of the service around its backend: :func:`assemble`.

Startup, in order (each step undone in reverse if a later one fails):

1. open the backend the settings describe (:func:`ringbridge.backends.open_backend`):
   load the built-in consumer or a user's object, or re-open it from its pins
   (an existing, foreign or mismatched pin dir is refused, never clobbered),
   or open a ring another loader pinned; a start that fails later forgets the
   pins this one created;
2. open the ring through the library (:class:`ringbridge.ring.UserRingBuffer`):
   it takes the ring's producer lock (one producer per ring, keyed by the
   map's id, whatever the backend), maps the ring and recovers records a
   crashed producer left BUSY;
3. find the sample type and the event maps' types (the backend's BTF, then
   ``--sample-btf`` files, then ``--sample-header``), build the sample codec,
   open a reader per event map (``--event-map``, ``--event-pin``) and the
   backend's exporters;
4. set up the drain in the kernel (the built-in consumer's timer or budget);
   open the idempotency keys kept with the pins and the watch of the ring
   as the kernel reads it and of the pins (:mod:`ringbridge.kernel.ringwatch`);
5. with ``drop_privileges``, give up every capability (the fds suffice from
   here on, Linux >= 5.19; the lock is held by fd); with ``user``, also switch
   to that unprivileged uid/gid. First everything the rest needs is opened
   (native helpers, import directories the user could not reach), and when
   this start made the pins, a privileged janitor is forked that removes them
   should the start fail after the drop (:mod:`ringbridge.kernel.janitor`);
6. start the drain trigger (native kick worker, drain ticker), the producer
   task, the foreign-writer and ring watches and the event readers;
7. with ``--nats``, the fleet front door (JetStream -> producer): its cursor
   is opened with the pins and resolved against the ring after step 2,
   before anything commits and before the privilege drop; the front door
   starts last (:func:`open_fleet_cursor`, :func:`start_front_door`).

Shutdown, the exit stack unwinding: the fleet front door stops (the message
in hand gets ``shutdown_grace`` seconds to commit and be acked), the watch
stops, the producer stops
(queued batches get ``shutdown_grace`` seconds to commit), the drain quiesces
(a timer drain gets the same grace to consume what was committed, then is
disarmed; the kick worker stops), the ring is freed and its lock released,
the event readers stop (their subscribers' streams end), the backend closed,
last.
"""

from __future__ import annotations

import asyncio

# asyncio.to_thread (the threaded load, drain tickers) imports its executor
# lazily, on first use. Import it now: after a switch to --user the
# interpreter's own files may be out of reach (one under a root-only home).
import concurrent.futures.thread  # noqa: F401
import contextlib
import logging
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from . import nativelib
from .backends import Backend, open_backend
from .errors import RingbridgeError
from .events.feeds import open_event_feeds
from .fleet.cursor import Cursor, PinnedCursorStore
from .kernel.environment import startup_hint
from .kernel.eventring import DEFAULT_BUDGET
from .kernel.heap import return_freed_memory
from .kernel.janitor import StartJanitor
from .kernel.pins import CURSOR_PIN, KEYS_PIN
from .kernel.pins.keys import PinnedKeys
from .kernel.privileges import drop_all_capabilities, resolve_user
from .kernel.ringwatch import RingWatch
from .producer.keys import KeyTable
from .producer.task import Producer
from .ring import ProducerLock, UserRingBuffer
from .runtime import ConsumerWatch, FleetDoor, ForeignWriterWatch, Runtime
from .settings import Settings
from .wire import Ack

__all__ = ["assemble", "open_fleet_cursor", "report_startup_failure", "start_front_door"]

log = logging.getLogger("ringbridge.app")


async def assemble(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    on_commit: Callable[[float, Ack], None] | None = None,
) -> Runtime:
    """Starts the service's kernel side and producer (see the module doc).

    Everything started is registered on ``stack``, in the order that makes its
    unwinding the shutdown. ``on_commit`` is the producer's commit hook
    (the commit latency histogram).
    """
    started = False
    # Freed request bodies and batches go back to the kernel (kernel/heap.py).
    return_freed_memory()
    # Capabilities are per thread: when they are to be dropped, load on the
    # loop's own thread so that no privileged worker thread exists.
    drop = settings.drop_privileges or settings.user is not None
    if drop:
        backend = open_backend(settings)
    else:
        backend = await asyncio.to_thread(open_backend, settings)

    janitor: StartJanitor | None = None

    def forget_unless_started() -> None:
        if started:
            return
        if janitor is not None:
            janitor.undo()  # after the drop the pins are no longer ours to remove
        else:
            backend.forget_pins()

    stack.callback(forget_unless_started)
    stack.callback(backend.close)
    if backend.ring_size != settings.ring_size:
        # A ring pinned by another loader: its size is the pin's; limits follow it.
        settings = settings.with_ring_size(backend.ring_size)
    ring = UserRingBuffer(
        backend.ring_fd, waiting_flag_fd=backend.waiting_flag_fd, name=backend.ring_name
    )
    # Registered before the producer's stop: an ExitStack unwinds in
    # reverse, so the ring is freed after everything that writes it.
    stack.callback(ring.close)
    with backend.open_types() as types:
        codec = backend.sample_codec(types)
        feeds = open_event_feeds(
            settings.event_specs, backend, types, budget=event_budget(settings)
        )
    # Unwound before the backend closes (the readers map the object's maps).
    stack.callback(feeds.close)
    exports = backend.exporters()
    if ring.recovered_busy:
        log.warning("recovered records left BUSY", extra={"records": ring.recovered_busy})
    # Before the producer starts and before the privilege drop.
    cursor = open_fleet_cursor(backend, ring, stack) if settings.nats else None
    backend.prepare_drain()
    keys = _key_table(settings, backend, ring, stack)
    # Opened while still privileged: the pins are root's (see RingWatch).
    ring_watch = RingWatch(
        ring, _pins_to_watch(settings), recovery=backend.recovery_hint(), hold=drop
    )
    stack.callback(ring_watch.close)
    if drop:
        # Everything privileged is done: loading, pinning, locking, the
        # ring's mmap. What remains runs on the fds alone -- and on what is
        # opened now: the unprivileged user may not even see the checkout or
        # the venv (a 0700 home), so the helpers and modules load first.
        nativelib.preload()
        user = resolve_user(settings.user) if settings.user is not None else None
        if not backend.reused:
            janitor = StartJanitor.fork(backend.forget_pins)
        drop_all_capabilities(user)
        log.info("dropped all capabilities", extra={"uid": os.getuid(), "gid": os.getgid()})
    trigger = backend.start_drain(ring, stack)
    producer = Producer(
        ring,
        admission_bytes=settings.admission_limit,
        kick=trigger,
        on_commit=on_commit,
        seq_store=backend.seq_store,
        keys=keys,
    )
    producer.start()
    stack.push_async_callback(producer.stop, settings.shutdown_grace)
    writers = ForeignWriterWatch(ring, backend.recovery_hint())
    watch_task = asyncio.create_task(writers.run(), name="ringbridge-writer-watch")
    stack.callback(watch_task.cancel)
    watching = asyncio.create_task(ring_watch.run(), name="ringbridge-ring-watch")
    stack.push_async_callback(_cancelled, watching)
    feeds.start()
    runtime = Runtime(
        settings=settings,
        backend=backend,
        ring=ring,
        producer=producer,
        codec=codec,
        exports=exports,
        watch=ConsumerWatch(settings.ready_stall_seconds),
        writers=writers,
        events=feeds.hub,
        feeds=feeds,
        ring_watch=ring_watch,
    )
    # Its stop is registered after the producer's: it unwinds first.
    runtime.fleet = start_front_door(runtime, cursor, stack)
    log.info(
        "ringbridge started",
        extra={
            **backend.describe(),
            "pin_dir": str(settings.pin_dir),
            "pins_reused": backend.reused,
            "ring_size": settings.ring_size,
            "drain": backend.drain,
            "auth": settings.token is not None,
            "event_maps": feeds.hub.names(),
        },
    )
    started = True
    if janitor is not None:
        janitor.dismiss()
    return runtime


def event_budget(settings: Settings) -> int:
    """Records one read pass of an event map publishes before it yields to the loop.

    A quarter of a subscriber's buffer: a subscriber that keeps up drains
    what one pass gave it before the next pass comes, so bursts alone never
    overflow it.
    """
    return max(1, min(DEFAULT_BUDGET, settings.event_buffer_events // 4))


# -- the fleet front door (--nats) ------------------------------------------------------


def open_fleet_cursor(backend: Backend, ring: UserRingBuffer, stack: AsyncExitStack) -> Cursor:
    """The node's place in the stream, resolved against ``ring``.

    Called after the ring is mapped and before the producer starts (nothing
    may commit before the cursor is resolved, see :mod:`ringbridge.fleet.cursor`)
    and before the privilege drop (it may create and pin the cursor's map).
    The record lives with the backend's pins (``Backend.state_pin``: in the
    built-in set, in a user object's set, or in ``--pin-dir`` beside a ring
    another loader pinned) and has one writer: the lock of its map, keyed by
    the map's id like a ring's, so two services never share one cursor.
    """
    store = PinnedCursorStore.open(backend.state_pin(CURSOR_PIN))
    stack.callback(store.close)
    lock = ProducerLock.acquire(store.map_id, what=f"the fleet cursor pinned at {store.path}")
    stack.callback(lock.close)
    return Cursor.open(store, ring.map_id, ring.producer_pos)


def start_front_door(
    runtime: Runtime, cursor: Cursor | None, stack: AsyncExitStack
) -> FleetDoor | None:
    """Starts the JetStream front door on the running producer (None without a cursor).

    Its stop is registered after the producer's, so that it unwinds first:
    the message in hand is finished and acked while the producer still
    takes batches. nats-py is imported only here, with ``--nats``.
    """
    if cursor is None:
        return None
    from .fleet.config import FleetConfig
    from .fleet.frontdoor import FrontDoor

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


def _key_table(
    settings: Settings, backend: Backend, ring: UserRingBuffer, stack: AsyncExitStack
) -> KeyTable:
    """The idempotency keys, kept with the pins (``Backend.state_pin``); in memory
    only for a ring another loader pinned (its pins are not ours to add to)."""
    if settings.ring_pin is not None:
        return KeyTable(settings.idempotency_keys)
    store = PinnedKeys.open_or_create(backend.state_pin(KEYS_PIN), settings.idempotency_keys)
    stack.callback(store.close)
    table = KeyTable(settings.idempotency_keys, store, producer_pos=ring.producer_pos)
    if table.statistics().remembered:
        log.info("idempotency keys re-opened", extra={"keys": table.statistics().remembered})
    return table


def _pins_to_watch(settings: Settings) -> list[Path]:
    """The pins whose removal while serving is worth telling: the ring another
    loader pinned, or our pin dir and everything in it."""
    if settings.ring_pin is not None:
        return [settings.ring_pin]
    try:
        return [settings.pin_dir, *sorted(settings.pin_dir.iterdir())]
    except OSError:
        return [settings.pin_dir]


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def report_startup_failure(exc: RingbridgeError) -> None:
    """One structured line with the reason a start failed (a ring held by another
    producer, a mismatched ring...) and, where the error does not say it, the fix."""
    extra = {"error": exc.message, "code": exc.code}
    hint = startup_hint(exc)
    if hint is not None:
        extra["hint"] = hint
    log.error("startup failed", extra=extra)
