"""HTTP routes: ``POST /v1/samples``, ``GET /v1/stats``, ``/healthz``, ``/readyz``.

The sample hot path reads the raw body (no FastAPI body model: stdlib json
then pydantic is the slowest decoder measured, DESIGN §2b) and hands it to
:mod:`ringbridge.codec`, which validates the whole batch before anything is
queued. Errors are :class:`~ringbridge.errors.RingbridgeError` subclasses;
:func:`install_error_handlers` renders every one of them as
``{"error": {"code", "message", "index"}}`` with its ``status_hint``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from .. import codec
from ..errors import (
    ConsumeTimeoutError,
    RecordTooLargeError,
    RingbridgeError,
    UnsupportedMediaTypeError,
)
from ..producer.task import Ack, WaitFor
from .auth import require_token
from .metrics import stats_snapshot
from .state import Runtime, error_response, runtime_of

#: Bodies larger than this are decoded in a worker thread: decoding a
#: multi-megabyte JSON batch takes milliseconds, which the event loop (and
#: every other connection) should not wait for.
THREAD_DECODE_BYTES = 256 * 1024

JSON_TYPES = frozenset({"application/json"})
BINARY_TYPES = frozenset({"application/octet-stream"})


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
        (503, "ring stayed full past the timeout, queue full, or stopping (Retry-After)"),
    )
}

_SAMPLES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["samples"],
                    "properties": {
                        "samples": {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["data"],
                                        "properties": {
                                            "data": {"type": "string", "format": "byte"}
                                        },
                                    },
                                    {
                                        "type": "object",
                                        "description": "fields of the sample struct "
                                        "(from the BPF object's BTF); missing fields are 0",
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


def _media_type(request: Request) -> str:
    raw = request.headers.get("content-type", "")
    return raw.split(";", 1)[0].strip().lower()


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RecordTooLargeError(f"body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RecordTooLargeError(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _decode(rt: Runtime, media: str, body: bytes) -> codec.EncodedBatch:
    s = rt.settings
    if media in JSON_TYPES:

        def run() -> codec.EncodedBatch:
            return rt.codec.decode_json_batch(
                body, ring_size=s.ring_size, max_sample_bytes=s.max_sample_bytes
            )
    elif media in BINARY_TYPES:

        def run() -> codec.EncodedBatch:
            return codec.validate_binary_batch(
                body, ring_size=s.ring_size, max_sample_bytes=s.max_sample_bytes
            )
    else:
        shown = media or "none"
        raise UnsupportedMediaTypeError(
            f"Content-Type {shown} is not supported: send application/json or "
            "application/octet-stream"
        )
    batch = await asyncio.to_thread(run) if len(body) > THREAD_DECODE_BYTES else run()
    if batch.nbytes > s.max_batch_bytes:
        # JSON may encode to more ring bytes than its own size (small structs).
        raise RecordTooLargeError(
            f"batch takes {batch.nbytes} ring bytes, over the limit of {s.max_batch_bytes}"
        )
    return batch


def _timeout(rt: Runtime, timeout: float | None) -> float:
    if timeout is None:
        return rt.settings.submit_timeout
    return min(timeout, rt.settings.max_timeout)


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
        Query(gt=0, description="seconds to wait for ring space (and consumption)"),
    ] = None,
) -> Response:
    rt = runtime_of(request.app)
    media = _media_type(request)
    if media not in JSON_TYPES and media not in BINARY_TYPES:
        # Before reading the body: a wrong type is refused without the upload.
        await _decode(rt, media, b"")
    body = await _read_body(request, rt.settings.max_batch_bytes)
    batch = await _decode(rt, media, body)
    status = 200
    try:
        ack = await rt.producer.submit(batch, wait=wait, timeout=_timeout(rt, timeout))
    except ConsumeTimeoutError as exc:
        # Committed, but the kernel had not consumed it within the timeout:
        # 202 with the ack (state "committed"), never a 5xx -- a client
        # retrying a 5xx would commit the batch twice.
        assert isinstance(exc.ack, Ack)
        ack, status = exc.ack, 202
    return Response(
        _encode(
            {
                "accepted": ack.count,
                "first_seq": ack.first_seq,
                "last_seq": ack.last_seq,
                "state": ack.state,
            }
        ),
        media_type="application/json",
        status_code=status,
    )


@router.get(
    "/v1/stats",
    summary="Service, ring and kernel counters as JSON",
    dependencies=[Depends(require_token)],
)
async def get_stats(request: Request) -> dict[str, Any]:
    return stats_snapshot(runtime_of(request.app))


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: object loaded, ring mapped, producer alive, consumer progressing",
    responses={503: {"description": "not ready; `checks` says why"}},
)
async def readyz(request: Request) -> Response:
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    checks: dict[str, Any] = {
        "object_loaded": rt is not None and not rt.loaded.closed,
        "ring_mapped": False,
        "producer_running": rt is not None and rt.producer.alive,
        "consumer_progressing": False,
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
    ready = all(
        checks[k]
        for k in ("object_loaded", "ring_mapped", "producer_running", "consumer_progressing")
    )
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Every error body, whatever raised it, has the shape of DESIGN §4."""

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

    app.add_exception_handler(RingbridgeError, on_ringbridge_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
