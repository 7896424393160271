"""One producer per ring, for real: real ``ringbridge serve`` processes, the
library, and a raw writer of our own (issue #19, item 1).

- Two services reaching one ring by two paths (``--pin-dir X``, then
  ``--ring-pin X/ringbridge_ring --pin-dir Y``): the second is refused,
  naming the first's pid (the lock is the ring's, keyed by its map id).
- A library producer and a service on one ring: whichever comes second is
  refused.
- A writer that takes no lock at all (a second mmap of the ring, written by
  hand): the service notices -- ``producer_pos`` moved under it, or a pending
  record it did not write -- stops committing, fails ``/healthz`` and
  ``/readyz`` with the cause and the way to recover, and logs it once.

Only what the kernel and the processes show is used here (no import of the
library at module level), so the file runs against older code too.
"""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ringbridge.kernel import libbpf as lb
from tests.support.launch import REPO, THIS_PYTHON, spawned

pytestmark = pytest.mark.kernel

RING = 1 << 20
PAGE = mmap.PAGESIZE
SAMPLE = struct.Struct("<IIQ")
OCTET = {"Content-Type": "application/octet-stream"}


def _env() -> dict[str, str]:
    drop = ("RINGBRIDGE_TOKEN", "RINGBRIDGE_URL", "RINGBRIDGE_PIN_DIR")
    return {k: v for k, v in os.environ.items() if k not in drop}


@contextmanager
def serve(log: Path, *args: str) -> Iterator[tuple[str, int]]:
    """``ringbridge serve`` in a child process; yields (host:port, pid)."""
    cmd = [*THIS_PYTHON, "serve", "--port=0", f"--ring-size={RING}", *args]
    with spawned(cmd, log, cwd=REPO, env=_env(), start_timeout=30) as (addr, pid):
        yield addr, pid


def refused_start(*args: str) -> subprocess.CompletedProcess[str]:
    """``ringbridge serve ARGS`` expected to refuse to start (a started one times out)."""
    return subprocess.run(
        [*THIS_PYTHON, "serve", "--port=0", f"--ring-size={RING}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=_env(),
    )


def records(*samples: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<II", 16, 0) + SAMPLE.pack(k, 0, v) for k, v in samples)


def post(addr: str, *samples: tuple[int, int]) -> httpx.Response:
    return httpx.post(
        f"http://{addr}/v1/samples", content=records(*samples), headers=OCTET, timeout=10
    )


def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kernel_samples(addr: str) -> int:
    return int(httpx.get(f"http://{addr}/v1/stats", timeout=5).json()["kernel"]["samples"])


class RawWriter:
    """A second writer of the ring that takes no lock: our own mmap of its pin."""

    def __init__(self, pin: Path) -> None:
        with lb.obj_get(pin) as fd:
            self.size = lb.map_info(fd).max_entries
            self.cons = mmap.mmap(fd.fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
            self.prod = mmap.mmap(fd.fd, PAGE + 2 * self.size, mmap.MAP_SHARED, offset=PAGE)

    @property
    def producer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self.prod, 0)[0])

    @property
    def consumer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self.cons, 0)[0])

    def append(self, kind: int, value: int) -> None:
        """Writes one whole record at producer_pos and publishes it (x86: ordered)."""
        pos = self.producer_pos
        rec = records((kind, value))
        off = PAGE + (pos & (self.size - 1))
        self.prod[off : off + len(rec)] = rec
        struct.pack_into("<Q", self.prod, 0, pos + len(rec))

    def set_header(self, pos: int, word: int) -> None:
        struct.pack_into("<I", self.prod, PAGE + (pos & (self.size - 1)), word)

    def close(self) -> None:
        self.prod.close()
        self.cons.close()


def test_a_second_serve_reaching_the_ring_by_another_path_is_refused(
    pin_dir: Path, tmp_path: Path
) -> None:
    ring = pin_dir / "ringbridge_ring"
    other = pin_dir.parent / "other"
    with serve(tmp_path / "a.log", f"--pin-dir={pin_dir}") as (addr, pid):
        r = refused_start(f"--ring-pin={ring}", f"--pin-dir={other}")
        assert r.returncode == 3, r.stderr
        assert 'msg="startup failed"' in r.stderr
        assert "another ringbridge producer holds this ring" in r.stderr
        assert f"pid {pid}" in r.stderr  # the holder, named
        # The first one goes on alone: everything it acks reaches the kernel.
        for i in range(20):
            assert post(addr, *[(3, i)] * 50).status_code == 200
        until(lambda: kernel_samples(addr) == 1000, "the kernel to consume 1000 samples")
        health = httpx.get(f"http://{addr}/healthz", timeout=5)
        assert health.status_code == 200, health.text
    # With the first one gone, the lock went with it.
    with serve(tmp_path / "b.log", f"--ring-pin={ring}", f"--pin-dir={other}") as (addr, _):
        assert post(addr, (3, 1)).status_code == 200


