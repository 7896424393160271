"""Hostile inputs over HTTP and WebSocket: every one gets a 4xx or an error ack
naming its frame, nothing of it reaches the ring, and the connection lives on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import SMALL_RING, Server, ServerFactory, Tally, binary_batch, wait_until

pytestmark = pytest.mark.kernel

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("body", "code", "index"),
    [
        # Not JSON text at all (invalid UTF-8 outside any sample): malformed.
        (b'{"samples":[{"kind":1}],"k\xffy":1}', "malformed_json", None),
        (b'{"samples":[{"kind":1},{"data":"\xff\xfe"}]}', "invalid_sample", 1),
        (b'{"samples":[{"kind":1}],"\xed\xa0\x80":1}', "malformed_json", None),
        (b'{"samples":[{"kind":1},{"kind":2,"kind":3}]}', "invalid_sample", 1),
        (b'{"samples":[{"kind":1}],"samples":[{"kind":4}]}', "invalid_sample", None),
        (b'{"samples":[{"kind":' + b"[" * 5000 + b"]" * 5000 + b"}]}", "invalid_sample", None),
    ],
)
def test_bad_json_is_a_4xx_and_commits_nothing(
    server: Server, body: bytes, code: str, index: int | None
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/samples", content=body, headers=JSON)
        assert 400 <= r.status_code < 500, r.text
        err = r.json()["error"]
        assert err["code"] == code and err["message"]
        assert err["index"] == index
        assert server.producer_pos() == 0
        # The server is fine afterwards.
        ok = c.post("/v1/samples", json={"samples": [{"kind": 1, "value": 1}]})
        assert ok.status_code == 200 and ok.json()["first_seq"] == 0


def test_openapi_refuses_an_empty_batch_as_the_server_does(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        spec = c.get("/openapi.json").json()
        schema = spec["paths"]["/v1/samples"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
        assert schema["properties"]["samples"]["minItems"] == 1
        r = c.post("/v1/samples", json={"samples": []})
        assert r.status_code == 422


async def _acks(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(n)]


async def test_every_ws_error_ack_carries_the_frames_own_id(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING, max_batch_bytes=4096)
    too_many = {"id": "decodes-too-big", "samples": [{}] * 200}  # 4800 ring bytes > 4096
    async with connect(srv.ws_url) as ws:
        await ws.send(json.dumps(too_many))
        await ws.send('{"id": {"k": [1]}, "samples": [{"kind": 1, "kind": 2}]}')
        await ws.send(json.dumps({"id": "ok", "samples": [{"kind": 3, "value": 30}]}))
        deep = '{"id": "deep", "samples": [{"kind": ' + "[" * 1500 + "]" * 1500 + "}]}"
        await ws.send(deep)
        # Deep nesting in the id itself: the decoder cannot read it back;
        # the ack still comes, in its place, and the stream goes on.
        await ws.send('{"samples": [{"kind": 1}], "id": ' + "[" * 5000 + "]" * 5000 + "}")
        await ws.send(binary_batch([(3, 31)]))  # frame 5
        acks = await _acks(ws, 6)
    assert [a["id"] for a in acks] == ["decodes-too-big", {"k": [1]}, "ok", "deep", None, 5], acks
    assert acks[0]["error"]["code"] == "too_large"
    assert acks[1]["error"]["code"] == "invalid_sample"
    assert "twice" in acks[1]["error"]["message"]
    assert acks[2]["first_seq"] == 0
    assert acks[3]["error"]["code"] == "invalid_sample"
    assert "error" in acks[4]
    assert acks[5]["first_seq"] == 1
    t = Tally()
    t.add(3, 30)
    t.add(3, 31)
    await asyncio.to_thread(srv.wait_kernel, t)


async def test_overloaded_ws_batches_get_error_acks_with_their_ids(
    make_server: ServerFactory,
) -> None:
    # The budget is held by batches waiting on a full ring, but for a little:
    # enough to read a text frame, not to decode it on the exact path (its
    # decode is charged, api/decodecost.py). Such frames get "overloaded" with
    # their own ids. A frame the native scanner takes holds no decoded objects:
    # it is not charged, and waits for the ring like any batch.
    srv = make_server(
        ring_size=SMALL_RING,
        drain="external",
        max_batch_bytes=4096,
        admission_bytes=4096 + 65536,
        submit_timeout=1,
        ws_window=40,
    )
    fill = binary_batch([(1, i) for i in range(170)])  # 4080 ring bytes
    samples = '"samples": [' + ", ".join(['{"kind": 1}'] * 20) + "]}"
    escaped = '"samples": [' + ", ".join(['{"\\u006bind": 1}'] * 20) + "]}"  # msgspec's
    async with connect(srv.ws_url) as ws:
        for _ in range(16):  # 16 fill the ring
            await ws.send(fill)
        filled = await _acks(ws, 16)
        # 16 more wait holding 65,280 bytes (a stream takes one frame past a
        # full ring, unread: 16 streams).
        holders = [await connect(srv.ws_url) for _ in range(16)]
        try:
            for h in holders:
                await h.send(fill)
            await asyncio.to_thread(
                wait_until, lambda: srv.runtime.producer.admission.free < 4400, 10.0, "credit held"
            )
            pos = srv.producer_pos()
            await ws.send('{"id": "a", ' + escaped)  # the scanner leaves escapes to msgspec
            await ws.send('{"id": {"n": "b"}, ' + samples)
            await ws.send('{"id": "c", ' + samples)
            acks = filled + await _acks(ws, 3)
            held = [(await _acks(h, 1))[0] for h in holders]
        finally:
            for h in holders:
                await h.close()
    assert all("error" not in a for a in acks[:16])
    assert [a.get("error", {}).get("code") for a in held] == ["ring_full_timeout"] * 16
    assert [a["id"] for a in acks[16:]] == ["a", {"n": "b"}, "c"]
    codes = [a["error"]["code"] for a in acks[16:]]
    assert codes == ["overloaded", "overloaded", "ring_full_timeout"], acks[16:]
    # The fill and nothing more (each fill frame read ahead behind another left
    # its 8-byte header as an empty DISCARD record, api/dataplane/readahead.py).
    assert srv.producer_pos() == pos and 16 * 4080 <= pos <= 16 * 4080 + 15 * 8
