"""The data plane's connection protocol on the wire (api/dataplane), end to end.

What it serves and what it hands over on one connection; pipelined and
split requests; ``Expect: 100-continue``; a body received into ring space
from a slow client (the others are not held back, the slow one commits
after); a client gone mid-body or before the publish (nothing committed);
an invalid binary body (one DISCARD record, the ring fine); and the
WebSocket framing rules (fragments, pings, close, protocol errors).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from ringbridge.api.dataplane.connection import DataPlaneProtocol
from ringbridge.api.dataplane.stream import Stream

from .conftest import (
    SMALL_RING,
    Server,
    ServerFactory,
    Tally,
    binary_batch,
    raw_ws_client,
    wait_until,
)

pytestmark = pytest.mark.kernel

OCTET = "application/octet-stream"


def _head(path: str, body: bytes, ctype: str = OCTET, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode()


def _responses(s: socket.socket, n: int, timeout: float = 10) -> list[tuple[int, bytes]]:
    """``n`` HTTP responses (status, body) read off ``s``."""
    s.settimeout(timeout)
    data = b""
    out: list[tuple[int, bytes]] = []
    while len(out) < n:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
        if status != 100:
            out.append((status, rest[:length]))
        data = rest[length:]
    return out


def _conns(srv: Server) -> list[Any]:
    return list(srv.server.server_state.connections)


def test_a_connection_serves_samples_then_hands_the_rest_to_uvicorn(server: Server) -> None:
    body = binary_batch([(1, 1)])
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(_head("/v1/samples", body) + body)
    ((status, answer),) = _responses(s, 1)
    assert status == 200 and json.loads(answer)["first_seq"] == 0
    # The data plane's: the connection is still its protocol.
    assert any(isinstance(c, DataPlaneProtocol) for c in _conns(server))
    # A FastAPI route on the same keep-alive connection: handed over, answered.
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    ((status, answer),) = _responses(s, 1)
    assert status == 200 and json.loads(answer)["status"] == "ok"
    # From then on uvicorn's protocol serves it, samples too (its ASGI handler).
    s.sendall(_head("/v1/samples", body) + body)
    ((status, answer),) = _responses(s, 1)
    assert status == 200 and json.loads(answer)["first_seq"] == 1
    s.close()


def test_pipelined_and_split_requests_are_answered_in_order(server: Server) -> None:
    t = Tally()
    reqs = b""
    for n in range(5):
        samples = [(2, n * 10 + i) for i in range(n + 1)]
        t.add_all(samples)
        body = binary_batch(samples)
        reqs += _head("/v1/samples?wait=committed", body) + body
    json_body = json.dumps({"samples": [{"kind": 2, "value": 99}]}).encode()
    t.add(2, 99)
    reqs += _head("/v1/samples", json_body, "application/json") + json_body
    s = socket.create_connection(("127.0.0.1", server.port))
    # All at once, then the same again a few bytes at a time.
    s.sendall(reqs)
    first = _responses(s, 6)
    for i in range(0, len(reqs), 7):
        s.sendall(reqs[i : i + 7])
    second = _responses(s, 6)
    s.close()
    seqs = [json.loads(b)["first_seq"] for _, b in first + second]
    assert all(st == 200 for st, _ in first + second)
    assert seqs == sorted(seqs) and seqs[0] == 0 and seqs[6] == 16
    t2 = Tally()
    t2.count, t2.value = t.count + t.count, t.value + t.value
    server.wait_kernel(t2)


def test_expect_100_continue_is_answered_before_the_body(server: Server) -> None:
    body = binary_batch([(3, 3)])
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(_head("/v1/samples", body, extra="Expect: 100-continue\r\n"))
    s.settimeout(10)
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(body)
    ((status, _),) = _responses(s, 1)
    assert status == 200
    s.close()


def test_a_slow_body_does_not_hold_back_the_others_and_commits_after(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=1 << 20, drain="external")
    slow_samples = [(4, i) for i in range(100)]
    slow_body = binary_batch(slow_samples)
    slow = socket.create_connection(("127.0.0.1", srv.port))
    slow.sendall(_head("/v1/samples", slow_body) + slow_body[:100])
    # Its region is claimed: the data plane receives it in place.
    p = srv.runtime.producer
    wait_until(lambda: p.statistics().regions_pending == 1, what="the slow body's region")
    t0 = time.monotonic()
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = c.post("/v1/samples", content=binary_batch([(5, 5)]), headers={"content-type": OCTET})
    assert r.status_code == 200 and r.json()["first_seq"] == 0
    assert time.monotonic() - t0 < 2, "a fast client waited for a slow one"
    slow.sendall(slow_body[100:])
    ((status, answer),) = _responses(slow, 1)
    slow.close()
    assert status == 200 and json.loads(answer)["first_seq"] == 1
    assert srv.drain() == 101
    t = Tally()
    t.add(5, 5)
    t.add_all(slow_samples)
    srv.wait_kernel(t)


def test_a_client_gone_mid_body_commits_nothing(make_server: ServerFactory) -> None:
    # A body timeout longer than the waits below: the region and the credit
    # come back when the client leaves, not when its body would be late.
    srv = make_server(ring_size=SMALL_RING, drain="external", body_timeout=120)
    body = binary_batch([(6, i) for i in range(50)])
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(_head("/v1/samples", body) + body[: len(body) // 2])
    p = srv.runtime.producer
    wait_until(lambda: p.statistics().regions_pending == 1, what="the body's region")
    s.close()
    wait_until(lambda: p.statistics().batches_abandoned == 1, what="the batch given up")
    wait_until(lambda: p.admission.in_use == 0, what="credit returned")
    assert p.statistics().regions_pending == 0
    r = httpx.post(
        f"{srv.url}/v1/samples", content=binary_batch([(7, 7)]), headers={"content-type": OCTET}
    )
    assert r.json()["first_seq"] == 0, "the abandoned batch took seqs"
    srv.drain()
    kc = srv.counters()
    assert kc.kind_count[6] == 0 and kc.kind_count[7] == 1


def test_an_invalid_binary_body_is_refused_and_the_ring_stays_healthy(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=SMALL_RING, drain="external")
    good = binary_batch([(8, 8)])
    bad = bytearray(binary_batch([(8, 1), (8, 2)]))
    bad[24 + 4] = 1  # the second record's pad word
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = c.post("/v1/samples", content=bytes(bad), headers={"content-type": OCTET})
        assert r.status_code == 422 and r.json()["error"]["index"] == 1
        assert "pad word" in r.json()["error"]["message"]
        # Refused in place and given back: producer_pos did not move.
        assert srv.producer_pos() == 0
        assert (
            c.post("/v1/samples", content=good, headers={"content-type": OCTET}).json()["first_seq"]
            == 0
        )
    assert srv.drain() == 1
    kc = srv.counters()
    assert sum(kc.drain_errors.values()) == 0 and kc.kind_value[8] == 8


def _send(sock: socket.socket, client: ClientProtocol, *frames: Frame) -> None:
    for f in frames:
        client.send_frame(f)
    sock.sendall(b"".join(client.data_to_send()))


def _events(sock: socket.socket, client: ClientProtocol, n: int) -> list[Frame]:
    out: list[Frame] = []
    while len(out) < n:
        data = sock.recv(65536)
        if not data:
            client.receive_eof()
            break
        client.receive_data(data)
        out += [e for e in client.events_received() if isinstance(e, Frame)]
    return out


def test_websocket_fragments_pings_and_close(server: Server) -> None:
    sock, client = raw_ws_client(server)
    body = binary_batch([(9, 1), (9, 2), (9, 3)])
    # A binary message in three fragments, a ping between them.
    _send(
        sock,
        client,
        Frame(Opcode.BINARY, body[:10], fin=False),
        Frame(Opcode.PING, b"hello"),
        Frame(Opcode.CONT, body[10:30], fin=False),
        Frame(Opcode.CONT, body[30:], fin=True),
        Frame(Opcode.TEXT, json.dumps({"id": "t", "samples": [{"kind": 9, "value": 4}]}).encode()),
    )
    events = _events(sock, client, 3)
    assert events[0].opcode == Opcode.PONG and events[0].data == b"hello"
    acks = [json.loads(bytes(e.data)) for e in events[1:]]
    assert [(a["id"], a["accepted"], a["first_seq"]) for a in acks] == [(0, 3, 0), ("t", 1, 3)]
    client.send_close(1000)
    sock.sendall(b"".join(client.data_to_send()))
    (close,) = _events(sock, client, 1)
    assert close.opcode == Opcode.CLOSE and struct.unpack("!H", close.data[:2])[0] == 1000
    sock.close()
    t = Tally()
    t.add_all([(9, 1), (9, 2), (9, 3), (9, 4)])
    server.wait_kernel(t)


def test_websocket_protocol_errors_close_the_stream(server: Server) -> None:
    # An unmasked client frame: 1002, nothing committed.
    sock, _ = raw_ws_client(server)
    frame = binary_batch([(10, 1)])
    sock.sendall(bytes([0x82, len(frame)]) + frame)
    client = ClientProtocol(parse_uri(server.ws_url))
    sock.settimeout(10)
    data = sock.recv(100)
    assert data[:1] == b"\x88" and struct.unpack("!H", data[2:4])[0] == 1002
    sock.close()
    # A continuation with no message begun: 1002 too.
    sock, client = raw_ws_client(server)
    _send(sock, client, Frame(Opcode.CONT, b"x" * 8))
    (close,) = _events(sock, client, 1)
    assert struct.unpack("!H", close.data[:2])[0] == 1002
    sock.close()
    assert server.producer_pos() == 0


async def test_a_stream_after_a_handed_over_request_is_the_data_planes(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        assert (await c.get("/healthz")).status_code == 200
    # The websockets client opens a new connection; on one connection the
    # upgrade after a FastAPI request comes through uvicorn's HTTP protocol,
    # which upgrades to the data plane (config.ws): checked here by hand.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _responses(sock, 1)[0][0] == 200
    client = ClientProtocol(parse_uri(server.ws_url))
    client.send_request(client.connect())
    sock.sendall(b"".join(client.data_to_send()))
    while client.state is not State.OPEN:
        client.receive_data(sock.recv(65536))
        client.events_received()
    await asyncio.to_thread(
        wait_until,
        lambda: any(isinstance(getattr(c, "handler", None), Stream) for c in _conns(server)),
        10.0,
        "the stream on the data plane",
    )
    _send(sock, client, Frame(Opcode.BINARY, binary_batch([(11, 1)])))
    (ack,) = _events(sock, client, 1)
    assert json.loads(bytes(ack.data))["first_seq"] == 0
    sock.close()
    async with connect(server.ws_url) as ws:
        await ws.send(binary_batch([(11, 2)]))
        assert json.loads(await ws.recv())["first_seq"] == 1
