"""``--drop-privileges``: the service runs on its fds alone, with no capability.

A real ``ringbridge serve`` child process (capabilities are per process and
thread, so not the in-process test server): after start-up its capability
sets are empty and no_new_privs is set, yet batches still reach the kernel
(kick drains through BPF_PROG_TEST_RUN on the held fd), kernel counters are
still read for /metrics, and shutdown still disarms and frees cleanly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.privileges import capability_sets
from tests.support.launch import served

pytestmark = pytest.mark.kernel


def _server_pid(log: Path) -> int:
    m = re.search(r"Started server process \[(\d+)\]", log.read_text())
    assert m is not None, log.read_text()
    return int(m.group(1))


def test_service_works_after_dropping_every_capability(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    args = [f"--pin-dir={pin_dir}", "--ring-size=1M", "--drain=kick", "--drop-privileges"]
    with served(args, log) as addr:
        caps = capability_sets(Path(f"/proc/{_server_pid(log)}/status"))
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == caps["CapAmb"] == 0
        assert caps["CapBnd"] == 0  # root here holds CAP_SETPCAP, so it goes too
        assert caps["NoNewPrivs"] == 1
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as c:
            r = c.post("/v1/samples", json={"samples": [{"kind": 6, "value": 66}] * 10})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                kinds = c.get("/v1/stats").json()["kernel"]["kinds"]
                if kinds.get("6", {}).get("samples") == 10:
                    break
                time.sleep(0.05)
            assert kinds["6"] == {"samples": 10, "value": 660}
            assert 'ringbridge_kernel_kind_value_total{kind="6"} 660.0' in c.get("/metrics").text
    text = log.read_text()
    assert "dropped all capabilities" in text and "ringbridge stopped" in text
    # The pins it made with its privileges are intact for the next start.
    with load_default(bpf_object_path, pin_dir, 1 << 20) as lr:
        assert lr.reused and lr.read_counters().kind_value[6] == 660


def test_our_own_capabilities_are_readable() -> None:
    caps = capability_sets()
    assert {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"} <= set(caps)


def test_drop_refuses_while_other_threads_exist() -> None:
    import threading

    from ringbridge.errors import ConfigError
    from ringbridge.kernel.privileges import drop_all_capabilities

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        with pytest.raises(ConfigError, match="capabilities are per thread"):
            drop_all_capabilities()
    finally:
        stop.set()
        t.join()
    assert capability_sets()["CapEff"] != 0  # nothing was dropped here
