"""A full ring with a stalled consumer (drain=external): 503 after the timeout,
nothing of the batch committed, no spinning while waiting, FIFO kept."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from .conftest import Server, Tally, binary_batch, wait_until

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}
# 24-byte records: 2560 of them fill 60 KiB of the 64 KiB ring.
FILL = [(1, i) for i in range(2560)]
# 8 KiB > the 4 KiB left.
BIG = [(2, i) for i in range(341)]


def _post(c: httpx.Client, samples: list[tuple[int, int]], timeout: float) -> httpx.Response:
    return c.post(
        "/v1/samples",
        content=binary_batch(samples),
        headers=OCTET,
        params={"timeout": timeout},
    )


def test_full_ring_times_out_with_503_commits_nothing_and_does_not_spin(
    stalled_server: Server,
) -> None:
    srv = stalled_server
    tally = Tally()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = _post(c, FILL, 5)
        assert r.status_code == 200, r.text
        tally.add_all(FILL)
        pos = srv.producer_pos()
        assert pos == 60 * 1024

        cpu0, t0 = time.process_time(), time.monotonic()
        r = _post(c, BIG, 2.0)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "ring_full_timeout"
        assert r.headers["retry-after"] == "1"
        assert 1.9 <= wall < 5
        # The whole process (server thread included) was idle while the
        # producer waited: an edge-triggered wait, not a spin.
        assert cpu < 0.05 * wall, f"{cpu:.3f}s CPU over {wall:.3f}s of waiting"
        assert srv.producer_pos() == pos, "part of the timed-out batch was committed"
        stats = srv.runtime.producer.statistics()
        assert stats.batches_failed.get("ring_full_timeout") == 1
        assert stats.ring_full_waits >= 1

        # Once the kernel consumes, the same batch goes through, and its seqs
        # follow the first batch's: the failed one took none.
        assert srv.drain() == len(FILL)
        r = _post(c, BIG, 2.0)
        assert r.status_code == 200, r.text
        assert r.json()["first_seq"] == len(FILL)
        tally.add_all(BIG)
        assert srv.drain() == len(BIG)
    kc = srv.wait_kernel(tally)
    assert sum(kc.drain_errors.values()) == 0


def test_waiting_batch_commits_when_space_comes_and_is_not_overtaken(
    stalled_server: Server,
) -> None:
    srv = stalled_server
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert _post(c, FILL, 5).status_code == 200
        pos = srv.producer_pos()
        results: dict[str, httpx.Response] = {}

        def send(name: str, samples: list[tuple[int, int]]) -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as own:
                results[name] = _post(own, samples, 10)

        p = srv.runtime.producer
        big = threading.Thread(target=send, args=("big", BIG))
        big.start()
        wait_until(lambda: p.statistics().ring_full_waits == 1, what="the big batch to wait")
        # 1 record fits the 4 KiB left, but it arrived after the big batch:
        # FIFO means it waits behind it.
        small = threading.Thread(target=send, args=("small", [(3, 33)]))
        small.start()
        wait_until(lambda: p.statistics().queued_batches == 1, what="the small batch in line")
        assert big.is_alive() and small.is_alive()
        assert srv.producer_pos() == pos, "a later batch overtook the waiting one"
        srv.drain()
        big.join(10)
        small.join(10)
    b: dict[str, Any] = results["big"].json()
    s: dict[str, Any] = results["small"].json()
    assert results["big"].status_code == 200 and results["small"].status_code == 200
    assert b["first_seq"] == len(FILL) and s["first_seq"] == b["last_seq"] + 1


def test_shutdown_answers_waiting_batches_with_503_stopping(stalled_server: Server) -> None:
    srv = stalled_server  # shutdown_grace=1.0 (conftest)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert _post(c, FILL, 5).status_code == 200
        pos = srv.producer_pos()
        result: dict[str, httpx.Response] = {}

        def send() -> None:
            result["r"] = _post(c, BIG, 20)

        th = threading.Thread(target=send)
        th.start()
        p = srv.runtime.producer
        wait_until(lambda: p.statistics().ring_full_waits == 1, what="the batch to wait")
        ring = srv.runtime.ring
        t0 = time.monotonic()
        srv.stop()
        th.join(10)
        # Answered after the producer's grace, not cancelled into a 500 by
        # uvicorn's graceful-shutdown timeout.
        assert time.monotonic() - t0 < 5
    r = result["r"]
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "stopping"
    assert r.headers["retry-after"] == "1"
    assert ring.producer_pos == pos
