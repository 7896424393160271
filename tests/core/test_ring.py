"""The ring protocol core, in isolation (no kernel)."""

from __future__ import annotations

import struct

import pytest

from ringbridge.core import ring as core
from ringbridge.errors import ConfigError, InvalidBatchError, RecordTooLargeError, RingCorruptError


@pytest.mark.parametrize(
    ("payload", "size"), [(0, 8), (1, 16), (7, 16), (8, 16), (9, 24), (16, 24), (4089, 4104)]
)
def test_record_size_rounds_header_plus_payload_to_8(payload: int, size: int) -> None:
    assert core.record_size(payload) == size


def test_ring_size_must_be_power_of_two_page_multiple() -> None:
    core.check_ring_size(4096, 4096)
    core.check_ring_size(1 << 20, 4096)
    for bad in (0, 2048, 4096 * 3, 12288, -4096):
        with pytest.raises(ConfigError, match="power of two"):
            core.check_ring_size(bad, 4096)


def test_encode_record_layout() -> None:
    rec = core.encode_record(b"abc")
    assert rec == struct.pack("<II", 3, 0) + b"abc" + b"\0" * 5
    assert core.encode_record(b"") == struct.pack("<II", 0, 0)


def test_encode_batch_equals_concatenated_records() -> None:
    payloads = [b"", b"x", b"12345678", b"y" * 13]
    assert core.encode_batch(payloads) == b"".join(core.encode_record(p) for p in payloads)


def test_validate_batch_counts_and_sizes() -> None:
    payloads = [b"a" * n for n in (0, 1, 8, 100)]
    info = core.validate_batch(core.encode_batch(payloads), 4096)
    assert info.count == 4
    assert info.payload_bytes == 109
    assert info.nbytes == sum(core.record_size(len(p)) for p in payloads)


def test_validate_batch_names_first_bad_record() -> None:
    good = core.encode_record(b"ok")
    bad = bytearray(core.encode_record(b"bad!"))
    bad[3] |= 0x80  # BUSY
    with pytest.raises(InvalidBatchError) as ei:
        core.validate_batch(good + good + bytes(bad) + good, 4096)
    assert ei.value.index == 2
    assert "BUSY" in str(ei.value)


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "empty"),
        (b"\0" * 12, "record 1: truncated header"),
        (struct.pack("<II", 5, 0) + b"abc", "record 0: payload of 5 bytes runs past"),
        (struct.pack("<II", 100, 0), "past the end"),
        (struct.pack("<II", 1, 7) + b"x" + b"\0" * 7, "pad word"),
        (struct.pack("<II", 1, 0) + b"x" + b"\1" + b"\0" * 6, "padding bytes"),
        (struct.pack("<II", 1 << 30, 0), "BUSY or DISCARD"),
    ],
)
def test_validate_batch_rejects(blob: bytes, reason: str) -> None:
    with pytest.raises(InvalidBatchError, match=reason):
        core.validate_batch(blob, 4096)


def test_validate_batch_size_limits_are_413() -> None:
    with pytest.raises(RecordTooLargeError, match="never fit"):
        core.validate_batch(core.encode_batch([b"x" * 3000, b"y" * 3000]), 4096)
    with pytest.raises(RecordTooLargeError) as ei:
        core.validate_batch(core.encode_batch([b"ok", b"z" * 100]), 4096, max_sample_len=64)
    assert ei.value.index == 1


def test_check_payload_len_kernel_limits() -> None:
    big = 64 << 20
    core.check_payload_len(core.MAX_SAMPLE_LEN, big)
    with pytest.raises(RecordTooLargeError, match="16777215"):
        core.check_payload_len(core.MAX_SAMPLE_LEN + 1, big)
    core.check_payload_len(4096 - 8, 4096)
    with pytest.raises(RecordTooLargeError, match="never fit"):
        core.check_payload_len(4096 - 7, 4096)


def test_free_space() -> None:
    assert core.free_space(4096, 0, 0) == 4096
    assert core.free_space(4096, 5000, 1000) == 96


def test_split_batch_keeps_record_boundaries() -> None:
    payloads = [bytes([i]) * (i * 10) for i in range(20)]
    blob = core.encode_batch(payloads)
    chunks = core.split_batch(blob, 256)
    assert b"".join(bytes(c) for c in chunks) == blob
    total = 0
    for c in chunks:
        info = core.validate_batch(c, 1 << 20)
        total += info.count
        assert len(c) <= 256 or info.count == 1
    assert total == 20


def _ring_reader(blob: bytes, size: int) -> core.RecoveryPlan:
    ring = bytearray(size)
    ring[: len(blob)] = blob

    def read(pos: int) -> int:
        return int(struct.unpack_from("<I", ring, pos & (size - 1))[0])

    return core.plan_recovery(read, size, 0, len(blob))


def test_plan_recovery_finds_busy_records() -> None:
    recs = [bytearray(core.encode_record(b"x" * n)) for n in (3, 10, 0, 5)]
    recs[1][3] |= 0x80
    recs[3][3] |= 0x80
    plan = _ring_reader(b"".join(recs), 4096)
    assert plan.records == 4
    assert plan.busy_offsets == (16, 48)


def test_plan_recovery_refuses_unparseable_region() -> None:
    blob = struct.pack("<II", 64, 0) + b"\0" * 8
    with pytest.raises(RingCorruptError, match="cannot be repaired"):
        _ring_reader(blob, 4096)
    with pytest.raises(RingCorruptError, match="inconsistent"):
        core.plan_recovery(lambda pos: 0, 4096, 0, 12)


def test_header_decode() -> None:
    h = core.Header.decode(5 | core.BUSY_BIT | core.DISCARD_BIT)
    assert (h.length, h.busy, h.discard) == (5, True, True)
    assert core.Header.decode(7) == core.Header(7, False, False)


def test_kernel_view_problem_follows_the_kernels_checks() -> None:
    from ringbridge.core.ring import BUSY_BIT, DISCARD_BIT, kernel_view_problem

    size = 4096
    assert kernel_view_problem(0, 0, size, None) is None  # empty
    assert kernel_view_problem(64, 64, size, 123) is None  # empty: the head is not read
    assert kernel_view_problem(16, 0, size, 8) is None  # one 8-byte record, whole
    assert "multiple of 8" in str(kernel_view_problem(20, 0, size, 8))
    assert "apart" in str(kernel_view_problem(size + 8, 0, size, 8))
    assert "apart" in str(kernel_view_problem(0, 8, size, None))  # producer behind consumer
    assert "past producer_pos" in str(kernel_view_problem(16, 0, size, 16))
    # BUSY and DISCARD records are measured too (the kernel checks first).
    assert "past producer_pos" in str(kernel_view_problem(16, 0, size, 16 | BUSY_BIT))
    assert kernel_view_problem(16, 0, size, 8 | DISCARD_BIT) is None
    assert kernel_view_problem(16, 0, size, 8 | BUSY_BIT) is None
