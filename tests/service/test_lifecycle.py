"""Shutdown, liveness and readiness, and memory a WebSocket client cannot grow.

- A stopping server stops reading frames, writes the ack of every batch it
  took (committed, or refused ``stopping``), then closes with 1012.
- ``/healthz`` fails once the producer task died; ``/readyz`` follows admission.
- Pings from a client that never reads its pongs do not pile up in memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from ringbridge.kernel.bpfobj import open_pinned_drain
from tests.support.launch import served

from .conftest import (
    SMALL_RING,
    ServerFactory,
    Tally,
    binary_batch,
    child_server_pid,
    raw_ws_client,
    streams_of,
    wait_until,
)

pytestmark = pytest.mark.kernel


async def test_shutdown_acks_every_committed_batch_before_closing_1012(
    make_server: ServerFactory,
) -> None:
    # A stalled ring: 9 of the 7200-byte batches fit; each of 16 streams then
    # has one frame waiting for ring space (unread, in line), the rest unread.
    srv = make_server(
        ring_size=SMALL_RING, drain="external", ws_window=16, submit_timeout=30, shutdown_grace=1.0
    )
    clients, frames = 16, 3
    sent: dict[tuple[int, int], list[tuple[int, int]]] = {}
    acks: dict[int, list[dict[str, Any]]] = {c: [] for c in range(clients)}
    close_codes: dict[int, int | None] = {}
    p = srv.runtime.producer
    conns = [await connect(srv.ws_url, max_queue=None) for _ in range(clients)]
    try:
        for c, ws in enumerate(conns):
            for n in range(frames):
                sent[c, n] = [(n % 5, (c * 10 + n) * 1000 + i) for i in range(300)]
                await ws.send(binary_batch(sent[c, n]))
        await asyncio.to_thread(
            wait_until,
            lambda: p.statistics().batches_committed == 9 and p.statistics().queued_batches >= 6,
            10.0,
            "the ring to fill and batches to wait",
        )
        loaded = srv.builtin
        # What uvicorn does on SIGTERM (handle_exit): should_exit, then shutdown.
        stopper = asyncio.create_task(asyncio.to_thread(srv.stop))
        # The kernel consumes during the shutdown grace: waiting batches
        # commit then, and their acks must still reach us.
        await asyncio.to_thread(
            wait_until, lambda: p.statistics().stopping, 10.0, "the shutdown to begin"
        )
        drained = await asyncio.to_thread(loaded.drain)
        assert drained == 9 * 300

        async def read(c: int) -> None:
            try:
                while True:
                    acks[c].append(json.loads(await asyncio.wait_for(conns[c].recv(), 15)))
            except ConnectionClosed as exc:
                close_codes[c] = exc.rcvd.code if exc.rcvd is not None else None

        await asyncio.gather(*[read(c) for c in range(clients)])
        await stopper
    finally:
        for ws in conns:
            await ws.close()
    assert set(close_codes.values()) == {1012}
    committed = p.statistics().samples_committed
    assert committed > 9 * 300, "nothing committed during the shutdown grace"
    # Acks in order, one per frame read, none missing before the close.
    for c in range(clients):
        assert [a["id"] for a in acks[c]] == list(range(len(acks[c])))
    everything = [(c, a) for c in range(clients) for a in acks[c]]
    ok = [(c, a) for c, a in everything if "error" not in a]
    assert sum(a["accepted"] for _, a in ok) == committed, "a committed batch was never acked"
    assert all(a["error"]["code"] == "stopping" for _, a in everything if "error" in a)
    assert len(everything) > len(ok), "batches waiting at shutdown were not answered"
    # What the ring holds is exactly what was acked: restarted on the same
    # pins, the kernel consumes those samples and no others.
    t = Tally()
    for c, a in ok:
        t.add_all(sent[c, a["id"]])
    again = make_server(ring_size=SMALL_RING, drain="external")
    assert again.drain() == committed - drained
    await asyncio.to_thread(again.wait_kernel, t)


def test_healthz_fails_once_the_producer_task_died(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING)
    ring = srv.runtime.ring

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated bug in the producer")

    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        # A bug (not a RingbridgeError) where producer_pos moves kills the producer.
        ring.publish = boom  # type: ignore[method-assign]
        r = c.post("/v1/samples", json={"samples": [{"kind": 1}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "closed"
        h = c.get("/healthz")
        assert h.status_code == 503 and "producer task died" in h.json()["reason"]
        assert c.get("/readyz").json()["checks"]["producer_running"] is False
        # And every later batch is refused at once, not left waiting.
        r = c.post("/v1/samples", json={"samples": [{"kind": 1}]})
        assert r.status_code == 503


async def test_readyz_follows_admission(make_server: ServerFactory) -> None:
    # The budget is one frame buffer; an open stream holds none of it, a
    # batch waiting on the full ring holds its share.
    srv = make_server(
        ring_size=SMALL_RING,
        drain="external",
        max_batch_bytes=4096,
        admission_bytes=4096 + 65536,
        submit_timeout=30,
    )
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"]["admission_open"] is True
        async with connect(srv.ws_url) as ws:
            # An idle stream: ready as before (#19: idle connections hold no credit).
            assert (await c.get("/readyz")).status_code == 200
            fill = binary_batch([(1, i) for i in range(170)])  # 4080 ring bytes
            for _ in range(16):  # 65,280 of the 65,536-byte ring
                await ws.send(fill)
            for _ in range(16):
                assert '"accepted":170' in str(await asyncio.wait_for(ws.recv(), 10))
            # 17 more wait for ring space (unread, in line), holding 4080 bytes
            # each: the budget can no longer admit a full batch. (A stream
            # takes one frame past a full ring: 17 streams.)
            more = [await connect(srv.ws_url) for _ in range(17)]
            try:
                for w in more:
                    await w.send(fill)
                await asyncio.to_thread(
                    wait_until,
                    lambda: srv.runtime.producer.admission.free < 4096,
                    10.0,
                    "the budget to be held",
                )
                r = await c.get("/readyz")
                assert r.status_code == 503
                checks = r.json()["checks"]
                assert checks["admission_open"] is False and checks["admission_free_bytes"] < 4096
                assert checks["producer_running"] is True
                for w in more:
                    await asyncio.to_thread(srv.drain)
                    assert '"accepted":170' in str(await asyncio.wait_for(w.recv(), 10))
            finally:
                for w in more:
                    await w.close()
        await asyncio.to_thread(
            wait_until, lambda: srv.runtime.producer.admission.in_use == 0, 10.0, "credit back"
        )
        assert (await c.get("/readyz")).status_code == 200


def test_pings_from_a_client_that_never_reads_do_not_grow_memory(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=SMALL_RING)
    # A small receive buffer: the kernel absorbs little, the rest would queue
    # in the server's transport.
    sock, client = raw_ws_client(srv, rcvbuf=4096)
    assert client.state is State.OPEN
    wait_until(lambda: len(streams_of(srv)) == 1, what="the server side of the socket")
    conn = streams_of(srv)[0]
    payload = b"p" * 125
    ping = Frame(Opcode.PING, payload)
    sent = 0
    stop = threading.Event()
    peak = 0

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, conn.c.transport.get_write_buffer_size())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # 20 MB of pings; never a read on our side.
        for _ in range(160):
            for _ in range(1000):
                client.send_frame(ping)
            data = b"".join(client.data_to_send())
            sock.sendall(data)
            sent += len(data)
        wait_until(lambda: conn.c.transport.get_write_buffer_size() < 1 << 20, what="bounded")
    finally:
        stop.set()
        watcher.join()
        sock.close()
    assert sent > 20_000_000
    # Without the bound, ~20 MB of pongs would queue in the transport.
    assert peak < 1 << 20, f"write buffer reached {peak} bytes"
    assert conn.pongs_dropped > 0
    # The server itself is fine.
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/v1/samples", json={"samples": [{"kind": 1}]}).status_code == 200


async def test_sigterm_to_a_serving_process_acks_every_committed_batch(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    """The same as above through a real signal to a real `ringbridge serve`."""
    args = [
        f"--pin-dir={pin_dir}",
        f"--bpf-object={bpf_object_path}",
        "--ring-size=64K",
        "--drain=external",
        "--ws-window=16",
        "--submit-timeout=30",
        "--shutdown-grace=2",
        "--no-access-log",
    ]
    sent: dict[int, list[tuple[int, int]]] = {}
    acks: list[dict[str, Any]] = []
    close_code: int | None = None
    with served(args, tmp_path / "first.log") as addr:
        pid = child_server_pid(pin_dir)
        async with connect(f"ws://{addr}/v1/stream", max_queue=None) as ws:
            for n in range(40):
                sent[n] = [(n % 5, n * 1000 + i) for i in range(300)]
                await ws.send(binary_batch(sent[n]))
            for _ in range(9):  # the ring holds 9 of these batches
                acks.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
            os.kill(pid, signal.SIGTERM)
            # The kernel consumes while the server stops: batches that were
            # waiting commit during the grace, and must be acked too.
            await asyncio.to_thread(open_pinned_drain, pin_dir)
            try:
                while True:
                    acks.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
            except ConnectionClosed as exc:
                close_code = exc.rcvd.code if exc.rcvd is not None else None
    assert close_code == 1012
    assert [a["id"] for a in acks] == list(range(len(acks)))
    ok = [a for a in acks if "error" not in a]
    assert all(a["error"]["code"] == "stopping" for a in acks if "error" in a)
    t = Tally()
    for a in ok:
        t.add_all(sent[a["id"]])
    # Restarted on the same pins: what the kernel counted, once everything
    # committed is consumed, is exactly what was acked.
    with served(args, tmp_path / "second.log") as addr:
        await asyncio.to_thread(open_pinned_drain, pin_dir)
        async with httpx.AsyncClient(base_url=f"http://{addr}", timeout=30) as c:
            kernel = (await c.get("/v1/stats")).json()["kernel"]
    assert kernel["samples"] == t.total
    kinds = {int(k): (v["samples"], v["value"]) for k, v in kernel["kinds"].items()}
    assert kinds == {k: (t.count[k], t.value[k]) for k in t.count}
