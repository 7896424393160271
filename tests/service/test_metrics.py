"""GET /metrics and GET /v1/stats: the documented names, values that match what was sent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Server, Tally, binary_batch

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}

REQUIRED = {
    "ringbridge_samples_committed_total",
    "ringbridge_bytes_committed_total",
    "ringbridge_batches_rejected_total",
    "ringbridge_ring_full_waits_total",
    "ringbridge_ring_free_bytes",
    "ringbridge_admission_bytes_in_use",
    "ringbridge_commit_latency_seconds",
    "ringbridge_kernel_samples_total",
    "ringbridge_kernel_bytes_total",
    "ringbridge_kernel_drains_total",
    "ringbridge_kernel_drain_errors_total",
    "ringbridge_kernel_kind_samples_total",
    "ringbridge_kernel_kind_value_total",
}


def scrape(c: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = c.get("/metrics")
    assert r.status_code == 200  # explicit route: no 307 to /metrics/
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as c:
        yield c


def test_all_required_metrics_are_exported(client: httpx.Client) -> None:
    # Labelled counters only have samples once something was counted.
    client.post("/v1/samples", json={"samples": [{"kind": 1, "value": 1}]})
    client.post("/v1/samples", json={"samples": []})
    names = {name for name, _ in scrape(client)}
    for required in REQUIRED:
        assert any(n == required or n.startswith(required + "_") for n in names), required


def test_metrics_count_what_was_sent_and_what_the_kernel_saw(
    server: Server, client: httpx.Client
) -> None:
    tally = Tally()
    for b in range(10):
        samples = [(b % 3, 7 * b + i) for i in range(100)]
        tally.add_all(samples)
        r = client.post(
            "/v1/samples",
            content=binary_batch(samples),
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 200
    for _ in range(3):
        r = client.post("/v1/samples", json={"samples": [{"nope": 1}]})
        assert r.status_code == 422
    r = client.post("/v1/samples", content=b"x", headers={"content-type": "text/csv"})
    assert r.status_code == 415

    deadline = time.monotonic() + 10
    while True:
        m = scrape(client)
        if m[("ringbridge_kernel_samples_total", ())] == 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert m[("ringbridge_samples_committed_total", ())] == 1000
    assert m[("ringbridge_bytes_committed_total", ())] == 1000 * 16
    assert m[("ringbridge_kernel_samples_total", ())] == 1000
    assert m[("ringbridge_kernel_bytes_total", ())] == 1000 * 16
    assert m[("ringbridge_kernel_drains_total", ())] > 0
    for cause in ("EINVAL", "E2BIG", "EBUSY", "OTHER"):
        assert m[("ringbridge_kernel_drain_errors_total", (("cause", cause),))] == 0
    for kind in range(3):
        label = (("kind", str(kind)),)
        assert m[("ringbridge_kernel_kind_samples_total", label)] == tally.count[kind]
        assert m[("ringbridge_kernel_kind_value_total", label)] == tally.value[kind]
    assert ("ringbridge_kernel_kind_samples_total", (("kind", "3"),)) not in m
    assert m[("ringbridge_batches_rejected_total", (("reason", "invalid_sample"),))] == 3
    rejected = ("ringbridge_batches_rejected_total", (("reason", "unsupported_media_type"),))
    assert m[rejected] == 1
    assert m[("ringbridge_commit_latency_seconds_count", ())] == 10
    assert m[("ringbridge_ring_free_bytes", ())] == server.settings.ring_size
    assert m[("ringbridge_admission_bytes_in_use", ())] == 0
    assert m[("ringbridge_ring_full_waits_total", ())] == 0

    stats = client.get("/v1/stats").json()
    assert stats["producer"]["samples_committed"] == 1000
    assert stats["producer"]["next_seq"] == 1000
    assert stats["kernel"]["samples"] == 1000
    assert stats["kernel"]["kinds"]["2"] == {"samples": tally.count[2], "value": tally.value[2]}
    assert stats["rejected"] == {"invalid_sample": 3, "unsupported_media_type": 1}
    assert stats["ring"]["free_bytes"] == server.settings.ring_size


def test_two_apps_in_one_process_have_separate_registries(server: Server) -> None:
    from ringbridge.api.app import create_app

    other = create_app(server.settings)
    assert other.state.metrics.registry is not server.app.state.metrics.registry
    # Not started: its collector has no runtime and exports nothing of it.
    assert b"ringbridge_samples_committed_total" not in other.state.metrics.render()


def test_per_kind_sums_above_2_53_are_exact_on_metrics(
    server: Server, client: httpx.Client
) -> None:
    # Sums a float64 cannot hold.
    big = [(11, 2**60 + 1), (11, 2**53 + 4), (12, 2**63 + 7), (12, 2**62 + 2**40 + 9)]
    r = client.post("/v1/samples", content=binary_batch(big), headers=OCTET)
    assert r.status_code == 200, r.text
    t = Tally()
    t.add_all(big)
    server.wait_kernel(t)
    m = scrape(client)

    def exact(kind: int) -> int:
        labels = (("kind", str(kind)),)
        high = m[("ringbridge_kernel_kind_value_high", labels)]
        low = m[("ringbridge_kernel_kind_value_low", labels)]
        assert high == int(high) and low == int(low)
        return int(high) * 2**32 + int(low)

    assert exact(11) == 2**60 + 2**53 + 5
    assert exact(12) == 2**63 + 2**62 + 2**40 + 16
    # The plain counter is a float: it cannot say the same.
    assert m[("ringbridge_kernel_kind_value_total", (("kind", "11"),))] != 2**60 + 2**53 + 5
    stats = client.get("/v1/stats").json()["kernel"]["kinds"]
    assert stats["11"]["value"] == 2**60 + 2**53 + 5


def test_per_kind_sums_past_2_64_never_go_backwards(server: Server, client: httpx.Client) -> None:
    """u64max + 3 is 2**64 + 2 everywhere: the kernel counter carries, it does not wrap."""
    u64max = 2**64 - 1
    t = Tally()
    seen: list[float] = []
    for value in (u64max, 3, u64max):
        r = client.post("/v1/samples", content=binary_batch([(13, value)]), headers=OCTET)
        assert r.status_code == 200, r.text
        t.add(13, value)
        server.wait_kernel(t)  # exact, past 2**64
        m = scrape(client)
        labels = (("kind", "13"),)
        high = m[("ringbridge_kernel_kind_value_high", labels)]
        low = m[("ringbridge_kernel_kind_value_low", labels)]
        assert int(high) * 2**32 + int(low) == t.value[13]
        assert client.get("/v1/stats").json()["kernel"]["kinds"]["13"]["value"] == t.value[13]
        seen.append(m[("ringbridge_kernel_kind_value_total", labels)])
    assert t.value[13] == 2 * 2**64 + 1
    assert seen == sorted(seen), f"the counter went backwards: {seen}"
