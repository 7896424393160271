"""POST /v1/samples end to end: real uvicorn, real kernel ring, real BPF consumer."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import SMALL_RING, Server, ServerFactory, Tally, binary_batch, sample, wait_until

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _ok(r: httpx.Response, count: int) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["accepted"] == count
    assert body["last_seq"] - body["first_seq"] + 1 == count
    return body


def test_json_struct_samples_reach_the_kernel_with_their_values(
    server: Server, client: httpx.Client
) -> None:
    tally = Tally()
    samples = [{"kind": k % 7, "value": 1000 * k + 3, "flags": k} for k in range(50)]
    # Missing fields are zero, as in C.
    samples.append({"kind": 9})
    samples.append({"value": 11})
    for s in samples:
        tally.add(s.get("kind", 0), s.get("value", 0))
    body = _ok(client.post("/v1/samples", json={"samples": samples}), len(samples))
    assert body == {"accepted": 52, "first_seq": 0, "last_seq": 51, "state": "committed"}
    kc = server.wait_kernel(tally)
    assert kc.bytes == 52 * 16


def test_json_base64_data_samples_carry_payload_bytes(server: Server, client: httpx.Client) -> None:
    tally = Tally()
    payloads = [sample(5, 77, extra=b"x" * n) for n in (0, 1, 7, 8, 100)]
    tally.add_all((5, 77) for _ in payloads)
    body = {"samples": [{"data": base64.b64encode(p).decode()} for p in payloads]}
    _ok(client.post("/v1/samples", json=body), len(payloads))
    kc = server.wait_kernel(tally)
    assert kc.bytes == sum(len(p) for p in payloads)


def test_binary_batches_reach_the_kernel(server: Server, client: httpx.Client) -> None:
    tally = Tally()
    first = None
    for b in range(5):
        samples = [(b * 10 + i % 3, i * i + b) for i in range(200)]
        tally.add_all(samples)
        body = _ok(client.post("/v1/samples", content=binary_batch(samples), headers=OCTET), 200)
        # Contiguous seqs across batches in commit order.
        if first is not None:
            assert body["first_seq"] == first + 200
        first = body["first_seq"]
    server.wait_kernel(tally)


def test_content_type_parameters_are_accepted(server: Server, client: httpx.Client) -> None:
    r = client.post(
        "/v1/samples",
        content=json.dumps({"samples": [{"kind": 1, "value": 2}]}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    _ok(r, 1)
    t = Tally()
    t.add(1, 2)
    server.wait_kernel(t)


def test_wait_consumed_with_timer_drain_answers_after_the_kernel_counted(
    server: Server, client: httpx.Client
) -> None:
    samples = [{"kind": 3, "value": 5}] * 1000
    r = client.post("/v1/samples", params={"wait": "consumed"}, json={"samples": samples})
    assert _ok(r, 1000)["state"] == "consumed"
    # No polling: by the time the answer came, the kernel had counted it.
    kc = server.counters()
    assert kc.kind_count[3] == 1000 and kc.kind_value[3] == 5000


def test_wait_consumed_waits_for_the_kernel_and_times_out_without_it(
    stalled_server: Server,
) -> None:
    srv = stalled_server
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        t0 = time.monotonic()
        r = c.post(
            "/v1/samples",
            params={"wait": "consumed", "timeout": 0.5},
            json={"samples": [{"kind": 4, "value": 40}]},
        )
        assert time.monotonic() - t0 >= 0.45
        # Committed though not consumed: 202 with the seqs, so the client is
        # not invited to retry (a retry would commit the batch twice).
        assert r.status_code == 202
        body = r.json()
        assert body == {"accepted": 1, "first_seq": 0, "last_seq": 0, "state": "committed"}
        assert "retry-after" not in r.headers
        assert srv.counters().samples == 0

        result: dict[str, httpx.Response] = {}

        def post() -> None:
            result["r"] = c.post(
                "/v1/samples",
                params={"wait": "consumed", "timeout": 10},
                json={"samples": [{"kind": 4, "value": 2}, {"kind": 4, "value": 3}]},
            )

        th = threading.Thread(target=post)
        th.start()
        p = srv.runtime.producer
        wait_until(lambda: p.statistics().samples_committed == 3, what="the batch committed")
        assert th.is_alive(), "wait=consumed answered although nothing consumed the ring"
        assert srv.drain() == 3
        th.join(10)
        body = _ok(result["r"], 2)
        assert body["state"] == "consumed"
        assert (body["first_seq"], body["last_seq"]) == (1, 2)
        kc = srv.counters()
        assert (kc.kind_count[4], kc.kind_value[4]) == (3, 45)


def test_kick_drain_consumes_after_each_commit(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING, drain="kick", max_batch_bytes=16 * 1024)
    tally = Tally()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        # 40 batches of ~16 KiB through a 64 KiB ring: only possible if the
        # kick drains keep up (no timer runs in this mode).
        for b in range(40):
            samples = [(b % 5, b * 1000 + i) for i in range(600)]
            tally.add_all(samples)
            _ok(c.post("/v1/samples", content=binary_batch(samples), headers=OCTET), 600)
        r = c.post(
            "/v1/samples", params={"wait": "consumed"}, json={"samples": [{"kind": 6, "value": 1}]}
        )
        assert _ok(r, 1)["state"] == "consumed"
        tally.add(6, 1)
    srv.wait_kernel(tally)
    assert sum(srv.counters().drain_errors.values()) == 0


async def test_32_concurrent_clients_get_contiguous_ordered_seqs(server: Server) -> None:
    clients, batches = 32, 12
    acks: dict[int, list[dict[str, Any]]] = {}
    tally = Tally()
    for cid in range(clients):
        for b in range(batches):
            tally.add_all((cid, cid * 1_000_000 + b * 100 + i) for i in range(b + 1))

    async def run(cid: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            out = []
            for b in range(batches):
                samples = [(cid, cid * 1_000_000 + b * 100 + i) for i in range(b + 1)]
                if b % 2:
                    r = await c.post("/v1/samples", content=binary_batch(samples), headers=OCTET)
                else:
                    js = [{"kind": k, "value": v} for k, v in samples]
                    r = await c.post("/v1/samples", json={"samples": js})
                out.append(_ok(r, b + 1))
            acks[cid] = out

    await asyncio.gather(*(run(cid) for cid in range(clients)))
    ranges = sorted((a["first_seq"], a["last_seq"]) for out in acks.values() for a in out)
    # Every sample got exactly one seq: the ranges tile 0..N-1 without gaps.
    expected = 0
    for first, last in ranges:
        assert first == expected
        expected = last + 1
    assert expected == tally.total
    # Each client's batches were committed in the order it sent them.
    for out in acks.values():
        firsts = [a["first_seq"] for a in out]
        assert firsts == sorted(firsts)
    await asyncio.to_thread(server.wait_kernel, tally)


def _bad_inputs(max_batch: int, max_sample: int) -> list[tuple[str, dict[str, Any], int, str]]:
    good = binary_batch([(1, 1)])
    return [
        ("no content type", {"content": b"{}"}, 415, "unsupported_media_type"),
        (
            "text/plain",
            {"content": b"x", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "body over max_batch_bytes",
            {"content": bytes(max_batch + 8), "headers": OCTET},
            413,
            "too_large",
        ),
        (
            "chunked body over max_batch_bytes",
            {"content": iter([bytes(max_batch // 2)] * 3), "headers": OCTET},
            413,
            "too_large",
        ),
        (
            "binary sample over max_sample_bytes",
            {"content": binary_batch([]) + _record(bytes(max_sample + 1)), "headers": OCTET},
            413,
            "too_large",
        ),
        (
            "json data sample over max_sample_bytes",
            {"json": {"samples": [{"data": base64.b64encode(bytes(max_sample + 1)).decode()}]}},
            413,
            "too_large",
        ),
        (
            "not json",
            {"content": b"{nope", "headers": {"content-type": "application/json"}},
            422,
            "",
        ),
        ("no samples key", {"json": {"sample": []}}, 422, ""),
        ("empty samples", {"json": {"samples": []}}, 422, ""),
        ("unknown field", {"json": {"samples": [{"kind": 1}, {"knd": 1}]}}, 422, "invalid_sample"),
        ("wrong type", {"json": {"samples": [{"kind": "one"}]}}, 422, "invalid_sample"),
        ("out of range", {"json": {"samples": [{"kind": 2**32}]}}, 422, "invalid_sample"),
        ("negative unsigned", {"json": {"samples": [{"value": -1}]}}, 422, "invalid_sample"),
        ("bad base64", {"json": {"samples": [{"data": "!!!"}]}}, 422, "invalid_sample"),
        ("binary misaligned", {"content": good + b"\0", "headers": OCTET}, 422, "invalid_batch"),
        ("binary empty", {"content": b"", "headers": OCTET}, 422, "invalid_batch"),
        (
            "binary nonzero pad word",
            {"content": good + b"\x10\0\0\0\x01\0\0\0" + bytes(16), "headers": OCTET},
            422,
            "invalid_batch",
        ),
        (
            "binary BUSY bit",
            {"content": good + b"\x10\0\0\x80\0\0\0\0" + bytes(16), "headers": OCTET},
            422,
            "invalid_batch",
        ),
        (
            "binary truncated payload",
            {"content": good + b"\x40\0\0\0\0\0\0\0" + bytes(16), "headers": OCTET},
            422,
            "invalid_batch",
        ),
        (
            "bad wait",
            {"json": {"samples": [{}]}, "params": {"wait": "maybe"}},
            422,
            "invalid_request",
        ),
        (
            "bad timeout",
            {"json": {"samples": [{}]}, "params": {"timeout": "-1"}},
            422,
            "invalid_request",
        ),
    ]


def _record(payload: bytes) -> bytes:
    n = len(payload)
    return n.to_bytes(4, "little") + bytes(4) + payload + bytes(-n % 8)


def test_every_bad_input_gets_its_status_and_nothing_reaches_the_ring(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=1024 * 1024, max_batch_bytes=256 * 1024, max_sample_bytes=4096)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for name, kwargs, status, code in _bad_inputs(256 * 1024, 4096):
            before = srv.producer_pos()
            r = c.post("/v1/samples", **kwargs)
            assert r.status_code == status, (name, r.text)
            err = r.json()["error"]
            assert set(err) >= {"code", "message", "index"}, name
            if code:
                assert err["code"] == code, (name, err)
            assert err["message"], name
            assert srv.producer_pos() == before, f"{name}: bytes reached the ring"
        # The first bad sample is named by its index.
        r = c.post("/v1/samples", json={"samples": [{"kind": 1}, {"kind": 1}, {"kind": -1}]})
        assert (r.status_code, r.json()["error"]["index"]) == (422, 2)
        r = c.post(
            "/v1/samples", content=binary_batch([(1, 1)] * 3) + b"\x08\0\0\0\0\0", headers=OCTET
        )
        assert r.status_code == 422
        assert srv.counters().samples == 0
        assert srv.runtime.producer.statistics().samples_committed == 0
        # A good batch after all that still lands, with seq 0.
        body = _ok(c.post("/v1/samples", json={"samples": [{"kind": 8, "value": 88}]}), 1)
        assert body["first_seq"] == 0
    t = Tally()
    t.add(8, 88)
    kc = srv.wait_kernel(t)
    assert sum(kc.drain_errors.values()) == 0 and kc.short_samples == 0


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_auth(make_server: ServerFactory, token: str | None) -> None:
    srv = make_server(ring_size=SMALL_RING, token=token)
    body = {"samples": [{"kind": 1, "value": 1}]}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        if token is None:
            _ok(c.post("/v1/samples", json=body), 1)
            assert c.get("/v1/stats").status_code == 200
            return
        r = c.post("/v1/samples", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = c.post("/v1/samples", json=body, headers={"authorization": "Basic s3cret"})
        assert r.status_code == 401
        r = c.post("/v1/samples", json=body, headers={"authorization": "Bearer wrong"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert c.get("/v1/stats").status_code == 401
        assert srv.producer_pos() == 0
        auth = {"authorization": f"Bearer {token}"}
        _ok(c.post("/v1/samples", json=body, headers=auth), 1)
        assert c.get("/v1/stats", headers=auth).status_code == 200
        # Probes and the scraper stay open.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200, path


def test_health_and_readiness_follow_the_consumer(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING, drain="external", ready_stall_seconds=0.3)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        _ok(c.post("/v1/samples", json={"samples": [{"kind": 1}]}), 1)
        # Bytes pending and the consumer not moving: ready until the stall
        # lasts ready_stall_seconds, then not ready.
        assert c.get("/readyz").status_code == 200
        t0 = time.monotonic()
        wait_until(lambda: c.get("/readyz").status_code == 503, what="readyz to fail")
        assert time.monotonic() - t0 >= 0.25, "not ready before the stall lasted"
        r = c.get("/readyz")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["consumer_progressing"] is False and checks["pending_bytes"] == 24
        assert checks["producer_running"] and checks["ring_mapped"] and checks["object_loaded"]
        assert srv.drain() == 1
        assert c.get("/readyz").status_code == 200


def test_restart_reopens_the_pins_and_keeps_kernel_counters(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING)
    t = Tally()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        _ok(c.post("/v1/samples", json={"samples": [{"kind": 2, "value": 20}]}), 1)
    t.add(2, 20)
    srv.wait_kernel(t)
    srv.stop()
    again = make_server(ring_size=SMALL_RING)
    assert again.runtime.backend.reused
    with httpx.Client(base_url=again.url, timeout=30) as c:
        r = c.post("/v1/samples", json={"samples": [{"kind": 2, "value": 1}]})
        _ok(r, 1)
        # Seqs live with the pins: the restarted service goes on from 1.
        assert (r.json()["first_seq"], r.json()["last_seq"]) == (1, 1)
        assert c.get("/v1/stats").json()["config"]["pins_reused"] is True
    t.add(2, 1)
    again.wait_kernel(t)


def test_openapi_documents_both_body_types(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/samples"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert {"401", "403", "413", "415", "422", "503"} <= set(post["responses"])
