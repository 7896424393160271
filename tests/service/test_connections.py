"""Slow and idle clients cannot hold the service: header deadline, connection cap.

Measured on main: connections that sent a partial request line, or one header
byte every 4 s, stayed open past 90 s; under ``prlimit --nofile=256`` a few
hundred of them took every fd and every normal client got "disconnected
without response", with nothing logged. Real sockets against real servers
(in-process, and a child ``ringbridge serve`` under a low fd limit).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.support.launch import THIS_PYTHON, served

from .conftest import SMALL_RING, ServerFactory, binary_batch

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}
PARTIAL = b"POST /v1/samples HTTP/1.1\r\nHost: ringbridge\r\nContent-Le"


def closed(base_url: str) -> dict[str, float]:
    """``ringbridge_connections_closed_total`` by reason, and the limit."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "ringbridge_connections_closed_total":
                out[s.labels["reason"]] = s.value
            elif s.name == "ringbridge_connections_limit":
                out["limit"] = s.value
    return out


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed."""
    sock.settimeout(timeout)
    got = b""
    t0 = time.monotonic()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got, time.monotonic() - t0
        got += chunk


@contextmanager
def partial_requests(port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections, each holding a request line and half a header."""
    with ExitStack() as stack:
        socks = []
        for _ in range(n):
            s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            s.sendall(PARTIAL)
            socks.append(s)
        yield socks


def test_a_client_trickling_its_headers_is_cut_at_the_header_timeout(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(ring_size=SMALL_RING, header_timeout=2.0)
    with (
        socket.create_connection(("127.0.0.1", srv.port)) as silent,
        socket.create_connection(("127.0.0.1", srv.port)) as slow,
    ):
        t0 = time.monotonic()
        slow.sendall(PARTIAL)
        # One header byte every 0.3 s: each would be new life for a deadline
        # that restarted with every byte.
        for byte in b"ngth: 12":
            slow.sendall(bytes([byte]))
            time.sleep(0.15)
        got, _ = read_until_closed(slow, timeout=10)
        elapsed = time.monotonic() - t0
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), got
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert 1.9 <= elapsed < 3.3, elapsed
        # Nothing sent at all: closed without a word, as soon.
        assert read_until_closed(silent, timeout=10)[0] == b""
        assert time.monotonic() - t0 < 3.3
    assert closed(srv.url)["header_timeout"] == 2
    lines = [r for r in caplog.records if r.getMessage() == "connections closed"]
    assert lines and sum(getattr(r, "header_timeout", 0) for r in lines) == 2


def test_kept_alive_connections_and_slow_answers_are_not_cut(
    make_server: ServerFactory,
) -> None:
    srv = make_server(
        ring_size=SMALL_RING, header_timeout=1.0, drain="external", submit_timeout=2.5
    )
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        # Idle gaps between requests (keep-alive's, 5 s) are not header time.
        socks = set()
        for _ in range(4):
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b'{"status":"ok"}'
            socks.add(id(conn.sock))
            time.sleep(0.6)
        assert len(socks) == 1, "the connection was not kept"
        # A request whose headers are complete is the app's: here it waits
        # 2.5 s for ring space, past the header timeout, and is answered.
        batch = binary_batch([(1, 1)] * (SMALL_RING // 24 - 1))
        conn.request("POST", "/v1/samples", body=batch, headers=OCTET)
        assert conn.getresponse().read()  # fills the ring (nothing drains it)
        t0 = time.monotonic()
        conn.request("POST", "/v1/samples?timeout=2.5", body=batch[: 24 * 100], headers=OCTET)
        r = conn.getresponse()
        assert r.status == 503 and b"ring_full_timeout" in r.read()
        assert time.monotonic() - t0 > 2
    finally:
        conn.close()
    assert closed(srv.url)["header_timeout"] == 0


async def test_at_the_limit_busy_connections_are_kept_and_newcomers_refused(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=SMALL_RING, max_connections=3)
    async with (
        connect(srv.ws_url, compression=None),
        connect(srv.ws_url, compression=None),
        connect(srv.ws_url, compression=None) as third,
    ):
        with socket.create_connection(("127.0.0.1", srv.port)) as late:
            # Refused before its request is read: 503, Retry-After, closed.
            got, _ = read_until_closed(late, timeout=10)
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower(), got
        assert json.loads(body)["error"]["code"] == "overloaded"
        await third.close()
    # Room again: served (the metrics scrape itself is a connection).
    counts = closed(srv.url)
    assert (counts["limit_refused"], counts["limit_evicted"], counts["limit"]) == (1, 0, 3)


def test_at_the_limit_a_new_client_evicts_the_oldest_waiting_one(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=SMALL_RING, max_connections=4, header_timeout=60)
    with partial_requests(srv.port, 4) as slow:
        # Every slot is held by a slow client; a normal client is served,
        # closing the slow client that waited longest (later ones may close
        # the previous normal connection instead: idle ones go first).
        for i in range(3):
            r = httpx.post(f"{srv.url}/v1/samples", json={"samples": [{"kind": 2, "value": i}]})
            assert r.status_code == 200, r.text
        oldest, _ = read_until_closed(slow[0], timeout=10)
        assert oldest.startswith(b"HTTP/1.1 408 "), oldest
        slow[3].settimeout(0.2)
        with pytest.raises(TimeoutError):
            slow[3].recv(1)  # the youngest still waits
    assert closed(srv.url)["limit_evicted"] >= 1


FD_LIMIT = 256


def test_hundreds_of_slow_clients_under_a_low_fd_limit_leave_room_for_normal_ones(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    args = [
        f"--pin-dir={pin_dir}",
        f"--bpf-object={bpf_object_path}",
        "--ring-size=1M",
        "--header-timeout=60",  # the cap, not the deadline, must save the day here
        "--no-access-log",
    ]
    command = ("prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", *THIS_PYTHON)
    with served(args, log, command=command) as addr:
        port = int(addr.rsplit(":", 1)[1])
        with partial_requests(port, FD_LIMIT + 50):
            time.sleep(0.5)
            no_keepalive = httpx.Limits(max_keepalive_connections=0)
            with httpx.Client(base_url=f"http://{addr}", timeout=10, limits=no_keepalive) as c:
                for i in range(20):  # each on a connection of its own
                    r = c.post("/v1/samples", json={"samples": [{"kind": 3, "value": i}]})
                    assert r.status_code == 200, r.text
            counts = closed(f"http://{addr}")
        assert counts["limit"] < FD_LIMIT - 64
        assert counts["limit_evicted"] >= FD_LIMIT + 50 - counts["limit"]
    # Read once the server stopped: the guard writes what it closed every
    # second while it runs, and at its stop whatever it has not written yet.
    text = log.read_text()
    assert re.search(r'msg="connections closed" .*limit_evicted=\d+', text), text
    assert re.search(rf"msg=connections limit={int(counts['limit'])} fd_limit={FD_LIMIT}", text)
    assert "Traceback" not in text


def test_the_fd_limit_is_raised_to_the_hard_limit_at_start(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    command = ("prlimit", "--nofile=200:4096", *THIS_PYTHON)
    args = [f"--pin-dir={pin_dir}", f"--bpf-object={bpf_object_path}", "--ring-size=1M"]
    with served(args, log, command=command) as addr:
        counts = closed(f"http://{addr}")
    assert 4096 - 512 - 64 < counts["limit"] < 4096 - 512
    assert "fd_limit=4096" in log.read_text()
    assert sys.platform == "linux"
