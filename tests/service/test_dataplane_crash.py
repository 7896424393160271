"""kill -9 of a serving process while the data plane holds claimed ring space.

A body half received into ring space is in claimed, unpublished space when
the process dies: the restarted service on the same pins finds
``producer_pos`` where the last acked batch ended, nothing of that body, no
record left BUSY, and goes on with the seqs. What was acked is exactly what
the kernel consumes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from ringbridge.kernel.bpfobj import open_pinned_drain
from tests.support.launch import served

from .conftest import Tally, binary_batch, child_server_pid

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}


def _head(n: int) -> bytes:
    return (
        "POST /v1/samples?timeout=30 HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
    ).encode()


def test_kill_9_with_claims_in_flight_commits_none_of_them(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    args = [
        f"--pin-dir={pin_dir}",
        f"--bpf-object={bpf_object_path}",
        "--ring-size=1M",
        "--drain=external",
        "--no-access-log",
    ]
    acked = Tally()
    with served(args, tmp_path / "first.log") as addr:
        pid = child_server_pid(pin_dir)
        url = f"http://{addr}"
        with httpx.Client(base_url=url, timeout=30) as c:
            for n in range(3):
                samples = [(1, n * 100 + i) for i in range(10)]
                r = c.post("/v1/samples", content=binary_batch(samples), headers=OCTET)
                assert r.status_code == 200
                acked.add_all(samples)
            committed_pos = c.get("/v1/stats").json()["ring"]["producer_pos"]
        host, port = addr.split(":")
        # A body half received into its claimed region, unpublished.
        half = binary_batch([(2, i) for i in range(100)])
        slow = socket.create_connection((host, int(port)))
        slow.sendall(_head(len(half)) + half[:500])
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 10
            while True:
                stats = c.get("/v1/stats").json()
                if stats["producer"]["regions_pending"] == 1:
                    break
                assert time.monotonic() < deadline, "the region was never claimed"
                time.sleep(0.01)
        assert stats["ring"]["producer_pos"] == committed_pos
        assert stats["ring"]["claimed_bytes"] == len(half)
        os.kill(pid, signal.SIGKILL)
        slow.close()
    with served(args, tmp_path / "second.log") as addr:
        open_pinned_drain(pin_dir)
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as c:
            doc = c.get("/v1/stats").json()
            kernel = doc["kernel"]
            kinds = {int(k): (v["samples"], v["value"]) for k, v in kernel["kinds"].items()}
            assert doc["ring"]["recovered_busy"] == 0
            assert kernel["samples"] == acked.total, "a claim was published after the kill"
            assert kinds == {k: (acked.count[k], acked.value[k]) for k in acked.count}
            assert sum(kernel["drain_errors"].values()) == 0
            # The seqs go on after the last acked sample.
            r = c.post("/v1/samples", content=binary_batch([(4, 4)]), headers=OCTET)
            assert json.loads(r.content)["first_seq"] == acked.total