def test_a_library_producer_and_a_serve_on_one_ring_the_second_is_refused(
    pin_dir: Path, tmp_path: Path
) -> None:
    from ringbridge.ring import ProducerLockedError, UserRingBuffer

    ring = pin_dir / "ringbridge_ring"
    with serve(tmp_path / "a.log", f"--pin-dir={pin_dir}") as (addr, pid):
        with pytest.raises(ProducerLockedError, match=f"pid {pid}"):
            UserRingBuffer.from_pin(ring)
        assert post(addr, (4, 1)).status_code == 200
    # The library first (the service stopped, its pins stay): the service is refused.
    with UserRingBuffer.from_pin(ring) as rb:
        r = refused_start(f"--pin-dir={pin_dir}")
        assert r.returncode == 3, r.stderr
        assert "another ringbridge producer holds this ring" in r.stderr
        assert f"pid {os.getpid()}" in r.stderr
        rb.commit_samples([SAMPLE.pack(4, 0, 10)] * 3)
    # The library let go: the service starts, and what the library committed lands.
    with serve(tmp_path / "b.log", f"--pin-dir={pin_dir}") as (addr, _):
        until(lambda: kernel_samples(addr) == 4, "the kernel to consume 4 samples")


FAULT_SERIES = 'ringbridge_ring_fault{cause="foreign_writer"}'


def _metric(addr: str, series: str) -> float:
    for line in httpx.get(f"http://{addr}/metrics", timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} is not on /metrics")


def _fault_reported(addr: str, *expected: str) -> dict[str, object]:
    """Waits for /healthz to fail; checks /healthz, /readyz and /metrics carry the cause."""
    until(
        lambda: httpx.get(f"http://{addr}/healthz", timeout=5).status_code == 503,
        "/healthz to fail",
    )
    health: dict[str, object] = httpx.get(f"http://{addr}/healthz", timeout=5).json()
    reason = str(health["reason"])
    for text in expected:
        assert text in reason, reason
    ready = httpx.get(f"http://{addr}/readyz", timeout=5)
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["single_producer"] is False and checks["ring_fault"] == reason
    # What the RingbridgeForeignWriter alert reads.
    assert _metric(addr, FAULT_SERIES) == 1.0
    assert _metric(addr, "ringbridge_ready") == 0.0
    return health


def test_a_foreign_writer_moving_producer_pos_stops_the_service(
    pin_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with serve(log, f"--pin-dir={pin_dir}") as (addr, _):
        assert post(addr, (5, 1), (5, 2)).status_code == 200
        assert _metric(addr, FAULT_SERIES) == 0.0  # there before anything went wrong
        raw = RawWriter(pin_dir / "ringbridge_ring")
        try:
            before = raw.producer_pos
            raw.append(99, 7)  # a record the service did not write
            _fault_reported(
                addr,
                f"producer_pos is {before + 24}, but this producer last published {before}",
                "To recover: stop the other writer",
                f"ringbridge unpin --pin-dir {pin_dir}",
            )
            # Nothing commits any more: refused at once, with the cause.
            r = post(addr, (5, 3))
            assert r.status_code == 500 and r.json()["error"]["code"] == "foreign_writer"
            assert raw.producer_pos == before + 24  # the service wrote nothing more
            for _ in range(5):
                httpx.get(f"http://{addr}/readyz", timeout=5)
        finally:
            raw.close()
    # Logged once, whatever the number of probes and refused batches.
    assert log.read_text().count("foreign writer on the ring") == 1


def test_a_pending_record_the_service_did_not_write_is_caught(
    pin_dir: Path, tmp_path: Path
) -> None:
    # Nothing drains (external drain, none running): committed records stay pending.
    with serve(tmp_path / "serve.log", f"--pin-dir={pin_dir}", "--drain=external") as (addr, _):
        assert post(addr, (6, 1), (6, 2)).status_code == 200
        raw = RawWriter(pin_dir / "ringbridge_ring")
        try:
            assert raw.producer_pos - raw.consumer_pos == 48
            # Its header rewritten in place: producer_pos never moves.
            raw.set_header(raw.consumer_pos, 4000)
            _fault_reported(addr, "claims 4000 bytes", "another writer wrote it")
        finally:
            raw.close()
