"""The wire contract (:mod:`ringbridge.wire`): each rule once, the same over HTTP,
at the WebSocket handshake and in the client.

The query and the answers are checked as functions first, then over both
transports of a real server: a bad ``wait``/``timeout`` gets one refusal
(422 ``invalid_request``, the same body) from ``POST /v1/samples``, from its
documented FastAPI route and from the ``WS /v1/stream`` handshake.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from ringbridge import errors, wire
from ringbridge.api.app import create_app
from ringbridge.api.server import RingbridgeServer, uvicorn_config
from ringbridge.client.acks import error_from_body, ws_ack
from ringbridge.errors import (
    ClientError,
    InvalidRequestError,
    RejectedError,
    RingbridgeError,
    SampleError,
    UnavailableError,
)
from ringbridge.settings import Settings
from ringbridge.wire import Ack, ErrorInfo

from .conftest import Server, ServerFactory, binary_batch

#: Every query the contract refuses; the same refusal over both transports.
BAD_QUERIES = [
    "wait=maybe",
    "wait=",
    "timeout=0",
    "timeout=-1",
    "timeout=abc",
    "timeout=",
    "timeout=nan",
    "timeout=inf",
    "timeout=-inf",
    "wait=consumed&timeout=Infinity",
]


def _classes() -> list[type[RingbridgeError]]:
    return [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, RingbridgeError)
    ]


# -- the query --------------------------------------------------------------------


def test_query_defaults_and_values() -> None:
    assert wire.parse_query(b"") == ("committed", None)
    assert wire.parse_query(b"wait=consumed&timeout=2.5") == ("consumed", 2.5)
    assert wire.parse_query("other=1&wait=committed") == ("committed", None)
    assert wire.parse_query(b"timeout=1e-3&timeout=7") == ("committed", 7.0)  # the last counts
    # What the client sends is what the server reads.
    assert wire.parse_query(urlencode(wire.query_params("consumed", 0.25))) == ("consumed", 0.25)


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_a_bad_query_is_invalid_request(query: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        wire.parse_query(query.encode())
    assert info.value.code == "invalid_request"
    assert wire.rule(info.value.code).status == 422
    assert "query." in info.value.message


# -- the rules --------------------------------------------------------------------


def test_every_server_cause_has_its_rule_and_client_causes_none() -> None:
    for cls in _classes():
        if issubclass(cls, ClientError):
            assert cls.status_hint is None, cls  # no server answers with it
            continue
        assert cls.status_hint is not None, cls
        r = wire.RULES[cls.code]
        # One status per code, whichever class carries it.
        assert r.status == cls.status_hint, cls
        assert r.retry == issubclass(cls, UnavailableError), cls
    assert {c for c, r in wire.RULES.items() if r.retry} == {
        "unavailable",
        "overloaded",
        "stopping",
        "ring_full",
        "ring_full_timeout",
        "closed",
    }
    assert {c for c, r in wire.RULES.items() if r.status == 503} == {
        c for c, r in wire.RULES.items() if r.retry
    }
    assert "client" not in wire.RULES and "outcome_unknown" not in wire.RULES
    closes = {c: wire.rule(c).close for c in ("stopping", "overloaded", "invalid_sample", "kernel")}
    assert closes == {
        "stopping": 1012,
        "overloaded": 1013,
        "invalid_sample": 1008,
        "kernel": 1011,
    }
    assert wire.rule("no-such-code").status == 500


@pytest.mark.parametrize(
    "cls",
    [
        errors.OverloadedError,
        errors.StoppingError,
        errors.RingFullError,
        errors.RingTimeoutError,
        errors.RingClosedError,
    ],
)
def test_one_base_catches_every_retry_later_cause(cls: type[RingbridgeError]) -> None:
    with pytest.raises(UnavailableError):
        raise cls("come back later")


def test_error_headers() -> None:
    assert wire.error_headers("ring_full_timeout", 3) == {"Retry-After": "3"}
    assert wire.error_headers("unauthorized", 3) == {
        "WWW-Authenticate": 'Bearer realm="ringbridge"'
    }
    assert wire.error_headers("invalid_sample", 3) == {}


# -- the answers ------------------------------------------------------------------


def test_answers_read_back_as_written() -> None:
    ack = Ack(accepted=3, first_seq=10, last_seq=12, state="consumed")
    assert json.loads(wire.ack_json(ack)) == {
        "accepted": 3,
        "first_seq": 10,
        "last_seq": 12,
        "state": "consumed",
    }
    assert wire.read_ack(json.loads(wire.ack_json(ack))) == ack
    fid: Any = {"k": [1, "x", None]}
    raw = wire.frame_ack_json(fid, ack)
    assert list(json.loads(raw)) == ["id", "accepted", "first_seq", "last_seq", "state"]
    assert wire.read_frame_answer(raw) == (fid, replace(ack, id=fid))
    err = ErrorInfo.of(SampleError("expected int", index=2, path="samples[2].kind"))
    assert json.loads(wire.error_json(err)) == {
        "error": {"code": "invalid_sample", "message": "samples[2].kind: expected int", "index": 2}
    }
    assert wire.read_error(wire.error_json(err)) == err
    assert wire.read_frame_answer(wire.frame_error_json(None, err)) == (None, err)
    # No index where no sample is to blame.
    assert ErrorInfo.of(UnavailableError("busy")).index is None
    assert ErrorInfo.of(errors.InvalidBatchError("misaligned")).index is None


@pytest.mark.parametrize(
    "body",
    [
        {"accepted": 1},
        {"accepted": 1, "first_seq": 0, "last_seq": 0, "state": "maybe"},
        {"accepted": "x", "first_seq": 0, "last_seq": 0},
        [1, 2],
    ],
)
def test_what_is_not_an_ack_is_a_client_error(body: Any) -> None:
    with pytest.raises(ClientError, match="not an ack"):
        wire.read_ack(body)


def test_the_client_reads_status_and_retry_from_the_rules() -> None:
    fid, e = ws_ack(wire.frame_error_json("a", ErrorInfo("ring_full_timeout", "full")))
    assert isinstance(e, RejectedError) and fid == "a"
    assert (e.status, e.code, e.retryable, e.batch) == (503, "ring_full_timeout", True, "a")
    _, e = ws_ack(wire.frame_error_json(1, ErrorInfo("too_large", "big", 0)))
    assert isinstance(e, RejectedError)
    assert (e.status, e.retryable, e.index) == (413, False, 0)
    _, e = ws_ack(wire.frame_error_json(2, ErrorInfo("kernel", "bpf failed")))
    assert isinstance(e, RejectedError) and (e.status, e.retryable) == (500, False)
    # Not our answer (a proxy's): HTTP's own rule, 503 is "come back later".
    e = error_from_body(503, b"<html>upstream busy</html>", "2")
    assert (e.code, e.retryable, e.retry_after) == ("http_error", True, 2.0)
    assert "upstream busy" in e.message
    e = error_from_body(422, wire.error_json(ErrorInfo("invalid_sample", "bad", 4)))
    assert (e.code, e.index, e.retryable, e.retry_after) == ("invalid_sample", 4, False, None)


def test_wire_imports_nothing_of_ringbridge_but_errors() -> None:
    code = (
        "import sys, ringbridge.wire; "
        "print(sorted(m for m in sys.modules if m.startswith('ringbridge')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "['ringbridge', 'ringbridge.errors', 'ringbridge.wire']"


# -- over both transports ---------------------------------------------------------


async def _handshake_refusal(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """Status, headers and body of the HTTP answer refusing a WebSocket handshake."""
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(url, additional_headers=headers):
            pass
    r = e.value.response
    return (
        r.status_code,
        {k.lower(): v for k, v in r.headers.raw_items()},
        json.loads(r.body or b""),
    )


@pytest.mark.kernel
async def test_a_bad_query_gets_one_refusal_over_http_the_route_and_the_handshake(
    server: Server,
) -> None:
    # The documented FastAPI route is reached under a root_path; it hands
    # over to the same handler.
    routed = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server.app, root_path="/rb"), base_url="http://rb"
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c, routed:
        for query in BAD_QUERIES:
            r = await c.post(f"/v1/samples?{query}", json={"samples": [{}]})
            via_route = await routed.post(f"/rb/v1/samples?{query}", json={"samples": [{}]})
            status, _, body = await _handshake_refusal(f"{server.ws_url}?{query}")
            assert r.status_code == via_route.status_code == status == 422, query
            assert r.json() == via_route.json() == body, query
            assert body["error"]["code"] == "invalid_request", query
            assert body["error"]["message"].startswith("query."), query
        # A valid query is taken by both.
        ok = await c.post("/v1/samples?wait=committed&timeout=5", json={"samples": [{}]})
        assert ok.status_code == 200, ok.text
        async with connect(f"{server.ws_url}?wait=committed&timeout=5") as ws:
            await ws.send(binary_batch([(1, 1)]))
            assert json.loads(await ws.recv())["first_seq"] == 1
    assert server.runtime.rejections.by_reason["invalid_request"] == 3 * len(BAD_QUERIES)
    assert server.runtime.producer.statistics().samples_committed == 2


@pytest.mark.kernel
async def test_the_handshake_is_refused_as_http_is(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=64 * 1024, token="tok")
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        for headers, status in (({}, 401), ({"Authorization": "Bearer no"}, 403)):
            r = await c.post("/v1/samples", json={"samples": [{}]}, headers=headers)
            got, got_headers, body = await _handshake_refusal(srv.ws_url, headers)
            assert r.status_code == got == status
            assert r.json() == body
            if status == 401:
                assert r.headers["www-authenticate"] == got_headers["www-authenticate"]


@pytest.fixture
def idle_server() -> Iterator[str]:
    """A server whose service is not running (no lifespan: no ring, no runtime)."""
    settings = Settings(host="127.0.0.1", port=0, retry_after=7, access_log=False)
    app = create_app(settings)
    config = uvicorn_config(settings, app)
    config.lifespan = "off"
    server = RingbridgeServer(config, app)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


async def test_a_service_not_running_refuses_http_and_the_handshake_alike(
    idle_server: str,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://{idle_server}", timeout=30) as c:
        r = await c.post("/v1/samples", json={"samples": [{}]})
    status, headers, body = await _handshake_refusal(f"ws://{idle_server}/v1/stream")
    assert r.status_code == status == 503
    assert r.json() == body and body["error"]["code"] == "stopping"
    assert r.headers["retry-after"] == headers["retry-after"] == "7"
