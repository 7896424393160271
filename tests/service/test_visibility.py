"""What goes wrong under a serving service is noticed, logged once and on /readyz (#19, item 11).

A real server and the real kernel; the harm is done the way a stranger
would do it: through another mapping of the pinned ring (a foreign writer),
or by removing the pins while the service runs.
"""

from __future__ import annotations

import logging
import mmap
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ringbridge.errors import KernelError
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.pins import RING_MAP, remove_pins

from .conftest import SMALL_RING, Server, ServerFactory, wait_until

pytestmark = pytest.mark.kernel

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
PAGE = mmap.PAGESIZE


@contextmanager
def foreign_mapping(pin_dir: Path, ring_size: int) -> Iterator[tuple[mmap.mmap, mmap.mmap]]:
    """(consumer page, producer page + data) of the pinned ring, as another process maps it."""
    with lb.obj_get(pin_dir / RING_MAP) as fd:
        cons = mmap.mmap(fd.fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
        prod = mmap.mmap(fd.fd, PAGE + 2 * ring_size, mmap.MAP_SHARED, offset=PAGE)
    try:
        yield cons, prod
    finally:
        prod.close()
        cons.close()


def _corrupt_records(srv: Server, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("the ring is corrupt")]


def _post(c: httpx.Client, n: int = 10) -> None:
    r = c.post("/v1/samples", json={"samples": [{"kind": 3, "value": 1}] * n})
    assert r.status_code == 200, r.text


def test_a_misaligned_producer_pos_written_by_someone_else_fails_readyz(
    make_server: ServerFactory, pin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ringbridge")
    srv = make_server(ring_size=SMALL_RING, drain="external")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        _post(c)
        assert c.get("/readyz").status_code == 200
        with foreign_mapping(pin_dir, SMALL_RING) as (_, prod):
            (pos,) = _U64.unpack_from(prod, 0)
            _U64.pack_into(prod, 0, pos + 4)
            try:
                for _ in range(3):
                    r = c.get("/readyz")
                    assert r.status_code == 503, r.text
                    checks = r.json()["checks"]
                    assert checks["ring_consistent"] is False
                    assert "not a multiple of 8" in checks["ring_problem"]
                    assert checks["kernel_producer_pos"] == pos + 4
                # Logged once, with the way out, however often it is seen.
                records = _corrupt_records(srv, caplog)
                assert len(records) == 1, [r.getMessage() for r in records]
                assert "ringbridge unpin" in str(records[0].__dict__.get("fix"))
                assert "ringbridge_ready 0.0" in c.get("/metrics").text
                # The writer watch (#19 item 1) sees the stranger too, within its period.
                wait_until(
                    lambda: c.get("/readyz").json()["checks"]["single_producer"] is False,
                    5.0,
                    "the foreign writer to be seen",
                )
            finally:
                _U64.pack_into(prod, 0, pos)
        # Put back, the ring reads consistent again; but a ring someone else wrote
        # is not committed to any more (#19 item 1): not ready until a restart.
        r = c.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["ring_consistent"] is True
        assert r.json()["checks"]["single_producer"] is False


def test_a_record_someone_else_published_is_noticed_without_a_probe(
    make_server: ServerFactory, pin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ringbridge")
    srv = make_server(ring_size=SMALL_RING, drain="external")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        _post(c)
        srv.drain()  # empty: the next record the kernel reads is the stranger's
        with foreign_mapping(pin_dir, SMALL_RING) as (cons_page, prod):
            (pos,) = _U64.unpack_from(prod, 0)
            (cons,) = _U64.unpack_from(cons_page, 0)
            assert cons == pos
            at = PAGE + (pos & (SMALL_RING - 1))
            # A header that claims 4096 bytes, published as 8.
            _U32.pack_into(prod, at, 4096)
            _U64.pack_into(prod, 0, pos + 8)
            try:
                # The periodic check logs it: nobody asks /readyz.
                wait_until(lambda: bool(_corrupt_records(srv, caplog)), 5.0, "the log line")
                assert "past producer_pos" in str(_corrupt_records(srv, caplog)[0].__dict__)
                assert srv.counters().drain_errors.get("EINVAL", 0) == 0  # nothing drained yet
                r = c.get("/readyz")
                assert r.status_code == 503 and r.json()["checks"]["ring_consistent"] is False
                # What the kernel says of it: EINVAL, on every drain.
                with pytest.raises(KernelError, match="EINVAL"):
                    srv.drain()
                assert srv.counters().drain_errors["EINVAL"] >= 1
            finally:
                _U64.pack_into(prod, 0, pos)


def test_pins_removed_while_serving_are_noticed(
    server: Server, pin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ringbridge")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        _post(c)
        assert c.get("/readyz").json()["checks"]["pins_intact"] is True
        removed = remove_pins(pin_dir)
        assert pin_dir in removed

        def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage().startswith("pins removed")]

        wait_until(lambda: bool(logged()), 5.0, "the log line")
        r = c.get("/readyz")
        assert r.status_code == 503, r.text
        checks = r.json()["checks"]
        assert checks["pins_intact"] is False
        assert str(pin_dir / RING_MAP) in checks["pins_missing"]
        assert str(pin_dir) in checks["pins_missing"]
        # The service goes on through its fds (it is not ready: a restart
        # would lose the seqs and counters), and says so once.
        _post(c)
        time.sleep(1.5)
        c.get("/readyz")
        assert len(logged()) == 1
        assert "seq 0" in logged()[0].getMessage()
