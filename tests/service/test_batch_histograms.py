"""The batch histograms and health gauges on /metrics say what happened, path by path.

Batches of known sizes go in over every transport and encoding, some with
``wait=consumed``; the histograms must count each batch once under its own
labels, with its exact sample count and ring bytes, and count its ack latency
under the state the ack had. The health gauges must follow a consumer that
stops and starts again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from ringbridge.core.ring import record_size
from ringbridge.producer.observe import BYTES_BUCKETS, SAMPLES_BUCKETS, Buckets

from .conftest import SAMPLE, Server, ServerFactory, binary_batch, wait_until

pytestmark = pytest.mark.kernel

Labels = tuple[tuple[str, str], ...]


def scrape(srv: Server) -> dict[str, dict[Labels, float]]:
    """sample name -> sorted labels (without ``le`` for _sum/_count) -> value."""
    text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    out: dict[str, dict[Labels, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(m: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    return m[name][tuple(sorted(labels.items()))]


async def _ws(url: str, frames: list[str | bytes]) -> list[dict[str, object]]:
    async with websockets.connect(url, compression=None) as ws:
        for f in frames:
            await ws.send(f)
        return [json.loads(await ws.recv()) for _ in frames]


def test_each_batch_counts_once_under_its_path_with_its_sizes(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 20, drain="kick")
    json_record = record_size(SAMPLE.size)  # a typed JSON sample packs into the struct
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for n in (1, 2, 300):
            r = c.post("/v1/samples", json={"samples": [{"kind": 1, "value": 1}] * n})
            assert r.status_code == 200, r.text
        body = binary_batch([(2, 5)] * 7)
        r = c.post(
            "/v1/samples?wait=consumed",
            content=body,
            headers={"content-type": "application/octet-stream"},
        )
        assert r.json()["state"] == "consumed", r.text
        assert c.post("/v1/samples", json={"samples": [{"kind": "x"}]}).status_code == 422
    text_frame = json.dumps({"id": "t", "samples": [{"kind": 3, "value": 2}] * 4})
    acks = asyncio.run(_ws(srv.ws_url, [text_frame, binary_batch([(4, 1)] * 5)]))
    assert [a["accepted"] for a in acks] == [4, 5], acks
    acks = asyncio.run(_ws(srv.ws_url + "?wait=consumed", [binary_batch([(4, 1)] * 6)]))
    assert acks[0]["state"] == "consumed", acks

    m = scrape(srv)
    want = {
        # (transport, encoding): samples per batch
        ("http", "json"): [1, 2, 300],
        ("http", "binary"): [7],
        ("ws", "json"): [4],
        ("ws", "binary"): [5, 6],
    }
    for (t, e), sizes in want.items():
        samples, nbytes = Buckets(SAMPLES_BUCKETS), Buckets(BYTES_BUCKETS)
        for n in sizes:
            samples.observe(n)
            nbytes.observe(n * (json_record if e == "json" else record_size(SAMPLE.size)))
        labels = {"transport": t, "encoding": e}
        assert one(m, "ringbridge_batch_samples_count", **labels) == len(sizes), (t, e)
        assert one(m, "ringbridge_batch_samples_sum", **labels) == sum(sizes), (t, e)
        assert one(m, "ringbridge_batch_bytes_sum", **labels) == nbytes.sum, (t, e)
        for le, count in samples.cumulative():
            assert one(m, "ringbridge_batch_samples_bucket", le=le, **labels) == count, (t, e, le)
    # Latency: every ack once, under the state it had; the 422 is in none.
    latency = {
        ("http", "committed"): 3,
        ("http", "consumed"): 1,
        ("ws", "committed"): 2,
        ("ws", "consumed"): 1,
    }
    for (t, state), n in latency.items():
        labels = {"transport": t, "state": state}
        assert one(m, "ringbridge_ack_latency_seconds_count", **labels) == n, (t, state)
        total = one(m, "ringbridge_ack_latency_seconds_sum", **labels)
        assert 0 < total < 10 * n, (t, state, total)
        assert one(m, "ringbridge_ack_latency_seconds_bucket", le="+Inf", **labels) == n
    assert one(m, "ringbridge_batches_committed_total") == sum(len(s) for s in want.values())


def test_a_consume_wait_that_timed_out_counts_in_sizes_not_in_latency(
    make_server: ServerFactory,
) -> None:
    # Nothing drains (external): the batch commits, its consume wait runs out.
    srv = make_server(ring_size=64 * 1024, drain="external")
    r = httpx.post(
        f"{srv.url}/v1/samples?wait=consumed&timeout=0.3",
        json={"samples": [{"kind": 1, "value": 1}]},
        timeout=10,
    )
    assert (r.status_code, r.json()["state"]) == (202, "committed"), r.text
    m = scrape(srv)
    assert one(m, "ringbridge_batch_samples_count", transport="http", encoding="json") == 1
    for state in ("committed", "consumed"):
        labels = {"transport": "http", "state": state}
        assert one(m, "ringbridge_ack_latency_seconds_count", **labels) == 0, state


def test_health_gauges_follow_a_stalled_consumer(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=64 * 1024, drain="external", ready_stall_seconds=0.5)
    m = scrape(srv)
    assert one(m, "ringbridge_ready") == 1
    assert one(m, "ringbridge_producer_up") == 1
    assert one(m, "ringbridge_consumer_stalled_seconds") == 0
    r = httpx.post(f"{srv.url}/v1/samples", json={"samples": [{"kind": 1}]}, timeout=10)
    assert r.status_code == 200, r.text
    scrape(srv)  # the stall is timed from the first look that sees bytes pending
    time.sleep(0.7)
    m = scrape(srv)
    assert one(m, "ringbridge_consumer_stalled_seconds") >= 0.5
    assert one(m, "ringbridge_ready") == 0
    assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 503  # the same verdict
    assert srv.drain() == 1
    wait_until(lambda: one(scrape(srv), "ringbridge_ready") == 1, what="ready again")
    assert one(scrape(srv), "ringbridge_consumer_stalled_seconds") == 0


def test_build_info_and_process_series(server: Server) -> None:
    from ringbridge import __version__

    m = scrape(server)
    assert one(m, "ringbridge_build_info", version=__version__) == 1
    started = one(m, "process_start_time_seconds")
    # The server runs in this process (a thread): its start is this process's,
    # from /proc, however long the suite has been running.
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    assert abs(started - (boot + ticks / os.sysconf("SC_CLK_TCK"))) < 2
    assert started <= time.time()
    assert one(m, "process_resident_memory_bytes") > 10 * 1024 * 1024
