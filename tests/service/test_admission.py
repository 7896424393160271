"""Admission at the edge, end to end on a real server and kernel ring.

A byte-credit budget is taken before a body is read and returned at the ack:
no credit -> 503 at once with the body unread; the request's timeout bounds
everything from admission on (body, queueing, ring space); a batch whose
client left is never committed; a JSON bomb is refused before it is decoded.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import Server, ServerFactory, Tally, binary_batch, wait_until

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}
FILL_PART = [(1, i) for i in range(320)]  # 7680 bytes; 8 of them leave 4 KiB of the ring
FILLED = 8 * len(FILL_PART)
WAITER = [(2, i) for i in range(300)]  # 7200 bytes: waits for ring space


def _post(url: str, samples: list[tuple[int, int]], timeout: float) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.post(
            "/v1/samples",
            content=binary_batch(samples),
            headers=OCTET,
            params={"timeout": timeout},
        )


def _raw_request(port: int, head: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.encode())
    return s


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _fill(srv: Server) -> None:
    for _ in range(8):
        assert _post(srv.url, FILL_PART, 5).status_code == 200
    assert srv.producer_pos() == 61440


def _stalled(make_server: ServerFactory, **kw: object) -> Server:
    return make_server(ring_size=64 * 1024, drain="external", max_batch_bytes=8192, **kw)


def test_no_credit_is_503_at_once_with_the_body_unread(make_server: ServerFactory) -> None:
    # Budget: one WebSocket frame buffer (8 KiB + 64 KiB) + a bit: ten 7200-byte
    # bodies fit, the eleventh does not.
    srv = _stalled(make_server, admission_bytes=80 * 1024)
    gate = srv.runtime.producer.admission
    _fill(srv)
    pos = srv.producer_pos()
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        r = _post(srv.url, WAITER, 3.0)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=send) for _ in range(11)]
    for t in threads:
        t.start()
    wait_until(lambda: gate.in_use == 11 * 7200, what="eleven bodies admitted")
    # Headers promising a body that never comes: refused before reading it
    # (an old server would wait for the body first).
    s = _raw_request(
        srv.port,
        "POST /v1/samples HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 7200\r\n\r\n",
    )
    t0 = time.monotonic()
    head = _read_response(s)
    s.close()
    assert time.monotonic() - t0 < 2.0
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"retry-after: 1" in head.lower()
    for t in threads:
        t.join(15)
    codes = sorted(r.json()["error"]["code"] for r in results)
    assert codes == ["ring_full_timeout"] * 11, codes
    assert srv.producer_pos() == pos, "a refused or timed-out batch reached the ring"
    assert gate.in_use == 0, "credit leaked"
    assert gate.statistics().refused >= 1
    assert srv.runtime.rejections.by_reason["overloaded"] >= 1


def test_overloaded_body_answers_with_the_error_body(make_server: ServerFactory) -> None:
    srv = _stalled(make_server, admission_bytes=80 * 1024)
    gate = srv.runtime.producer.admission
    credit = gate.take(gate.free, float("inf"))
    try:
        r = _post(srv.url, [(1, 1)], 5)
    finally:
        credit.release()
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "overloaded"
    assert srv.producer_pos() == 0
    # Credit back: the same batch goes through.
    assert _post(srv.url, [(1, 1)], 5).status_code == 200


def test_timeout_bounds_the_wait_behind_other_batches(make_server: ServerFactory) -> None:
    srv = _stalled(make_server)
    _fill(srv)
    pos = srv.producer_pos()
    out: dict[str, httpx.Response] = {}
    head = threading.Thread(target=lambda: out.setdefault("head", _post(srv.url, WAITER, 4.0)))
    head.start()
    p = srv.runtime.producer
    wait_until(lambda: p.statistics().ring_full_waits == 1, what="the head batch to wait")
    # A small batch with a short timeout queued behind the waiting one: it
    # must answer at its own deadline, not when the head gives up.
    t0 = time.monotonic()
    r = _post(srv.url, [(3, 3)], 0.3)
    elapsed = time.monotonic() - t0
    assert r.status_code == 503 and r.json()["error"]["code"] == "ring_full_timeout"
    assert elapsed < 2.0, f"answered after {elapsed:.2f}s, not at its 0.3s deadline"
    head.join(10)
    assert out["head"].status_code == 503
    assert srv.producer_pos() == pos
    # Drained, the ring takes new batches and the timed-out ones took no seqs.
    srv.drain()
    r = _post(srv.url, [(3, 4)], 5)
    assert r.status_code == 200 and r.json()["first_seq"] == FILLED
    assert p.admission.in_use == 0


def test_a_batch_whose_client_left_is_not_committed(make_server: ServerFactory) -> None:
    srv = _stalled(make_server)
    _fill(srv)
    p = srv.runtime.producer
    body = binary_batch([(9, 99)] * 300)
    gone = []
    for _ in range(5):
        s = _raw_request(
            srv.port,
            "POST /v1/samples?timeout=30 HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n",
        )
        s.sendall(body)
        gone.append(s)
    wait_until(
        lambda: p.statistics().queued_batches + p.statistics().ring_full_waits >= 5,
        what="five batches in line",
    )
    for s in gone:
        s.close()  # the clients give up before any space comes
    wait_until(lambda: p.statistics().batches_abandoned == 5, what="five batches given up")
    assert p.admission.in_use == 0
    assert srv.drain() == FILLED
    r = _post(srv.url, [(8, 8)], 5)
    assert r.status_code == 200
    assert r.json()["first_seq"] == FILLED, "an abandoned batch took seqs"
    srv.drain()
    kc = srv.counters()
    assert kc.kind_count[9] == 0, "an abandoned batch was committed"
    assert kc.kind_count[8] == 1


def test_slow_body_gets_408_when_the_body_timeout_passes(make_server: ServerFactory) -> None:
    srv = _stalled(make_server, body_timeout=0.5)
    s = _raw_request(
        srv.port,
        "POST /v1/samples HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n",
    )
    s.sendall(b"\0" * 100)  # and then nothing
    t0 = time.monotonic()
    head = _read_response(s)
    s.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert time.monotonic() - t0 < 3
    wait_until(lambda: srv.runtime.producer.admission.in_use == 0, what="credit returned")


def test_content_length_over_the_limit_is_413_before_admission(make_server: ServerFactory) -> None:
    srv = _stalled(make_server)
    s = _raw_request(
        srv.port,
        "POST /v1/samples HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n",
    )
    head = _read_response(s)
    s.close()
    assert head.startswith(b"HTTP/1.1 413"), head
    assert srv.runtime.producer.admission.statistics().admitted == 0


def test_json_bomb_is_refused_by_sample_count_before_decoding(server: Server) -> None:
    limit = server.settings.max_batch_bytes  # 1 MiB ring -> 1 MiB batches
    n = limit // 3 - 10  # `{},` each: far more samples than 1 MiB of records can hold
    body = b'{"samples":[' + b",".join([b"{}"] * n) + b"]}"
    assert len(body) <= limit
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/samples", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "samples" in r.json()["error"]["message"]
    assert "max_batch_bytes" in r.json()["error"]["message"]
    assert server.producer_pos() == 0


async def test_a_websocket_frame_needs_credit_and_an_idle_connection_holds_none(
    make_server: ServerFactory,
) -> None:
    # (Was: a connection needed a frame of credit to connect. #19: a
    # connection holds credit only for frames being read or awaiting acks.)
    srv = make_server(
        ring_size=64 * 1024,
        drain="external",
        max_batch_bytes=8192,
        admission_bytes=80 * 1024,
        submit_timeout=30,
    )
    gate = srv.runtime.producer.admission
    async with connect(srv.ws_url) as ws1, connect(srv.ws_url) as ws2:
        assert gate.in_use == 0  # two idle connections: nothing held
        # ws1 fills the ring; then 11 streams hold the whole budget with
        # batches waiting (a stream takes one frame past a full ring).
        fill = binary_batch([(1, i) for i in range(340)])  # 8160 ring bytes
        for _ in range(8):  # 65,280 of the ring
            await ws1.send(fill)
        for _ in range(8):
            assert '"accepted":340' in str(await asyncio.wait_for(ws1.recv(), 10))
        holders = [await connect(srv.ws_url) for _ in range(11)]
        try:
            for h in holders[:10]:  # 10 x 8160 of the 81,920 budget
                await h.send(fill)
            await asyncio.to_thread(
                wait_until, lambda: gate.in_use >= 10 * 8160, 10.0, "10 batches to hold credit"
            )
            await holders[10].send(fill)  # the 11th waits for credit
            await asyncio.sleep(0.2)
            queued = srv.runtime.producer.statistics().queued_batches
            line = srv.app.state.ws_reads
            # The 11th frame waits in line for credit.
            assert line.waiting == 1
            held = gate.in_use
            assert held <= 10 * 8160 + 8168
            # ws2's frame finds no credit: it is not read (no error, no refusal)...
            await ws2.send(binary_batch([(2, 5)]))
            await asyncio.sleep(0.3)
            assert srv.runtime.producer.statistics().queued_batches == queued
            assert gate.in_use == held  # ws2 stopped reading while they wait: nothing more held
            assert line.waiting == 2
            # ...until credit frees: the ring drains, everything is served in order.
            for h in holders:
                await asyncio.to_thread(srv.drain)
                assert '"accepted":340' in str(await asyncio.wait_for(h.recv(), 10))
            await asyncio.to_thread(srv.drain)
            ack = await asyncio.wait_for(ws2.recv(), 10)
            assert '"accepted":1' in str(ack)
        finally:
            for h in holders:
                await h.close()
    await asyncio.to_thread(wait_until, lambda: gate.in_use == 0, 10.0, "frame credit returned")
    t = Tally()
    for _ in range(19):
        t.add_all((1, i) for i in range(340))
    t.add(2, 5)
    await asyncio.to_thread(srv.wait_kernel, t)
