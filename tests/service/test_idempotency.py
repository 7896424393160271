"""A batch whose outcome the client could not see is sent again, and committed once (#19, item 4).

``POST /v1/samples`` takes an ``Idempotency-Key``: the server remembers the
ack of each key it committed (a bounded table, kept with the pins so it
survives a restart) and answers a resend with the original ack instead of
committing it again. ``ringbridge.Client`` sends a key with every batch and
resends under the same key when the connection failed after the body left.
And a request that arrived on a kept-alive connection while the server was
stopped is read, not reset.

Real ``ringbridge serve`` processes and real signals (SIGSTOP past the
keep-alive timeout, SIGKILL after a commit), or the in-process server where
the kernel's ring must be held full.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from ringbridge import Client
from ringbridge.errors import OutcomeUnknownError
from ringbridge.kernel.pins import KEYS_PIN
from ringbridge.kernel.pins.keys import PinnedKeys
from ringbridge.producer.keys import KeyTable
from tests.support.launch import spawned

from .conftest import Server, binary_batch, wait_until

pytestmark = pytest.mark.kernel

KEY = "Idempotency-Key"


@contextmanager
def _serve(pin_dir: Path, log: Path) -> Iterator[tuple[str, int]]:
    cmd = [sys.executable, "-m", "ringbridge", "serve", "--port=0", f"--pin-dir={pin_dir}"]
    cmd += ["--ring-size=1M", "--drain=kick"]
    env = {k: v for k, v in os.environ.items() if k != "RINGBRIDGE_TOKEN"}
    with spawned(cmd, log, cwd=log.parent, env=env, start_timeout=30) as (addr, pid):
        yield addr, pid


def _kernel_kind(addr: str, kind: int, samples: int) -> dict[str, int]:
    with httpx.Client(base_url=f"http://{addr}") as h:
        deadline = time.monotonic() + 10
        kinds: dict[str, dict[str, int]] = {}
        while time.monotonic() < deadline:
            kinds = h.get("/v1/stats").json()["kernel"]["kinds"]
            if kinds.get(str(kind), {}).get("samples") == samples:
                break
            time.sleep(0.05)
        return kinds.get(str(kind), {})


def _stopped_for(pid: int, seconds: float, during: Any) -> dict[str, object]:
    """Runs ``during()`` in a thread while ``pid`` is stopped for ``seconds``."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = during()
        except Exception as exc:  # reported by the caller
            result["error"] = exc

    os.kill(pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=run)
        t.start()
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    t.join(60)
    return result


def test_a_batch_sent_while_the_server_is_stopped_longer_than_keep_alive_commits_once(
    pin_dir: Path, tmp_path: Path
) -> None:
    """SIGSTOP for 6 s, longer than uvicorn's 5 s keep-alive: the client's pooled
    connection is reused for a batch the stopped server has not read. On resume
    the keep-alive timer used to fire first and reset the connection with the
    request unread: ``OutcomeUnknownError`` for a batch never committed."""
    with _serve(pin_dir, tmp_path / "serve.log") as (addr, pid):
        with Client(f"http://{addr}", timeout=30) as c:
            first = c.send([{"kind": 11, "value": 1}])  # opens the pooled connection
            result = _stopped_for(pid, 6.0, lambda: c.send([{"kind": 11, "value": 100}]))
            assert "error" not in result, repr(result.get("error"))
            ack = result["value"]
            assert ack.first_seq == first.last_seq + 1  # type: ignore[attr-defined]
        assert _kernel_kind(addr, 11, 2) == {"samples": 2, "value": 101}


def test_a_request_waiting_on_a_kept_alive_connection_through_a_stop_is_read(
    pin_dir: Path, tmp_path: Path
) -> None:
    """The server's half, without keys or client retries: the request is answered."""
    with _serve(pin_dir, tmp_path / "serve.log") as (addr, pid):
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as h:
            assert h.post("/v1/samples", json={"samples": [{"kind": 12}]}).status_code == 200
            result = _stopped_for(
                pid,
                6.0,
                lambda: h.post("/v1/samples", json={"samples": [{"kind": 12, "value": 5}]}),
            )
            assert "error" not in result, repr(result.get("error"))
            r = result["value"]
            assert r.status_code == 200, r.text  # type: ignore[attr-defined]
        assert _kernel_kind(addr, 12, 2) == {"samples": 2, "value": 5}


