"""The public library's contract, on rings bpftool made: how a ring is opened
(fd, pin, loaded object; the wrong kind of map refused), samples as context
managers, validated batches, typed samples, statistics and close."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbridge.core import ring as core
from ringbridge.kernel import libbpf as lb
from ringbridge.ring import (
    MAX_SAMPLE_LEN,
    EncodedBatch,
    InvalidBatchError,
    MapTypeError,
    RecordTooLargeError,
    RingClosedError,
    RingFullError,
    SampleError,
    UserRingBuffer,
    encode_batch,
)
from tests.support.bpftool_ring import SUCCESS_OBJ, BpftoolRing, bpftool
from tests.support.byo import TWO_RINGS_OBJ, ensure_built

pytestmark = pytest.mark.kernel

SAMPLE = struct.Struct("<IIQ")


@pytest.fixture
def br() -> Iterator[BpftoolRing]:
    with BpftoolRing(4096) as ring:
        yield ring


def sample(kind: int, value: int) -> bytes:
    return SAMPLE.pack(kind, 0, value)


# -- opening -------------------------------------------------------------------


def test_opens_from_an_fd_a_pin_and_a_loaded_object(br: BpftoolRing) -> None:
    with lb.obj_get(br.ring_pin) as fd, UserRingBuffer(fd.fd) as rb:
        # The ring keeps an fd of its own: closing the caller's changes nothing.
        fd.close()
        rb.commit_samples([sample(1, 1)])
        assert (rb.size, rb.name) == (4096, "user_ringbuf")
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        assert str(br.ring_pin) in rb.what
        rb.commit_samples([sample(1, 2)])
    assert br.drain() == 2
    ensure_built()
    with lb.BpfObject.open(TWO_RINGS_OBJ) as obj:
        obj.load()
        with UserRingBuffer.from_object(obj, "ring_b") as rb:
            assert (rb.name, rb.size) == ("ring_b", 64 * 1024)
            assert "two_rings.bpf.o" in rb.what
            rb.commit_samples([b"x" * 8])
            assert obj.program("drain_a").test_run() == 0  # ring_a is another ring


def test_a_map_of_another_type_is_refused_naming_it(tmp_path: Path) -> None:
    root = Path("/sys/fs/bpf") / f"ringbridge-test-types-{tmp_path.name[-12:]}"
    root.mkdir()
    try:
        bpftool("map", "create", str(root / "krb"), "type", "ringbuf", "key", "0", "value",
                "0", "entries", "4096", "name", "kernel_ring")  # fmt: skip
        bpftool("map", "create", str(root / "arr"), "type", "array", "key", "4", "value",
                "8", "entries", "1", "name", "an_array")  # fmt: skip
        with pytest.raises(
            MapTypeError,
            match=r"map 'kernel_ring' \(id \d+\) is a BPF_MAP_TYPE_RINGBUF, "
            "not a BPF_MAP_TYPE_USER_RINGBUF",
        ):
            UserRingBuffer.from_pin(root / "krb")
        with pytest.raises(MapTypeError, match=r"'an_array' .* BPF_MAP_TYPE_ARRAY"):
            UserRingBuffer.from_pin(root / "arr")
        with BpftoolRing(4096, root / "obj") as other:
            prog = other.root / "progs" / "test_user_ringbuf_drain"
            with pytest.raises(MapTypeError, match="not a BPF map"):
                UserRingBuffer.from_pin(prog)
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=True)


# -- samples -------------------------------------------------------------------


def test_a_sample_is_a_context_manager_submit_on_exit_discard_on_error(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        with rb.reserve(16) as view:
            assert isinstance(view, memoryview) and len(view) == 16 and not view.readonly
            struct.pack_into("<IIQ", view, 0, 2, 0, 20)
        with pytest.raises(ZeroDivisionError), rb.reserve(16) as view:
            view[:] = sample(2, 1000)
            _ = 1 / 0  # the sample is discarded, the error goes on
        s = rb.reserve(16)
        with s as view:
            view[:] = sample(2, 7)
            s.discard()  # finished inside the block: exit leaves it alone
        assert s.done
        with pytest.raises(InvalidBatchError, match="already finished"):
            s.submit()
        with pytest.raises(ValueError):
            s.view[0] = 1  # released: nothing writes into the ring after the fact
        stats = rb.statistics()
        assert (stats.records_written, stats.records_discarded) == (1, 2)
        assert br.drain() == 1
    c = br.counters()
    assert (c.kind_count[2], c.kind_value[2]) == (1, 20)


def test_records_reserved_later_wait_behind_a_busy_one(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        first = rb.reserve(16)
        with rb.reserve(16) as view:
            view[:] = sample(3, 2)
        assert br.drain() == 0  # head-of-line: BUSY stops the kernel
        first.view[:] = sample(3, 1)
        first.submit()
        assert br.drain() == 2
    assert br.counters().kind_value[3] == 3


# -- batches ------------------------------------------------------------------------


def test_raw_batches_are_validated_and_nothing_bad_is_published(br: BpftoolRing) -> None:
    good = core.encode_batch([sample(4, 1), sample(4, 2)])
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        busy = struct.pack("<II", 16 | core.BUSY_BIT, 0) + bytes(16)
        for bad, error, match in (
            (good + busy, InvalidBatchError, "record 2: BUSY or DISCARD"),
            (good[:-3], InvalidBatchError, "runs past the end"),
            (b"", InvalidBatchError, "empty"),
            (struct.pack("<II", 5000, 0) + bytes(5000), RecordTooLargeError, "never fit"),
        ):
            with pytest.raises(error, match=match):
                rb.commit_batch(bad)
            assert rb.producer_pos == 0  # nothing of it written
        commit = rb.commit_batch(good)
        assert (commit.start, commit.end, commit.count) == (0, 48, 2)
        # A batch validated where it was made goes in as it is.
        batch = encode_batch([sample(4, 3)])
        assert isinstance(batch, EncodedBatch) and batch.count == 1
        assert rb.commit_batch(batch).end == 72
        with pytest.raises(RecordTooLargeError, match=r"record 1: .*16777215"):
            encode_batch([b"", bytes(MAX_SAMPLE_LEN + 1)])
        assert br.drain() == 3
    assert br.counters().kind_value[4] == 6


def test_blocking_and_async_batch_commits_wait_for_room(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin, recheck_interval=30.0) as rb:
        rb.commit_samples([bytes(4000)])
        batch = encode_batch([sample(5, 1)] * 10)
        with pytest.raises(RingFullError):
            rb.commit_batch(batch)
        t = threading.Timer(0.2, br.drain)
        t.start()
        t0 = time.monotonic()
        rb.commit_batch_blocking(batch, timeout=10)
        assert 0.15 < time.monotonic() - t0 < 5
        t.join()
        assert br.drain() == 10
        rb.wait_consumed_blocking(timeout=1)  # all consumed: returns at once
        rb.commit_samples([bytes(4000)])

        async def go() -> None:
            timer = threading.Timer(0.2, br.drain)
            timer.start()
            await rb.commit_batch_async(batch, timeout=10)
            timer.join()
            with pytest.raises(TimeoutError, match="consumer_pos"):
                await rb.wait_consumed_async(timeout=0.2)
            timer = threading.Timer(0.1, br.drain)
            timer.start()
            await rb.wait_consumed_async(timeout=10)
            timer.join()

        asyncio.run(go())
        assert rb.statistics().pending_bytes == 0
    assert br.counters().kind_count[5] == 20


# -- typed samples ----------------------------------------------------------------------


def test_typed_samples_go_through_the_schema_layer(br: BpftoolRing) -> None:
    with UserRingBuffer.from_pin(br.ring_pin) as rb:
        # The ring has no BTF: that of the program using it (loaded by bpftool) serves.
        typed = rb.typed(None, "sample")
        assert typed.sample_size == 16
        typed.send({"kind": 6, "value": 5})
        typed.send_many([{"kind": 6, "value": 1}, {"kind": 6}])
        from_file = rb.typed(SUCCESS_OBJ, "struct sample")
        assert from_file.encode({"kind": 6, "value": 9}) == sample(6, 9)
        assert from_file.decode(sample(6, 9)) == {"kind": 6, "flags": 0, "value": 9}
        with pytest.raises(SampleError, match=r"samples\[1\]\.kind"):
            typed.send_many([{"kind": 1}, {"kind": -1}])
        with pytest.raises(SampleError, match="nope"):
            typed.send({"nope": 1})
        assert rb.statistics().records_written == 3  # nothing of the refused ones
        assert br.drain() == 3
    c = br.counters()
    assert (c.kind_count[6], c.kind_value[6]) == (3, 6)


# -- statistics and close --------------------------------------------------------------


def test_statistics_and_an_idempotent_close(br: BpftoolRing) -> None:
    rb = UserRingBuffer.from_pin(br.ring_pin)
    rb.commit_samples([sample(1, 1)] * 3)
    held = rb.reserve(8)
    s = rb.statistics()
    assert (s.size, s.producer_pos, s.consumer_pos) == (4096, 88, 0)
    assert (s.free_bytes, s.pending_bytes, s.outstanding_reservations) == (4008, 88, 1)
    assert br.drain() == 3
    assert rb.statistics().pending_bytes == 16  # the BUSY record, not consumed
    rb.close()
    rb.close()
    assert rb.closed and held.done
    for call in (lambda: rb.reserve(8), rb.statistics, lambda: rb.commit_samples([b""])):
        with pytest.raises(RingClosedError, match="closed"):
            call()
    # The next producer recovers what was left BUSY.
    with UserRingBuffer.from_pin(br.ring_pin) as again:
        assert again.recovered_busy == 1
        assert br.drain() == 0 and again.pending_bytes() == 0


# -- a writer that takes no lock -----------------------------------------------------


class _Raw:
    """A second writer of the ring that takes no lock: an mmap of its own."""

    def __init__(self, pin: Path, size: int) -> None:
        import mmap

        self.size = size
        with lb.obj_get(pin) as fd:
            self.page = mmap.PAGESIZE
            self.map = mmap.mmap(fd.fd, self.page + 2 * size, mmap.MAP_SHARED, offset=self.page)

    def publish(self, pos: int) -> None:
        struct.pack_into("<Q", self.map, 0, pos)

    def header(self, pos: int, word: int) -> None:
        struct.pack_into("<I", self.map, self.page + (pos & (self.size - 1)), word)

    def close(self) -> None:
        self.map.close()


def test_a_foreign_writer_fences_the_ring(br: BpftoolRing) -> None:
    from ringbridge.ring import ForeignWriterError

    raw = _Raw(br.ring_pin, br.size)
    try:
        with UserRingBuffer.from_pin(br.ring_pin) as rb:
            rb.commit_samples([sample(7, 1)])
            rb.verify()  # ours only: fine
            before = rb.fault
            assert before is None
            # Someone else appends a record and publishes it.
            raw.header(24, 16)
            raw.publish(48)
            with pytest.raises(ForeignWriterError, match="producer_pos is 48, but this producer"):
                rb.commit_samples([sample(7, 2)])
            # Fenced for good: nothing is written any more, whatever is tried.
            for call in (lambda: rb.reserve(8), lambda: rb.commit_samples([b""]), rb.verify):
                with pytest.raises(ForeignWriterError, match="stopped committing"):
                    call()
            assert rb.fault is not None and rb.producer_pos == 24
            assert rb.statistics().producer_pos == 24  # statistics still answer
    finally:
        raw.close()


def test_records_the_producer_did_not_write_are_caught_by_verify(br: BpftoolRing) -> None:
    from ringbridge.ring import ForeignWriterError

    raw = _Raw(br.ring_pin, br.size)
    try:
        with UserRingBuffer.from_pin(br.ring_pin) as rb:
            held = rb.reserve(16)  # BUSY, ours: fine
            rb.commit_samples([sample(8, 1), sample(8, 2)])
            rb.verify()
            raw.header(24, 16 | core.BUSY_BIT)  # BUSY where we hold no reservation
            with pytest.raises(ForeignWriterError, match="position 24 is BUSY"):
                rb.verify()
            held.discard()
        with UserRingBuffer.from_pin(br.ring_pin, recover=False) as rb:
            raw.header(24, 4000)  # a length past producer_pos
            with pytest.raises(ForeignWriterError, match="claims 4000 bytes"):
                rb.verify()
        with UserRingBuffer.from_pin(br.ring_pin, recover=False) as rb:
            raw.publish(rb.producer_pos - 8)  # moved back: consumer_pos now past it
            with pytest.raises(ForeignWriterError):
                rb.verify()
    finally:
        raw.close()
