"""HTTP routes: ``POST /v1/samples`` (documented), ``GET /v1/stats``, ``/healthz``, ``/readyz``.

``POST /v1/samples`` is served by its one handler,
:func:`ringbridge.api.fastpath.post_samples`, ahead of FastAPI's routing;
the route here describes it for OpenAPI (:mod:`ringbridge.api.openapi`) and
hands over to that handler if it is reached. :func:`install_error_handlers`
renders every other error (auth on the other routes, 404, 405) in the same
``{"error": {"code", "message", "index"}}`` shape.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from .. import wire
from ..errors import InvalidRequestError, RingbridgeError
from ..runtime import Runtime
from . import fastpath, health, ingest
from .auth import require_token
from .metrics import stats_snapshot
from .openapi import AUTH_ERRORS, SAMPLES_ERRORS, SAMPLES_OPERATION, SamplesAck
from .state import runtime_of

router = APIRouter()


class _Handover(Response):
    """Hands the request to :func:`fastpath.post_samples`, which answers it itself."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await fastpath.post_samples(self._app, scope, receive, send)


@router.post(
    "/v1/samples",
    summary="Commit a batch of samples to the kernel ring",
    response_model=SamplesAck,
    responses={
        202: {
            "model": SamplesAck,
            "description": "wait=consumed timed out: committed (state) but not yet consumed; "
            "do not resend",
        },
        **SAMPLES_ERRORS,
    },
    openapi_extra=SAMPLES_OPERATION,
    operation_id="post_samples_v1_samples_post",
)
async def samples_route(request: Request) -> Response:
    # Served by the raw ASGI handler ahead of FastAPI's routing; reached only
    # under a root_path, and then handed to that same handler.
    return _Handover(request.app)


@router.get(
    "/v1/schema",
    summary="JSON Schema of one sample of a JSON batch (the sample type, from BTF)",
    dependencies=[Depends(require_token)],
    responses=AUTH_ERRORS,
)
async def get_schema(request: Request) -> dict[str, Any]:
    return runtime_of(request.app).codec.json_schema()


def install_openapi(app: FastAPI) -> None:
    """OpenAPI shows the sample type's JSON Schema for the JSON body of POST /v1/samples.

    The sample type is known once the object is loaded (at startup), so the
    document is completed on first request after that; before, the generic
    body is served and not cached.
    """
    generic = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generic()
        rt: Runtime | None = getattr(app.state, "runtime", None)
        if rt is None:
            app.openapi_schema = None  # complete it once the sample type is known
            return doc
        doc = copy.deepcopy(doc)
        sample = {k: v for k, v in rt.codec.json_schema().items() if k != "$schema"}
        body = doc["paths"]["/v1/samples"]["post"]["requestBody"]["content"]
        body["application/json"]["schema"]["properties"]["samples"]["items"] = sample
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


@router.get(
    "/v1/stats",
    summary="Service, ring and kernel counters as JSON",
    dependencies=[Depends(require_token)],
    responses=AUTH_ERRORS,
)
async def get_stats(request: Request) -> dict[str, Any]:
    return stats_snapshot(runtime_of(request.app))


@router.get(
    "/healthz",
    summary="Liveness: the process serves requests, its producer task is alive and "
    "nobody else writes its ring",
    responses={
        503: {
            "description": "the producer task died, or another writer touched the ring "
            "(`reason` says how to recover): restart the process once that is done"
        }
    },
)
async def healthz(request: Request) -> Response:
    failure = health.producer_failure(getattr(request.app.state, "runtime", None))
    if failure is not None:
        return JSONResponse({"status": "failed", "reason": failure}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: object loaded, ring mapped, producer alive and alone on the ring, "
    "consumer progressing, admission open with credit for a full batch",
    responses={
        200: {
            "description": "ready (`status` ready), or ready and `degraded`: a check "
            "that does not fail readiness failed (NATS disconnected: HTTP is served anyway)"
        },
        503: {"description": "not ready; `checks` says why"},
    },
)
async def readyz(request: Request) -> Response:
    ready, checks = health.readiness(getattr(request.app.state, "runtime", None))
    worse = health.degraded(checks)
    status = "not ready" if not ready else "degraded" if worse else "ready"
    return JSONResponse(
        {"status": status, "checks": checks, "degraded": worse},
        status_code=200 if ready else 503,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Every error body, whatever raised it, is ``{"error": {"code", "message", "index"}}``."""

    def retry_after(request: Request) -> int:
        return int(request.app.state.settings.retry_after)

    async def on_ringbridge_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RingbridgeError)
        return ingest.error_response(exc, retry_after(request))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return ingest.error_response(InvalidRequestError(message), retry_after(request))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own refusals (404 no such route, 405 wrong method) in
        # the same {"error": ...} shape as ours, headers (Allow) kept.
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        if exc.status_code == 404:
            message = f"no route {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return Response(
            wire.error_json(wire.ErrorInfo(code, message)),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
            media_type=ingest.JSON,
        )

    app.add_exception_handler(RingbridgeError, on_ringbridge_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
