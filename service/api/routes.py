"""HTTP routes: ``POST /v1/samples``, ``GET /v1/stats``, ``/healthz``, ``/readyz``.

The sample route is thin: admission, body, decoding and the producer's
submit are :mod:`ringbridge.api.ingest` and :mod:`ringbridge.producer`. It
reads the raw body (no FastAPI body model: stdlib json then pydantic is the
slowest decoder measured) only after the batch was admitted, and hands it to
:mod:`ringbridge.schema`, which validates the whole batch before anything is
queued. Errors are :class:`~ringbridge.errors.RingbridgeError` subclasses;
:func:`install_error_handlers` renders every one of them as
``{"error": {"code", "message", "index"}}`` with its ``status_hint``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RingbridgeError
from ..producer.task import WaitFor
from ..runtime import Runtime
from ..schema.kinds.base import BASE64_PATTERN
from . import ingest
from .auth import require_token
from .metrics import stats_snapshot
from .state import error_response, runtime_of


class SamplesAck(BaseModel):
    """Documentation of the 200 body (the route renders it with msgspec)."""

    accepted: int
    first_seq: int
    last_seq: int
    state: Literal["committed", "consumed"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    index: int | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "missing or malformed bearer token"),
        (403, "wrong token"),
        (413, "body, batch or a sample over the limits (or larger than the ring)"),
        (415, "Content-Type is neither application/json nor application/octet-stream"),
        (422, "invalid batch: `index` names the first bad sample"),
        (408, "the body did not arrive within body_timeout of admission"),
        (
            503,
            "no admission credit (overloaded), not committed within the timeout, or "
            "stopping; Retry-After",
        ),
    )
}

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {s: _ERRORS[s] for s in (401, 403)}

_SAMPLES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["samples"],
                    "additionalProperties": False,
                    "properties": {
                        "samples": {
                            "type": "array",
                            # An empty batch is refused (422), so the schema
                            # says so too.
                            "minItems": 1,
                            "items": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["data"],
                                        "properties": {
                                            "data": {
                                                "type": "string",
                                                "format": "byte",
                                                "pattern": BASE64_PATTERN,
                                            }
                                        },
                                    },
                                    {
                                        "type": "object",
                                        "description": "members of the sample type "
                                        "(from the BPF object's BTF; GET /v1/schema has "
                                        "its JSON Schema); missing members are 0",
                                    },
                                ]
                            },
                        }
                    },
                }
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "records: u32 LE length, u32 zero, payload, zero pad to 8",
            },
        },
    }
}

router = APIRouter()
_encode = msgspec.json.Encoder().encode


@router.post(
    "/v1/samples",
    summary="Commit a batch of samples to the kernel ring",
    dependencies=[Depends(require_token)],
    response_model=SamplesAck,
    responses={
        202: {
            "model": SamplesAck,
            "description": "wait=consumed timed out: committed (state) but not yet consumed; "
            "do not resend",
        },
        **_ERRORS,
    },
    openapi_extra=_SAMPLES_BODY,
)
async def post_samples(
    request: Request,
    wait: Annotated[
        WaitFor,
        Query(description="answer once the batch is committed, or once the kernel consumed it"),
    ] = "committed",
    timeout: Annotated[
        float | None,
        Query(
            gt=0,
            description="seconds the whole request may take from admission: reading the "
            "body, waiting behind other batches, for ring space (and consumption)",
        ),
    ] = None,
) -> Response:
    # Served by the raw ASGI handler (ringbridge.api.fastpath) ahead of FastAPI's
    # routing; this route documents it and runs the same steps if reached.
    rt = runtime_of(request.app)
    headers = request.headers
    ack = await ingest.ingest_http(
        rt,
        headers.get("content-type"),
        headers.get("content-length"),
        request.receive,
        wait,
        timeout,
    )
    return Response(
        ingest.ack_json(ack),
        media_type="application/json",
        status_code=ingest.ack_status(ack, wait),
    )


@router.get(
    "/v1/schema",
    summary="JSON Schema of one sample of a JSON batch (the sample type, from BTF)",
    dependencies=[Depends(require_token)],
    responses=_AUTH_ERRORS,
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
    responses=_AUTH_ERRORS,
)
async def get_stats(request: Request) -> dict[str, Any]:
    return stats_snapshot(runtime_of(request.app))


@router.get(
    "/healthz",
    summary="Liveness: the process serves requests and its producer task is alive",
    responses={503: {"description": "the producer task died: restart the process"}},
)
async def healthz(request: Request) -> Response:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    crashed = rt.producer.crashed if rt is not None else None
    if crashed is not None:
        # Every batch would be refused from now on: only a restart helps.
        return JSONResponse(
            {"status": "failed", "reason": f"producer task died: {crashed!r}"}, status_code=503
        )
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: object loaded, ring mapped, producer alive, consumer progressing, "
    "admission open with credit for a full batch",
    responses={503: {"description": "not ready; `checks` says why"}},
)
async def readyz(request: Request) -> Response:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    checks: dict[str, Any] = {
        "object_loaded": rt is not None and not rt.backend.closed,
        "ring_mapped": False,
        "producer_running": rt is not None and rt.producer.alive,
        "consumer_progressing": False,
        "admission_open": False,
    }
    if rt is not None:
        try:
            ring = rt.ring.statistics()
        except RingbridgeError:
            ring = None
        if ring is not None:
            checks["ring_mapped"] = True
            pending = ring.producer_pos - ring.consumer_pos
            stalled = rt.watch.stalled_for(ring.consumer_pos, pending)
            checks["consumer_progressing"] = stalled < rt.watch.stall_s
            checks["pending_bytes"] = pending
            checks["consumer_stalled_seconds"] = round(stalled, 3)
        adm = rt.producer.admission
        # Open and able to admit the largest batch: a saturated instance
        # asks its load balancer for a break instead of answering 503s.
        checks["admission_open"] = not adm.closed and adm.free >= rt.settings.max_batch_bytes
        checks["admission_free_bytes"] = adm.free
        checks["admission_budget_bytes"] = adm.budget
    ready = all(
        checks[k]
        for k in (
            "object_loaded",
            "ring_mapped",
            "producer_running",
            "consumer_progressing",
            "admission_open",
        )
    )
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Every error body, whatever raised it, is ``{"error": {"code", "message", "index"}}``."""

    async def on_ringbridge_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RingbridgeError)
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        if rt is not None and request.url.path == "/v1/samples":
            rt.rejections.add(exc.code)
        retry = rt.settings.retry_after if rt is not None else 1
        return error_response(exc, retry)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        if rt is not None and request.url.path == "/v1/samples":
            rt.rejections.add("invalid_request")
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {
                "error": {
                    "code": "invalid_request",
                    "message": f"{where}: {first.get('msg', 'invalid request')}",
                    "index": None,
                }
            },
            status_code=422,
        )

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
        return JSONResponse(
            {"error": {"code": code, "message": message, "index": None}},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    app.add_exception_handler(RingbridgeError, on_ringbridge_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
