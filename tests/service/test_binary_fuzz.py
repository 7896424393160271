"""A fuzzer on the binary batch validator with the kernel as the oracle.

Mutated record batches (bits flipped, words overwritten, BUSY/DISCARD bits
set, cut, extended) are POSTed to a real server whose drain program runs
after every commit. Whatever the validator accepts goes into the ring, so
the kernel judges it: a record it would reject poisons the ring for good
(drain errors, consumer stuck). The property: every answer is 200 or a 4xx
naming a record, never a 5xx; the kernel never fails a drain; it counted
exactly the samples acknowledged; the ring is fully consumed.
"""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.core.test_batch_props import mutated_batches

from .conftest import ServerFactory

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}


def test_the_kernel_never_rejects_what_the_validator_accepted(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=1 << 16, drain="kick", max_sample_bytes=4096)
    acked = 0
    with httpx.Client(base_url=srv.url, timeout=30) as c:

        @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
        @given(buf=mutated_batches())
        def post(buf: bytes) -> None:
            nonlocal acked
            r = c.post("/v1/samples", content=buf, headers=OCTET)
            if r.status_code == 200:
                acked += r.json()["accepted"]
            else:
                assert r.status_code in (413, 422), r.text
                err = r.json()["error"]
                assert err["code"] in ("invalid_batch", "too_large") and err["message"]
            kc = srv.counters()
            assert sum(kc.drain_errors.values()) == 0, f"the kernel refused {buf.hex()}"

        post()
    assert acked > 0, "no mutated batch was valid: the fuzzer explored nothing accepted"
    ring = srv.runtime.ring
    deadline = time.monotonic() + 10
    while srv.counters().samples != acked and time.monotonic() < deadline:
        srv.drain()
        time.sleep(0.01)
    kc = srv.counters()
    assert kc.samples == acked and sum(kc.drain_errors.values()) == 0
    assert ring.consumer_pos() == ring.producer_pos, "the ring was left with a stuck record"
