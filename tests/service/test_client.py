"""``ringbridge.Client`` / ``AsyncClient`` against a real server and the kernel.

What arrives is checked in the kernel's counters; what is retried is checked
against the contract: a 503 (nothing committed) is sent again and commits
exactly once, a 202 or a connection lost after sending is never resent.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from ringbridge import Ack, AsyncClient, Client, Sample
from ringbridge.errors import (
    ClientError,
    OutcomeUnknownError,
    RejectedError,
    ServerUnreachableError,
)

from .conftest import Server, Tally, sample

pytestmark = pytest.mark.kernel

# 24-byte records: 2560 of them fill 60 KiB of the 64 KiB stalled ring; 341 do not fit after.
FILL = [sample(1, i) for i in range(2560)]
BIG = [sample(2, i) for i in range(341)]


def test_client_imports_no_server_layer() -> None:
    code = (
        "import sys, ringbridge.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn') "
        "or m.startswith(('ringbridge.api', 'ringbridge.kernel', 'ringbridge.producer', "
        "'ringbridge.schema', 'ringbridge.settings'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_send_dicts_structs_and_bytes(server: Server) -> None:
    tally = Tally()
    with Client(server.url) as c:
        a = c.send([{"kind": 3, "value": 30}, Sample(kind=3, value=4), Sample(4, 1, flags=2)])
        assert (a.accepted, a.first_seq, a.last_seq, a.state) == (3, 0, 2, "committed")
        tally.add_all([(3, 30), (3, 4), (4, 1)])
        # All bytes: sent as a binary batch of records.
        b = c.send([Sample(5, i).pack() for i in range(10)], wait="consumed")
        assert (b.accepted, b.first_seq, b.state) == (10, 3, "consumed")
        assert b.consumed
        tally.add_all((5, i) for i in range(10))
        stats = c.stats()
    assert stats["producer"]["samples_committed"] == 13
    server.wait_kernel(tally)


def test_an_invalid_batch_is_refused_with_its_index_and_not_retried(server: Server) -> None:
    with Client(server.url, retries=5) as c, pytest.raises(RejectedError) as e:
        c.send([{"kind": 1}, {"kind": 1, "value": -1}])
    err = e.value
    assert (err.status, err.code, err.index, err.retryable) == (422, "invalid_sample", 1, False)
    assert "value" in err.message
    assert server.runtime.producer.statistics().samples_committed == 0


def test_a_503_is_retried_and_the_batch_commits_exactly_once(stalled_server: Server) -> None:
    srv = stalled_server
    with Client(srv.url, retries=10, max_retry_wait=0.2) as c:
        assert c.send(FILL).accepted == len(FILL)
        # The ring stays full for ~0.8 s: the first attempts time out (503).
        threading.Timer(0.8, srv.drain).start()
        ack = c.send(BIG, timeout=0.25)
    assert (ack.accepted, ack.first_seq) == (len(BIG), len(FILL))  # failed tries took no seq
    p = srv.runtime.producer.statistics()
    assert p.batches_failed.get("ring_full_timeout", 0) >= 1
    assert p.samples_committed == len(FILL) + len(BIG)
    assert p.batches_committed == 2


def test_a_503_without_retries_left_is_raised_as_retryable(stalled_server: Server) -> None:
    with Client(stalled_server.url, retries=0) as c:
        c.send(FILL)
        with pytest.raises(RejectedError) as e:
            c.send(BIG, timeout=0.2)
    assert (e.value.status, e.value.code, e.value.retryable) == (503, "ring_full_timeout", True)
    assert e.value.retry_after == 1.0


def test_a_202_is_an_ack_and_is_never_resent(stalled_server: Server) -> None:
    with Client(stalled_server.url, retries=5) as c:
        ack = c.send([Sample(1, 1)], wait="consumed", timeout=0.3)
    # Committed but nothing consumed it in time: an ack, state "committed".
    assert (ack.accepted, ack.state, ack.consumed) == (1, "committed", False)
    p = stalled_server.runtime.producer.statistics()
    assert (p.batches_committed, p.samples_committed) == (1, 1)


@pytest.fixture
def hangup_server() -> Iterator[tuple[str, list[bytes]]]:
    """Reads one request per connection, then closes without answering."""
    lsock = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                seen.append(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{lsock.getsockname()[1]}", seen
    lsock.close()


def test_a_connection_lost_after_sending_is_resent_only_under_the_same_key(
    hangup_server: tuple[str, list[bytes]],
) -> None:
    # The batch may have been committed: it is sent again only under its
    # Idempotency-Key (the server answers such a resend with the first ack,
    # tests/service/test_idempotency.py), and when no sending is answered the
    # error names the key, never a fresh one.
    url, seen = hangup_server
    with Client(url, retries=5, backoff=0.01) as c, pytest.raises(OutcomeUnknownError) as e:
        c.send([Sample(1, 1)])
    assert "may have been committed" in e.value.message
    assert len(seen) == 6
    keys = {
        line.split(b":", 1)[1].strip().decode()
        for request in seen
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"idempotency-key:")
    }
    key = e.value.key
    assert key is not None and keys == {key} and key in e.value.message


def test_an_unreachable_server_is_retried_then_named_with_a_hint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        t0 = time.monotonic()
        with (
            Client(f"127.0.0.1:{port}", retries=2, backoff=0.1) as c,
            pytest.raises(ServerUnreachableError) as e,
        ):
            c.send([Sample(1, 1)])
        assert time.monotonic() - t0 >= 0.3  # 0.1 + 0.2 between the three attempts
    assert f"cannot connect to http://127.0.0.1:{port}" in e.value.message
    assert "RINGBRIDGE_URL" in e.value.message


def test_stream_acks_in_order_and_survives_a_bad_batch(server: Server) -> None:
    tally = Tally()
    futures: list[Future[Ack]] = []
    with Client(server.url) as c, c.stream(window=4) as s:
        for i in range(40):
            if i == 17:
                futures.append(s.send([{"kind": 6, "value": 1}, {"kind": 6, "nope": 1}]))
            elif i % 2:
                futures.append(s.send([Sample(6, i).pack(), Sample(6, i).pack()]))  # binary
                tally.add_all([(6, i), (6, i)])
            else:
                futures.append(s.send([{"kind": 6, "value": i}, Sample(6, i)]))
                tally.add_all([(6, i), (6, i)])
    acks: list[Ack] = []
    for i, f in enumerate(futures):
        if i == 17:
            err = f.exception()
            assert isinstance(err, RejectedError)
            assert (err.batch, err.code, err.index) == (17, "invalid_sample", 1)
            continue
        acks.append(f.result())
    assert [a.id for a in acks] == [i for i in range(40) if i != 17]
    seqs = [s for a in acks for s in range(a.first_seq, a.last_seq + 1)]
    assert seqs == list(range(78))  # contiguous, in send order
    server.wait_kernel(tally)


async def test_async_stream_and_send(server: Server) -> None:
    tally = Tally()
    async with AsyncClient(server.url) as c:
        ack = await c.send([{"kind": 7, "value": 1}])
        tally.add(7, 1)
        assert ack.first_seq == 0
        async with c.stream(window=2) as s:
            futures = [await s.send([Sample(7, i)] * 3) for i in range(20)]
            tally.add_all((7, i) for i in range(20) for _ in range(3))
        acks = await asyncio.gather(*futures)
    assert [a.id for a in acks] == list(range(20))
    assert [a.first_seq for a in acks] == list(range(1, 61, 3))
    server.wait_kernel(tally)


async def test_async_stream_refused_at_the_handshake_says_why(make_server: object) -> None:
    srv = make_server(ring_size=1 << 20, token="s3cret")  # type: ignore[operator]
    async with AsyncClient(srv.url, token="wrong") as c:
        with pytest.raises(RejectedError) as e:
            async with c.stream():
                pass
    assert (e.value.status, e.value.reason) == (403, "invalid token")


def test_stream_with_wait_consumed_acks_consumed_batches(server: Server) -> None:
    with Client(server.url) as c, c.stream(window=4, wait="consumed") as s:
        futures = [s.send([Sample(9, i)]) for i in range(10)]
    acks = [f.result() for f in futures]
    assert all(a.state == "consumed" for a in acks)
    assert [a.first_seq for a in acks] == list(range(10))


def test_a_stream_ended_by_a_shutdown_acks_what_it_took_then_refuses_more(
    server: Server,
) -> None:
    with Client(server.url) as c:
        s = c.stream(window=8)
        futures = [s.send([Sample(2, i)]) for i in range(5)]
        assert [f.result(timeout=10).first_seq for f in futures] == list(range(5))
        server.stop()  # stops reading, acks what it took, closes with 1012
        deadline = time.monotonic() + 10
        with pytest.raises(ClientError) as e:
            while time.monotonic() < deadline:
                s.send([Sample(2, 99)]).result(timeout=10)
                time.sleep(0.05)
        s.close()
    assert "1012" in e.value.message or "closed" in e.value.message