def test_a_resend_under_its_key_gets_the_first_ack_across_a_kill(
    pin_dir: Path, tmp_path: Path
) -> None:
    body = {"samples": [{"kind": 13, "value": 7}] * 3}
    with _serve(pin_dir, tmp_path / "serve1.log") as (addr, pid):
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as h:
            h.post("/v1/samples", json={"samples": [{"kind": 13, "value": 1000}]})
            first = h.post("/v1/samples", json=body, headers={KEY: "batch-1"})
            assert first.status_code == 200 and "idempotent-replayed" not in first.headers
            again = h.post("/v1/samples", json=body, headers={KEY: "batch-1"})
            assert again.status_code == 200 and again.json() == first.json()
            assert again.headers["idempotent-replayed"] == "true"
            other_body = {"samples": [{"kind": 13}]}
            other = h.post("/v1/samples", json=other_body, headers={KEY: "batch-1"})
            assert other.status_code == 422 and other.json()["error"]["code"] == "key_reused"
            bad = h.post("/v1/samples", json=body, headers={KEY: "with space"})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        assert _kernel_kind(addr, 13, 4) == {"samples": 4, "value": 1021}
        os.kill(pid, signal.SIGKILL)
    # The keys live with the pins: a restarted service still knows batch-1.
    with _serve(pin_dir, tmp_path / "serve2.log") as (addr, _):
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as h:
            again = h.post("/v1/samples", json=body, headers={KEY: "batch-1"})
            assert again.status_code == 200, again.text
            assert again.json() == first.json()
            assert again.headers["idempotent-replayed"] == "true"
            fresh = h.post("/v1/samples", json=body, headers={KEY: "batch-2"})
            assert fresh.json()["first_seq"] == first.json()["last_seq"] + 1
        assert _kernel_kind(addr, 13, 7) == {"samples": 7, "value": 1042}


def test_a_record_whose_commit_never_happened_is_dropped_at_start(pin_dir: Path) -> None:
    pin_dir.mkdir(parents=True)
    path = pin_dir / KEYS_PIN
    store = PinnedKeys.open_or_create(path, 16)
    try:
        store.put(3, b"k" * 16, b"b" * 16, 10, 2, 4096)  # committed: producer_pos 8192 >= 4096
        store.put(4, b"K" * 16, b"B" * 16, 12, 1, 9000)  # recorded, then the process died
    finally:
        store.close()
    store = PinnedKeys.open_or_create(path, 64)  # the pinned map keeps its size
    try:
        assert store.capacity == 16
        table = KeyTable(64, store, producer_pos=8192)
        rec = table.committed(b"k" * 16)
        assert rec is not None and (rec.first_seq, rec.count, rec.end_pos) == (10, 2, 4096)
        assert table.committed(b"K" * 16) is None
        assert [slot for slot, *_ in store.records()] == [3]
    finally:
        store.close()
        path.unlink()


async def test_a_resend_while_the_first_waits_for_ring_space_gets_its_outcome(
    stalled_server: Server,
) -> None:
    srv = stalled_server
    fill = binary_batch([(1, i) for i in range(2400)])  # 57,600 of the ring's 65,536 bytes
    body = {"samples": [{"kind": 14, "value": 9}] * 400}
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as h:
        octets = {"content-type": "application/octet-stream"}
        assert (await h.post("/v1/samples", content=fill, headers=octets)).status_code == 200
        url = "/v1/samples?timeout=20"
        first = asyncio.create_task(h.post(url, json=body, headers={KEY: "waits"}))
        await asyncio.to_thread(
            wait_until,
            lambda: (
                srv.runtime.producer.keys.statistics().in_flight == 1
                and srv.runtime.producer.statistics().ring_full_waits >= 1
            ),
            10.0,
            "the keyed batch to wait for space",
        )
        second = asyncio.create_task(h.post(url, json=body, headers={KEY: "waits"}))
        await asyncio.sleep(0.3)
        assert not second.done()  # it waits for the first, it does not commit
        await asyncio.to_thread(srv.drain)
        a, b = await asyncio.gather(first, second)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json() == b.json()
    assert b.headers["idempotent-replayed"] == "true"
    assert srv.runtime.producer.statistics().batches_committed == 2  # the fill and one of these


@contextmanager
def _answer_losing_proxy(upstream: str, lose: int) -> Iterator[str]:
    """A TCP proxy that forwards everything but drops the first ``lose`` answers
    (closes the client's connection as the server's answer arrives)."""
    host, port = upstream.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    lost = [0]
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket, answer: bool) -> None:
        try:
            while data := src.recv(65536):
                if answer and lost[0] < lose:
                    lost[0] += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection((host, int(port)))
            threading.Thread(target=pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client, True), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        listener.close()


def test_the_client_resends_a_batch_whose_answer_was_lost_and_it_commits_once(
    server: Server,
) -> None:
    upstream = server.url.removeprefix("http://")
    producer = server.runtime.producer
    with (
        _answer_losing_proxy(upstream, lose=2) as addr,
        Client(f"http://{addr}", timeout=10, backoff=0.05) as c,
    ):
        ack = c.send([{"kind": 15, "value": 3}] * 5)
    assert (ack.first_seq, ack.last_seq) == (0, 4)
    assert producer.statistics().batches_committed == 1
    assert producer.keys.statistics().replayed == 2
    # Out of retries: the error names the key, and a later send under it
    # learns the batch's fate without committing it again.
    with (
        _answer_losing_proxy(upstream, lose=1) as addr,
        Client(f"http://{addr}", timeout=10, retries=0) as c,
        pytest.raises(OutcomeUnknownError) as info,
    ):
        c.send([{"kind": 15, "value": 1}])
    key = info.value.key
    assert key is not None and key in str(info.value)
    with Client(server.url, timeout=10) as c:
        again = c.send([{"kind": 15, "value": 1}], key=key)
    assert (again.first_seq, again.last_seq) == (5, 5)
    assert producer.statistics().batches_committed == 2
