"""The app factory and its lifespan: what runs between uvicorn's startup and shutdown.

Startup assembles the service (:func:`ringbridge.assemble.assemble`: backend,
lock, codec, ring, drain, privilege drop, producer) and hangs the
:class:`~ringbridge.runtime.Runtime` on ``app.state.runtime``.

Shutdown follows uvicorn: it stops accepting connections and waits for
requests in flight, then runs this lifespan's exit: routes see "not running"
first, then the assembly unwinds (producer, drain, ring, backend).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..assemble import assemble, report_startup_failure
from ..errors import RingbridgeError
from ..producer.admission import Admission
from ..settings import Settings
from . import docs, events, metrics, routes, ws
from .fastpath import RingbridgeApp
from .wslimits import FrameCredit

log = logging.getLogger("ringbridge.app")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    started = False
    try:
        m: metrics.ServiceMetrics = app.state.metrics
        async with AsyncExitStack() as stack:
            rt = await assemble(app.state.settings, stack, on_commit=m.observe_commit)
            app.state.runtime = rt

            def detach() -> None:
                app.state.runtime = None

            # Unwound first: routes see "not running" before anything is freed.
            stack.callback(detach)
            started = True
            yield
            queued = rt.producer.statistics().queued_batches
            log.info("ringbridge stopping", extra={"queued_batches": queued})
        log.info("ringbridge stopped")
    except RingbridgeError as exc:
        if started:
            raise
        # server.run keeps uvicorn from repeating it as a traceback.
        app.state.startup_error = exc
        report_startup_failure(exc)
        raise


def _admission(app: FastAPI) -> Admission | None:
    rt = app.state.runtime
    return rt.producer.admission if rt is not None else None


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
    # WebSocket frames are read on credit (api/wslimits.py), one line per app.
    app.state.ws_reads = FrameCredit(lambda: _admission(app))
    routes.install_error_handlers(app)
    routes.install_openapi(app)
    docs.install_docs(app, protect=protect)
    app.include_router(routes.router)
    app.include_router(ws.router)
    app.include_router(events.router)
    app.include_router(metrics.router)
    return app
