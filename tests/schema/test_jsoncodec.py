"""The sample codec: JSON batches and frames -> ring records, binary batches.

The default layout comes from the built BPF object's BTF (opening an object
needs no privileges). Other layouts are described by ctypes structures, whose
offsets and bytes are the platform C compiler's: an oracle independent of the
codec's own struct formats.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from ringbridge.core import ring as core
from ringbridge.errors import (
    InvalidBatchError,
    RecordTooLargeError,
    RingbridgeError,
    SampleError,
)
from ringbridge.nativelib import VALIDATE
from ringbridge.schema import EncodedBatch, SampleCodec, frame_id, validate_binary_batch
from ringbridge.schema import binary as codec_mod

REPO = Path(__file__).resolve().parents[2]
RING = 1 << 20
LIMIT = 4096
SAMPLE = struct.Struct("<IIQ")


def body(*samples: Any, **top: Any) -> bytes:
    return json.dumps({"samples": list(samples), **top}).encode()


def decode(c: SampleCodec, b: bytes | str, ring: int = RING, limit: int = LIMIT) -> EncodedBatch:
    return c.decode_json_batch(b, ring_size=ring, max_sample_bytes=limit)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- default struct ringbridge_sample ----------------------------------------


def test_default_layout_comes_from_btf(default_codec: SampleCodec) -> None:
    assert default_codec.type_name == "ringbridge_sample"
    assert default_codec.sample_size == 16
    assert default_codec.record_size == 24
    assert default_codec.accepts_raw


def test_struct_samples_pack_into_the_c_layout(default_codec: SampleCodec) -> None:
    out = decode(default_codec, body({"kind": 1, "flags": 2, "value": 2**64 - 1}, {"kind": 7}))
    expected = core.encode_batch([SAMPLE.pack(1, 2, 2**64 - 1), SAMPLE.pack(7, 0, 0)])
    assert out.records == expected
    assert (out.count, out.nbytes, out.payload_bytes) == (2, 48, 32)


def test_missing_fields_are_zero_and_empty_object_is_all_zero(default_codec: SampleCodec) -> None:
    out = decode(default_codec, body({}, {"value": 9}))
    assert out.records == core.encode_batch([SAMPLE.pack(0, 0, 0), SAMPLE.pack(0, 0, 9)])


def test_data_samples_are_raw_payloads_with_zero_padding(default_codec: SampleCodec) -> None:
    payloads = [b"", b"\x01", b"abcdefgh", bytes(range(13))]
    out = decode(default_codec, body(*({"data": b64(p)} for p in payloads)))
    assert out.records == core.encode_batch(payloads)
    assert out.count == 4
    assert out.payload_bytes == sum(map(len, payloads))
    assert out.nbytes == len(out.records) == sum(core.record_size(len(p)) for p in payloads)


def test_mixed_batch_keeps_order(default_codec: SampleCodec) -> None:
    out = decode(default_codec, body({"kind": 3, "value": 4}, {"data": b64(b"xyz")}, {"flags": 1}))
    assert out.records == core.encode_batch([SAMPLE.pack(3, 0, 4), b"xyz", SAMPLE.pack(0, 1, 0)])


def test_str_body_is_accepted(default_codec: SampleCodec) -> None:
    out = decode(default_codec, body({"kind": 5}).decode())
    assert out.records == core.encode_batch([SAMPLE.pack(5, 0, 0)])


def sample_error(
    c: SampleCodec, b: bytes, ring: int = RING, limit: int = LIMIT
) -> SampleError | RecordTooLargeError:
    with pytest.raises((SampleError, RecordTooLargeError)) as ei:
        decode(c, b, ring, limit)
    assert isinstance(ei.value, SampleError | RecordTooLargeError)
    return ei.value


@pytest.mark.parametrize(
    ("sample", "words"),
    [
        ({"kind": True}, ["samples[3].kind:", "u32", "bool"]),
        ({"kind": 1.0}, ["samples[3].kind:", "float"]),
        ({"kind": -1}, ["samples[3].kind:", ">= 0"]),
        ({"flags": 2**32}, ["samples[3].flags:", "<= 4294967295"]),
        ({"value": 2**64}, ["samples[3].value:", "u64", "out of range"]),
        ({"value": -5}, ["samples[3].value:", ">= 0"]),
        ({"kind": "1"}, ["samples[3].kind:", "str"]),
        ({"kind": None}, ["samples[3].kind:", "null"]),
        (
            {"kind": 1, "knid": 2},
            ["samples[3]:", "unknown field 'knid'", "'kind'", "'flags'", "'value'"],
        ),
        ({"data": "!!!!"}, ["samples[3].data:", "base64"]),
        ({"data": 5}, ["samples[3].data:"]),
        ({"data": b64(b"ab"), "kind": 0}, ["samples[3]:", '"data"', "not both", "'kind'"]),
        ({"data": b64(b"ab"), "value": 3}, ['"data"', "not both", "'value'"]),
        (7, ["samples[3]:", "expected `object`", "int"]),
        ([1, 2], ["expected `object`", "array"]),
    ],
)
def test_bad_sample_is_refused_with_index_and_field(
    default_codec: SampleCodec, sample: Any, words: list[str]
) -> None:
    good = [{"kind": 1}, {"data": b64(b"ok")}, {}]
    err = sample_error(default_codec, body(*good, sample, {"kind": 2}))
    assert isinstance(err, SampleError)
    assert err.status_hint == 422
    assert err.index == 3
    for w in words:
        assert w in str(err), (w, str(err))


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", ["invalid JSON"]),
        (b"{", ["invalid JSON"]),
        (b"\xff", ["invalid JSON"]),
        (b"[]", ["expected `object`"]),
        (b"{}", ["missing required field `samples`"]),
        (b'{"sample": []}', ["unknown top-level field 'sample'"]),
        (b'{"samples": []}', ["empty batch"]),
        (b'{"samples": 3}', ["samples", "expected `array`"]),
        (b'{"samples": [{"kind": 1}], "extra": 1}', ["unknown top-level field 'extra'"]),
    ],
)
def test_bad_body_is_refused_as_a_whole(
    default_codec: SampleCodec, raw: bytes, words: list[str]
) -> None:
    err = sample_error(default_codec, raw)
    assert isinstance(err, SampleError)
    assert err.index == -1
    for w in words:
        assert w in err.reason, (w, err.reason)


def test_first_bad_sample_wins_even_when_msgspec_stops_later(
    default_codec: SampleCodec,
) -> None:
    # Sample 1 breaks a limit only Python checks; sample 3 a type msgspec
    # checks first while decoding. The first bad sample is 1.
    big = {"data": b64(bytes(LIMIT + 1))}
    err = sample_error(default_codec, body({"kind": 1}, big, {}, {"kind": "x"}))
    assert isinstance(err, RecordTooLargeError)
    assert err.index == 1
    # ...and a mixed sample before a type error is named before it too.
    err = sample_error(
        default_codec, body({"kind": 1}, {"data": b64(b"a"), "kind": 0}, {"kind": "x"})
    )
    assert isinstance(err, SampleError)
    assert err.index == 1
    assert "not both" in err.reason


def test_sample_over_max_sample_bytes_is_413(default_codec: SampleCodec) -> None:
    err = sample_error(
        default_codec, body({"data": b64(bytes(100))}, {"data": b64(bytes(101))}), limit=100
    )
    assert isinstance(err, RecordTooLargeError)
    assert err.status_hint == 413
    assert err.index == 1
    assert "101 bytes" in err.reason and "100" in err.reason
    # A struct sample larger than the limit is refused the same way.
    err = sample_error(default_codec, body({"kind": 1}), limit=8)
    assert isinstance(err, RecordTooLargeError)
    assert err.index == 0
    assert "ringbridge_sample" in err.reason


def test_batch_larger_than_the_ring_is_413_at_the_crossing_sample(
    default_codec: SampleCodec,
) -> None:
    ring = 4096
    n = ring // 24 + 1  # 24-byte records: sample n-1 crosses the end
    err = sample_error(default_codec, body(*({"kind": 1} for _ in range(n))), ring=ring)
    assert isinstance(err, RecordTooLargeError)
    assert err.index == n - 1
    assert "4096" in err.reason
    # Exactly a ring's worth fits.
    fit = ring // 24
    assert decode(default_codec, body(*({} for _ in range(fit))), ring=ring).count == fit


def test_data_sample_larger_than_the_ring_names_the_ring(default_codec: SampleCodec) -> None:
    ring = 4096
    err = sample_error(default_codec, body({"data": b64(bytes(ring))}), ring=ring, limit=1 << 20)
    assert isinstance(err, RecordTooLargeError)
    assert err.index == 0
    assert "ring of 4096" in err.reason


# -- WebSocket text frames -----------------------------------------------------


def test_ws_frame_returns_its_id(default_codec: SampleCodec) -> None:
    for fid in (7, "a", {"k": [1, None]}, None):
        frame = json.dumps({"id": fid, "samples": [{"kind": 4, "value": 1}]})
        got, batch = default_codec.decode_ws_text_frame(frame, ring_size=RING, max_sample_bytes=64)
        assert got == fid
        assert batch.records == core.encode_batch([SAMPLE.pack(4, 0, 1)])
    got, _ = default_codec.decode_ws_text_frame(
        b'{"samples": [{}]}', ring_size=RING, max_sample_bytes=64
    )
    assert got is None


@pytest.mark.parametrize(
    ("frame", "fid", "index"),
    [
        ('{"id": 42, "samples": [{}, {"kind": "x"}]}', 42, 1),
        ('{"samples": [{"kind": -1}], "id": "late"}', "late", 0),
        ('{"id": [1, 2], "samples": []}', [1, 2], -1),
        ('{"id": 3, "samples": [{}], "bogus": 1}', 3, -1),
        ('{"id": 5, "samples": [{"data": "AA=="' + ', "kind": 0}]}', 5, 0),
        # Malformed after the id: the id is still echoed.
        ('{"id": 9, "samples": [', 9, -1),
        ("not json", None, -1),
    ],
)
def test_a_refused_ws_frame_gives_back_its_id(
    default_codec: SampleCodec, frame: str, fid: Any, index: int
) -> None:
    with pytest.raises(RingbridgeError) as ei:
        default_codec.decode_ws_text_frame(frame, ring_size=RING, max_sample_bytes=64)
    assert frame_id(frame) == fid
    assert getattr(ei.value, "index", None) == index


def test_ws_frame_over_the_ring_gives_back_its_id(default_codec: SampleCodec) -> None:
    frame = json.dumps({"id": "big", "samples": [{"data": b64(bytes(5000))}]})
    with pytest.raises(RecordTooLargeError):
        default_codec.decode_ws_text_frame(frame, ring_size=4096, max_sample_bytes=8192)
    assert frame_id(frame) == "big"


def test_encode_sample_is_the_payload(default_codec: SampleCodec) -> None:
    assert default_codec.encode_sample(kind=3, value=9) == SAMPLE.pack(3, 0, 9)
    with pytest.raises(SampleError, match=r"samples\[0\]\.kind"):
        default_codec.encode_sample(kind=-3)


# -- binary batches --------------------------------------------------------------


def test_binary_batch_is_returned_as_is() -> None:
    records = core.encode_batch([b"a" * 16, b"", b"xyz"])
    for form in (records, bytearray(records), memoryview(records)):
        out = validate_binary_batch(form, ring_size=RING, max_sample_bytes=LIMIT)
        assert out.records == records
        assert (out.count, out.nbytes, out.payload_bytes) == (3, len(records), 19)


def test_binary_uses_the_native_validator_when_built() -> None:
    if not VALIDATE.built():
        pytest.skip("build/libringbridge_validate.so is not built")
    assert codec_mod._native() is not None
    v = codec_mod.native_verdict(
        core.encode_batch([b"12345678"]), ring_size=RING, max_sample_bytes=LIMIT
    )
    assert (v.verdict, v.count, v.payload_bytes) == (0, 1, 8)


@pytest.mark.parametrize(
    ("records", "exc", "index", "words"),
    [
        (b"", InvalidBatchError, -1, "empty batch"),
        (core.encode_batch([b"ab"])[:-4], InvalidBatchError, 0, "runs past"),
        (core.encode_batch([b"ab", b"c"])[:-12], InvalidBatchError, 1, "truncated header"),
        (struct.pack("<II", 1 << 31, 0), InvalidBatchError, 0, "BUSY or DISCARD"),
        (core.encode_batch([b"x"]) + struct.pack("<II", 0, 1), InvalidBatchError, 1, "pad word"),
        (core.encode_batch([b"x"]) + struct.pack("<II", 9, 0), InvalidBatchError, 1, "runs past"),
        (core.encode_batch([b"x"])[:-1] + b"\x01", InvalidBatchError, 0, "padding bytes"),
        (core.encode_batch([bytes(LIMIT + 1)]), RecordTooLargeError, 0, "exceeds the limit"),
    ],
)
def test_bad_binary_batch_names_the_record(
    records: bytes, exc: type[Exception], index: int, words: str
) -> None:
    with pytest.raises(exc) as ei:
        validate_binary_batch(records, ring_size=RING, max_sample_bytes=LIMIT)
    assert getattr(ei.value, "index", None) == index
    assert words in str(ei.value)


def test_binary_batch_over_the_ring_is_413() -> None:
    records = core.encode_batch([bytes(1000)] * 5)
    with pytest.raises(RecordTooLargeError, match="ring of 4096"):
        validate_binary_batch(records, ring_size=4096, max_sample_bytes=LIMIT)


# -- no sample type -------------------------------------------------------------


def test_raw_only_codec_takes_data_samples_and_names_the_flag() -> None:
    c = SampleCodec.raw_only()
    assert not c.typed and c.accepts_raw
    out = decode(c, body({"data": b64(b"abc")}))
    assert out.records == core.encode_batch([b"abc"])
    for sample in ({}, {"kind": 1}):
        err = sample_error(c, body({"data": b64(b"x")}, sample))
        assert isinstance(err, SampleError)
        assert (err.index, err.path) == (1, "samples[1]")
        assert "--sample-type" in err.reason
    assert c.json_schema()["required"] == ["data"]
