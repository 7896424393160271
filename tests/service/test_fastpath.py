"""POST /v1/samples through the raw ASGI handler: what the data plane hands over.

A chunked body (no Content-Length) is not the data plane's: uvicorn takes the
connection and the raw ASGI handler ahead of FastAPI's routing serves it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .conftest import Server, Tally, binary_batch


@pytest.mark.kernel
def test_a_body_in_many_chunks_arrives_whole(server: Server) -> None:
    samples = [(3, i) for i in range(2000)]
    body = binary_batch(samples)
    step = 997  # odd-sized pieces: records straddle chunk borders

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), step):
            yield body[i : i + step]

    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post(
            "/v1/samples", content=pieces(), headers={"content-type": "application/octet-stream"}
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json()["accepted"] == 2000
        # The same route through FastAPI's routing answers the other methods.
        assert c.get("/v1/samples").status_code == 405
    t = Tally()
    t.add_all(samples)
    server.wait_kernel(t)


@pytest.mark.kernel
def test_errors_of_the_raw_handler_are_counted_and_shaped(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/samples", params={"timeout": "nan"}, json={"samples": [{}]})
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "invalid_request"
        r = c.post("/v1/samples", content=b"x", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    rejected = server.runtime.rejections.by_reason
    assert rejected["invalid_request"] == 1 and rejected["unsupported_media_type"] == 1
    assert server.runtime.producer.statistics().samples_committed == 0
