"""A binary frame that finds the ring full waits unread (#15, peak RSS).

Its stream stops reading: the frame's bytes stay in the socket (FIONREAD on
the server's side counts them), not in the server's heap, while a claim
request waits in the producer's line behind the batches already there. At
its turn the producer claims its region and the frame is received in place,
committed once, in FIFO order. And what holds for a batch waiting in memory
holds for it: the peer leaving (nothing committed, credit back, no region
left receiving), the shutdown (an error ack ``stopping``, then 1012), its
timeout counted from admission (an error ack; the stream goes on).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from ringbridge.api.dataplane.plane import STAGE_BYTES

from .conftest import (
    Server,
    ServerFactory,
    Tally,
    binary_batch,
    eventually,
    raw_ws_client,
    streams_of,
    unread_bytes,
    wait_until,
)

pytestmark = pytest.mark.kernel

RING = 256 * 1024
FILL = [(1, i) for i in range(2700)]  # 64,800 ring bytes a frame: 4 fill 259,200 of the ring
BIG = 2000  # samples of a waiting frame: 48,000 bytes, more than a connection stages
FILLED = 4 * len(FILL)
JSON = 200


async def _ack(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(msg, str)
    ack: dict[str, Any] = json.loads(msg)
    return ack


async def _full(srv: Server) -> int:
    """Fill the ring but 2944 bytes (less the 8 of each frame header read ahead
    as an empty DISCARD record); its producer_pos then."""
    async with connect(srv.ws_url) as ws:
        for _ in range(4):
            await ws.send(binary_batch(FILL))
        for _ in range(4):
            assert "error" not in await _ack(ws)
    pos = srv.producer_pos()
    assert FILLED * 24 <= pos <= FILLED * 24 + 3 * 8
    return pos


async def _waiting(srv: Server, stream: Any, missing: int = 0) -> None:
    """Until ``stream``'s frame waits unread for ring space, the rest in its socket
    (but the ``missing`` bytes its client did not send)."""
    await eventually(
        lambda: bool(stream.pending) and stream.pending[-1].req is not None,
        what="the frame to wait for ring space",
    )
    frame = stream.pending[-1]
    assert frame.body is None and frame.region is None, "the frame went to memory"
    # At most what one read staged was taken off the socket: the rest is unread.
    assert unread_bytes(stream) >= frame.nbytes - STAGE_BYTES - missing


async def test_a_frame_on_a_full_ring_waits_unread_then_commits_once_in_line_order(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=RING, drain="external", submit_timeout=30)
    p = srv.runtime.producer
    filled = await _full(srv)
    tally = Tally()
    tally.add_all(FILL * 4)
    async with (
        connect(srv.ws_url) as first,
        connect(srv.ws_url + "?wait=consumed&timeout=10", max_queue=None) as second,
    ):
        # A batch decoded in memory waits for ring space first (4800 bytes:
        # the ring has 2944 left)...
        samples = [{"kind": 2, "value": 7}] * JSON
        await first.send(json.dumps({"id": "j", "samples": samples}))
        await eventually(lambda: p.statistics().ring_full_waits == 1, what="the JSON batch")
        tally.add_all([(2, 7)] * JSON)
        # ...then two binary frames on another stream: the first waits unread
        # behind it, the second is not even looked at.
        big = [(3, i) for i in range(BIG)]
        await second.send(binary_batch(big))
        await second.send(binary_batch([(4, 1)]))
        tally.add_all(big)
        tally.add(4, 1)
        streams = streams_of(srv)
        await eventually(
            lambda: any(s.pending and s.pending[-1].req is not None for s in streams),
            what="a frame to wait",
        )
        (stream,) = [s for s in streams if s.pending and s.pending[-1].req is not None]
        await _waiting(srv, stream)
        await asyncio.sleep(0.3)
        assert stream.frames == 1, "a frame behind the waiting one was read"
        assert p.statistics().queued_batches == 1  # the claim request, behind the JSON batch
        assert srv.producer_pos() == filled  # nothing more in the ring yet
        # (One drain may also consume what commits while it runs.)
        drained = await asyncio.to_thread(srv.drain)
        assert drained >= FILLED
        j = await _ack(first)
        # The acks of wait=consumed come once the kernel consumed their batches.
        acks: list[dict[str, Any]] = []
        while len(acks) < 2:
            drained += await asyncio.to_thread(srv.drain)
            try:
                acks.append(await _ack(second, 0.2))
            except TimeoutError:
                continue
        a0, a1 = acks
    assert drained == FILLED + JSON + BIG + 1
    assert j["first_seq"] == FILLED and j["accepted"] == JSON
    assert (a0["id"], a0["state"], a0["first_seq"], a0["accepted"]) == (
        0,
        "consumed",
        FILLED + JSON,
        BIG,
    )
    assert (a1["id"], a1["first_seq"]) == (1, FILLED + JSON + BIG)
    await asyncio.to_thread(srv.wait_kernel, tally)
    stats = p.statistics()
    assert stats.batches_committed == 4 + 3 and stats.regions_pending == 0
    assert p.admission.in_use == 0


@pytest.mark.parametrize("whole", [False, True], ids=["mid-frame", "after-the-frame"])
async def test_a_peer_leaving_while_its_frame_waits(
    make_server: ServerFactory, whole: bool
) -> None:
    """Gone mid-frame: nothing committed, nothing held, no region left receiving.
    Gone after sending it whole: it commits in its turn (fire and forget, as a
    frame received before its client left)."""
    srv = make_server(ring_size=RING, drain="external", submit_timeout=30)
    p = srv.runtime.producer
    await _full(srv)
    sock, client = raw_ws_client(srv)
    client.send_frame(Frame(Opcode.BINARY, binary_batch([(9, i) for i in range(BIG)])))
    raw = b"".join(client.data_to_send())
    missing = 0 if whole else 1000
    sock.sendall(raw[: len(raw) - missing])
    (stream,) = streams_of(srv)
    await _waiting(srv, stream, missing)
    assert p.admission.in_use == BIG * 24
    sock.close()  # gone without a close frame
    await asyncio.sleep(0.2)
    # Its turn: the ring drains, its region is claimed, what it sent is read
    # (and may be consumed by the same drain, which runs on while it commits).
    assert await asyncio.to_thread(srv.drain) >= FILLED
    await eventually(lambda: not streams_of(srv), what="the stream to end")
    await eventually(lambda: p.statistics().regions_pending == 0, what="no region left")
    stats = p.statistics()
    assert stats.queued_batches == 0 and p.admission.in_use == 0
    if whole:
        assert stats.batches_committed == 5 and stats.batches_abandoned == 0
    else:
        assert stats.batches_committed == 4 and stats.batches_abandoned == 1
        assert stats.discarded_bytes == BIG * 24
    async with connect(srv.ws_url) as again:
        await again.send(binary_batch([(8, 8)]))
        ack = await _ack(again)
    assert ack["first_seq"] == FILLED + (BIG if whole else 0)
    await asyncio.to_thread(srv.drain)
    kc = srv.counters()
    assert kc.kind_count[9] == (BIG if whole else 0) and kc.kind_count[8] == 1
    assert kc.samples == FILLED + 1 + (BIG if whole else 0)


async def test_shutdown_while_a_frame_waits_answers_it_stopping_then_closes_1012(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=RING, drain="external", submit_timeout=30, shutdown_grace=0.5)
    p = srv.runtime.producer
    await _full(srv)
    pos = srv.producer_pos()
    async with connect(srv.ws_url) as ws:
        await ws.send(binary_batch([(9, i) for i in range(BIG)]))
        (stream,) = streams_of(srv)
        await _waiting(srv, stream)
        stopper = asyncio.create_task(asyncio.to_thread(srv.stop))
        ack = await _ack(ws, 15)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 15)
        await stopper
    assert ack["id"] == 0 and ack["error"]["code"] == "stopping"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    stats = p.statistics()
    assert stats.batches_committed == 4 and stats.regions_pending == 0
    assert p.admission.in_use == 0
    # Restarted on the same pins: the ring holds the fill and nothing of the frame.
    again = make_server(ring_size=RING, drain="external")
    assert again.producer_pos() == pos
    assert again.drain() == FILLED


async def test_a_frame_whose_timeout_passes_while_it_waits_is_refused_and_the_stream_goes_on(
    make_server: ServerFactory,
) -> None:
    # A frame's deadline is submit_timeout after its header (?timeout= is wait=consumed's).
    srv = make_server(ring_size=RING, drain="external", submit_timeout=0.5)
    p = srv.runtime.producer
    await _full(srv)
    async with connect(srv.ws_url) as ws:
        await ws.send(binary_batch([(9, i) for i in range(BIG)]))
        (stream,) = streams_of(srv)
        await _waiting(srv, stream)
        ack = await _ack(ws, 5)
        assert ack["id"] == 0 and ack["error"]["code"] == "ring_full_timeout"
        # Its payload was read and dropped: the next frame is parsed right.
        await asyncio.to_thread(
            wait_until, lambda: not stream.ring_wait and stream.c.sink is None, 5.0, "the skip"
        )
        assert p.admission.in_use == 0 and p.statistics().regions_pending == 0
        assert await asyncio.to_thread(srv.drain) == FILLED
        await ws.send(binary_batch([(8, 8)]))
        ok = await _ack(ws)
    assert (ok["id"], ok["accepted"], ok["first_seq"]) == (1, 1, FILLED)
    assert p.statistics().batches_failed.get("ring_full_timeout") == 1
    assert await asyncio.to_thread(srv.drain) == 1
    kc = srv.counters()
    assert kc.kind_count[9] == 0 and kc.kind_count[8] == 1
