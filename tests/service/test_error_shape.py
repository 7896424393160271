"""Every error body has one shape, ``{"error": {"code", "message", "index"}}``:
the service's own refusals, Starlette's 404/405, and malformed JSON (its own code)."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import Server

pytestmark = pytest.mark.kernel


def _error(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message", "index"}, err
    return err


def test_404_and_405_have_the_error_shape(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get("/v1/nothing")
        assert r.status_code == 404
        err = _error(r)
        assert err["code"] == "not_found" and "/v1/nothing" in str(err["message"])
        r = c.get("/v1/samples")
        assert r.status_code == 405
        assert _error(r)["code"] == "method_not_allowed"
        assert "POST" in r.headers["allow"]


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"samples": [{"kind": 1}', b'{"samples": [{"kind": 1}]} x', b"\xff"]
)
def test_malformed_json_has_its_own_code(server: Server, body: bytes) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post("/v1/samples", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    err = _error(r)
    assert err["code"] == "malformed_json", err
    assert str(err["message"]).startswith("invalid JSON")
    assert err["index"] is None


def test_a_bad_sample_in_good_json_is_not_malformed(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post("/v1/samples", json={"samples": [{"kind": 1}, {"kind": "x"}]})
    err = _error(r)
    assert (r.status_code, err["code"], err["index"]) == (422, "invalid_sample", 1)


async def test_malformed_json_frame_gets_its_code_on_the_stream(server: Server) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send("{not json")
        ack = json.loads(await ws.recv())
    assert ack["id"] is None and ack["error"]["code"] == "malformed_json"
