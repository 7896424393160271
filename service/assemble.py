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
5. with ``drop_privileges``, give up every capability (the fds suffice from
   here on, Linux >= 5.19; the lock is held by fd); with ``user``, also switch
   to that unprivileged uid/gid;
6. start the drain trigger (native kick worker, drain ticker), the producer
   task, the foreign-writer watch and the event readers.

Shutdown, the exit stack unwinding: the watch stops, the producer stops
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
import logging
import os
from collections.abc import Callable
from contextlib import AsyncExitStack

from .backends import open_backend
from .errors import RingbridgeError
from .events.feeds import open_event_feeds
from .kernel.environment import startup_hint
from .kernel.eventring import DEFAULT_BUDGET
from .kernel.privileges import drop_all_capabilities, resolve_user
from .producer.task import Producer
from .ring import UserRingBuffer
from .runtime import ConsumerWatch, ForeignWriterWatch, Runtime
from .settings import Settings
from .wire import Ack

__all__ = ["assemble", "report_startup_failure"]

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
    # Capabilities are per thread: when they are to be dropped, load on the
    # loop's own thread so that no privileged worker thread exists.
    drop = settings.drop_privileges or settings.user is not None
    if drop:
        backend = open_backend(settings)
    else:
        backend = await asyncio.to_thread(open_backend, settings)

    def forget_unless_started() -> None:
        if not started:
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
    backend.prepare_drain()
    if drop:
        # Everything privileged is done: loading, pinning, locking, the
        # ring's mmap. What remains runs on the fds alone.
        user = resolve_user(settings.user) if settings.user is not None else None
        drop_all_capabilities(user)
        log.info("dropped all capabilities", extra={"uid": os.getuid(), "gid": os.getgid()})
    trigger = backend.start_drain(ring, stack)
    producer = Producer(
        ring,
        admission_bytes=settings.admission_limit,
        kick=trigger,
        on_commit=on_commit,
        seq_store=backend.seq_store,
    )
    producer.start()
    stack.push_async_callback(producer.stop, settings.shutdown_grace)
    writers = ForeignWriterWatch(ring, backend.recovery_hint())
    watch_task = asyncio.create_task(writers.run(), name="ringbridge-writer-watch")
    stack.callback(watch_task.cancel)
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
    )
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
    return runtime


def event_budget(settings: Settings) -> int:
    """Records one read pass of an event map publishes before it yields to the loop.

    A quarter of a subscriber's buffer: a subscriber that keeps up drains
    what one pass gave it before the next pass comes, so bursts alone never
    overflow it.
    """
    return max(1, min(DEFAULT_BUDGET, settings.event_buffer_events // 4))


def report_startup_failure(exc: RingbridgeError) -> None:
    """One structured line with the reason a start failed (a ring held by another
    producer, a mismatched ring...) and, where the error does not say it, the fix."""
    extra = {"error": exc.message, "code": exc.code}
    hint = startup_hint(exc)
    if hint is not None:
        extra["hint"] = hint
    log.error("startup failed", extra=extra)
