"""Timer drain mode: the idle timer backs off and a commit re-arms it (real kernel)."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import ServerFactory

pytestmark = pytest.mark.kernel


def test_a_commit_rearms_a_backed_off_timer(make_server: ServerFactory) -> None:
    # 100 us while busy; up to 10 s while idle -- so only the producer's
    # re-arm can get a sample consumed soon after a quiet spell.
    srv = make_server(ring_size=1 << 20, drain_period_us=100, drain_idle_period_us=10_000_000)
    loaded = srv.builtin
    deadline = time.monotonic() + 10
    # 12 empty drains in a row: the period has reached 100 us * 2**11 = 205 ms.
    while loaded.timer_idle_drains() < 12:
        assert time.monotonic() < deadline, "the timer never backed off on an empty ring"
        time.sleep(0.01)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for value in range(3):
            r = c.post(
                "/v1/samples",
                params={"wait": "consumed", "timeout": 5},
                json={"samples": [{"kind": 7, "value": value}]},
            )
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "consumed"
    kick = srv.runtime.producer.statistics().kick
    assert kick is not None and kick.kicks >= 1 and kick.errors == 0
    assert loaded.read_counters().kind_count[7] == 3
