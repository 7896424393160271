"""WS /v1/stream end to end: text and binary batches, ordered acks, error acks,
the pipelining window, auth, no permessage-deflate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from .conftest import (
    SMALL_RING,
    Server,
    ServerFactory,
    Tally,
    binary_batch,
    eventually,
    streams_of,
    unread_bytes,
)

pytestmark = pytest.mark.kernel


async def _acks(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        msg = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(msg, str), "acks are text frames"
        out.append(json.loads(msg))
    return out


async def test_text_and_binary_batches_reach_the_kernel_acked_in_order(server: Server) -> None:
    tally = Tally()
    sent_ids: list[Any] = []
    async with connect(server.ws_url) as ws:
        for n in range(40):
            samples = [(n % 9, n * 100 + i) for i in range(n + 1)]
            tally.add_all(samples)
            if n % 2:
                await ws.send(binary_batch(samples))
                sent_ids.append(n)  # a binary frame's id is its frame number
            else:
                fid: Any = {"batch": n} if n % 4 else f"b{n}"
                frame = {"id": fid, "samples": [{"kind": k, "value": v} for k, v in samples]}
                await ws.send(json.dumps(frame))
                sent_ids.append(fid)
        acks = await _acks(ws, 40)
    assert [a["id"] for a in acks] == sent_ids
    seq = 0
    for n, a in enumerate(acks):
        assert a == {
            "id": sent_ids[n],
            "accepted": n + 1,
            "first_seq": seq,
            "last_seq": seq + n,
            "state": "committed",
        }
        seq += n + 1
    await asyncio.to_thread(server.wait_kernel, tally)


async def test_bad_batches_get_error_acks_and_the_stream_goes_on(server: Server) -> None:
    tally = Tally()
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": "good-1", "samples": [{"kind": 1, "value": 10}]}))
        await ws.send(json.dumps({"id": "bad-field", "samples": [{"kind": 1}, {"kinnd": 2}]}))
        await ws.send(binary_batch([(2, 20)]))  # frame 2
        await ws.send(binary_batch([(2, 20)]) + b"\0\0\0\0")  # frame 3: misaligned
        await ws.send("{not json")
        await ws.send(json.dumps({"id": 7, "samples": []}))
        await ws.send(json.dumps({"id": "good-2", "samples": [{"kind": 1, "value": 5}]}))
        acks = await _acks(ws, 7)
    tally.add(1, 10)
    tally.add(2, 20)
    tally.add(1, 5)
    assert [a["id"] for a in acks] == ["good-1", "bad-field", 2, 3, None, 7, "good-2"]
    assert acks[0]["first_seq"] == 0
    assert acks[1]["error"]["code"] == "invalid_sample" and acks[1]["error"]["index"] == 1
    assert acks[2]["first_seq"] == 1
    assert acks[3]["error"]["code"] == "invalid_batch"
    assert "error" in acks[4] and "error" in acks[5]
    # Rejected batches take no seqs.
    assert acks[6]["first_seq"] == 2 and acks[6]["accepted"] == 1
    await asyncio.to_thread(server.wait_kernel, tally)


async def test_oversized_frame_gets_an_error_ack_not_a_closed_stream(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=SMALL_RING, max_batch_bytes=4096)
    async with connect(srv.ws_url) as ws:
        await ws.send(binary_batch([(1, 1)] * 200))  # 4800 bytes > 4096
        await ws.send(binary_batch([(1, 2)]))
        acks = await _acks(ws, 2)
    assert acks[0]["id"] == 0 and acks[0]["error"]["code"] == "too_large"
    assert acks[1]["id"] == 1 and acks[1]["first_seq"] == 0
    t = Tally()
    t.add(1, 2)
    await asyncio.to_thread(srv.wait_kernel, t)


async def test_a_full_ring_stops_reading_and_nothing_is_lost(make_server: ServerFactory) -> None:
    window = 4
    srv = make_server(ring_size=SMALL_RING, drain="external", ws_window=window, submit_timeout=30)
    per_batch = 300  # 7200 ring bytes: 9 batches fill the 64 KiB ring
    frames = 60
    tally = Tally()
    async with connect(srv.ws_url, max_queue=None) as ws:

        async def produce() -> None:
            for n in range(frames):
                samples = [(n % 4, n * 1000 + i) for i in range(per_batch)]
                tally.add_all(samples)
                await ws.send(binary_batch(samples))

        sender = asyncio.create_task(produce())
        p = srv.runtime.producer
        # The ring took 9 batches; with the consumer stalled the server took
        # one frame more, which waits for ring space unread (its bytes and
        # the rest wait in TCP buffers, not in the server's memory): nothing
        # in line, nothing in memory, fewer frames taken than the window allows.
        await eventually(
            lambda: p.statistics().batches_committed == 9 and p.statistics().ring_full_waits == 1,
            what="the ring full and the next frame waiting",
        )
        await asyncio.sleep(0.2)
        stats = p.statistics()
        assert stats.batches_committed == 9
        assert stats.queued_batches == 0
        (stream,) = streams_of(srv)
        assert stream.frames == 10 and len(stream.pending) == 1
        assert stream.pending[0].body is None and stream.pending[0].req is not None
        received: list[dict[str, Any]] = []
        while len(received) < frames:
            # Keep the kernel consuming until every ack arrived.
            await asyncio.to_thread(srv.drain)
            try:
                while True:
                    msg = await asyncio.wait_for(ws.recv(), 0.05)
                    received.append(json.loads(msg))
            except TimeoutError:
                continue
        await sender
    assert [a["id"] for a in received] == list(range(frames))
    assert all("error" not in a for a in received)
    assert received[-1]["last_seq"] == frames * per_batch - 1
    await asyncio.to_thread(srv.drain)
    await asyncio.to_thread(srv.wait_kernel, tally)


async def test_window_stops_reading_and_nothing_is_lost(make_server: ServerFactory) -> None:
    """With ``ws_window`` frames un-acked (acks wait for the kernel: wait=consumed)
    the server reads no further frame: they wait in TCP buffers."""
    window = 4
    srv = make_server(ring_size=SMALL_RING, drain="external", ws_window=window)
    frames = 12
    tally = Tally()
    async with connect(srv.ws_url + "?wait=consumed&timeout=30", max_queue=None) as ws:
        for n in range(frames):
            # 9.6 KB frames: the window (4) fits the 64 KiB ring with room to
            # spare, and what one read stages (16 KiB) cannot hold the other 8.
            samples = [(n % 4, n * 1000 + i) for i in range(400)]
            tally.add_all(samples)
            await ws.send(binary_batch(samples))
        p = srv.runtime.producer
        await eventually(lambda: p.statistics().batches_committed == window, what="a window")
        await asyncio.sleep(0.3)
        (stream,) = streams_of(srv)
        # The ring has room: only the window stops the server from reading more.
        assert p.statistics().batches_committed == window and stream.frames == window
        assert stream.c.paused and unread_bytes(stream) > 0
        received: list[dict[str, Any]] = []
        while len(received) < frames:
            await asyncio.to_thread(srv.drain)
            try:
                while True:
                    received.append(json.loads(await asyncio.wait_for(ws.recv(), 0.05)))
            except TimeoutError:
                continue
    assert [a["id"] for a in received] == list(range(frames))
    assert all(a["state"] == "consumed" for a in received)
    await asyncio.to_thread(srv.wait_kernel, tally)


async def test_permessage_deflate_is_not_negotiated(server: Server) -> None:
    # The websockets client offers permessage-deflate by default.
    async with connect(server.ws_url) as ws:
        assert ws.response is not None
        assert "sec-websocket-extensions" not in ws.response.headers
        await ws.send(binary_batch([(1, 1)]))
        assert "first_seq" in json.loads(await ws.recv())


async def test_ws_auth(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING, token="tok")
    with pytest.raises(websockets.InvalidStatus) as missing:
        async with connect(srv.ws_url):
            pass
    assert missing.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as wrong:
        async with connect(srv.ws_url, additional_headers={"Authorization": "Bearer nope"}):
            pass
    assert wrong.value.response.status_code == 403
    async with connect(srv.ws_url, additional_headers={"Authorization": "Bearer tok"}) as ws:
        await ws.send(binary_batch([(1, 1)]))
        ack = json.loads(await ws.recv())
    assert ack == {"id": 0, "accepted": 1, "first_seq": 0, "last_seq": 0, "state": "committed"}


async def test_wait_consumed_at_the_handshake_acks_once_the_kernel_consumed(
    stalled_server: Server,
) -> None:
    """As ``?wait=consumed`` over HTTP: the ack waits for the kernel, ``state`` tells."""
    srv = stalled_server  # drain=external: nothing consumes unless the test drains
    async with connect(srv.ws_url + "?wait=consumed&timeout=5") as ws:
        await ws.send(binary_batch([(4, 1), (4, 2)]))
        await ws.send(json.dumps({"id": "j", "samples": [{"kind": 4, "value": 3}]}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)  # committed, not consumed: no ack yet
        assert srv.producer_pos() > 0
        assert await asyncio.to_thread(srv.drain) == 3
        acks = await _acks(ws, 2)
    assert [(a["id"], a["state"], a["first_seq"]) for a in acks] == [
        (0, "consumed", 0),
        ("j", "consumed", 2),
    ]
    # Not consumed within the timeout: the committed ack, never an error.
    async with connect(srv.ws_url + "?wait=consumed&timeout=0.3") as ws:
        await ws.send(binary_batch([(4, 4)]))
        (ack,) = await _acks(ws, 1)
    assert (ack["state"], ack["first_seq"]) == ("committed", 3)


async def test_a_bad_wait_is_refused_at_the_handshake(server: Server) -> None:
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(server.ws_url + "?wait=later"):
            pass
    # The refusal POST /v1/samples gets for the same query (tests/service/test_wire.py).
    assert e.value.response.status_code == 422
    body = json.loads(e.value.response.body or b"{}")
    assert body["error"]["code"] == "invalid_request" and "query.wait" in body["error"]["message"]


async def test_close_codes_of_frames_the_protocol_refuses(make_server: ServerFactory) -> None:
    """1007 for a text frame that is not UTF-8, 1009 beyond max_batch_bytes + 64 KiB."""
    srv = make_server(ring_size=SMALL_RING, max_batch_bytes=4096)
    async with connect(srv.ws_url) as ws:
        await ws.send(b'{"id": 1, "samples": [{"data": "\xff"}]}', text=True)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1007
    async with connect(srv.ws_url, max_size=None) as ws:
        await ws.send(bytes(4096 + 64 * 1024 + 8))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1009
    assert srv.producer_pos() == 0
