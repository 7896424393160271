"""Memory is bounded by the admission budget plus a small, stated constant (#19, item 12).

A real ``ringbridge serve`` child (its resident memory is what is measured:
``VmHWM`` after resetting it through ``/proc/PID/clear_refs``), a ring
filled by a first batch and never drained (``--drain external``), then 60
concurrent 4 MiB bodies: 16 fit the 64 MiB budget and wait for ring space
until their timeout, the rest are refused unread. What the service holds is
what it charged -- bodies, their decode's working set, the records -- and
what it freed goes back to the kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.launch import served

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

MiB = 1 << 20
BUDGET = 64 * MiB  # the default --admission-bytes
#: What the process may hold beyond the budget under this load: parser state
#: and read buffers of 60 connections, Python objects, the allocator's slack
#: (README, "Admission"). Measured here: 5-8 MiB.
CONSTANT = 16 * MiB


def _rss(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _server_pid(log: Path) -> int:
    import re

    m = re.search(r"Started server process \[(\d+)\]", log.read_text())
    assert m is not None
    return int(m.group(1))


def _record(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), 0) + payload + bytes(-len(payload) % 8)


def _binary_body() -> bytes:
    return _record(b"x" * 4088) * 1023  # 4,190,208 bytes of 4 KiB records


def _json_body() -> bytes:
    # 90,000 {"kind", "flags", "value"} samples: 4.05 MB of JSON, 2.2 MB of records.
    return json.dumps({"samples": [{"kind": 1, "value": 123456789, "flags": 7}] * 90_000}).encode()


@pytest.mark.parametrize("kind", ["binary", "json"])
def test_60_concurrent_4_mib_bodies_on_a_full_ring_stay_within_the_budget(
    pin_dir: Path, tmp_path: Path, kind: str
) -> None:
    body = _binary_body() if kind == "binary" else _json_body()
    media = "application/octet-stream" if kind == "binary" else "application/json"
    log = tmp_path / "serve.log"
    args = [f"--pin-dir={pin_dir}", "--drain=external", "--no-access-log"]
    with served(args, log) as addr:
        pid = _server_pid(log)
        url = f"http://{addr}/v1/samples"
        with httpx.Client(timeout=60) as c:
            fill = _binary_body()
            for _ in range(2):  # 8 MiB ring: full
                r = c.post(url, content=fill, headers={"content-type": "application/octet-stream"})
                assert r.status_code == 200, r.text
            # One of the kind first, so that what stays loaded after the first
            # use (code paths, caches) is in the baseline.
            r = c.post(url + "?timeout=0.5", content=body, headers={"content-type": media})
            assert r.status_code == 503, r.text
        time.sleep(0.5)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = _rss(pid)["VmRSS"]

        async def storm() -> Counter[str]:
            limits = httpx.Limits(max_connections=70)
            async with httpx.AsyncClient(timeout=60, limits=limits) as ac:
                answers = await asyncio.gather(
                    *[
                        ac.post(url + "?timeout=3", content=body, headers={"content-type": media})
                        for _ in range(60)
                    ]
                )
            return Counter(r.json()["error"]["code"] for r in answers)

        codes = asyncio.run(storm())
        peak = _rss(pid)["VmHWM"]
        time.sleep(0.5)
        after = _rss(pid)["VmRSS"]
    # Every body was answered: waited out its timeout on the full ring, or
    # refused for want of credit (before its body was read, or before its decode).
    assert set(codes) <= {"ring_full_timeout", "overloaded"} and sum(codes.values()) == 60, codes
    assert codes["ring_full_timeout"] >= 1, codes
    growth = peak - base
    assert growth <= BUDGET + CONSTANT, (
        f"{kind}: resident memory grew by {growth / MiB:.1f} MiB, over the budget "
        f"{BUDGET / MiB:.0f} MiB + {CONSTANT / MiB:.0f} MiB ({codes})"
    )
    # And what was freed went back: nothing of the 60 bodies stays resident.
    assert after - base <= CONSTANT, f"{(after - base) / MiB:.1f} MiB stayed after the storm"
    os.sync()
