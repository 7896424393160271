"""A bare FastAPI endpoint: the benchmark's yardstick for the one-sample POST.

``POST /v1/samples`` reads the body and answers a fixed ack of the same shape
as ringbridge's -- no decoding, no validation, no ring. Served by the same
uvicorn configuration as ringbridge (httptools, uvloop, no access log, one
worker), so the ratio shows what ringbridge's own per-request work costs.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
_ACK = b'{"accepted":1,"first_seq":0,"last_seq":0,"state":"committed"}'


@app.post("/v1/samples")
async def samples(request: Request) -> Response:
    await request.body()
    return Response(_ACK, media_type="application/json")
