"""The fleet cursor: the exactly-once rule (pure), and its record in a pinned map (kernel)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ringbridge.core.ring import encode_batch
from ringbridge.errors import KernelError, PinError
from ringbridge.fleet.cursor import (
    CURSOR_MAP_NAME,
    Cursor,
    CursorRecord,
    PinnedCursorStore,
    resolve,
    stream_identity,
)
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.statemap import PinnedRecord
from ringbridge.producer.task import Producer
from ringbridge.ring import UserRingBuffer

from ..service.conftest import SMALL_RING, sample
from .conftest import Batch


class MemoryStore:
    def __init__(self, record: CursorRecord | None = None) -> None:
        self.record = record
        self.writes: list[CursorRecord] = []

    def load_cursor(self) -> CursorRecord | None:
        return self.record

    def store_cursor(self, record: CursorRecord) -> None:
        self.record = record
        self.writes.append(record)


STAMPED = CursorRecord(
    stream_id=9, ring_id=4, seq=17, end_pos=4096, prev_seq=12, committed=17, prev_committed=11
)


@pytest.mark.parametrize(
    ("record", "ring_id", "producer_pos", "expected"),
    [
        (None, 4, 0, (0, 0, None)),
        # The commit of 17 was published: the node is at 17.
        (STAMPED, 4, 4096, (17, 17, None)),
        (STAMPED, 4, 9000, (17, 17, None)),  # and later commits (HTTP) do not change that
        # Killed between the record and the publish: 17 is to be committed.
        (STAMPED, 4, 4095, (12, 11, 17)),
        # Another ring (unpinned and made again): nothing of 17 is in it.
        (STAMPED, 5, 9000, (12, 11, 17)),
        # Resolved records need no commit.
        (CursorRecord(9, 4, 20, 0, 20, 17, 17), 5, 0, (20, 17, None)),
    ],
)
def test_the_rule(
    record: CursorRecord | None,
    ring_id: int,
    producer_pos: int,
    expected: tuple[int, int, int | None],
) -> None:
    r = resolve(record, ring_id, producer_pos)
    assert (r.seq, r.committed, r.undone) == expected


def test_record_round_trip_and_foreign_values() -> None:
    assert CursorRecord.unpack(STAMPED.pack()) == STAMPED
    assert CursorRecord.unpack(bytes(64)) is None
    with pytest.raises(ValueError):
        CursorRecord.unpack(b"\x01" + bytes(63))
    assert stream_identity("FLEET", "2026-01-01") != stream_identity("FLEET", "2026-01-02")


def test_open_resolves_and_writes_back_before_anything_commits() -> None:
    store = MemoryStore(STAMPED)
    cursor = Cursor.open(store, ring_id=4, producer_pos=100)
    assert (cursor.seq, cursor.committed, cursor.undone) == (12, 11, 17)
    assert store.record == CursorRecord(9, 4, 12, 0, 12, 11, 11)
    # A later commit of anything (HTTP) cannot make 17 look committed now.
    assert resolve(store.record, 4, 10**9).seq == 12
    cursor.stamp(17, 200)
    assert store.record == CursorRecord(9, 4, 17, 200, 12, 17, 11)
    cursor.committed_now(17)
    cursor.terminated(18)
    assert store.record == CursorRecord(9, 4, 18, 0, 18, 17, 17)
    with pytest.raises(ValueError):
        cursor.stamp(18, 300)


def test_a_cursor_of_another_stream_incarnation_starts_over() -> None:
    store = MemoryStore(CursorRecord(9, 4, 40, 0, 40, 40, 40))
    cursor = Cursor.open(store, 4, 0)
    assert cursor.bind_stream(9) and cursor.seq == 40
    assert not cursor.bind_stream(10)
    assert (cursor.seq, cursor.committed, store.record.stream_id if store.record else 0) == (
        0,
        0,
        10,
    )


@pytest.mark.kernel
def test_the_pinned_store_survives_the_process_and_refuses_a_foreign_pin(pin_dir: Path) -> None:
    path = pin_dir.parent / "fleet" / "cursor"
    store = PinnedCursorStore.open(path)
    assert store.load_cursor() is None
    store.store_cursor(STAMPED)
    store.close()
    again = PinnedCursorStore.open(path)  # as a restarted process would
    assert again.load_cursor() == STAMPED
    again.close()
    other = pin_dir.parent / "fleet" / "other"
    fd = lb.map_create(lb.BPF_MAP_TYPE_ARRAY, "someones_map", 4, 64, 1)
    lb.obj_pin(fd, other)
    fd.close()
    with pytest.raises(PinError, match="not ringbridge's 'rb_fleet_cursor' record"):
        PinnedCursorStore.open(other)
    rec = PinnedRecord.open_or_create(pin_dir.parent / "fleet" / "cursor", CURSOR_MAP_NAME, 64)
    assert not rec.created and rec.map_id > 0
    with pytest.raises(ValueError):
        rec.store(b"short")
    rec.close()


@pytest.mark.kernel
async def test_the_producer_stamps_the_commits_end_before_publishing_it(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    with (
        load_default(bpf_object_path, pin_dir, SMALL_RING) as loaded,
        UserRingBuffer(loaded.ring_fd) as ring,
    ):
        loaded.disarm_timer()
        store = PinnedCursorStore.open(pin_dir.parent / "fleet" / "cursor")
        ring_id = lb.map_info(loaded.ring_fd).id
        cursor = Cursor.open(store, ring_id, ring.producer_pos)
        seen: list[tuple[int, int]] = []

        def stamp(end: int) -> None:
            # Called before the publish: the ring does not show it yet.
            seen.append((end, ring.producer_pos))
            cursor.stamp(5, end)

        p = Producer(ring, admission_bytes=SMALL_RING)
        p.start()
        records = encode_batch([sample(1, 1), sample(1, 2)])
        b = Batch(records, 2, len(records), 32)
        ack = await p.submit(b, p.admit(b.nbytes, 5), before_commit=stamp)
        assert seen == [(ack.ring_end_pos, 0)]
        rec = store.load_cursor()
        assert rec is not None and (rec.seq, rec.end_pos, rec.ring_id) == (5, 48, ring_id)
        assert resolve(rec, ring_id, ring.producer_pos).seq == 5

        def failing(end: int) -> None:
            raise KernelError("bpf_map_update_elem", CURSOR_MAP_NAME, 1)

        with pytest.raises(KernelError):
            await p.submit(b, p.admit(b.nbytes, 5), before_commit=failing)
        assert ring.producer_pos == 48  # a failed stamp commits nothing
        await asyncio.wait_for(p.stop(1), 5)
        store.close()
