"""WebSocket clients hold credit only for frames in flight (#19, item 2).

- 300 clients stream at once into a real ``ringbridge serve`` child whose
  budget is a quarter of what they offer: all are served, every batch acked
  and counted by the kernel, and the process's resident memory stays within
  the budget plus a stated constant per connection;
- idle connections hold nothing: readiness and every other client go on;
- an idle connection is closed after ``ws_idle_timeout`` (1001), never one
  that is owed an ack; a peer holds at most ``ws_max_per_peer`` connections.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.launch import served

from .conftest import SMALL_RING, ServerFactory, Tally, binary_batch, wait_until

pytestmark = pytest.mark.kernel

MiB = 1 << 20
#: Resident memory one open WebSocket connection may cost beyond the budget
#: (uvicorn's and websockets' protocol state, the stream's two tasks, buffers
#: of a few KiB): the README's stated constant. Measured here: ~25 KiB.
PER_CONNECTION = 64 * 1024
#: And the process as a whole, beyond that (the allocator's slack, one socket
#: read held back past the budget, Python objects of the load).
CONSTANT = 16 * MiB


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


@pytest.mark.slow
def test_300_clients_streaming_at_once_are_all_served_within_the_budget(
    pin_dir: Path, tmp_path: Path
) -> None:
    clients, frames, window = 300, 6, 3
    budget = 16 * MiB
    log = tmp_path / "serve.log"
    args = [
        f"--pin-dir={pin_dir}",
        "--drain=kick",
        "--ring-size=16M",
        "--max-batch-bytes=1M",
        f"--admission-bytes={budget}",
        "--ws-max-per-peer=512",
        "--submit-timeout=60",
        "--no-access-log",
    ]

    # 64 KiB frames of 64-byte samples: 300 x 6 x 64 KiB = 112 MiB offered,
    # 7 times the budget.
    def frame(client: int, n: int) -> bytes:
        return binary_batch([(client % 200, client * 1000 + n)] * 1008)

    with served(args, log) as addr:
        pid = int(re.search(r"Started server process \[(\d+)\]", log.read_text()).group(1))  # type: ignore[union-attr]
        url = f"ws://{addr}/v1/stream"
        time.sleep(0.3)
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        base = _status(pid)["VmRSS"]

        async def client(c: int) -> list[dict[str, object]]:
            acks: list[dict[str, object]] = []
            async with connect(url, compression=None, max_queue=None, open_timeout=60) as ws:
                sent = 0
                while len(acks) < frames:
                    while sent < frames and sent - len(acks) < window:
                        await ws.send(frame(c, sent))
                        sent += 1
                    acks.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
            return acks

        async def all_clients() -> list[list[dict[str, object]]]:
            return await asyncio.gather(*[client(c) for c in range(clients)])

        results = asyncio.run(all_clients())
        peak = _status(pid)["VmHWM"]
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as h:
            tally = Tally()
            for c in range(clients):
                for n in range(frames):
                    tally.count[c % 200] += 1008
                    tally.value[c % 200] += (c * 1000 + n) * 1008
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                kinds = h.get("/v1/stats").json()["kernel"]["kinds"]
                if sum(k["samples"] for k in kinds.values()) == tally.total:
                    break
                time.sleep(0.2)
            stats = h.get("/v1/stats").json()
    errors = [a for acks in results for a in acks if "error" in a]
    assert not errors, errors[:3]
    assert [[a["id"] for a in acks] for acks in results] == [list(range(frames))] * clients
    assert {int(k): (v["samples"], v["value"]) for k, v in stats["kernel"]["kinds"].items()} == {
        k: (tally.count[k], tally.value[k]) for k in tally.count
    }
    growth = peak - base
    bound = budget + clients * PER_CONNECTION + CONSTANT
    assert growth <= bound, (
        f"resident memory grew by {growth / MiB:.1f} MiB for {clients} clients, over "
        f"{bound / MiB:.1f} MiB (budget {budget / MiB:.0f} MiB)"
    )


async def test_idle_connections_hold_no_credit(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING, max_batch_bytes=8192, admission_bytes=80 * 1024)
    gate = srv.runtime.producer.admission
    idle = [await connect(srv.ws_url) for _ in range(100)]
    try:
        assert gate.in_use == 0
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
            assert (await c.get("/readyz")).status_code == 200
            r = await c.post("/v1/samples", json={"samples": [{"kind": 3, "value": 1}]})
            assert r.status_code == 200, r.text
        async with connect(srv.ws_url) as ws:
            await ws.send(binary_batch([(3, 2)]))
            assert '"accepted":1' in str(await asyncio.wait_for(ws.recv(), 10))
        await idle[0].send(binary_batch([(3, 4)]))  # an idle one wakes up: served too
        assert '"accepted":1' in str(await asyncio.wait_for(idle[0].recv(), 10))
    finally:
        for ws in idle:
            await ws.close()
    tally = Tally()
    tally.add_all([(3, 1), (3, 2), (3, 4)])
    await asyncio.to_thread(srv.wait_kernel, tally)
    await asyncio.to_thread(wait_until, lambda: gate.in_use == 0, 10.0, "credit back")


async def test_an_idle_connection_is_closed_but_not_one_owed_an_ack(
    make_server: ServerFactory,
) -> None:
    srv = make_server(
        ring_size=SMALL_RING, drain="external", ws_idle_timeout=0.5, submit_timeout=30
    )
    async with connect(srv.ws_url) as quiet, connect(srv.ws_url) as owed:
        fill = binary_batch([(1, i) for i in range(2700)])  # 64,800 of the 65,536-byte ring
        await owed.send(fill)
        assert '"accepted":2700' in str(await asyncio.wait_for(owed.recv(), 10))
        await owed.send(binary_batch([(1, 1)] * 40))  # waits for ring space: an ack is owed
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(quiet.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert "idle" in closed.value.rcvd.reason
        await asyncio.sleep(1.0)  # twice the idle timeout: still open, the ack is owed
        await asyncio.to_thread(srv.drain)
        ack = await asyncio.wait_for(owed.recv(), 10)
        assert '"accepted":40' in str(ack)
        with pytest.raises(ConnectionClosed) as closed:  # idle from the ack on
            await asyncio.wait_for(owed.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_a_peer_holds_at_most_ws_max_per_peer_connections(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=SMALL_RING, ws_max_per_peer=2)
    first = await connect(srv.ws_url)
    second = await connect(srv.ws_url)
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(srv.ws_url)
        assert refused.value.response.status_code == 429
        body = json.loads(refused.value.response.body or b"{}")
        assert body["error"]["code"] == "too_many_connections"
        await first.close()
        await asyncio.to_thread(
            wait_until, lambda: len(srv.runtime.streams) == 1, 10.0, "the stream to end"
        )
        async with connect(srv.ws_url) as third:  # a place is free again
            await third.send(binary_batch([(1, 1)]))
            assert '"accepted":1' in str(await asyncio.wait_for(third.recv(), 10))
    finally:
        await second.close()
