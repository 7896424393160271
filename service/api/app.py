"""The app factory and its lifespan: what runs between uvicorn's startup and shutdown.

Startup, in order (each step undone in reverse if a later one fails):

1. load the default BPF program set, or re-open it from its pins
   (``bpfobj.load_default``: an existing, foreign or mismatched pin dir is
   refused, never clobbered) -- or a user's object (``--bpf-object``, see
   :mod:`ringbridge.api.backend`) -- and take the pin dir's producer lock
   (one producer per ring);
2. build the sample codec from the object's BTF (``struct ringbridge_sample``,
   or ``--sample-type``);
3. map the ring (``UserRingBuffer``; recovers records a crashed producer left BUSY);
4. set up the drain trigger: ``timer`` arms the in-kernel timer, ``kick``
   sets the per-call budget (the producer runs the drain program after each
   commit), ``external`` disarms a timer a previous run may have left armed;
5. with ``drop_privileges``, give up every capability (the fds suffice from
   here on, Linux >= 5.19); with ``user``, also switch to that unprivileged
   uid/gid;
6. start the producer task.

Shutdown follows uvicorn: it stops accepting connections and waits for
requests in flight, then runs this lifespan's exit, which stops the producer
(queued batches get ``shutdown_grace`` seconds to commit), lets a timer drain
consume what was committed (bounded by the same grace), disarms the timer,
and frees the ring, then the loaded object, last.
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
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..errors import RingbridgeError
from ..kernel.bpfobj import LoadedRingbridge, lock_producer, unpin
from ..kernel.drainer import NativeDrainer
from ..kernel.environment import startup_hint
from ..kernel.pinnedring import PinnedRing
from ..kernel.privileges import drop_all_capabilities, resolve_user
from ..kernel.ringbuf import UserRingBuffer
from ..producer.kick import DrainTrigger, Kicker, TimerWaker
from ..producer.task import Producer
from ..producer.ticker import DrainTicker
from ..settings import Settings
from . import backend, docs, metrics, routes, ws
from .fastpath import RingbridgeApp
from .state import ConsumerWatch, Rejections, Runtime

log = logging.getLogger("ringbridge.app")


async def _wait_drained(ring: UserRingBuffer, timeout: float) -> bool:
    with contextlib.suppress(Exception):
        await ring.wait_consumed(ring.producer_pos, timeout)
        return True
    return False


def _setup_drain(settings: Settings, loaded: LoadedRingbridge) -> None:
    """The built-in consumer's drain trigger (a user's object has no timer of ours)."""
    if settings.drain == "timer":
        loaded.arm_timer(
            settings.drain_period_ns, settings.drain_budget, settings.drain_idle_period_ns
        )
    elif settings.drain == "kick":
        loaded.set_budget(settings.drain_budget)
        loaded.disarm_timer()
    else:
        # "external": the user's own program drains; ours must not compete
        # (a pinned timer survives restarts, so a previous timer-mode run
        # could still be draining).
        loaded.disarm_timer()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    started = False
    try:
        settings: Settings = app.state.settings
        m: metrics.ServiceMetrics = app.state.metrics
        async with AsyncExitStack() as stack:
            # Capabilities are per thread: when they are to be dropped, load on
            # the loop's own thread so that no privileged worker thread exists.
            drop = settings.drop_privileges or settings.user is not None
            if drop:
                loaded, mode = backend.load(settings)
            else:
                loaded, mode = await asyncio.to_thread(backend.load, settings)
            if not isinstance(loaded, PinnedRing) and not loaded.reused:
                # Pins this start created go again if the start fails: a
                # failed start leaves the pin dir as it found it.
                def forget_new_pins() -> None:
                    if started:
                        return
                    try:
                        unpin(settings.pin_dir)
                    except (RingbridgeError, OSError) as exc:
                        # After a privilege drop the pins may no longer be ours to
                        # remove; say so, and let the start's own error be the one
                        # reported (raising here would replace it).
                        log.warning(
                            "failed start left its new pins behind",
                            extra={
                                "pin_dir": str(settings.pin_dir),
                                "reason": str(exc),
                                "fix": f"ringbridge unpin --pin-dir {settings.pin_dir}",
                            },
                        )

                stack.callback(forget_new_pins)
            stack.callback(loaded.close)
            builtin = isinstance(loaded, LoadedRingbridge)
            if isinstance(loaded, PinnedRing):
                # Its size is the pin's; limits follow it (it holds its own lock).
                if loaded.ring_size != settings.ring_size:
                    settings = settings.with_ring_size(loaded.ring_size)
            else:
                lock = lock_producer(settings.pin_dir)
                stack.callback(lock.close)
            codec = backend.build_codec(settings, loaded)
            exports = backend.build_exports(settings, loaded)
            ring = UserRingBuffer(
                loaded.ring_fd,
                settings.ring_size,
                ctl_fd=loaded.ctl_fd if isinstance(loaded, LoadedRingbridge) else None,
            )
            # Registered before the producer's stop: an ExitStack unwinds in
            # reverse, so the ring is freed after everything that writes it.
            stack.callback(ring.close)
            if ring.recovered_busy:
                log.warning("recovered records left BUSY", extra={"records": ring.recovered_busy})
            if isinstance(loaded, LoadedRingbridge):
                _setup_drain(settings, loaded)
            if drop:
                # Everything privileged is done: loading, pinning, locking, the
                # ring's mmap. What remains runs on the fds alone.
                user = resolve_user(settings.user) if settings.user is not None else None
                drop_all_capabilities(user)
                log.info(
                    "dropped all capabilities",
                    extra={"uid": os.getuid(), "gid": os.getgid()},
                )
            if isinstance(loaded, LoadedRingbridge) and mode == "timer":
                builtin_loaded = loaded

                async def quiesce_timer() -> None:
                    # Let the kernel consume what we committed, then stop the
                    # timer: a pinned timer would otherwise tick on forever.
                    drained = await _wait_drained(ring, settings.shutdown_grace)
                    builtin_loaded.disarm_timer()
                    if not drained:
                        log.warning(
                            "ring not fully consumed at shutdown; it stays pinned",
                            extra={"pending_bytes": ring.producer_pos - ring.consumer_pos()},
                        )

                stack.push_async_callback(quiesce_timer)
            trigger: DrainTrigger | None = None
            if isinstance(loaded, PinnedRing):
                pass  # always "external": the loader that pinned it drains
            elif mode == "kick":
                # After the privilege drop: the worker thread starts with none.
                drainer = NativeDrainer(loaded.drain_prog_fd, *ring.position_addresses())
                # Unwound before ring.close: the worker reads the ring's mapping.
                stack.callback(drainer.close)
                trigger = Kicker(drainer)
            elif mode == "timer" and isinstance(loaded, LoadedRingbridge):
                trigger = TimerWaker(loaded.timer_idle_drains, loaded.wake_timer)
            elif mode == "timer":
                # A user's object has no timer: its drain program runs on a period.
                ticker = DrainTicker(
                    loaded.drain,
                    lambda: ring.producer_pos - ring.consumer_pos(),
                    settings.drain_period_ns / 1e9,
                    grace=settings.shutdown_grace,
                )
                ticker.start()
                trigger = ticker
            producer = Producer(
                ring,
                admission_bytes=settings.admission_limit,
                kick=trigger,
                on_commit=m.observe_commit,
                # A pinned ring has no place of ours to keep the next seq.
                seq_store=None if isinstance(loaded, PinnedRing) else loaded,
            )
            producer.start()
            stack.push_async_callback(producer.stop, settings.shutdown_grace)
            app.state.runtime = Runtime(
                settings=settings,
                loaded=loaded,
                ring=ring,
                producer=producer,
                codec=codec,
                drain=mode,
                exports=exports,
                rejections=Rejections(),
                watch=ConsumerWatch(settings.ready_stall_seconds),
            )

            def detach() -> None:
                app.state.runtime = None

            # Unwound first: routes see "not running" before anything is freed.
            stack.callback(detach)
            log.info(
                "ringbridge started",
                extra={
                    "pin_dir": str(settings.pin_dir),
                    "ring_pin": str(settings.ring_pin) if settings.ring_pin else None,
                    "pins_reused": loaded.reused,
                    "ring_size": settings.ring_size,
                    "object": str(backend.object_path(settings)),
                    "builtin": builtin,
                    "drain": mode,
                    "auth": settings.token is not None,
                },
            )
            started = True
            yield
            queued = producer.statistics().queued_batches
            log.info("ringbridge stopping", extra={"queued_batches": queued})
        log.info("ringbridge stopped")
    except RingbridgeError as exc:
        if started:
            raise
        # One structured line with the reason (a pin dir held by another
        # producer, a mismatched ring...); server.run keeps uvicorn from
        # repeating it as a traceback.
        app.state.startup_error = exc
        extra = {"error": exc.message, "code": exc.code}
        hint = startup_hint(exc)
        if hint is not None:
            extra["hint"] = hint
        log.error("startup failed", extra=extra)
        raise


def create_app(settings: Settings | None = None) -> RingbridgeApp:
    """The ASGI app for ``settings`` (default: from ``RINGBRIDGE_*`` variables)."""
    settings = settings if settings is not None else Settings()
    # FastAPI, except POST /v1/samples, served by the raw handler (fastpath).
    protect = settings.protect_metrics
    app = RingbridgeApp(
        title="ringbridge",
        summary="HTTP and WebSocket ingestion into a Linux BPF user ring buffer",
        version=__version__,
        lifespan=_lifespan,
        # /docs is served with local assets (docs.install_docs), and with
        # protect_metrics /openapi.json too, behind the token; ReDoc would
        # need a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=None if protect else "/openapi.json",
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.startup_error = None
    app.state.metrics = metrics.ServiceMetrics(lambda: app.state.runtime)
    routes.install_error_handlers(app)
    routes.install_openapi(app)
    docs.install_docs(app, protect=protect)
    app.include_router(routes.router)
    app.include_router(ws.router)
    app.include_router(metrics.router)
    return app
