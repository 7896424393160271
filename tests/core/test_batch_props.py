"""Property tests: core.validate_batch, the C validator, the JSON codec.

* Anything core.encode_batch produces is accepted, with the right counts.
* Whatever validate_batch accepts is exactly the records it describes (no
  bytes the kernel would see differently: re-encoding the walked payloads
  gives the same buffer back).
* bpf/validate.c agrees with the pure Python reference on random and mutated
  batches: same accept/reject, same counts, same first bad record.
* The JSON codec's fast path and exact path produce the same records, equal to
  core.encode_batch of the payloads the samples describe; a bad value anywhere
  is reported at its index.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ringbridge.core import ring as core
from ringbridge.errors import ProtocolError, RecordTooLargeError, SampleError
from ringbridge.nativelib import VALIDATE
from ringbridge.schema import SampleCodec, validate_binary_batch
from ringbridge.schema import binary as codec_mod

REPO = Path(__file__).resolve().parents[2]
SAMPLE = struct.Struct("<IIQ")

payloads_st = st.lists(st.binary(max_size=40), min_size=1, max_size=30)
ring_sizes = st.sampled_from([4096, 8192, 1 << 16])
limits = st.integers(min_value=0, max_value=64)


@st.composite
def mutated_batches(draw: st.DrawFn) -> bytes:
    """A valid batch with a few bytes changed, cut, or extended."""
    buf = bytearray(core.encode_batch(draw(payloads_st)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        op = draw(st.sampled_from(["flip", "set_word", "truncate", "append", "flags"]))
        if op == "flip" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= draw(st.integers(1, 255))
        elif op == "set_word" and len(buf) >= 8:
            i = draw(st.integers(0, len(buf) // 8 - 1)) * 8
            struct.pack_into("<I", buf, i, draw(st.integers(0, 2**32 - 1)))
        elif op == "truncate":
            del buf[draw(st.integers(0, len(buf))) :]
        elif op == "append":
            buf += draw(st.binary(max_size=24))
        elif op == "flags" and len(buf) >= 8:
            i = draw(st.integers(0, len(buf) // 8 - 1)) * 8
            buf[i + 3] |= draw(st.sampled_from([0x80, 0x40, 0xC0]))
    return bytes(buf)


@given(payloads_st, ring_sizes)
def test_encoded_batches_are_accepted(payloads: list[bytes], ring: int) -> None:
    buf = core.encode_batch(payloads)
    assume(len(buf) <= ring)
    info = core.validate_batch(buf, ring)
    assert info.count == len(payloads)
    assert info.nbytes == len(buf)
    assert info.payload_bytes == sum(map(len, payloads))
    assert [bytes(buf[o : o + n]) for o, n in core.iter_records(buf)] == payloads


@given(mutated_batches(), ring_sizes, limits)
def test_accepted_means_well_formed(buf: bytes, ring: int, limit: int) -> None:
    try:
        info = core.validate_batch(buf, ring, limit)
    except ProtocolError as exc:
        index: int = exc.index
        if index > 0:
            # Everything before the first bad record is a valid batch on its own.
            off = 0
            for _ in range(index):
                (word,) = struct.unpack_from("<I", buf, off)
                off += core.record_size(word)
            assert core.validate_batch(buf[:off], ring, limit).count == index
        return
    walked = [bytes(buf[o : o + n]) for o, n in core.iter_records(buf)]
    assert core.encode_batch(walked) == buf
    assert info.count == len(walked)
    assert all(len(p) <= limit for p in walked)
    assert len(buf) <= ring


def _native_or_skip() -> None:
    if codec_mod._native() is None:
        lib = VALIDATE.path
        if shutil.which("cc") is None:
            pytest.skip(f"{lib} is not built and there is no C compiler")
        pytest.fail(f"{lib} is not built: run make -C bpf")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_batches(), st.binary(max_size=80)), ring_sizes, limits)
def test_native_validator_agrees_with_the_reference(buf: bytes, ring: int, limit: int) -> None:
    _native_or_skip()
    v = codec_mod.native_verdict(buf, ring_size=ring, max_sample_bytes=limit)
    try:
        info = core.validate_batch(buf, ring, limit)
    except ProtocolError as exc:
        assert v.verdict != 0, f"C accepted what the reference rejects: {exc}"
        assert v.index == exc.index
        # The public function raises the reference's own error.
        with pytest.raises(type(exc), match="^" + re.escape(str(exc)) + "$"):
            validate_binary_batch(buf, ring_size=ring, max_sample_bytes=limit)
        return
    assert v.verdict == 0, f"C rejected (verdict {v.verdict} at {v.index}) a valid batch"
    assert (v.count, v.payload_bytes) == (info.count, info.payload_bytes)
    out = validate_binary_batch(buf, ring_size=ring, max_sample_bytes=limit)
    assert (out.count, out.nbytes, out.payload_bytes) == (
        info.count,
        info.nbytes,
        info.payload_bytes,
    )


# -- the JSON codec ---------------------------------------------------------------


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
struct_sample = st.fixed_dictionaries({}, optional={"kind": u32, "flags": u32, "value": u64})
data_sample = st.builds(lambda b: {"data": base64.b64encode(b).decode()}, st.binary(max_size=48))
samples_st = st.lists(st.one_of(struct_sample, data_sample), min_size=1, max_size=25)


def expected_payload(s: dict[str, Any]) -> bytes:
    if "data" in s:
        return base64.b64decode(s["data"])
    return SAMPLE.pack(s.get("kind", 0), s.get("flags", 0), s.get("value", 0))


RING = 1 << 16


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples_st)
def test_json_batches_encode_like_core(default_codec: SampleCodec, samples: list[Any]) -> None:
    raw = json.dumps({"samples": samples}).encode()
    out = default_codec.decode_json_batch(raw, ring_size=RING, max_sample_bytes=64)
    payloads = [expected_payload(s) for s in samples]
    assert out.records == core.encode_batch(payloads)
    assert out.count == len(samples)
    assert out.payload_bytes == sum(map(len, payloads))
    # The exact path (used for errors and ambiguous bodies) agrees byte for byte.
    _, exact = default_codec._exact.decode(raw, frame=False, ring_size=RING, limit=64)
    assert exact == out


bad_values = st.sampled_from(
    [
        ("kind", -1),
        ("kind", 2**32),
        ("flags", True),
        ("value", 2**64),
        ("value", 1.5),
        ("value", "7"),
        ("nope", 1),
    ]
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples_st, st.data(), bad_values)
def test_first_bad_sample_is_reported(
    default_codec: SampleCodec, samples: list[Any], data: st.DataObject, bad: tuple[str, Any]
) -> None:
    i = data.draw(st.integers(0, len(samples)), label="where")
    key, value = bad
    samples = [*samples[:i], {key: value}, *samples[i:]]
    raw = json.dumps({"samples": samples}).encode()
    with pytest.raises(SampleError) as ei:
        default_codec.decode_json_batch(raw, ring_size=RING, max_sample_bytes=64)
    assert ei.value.index == i
    # The path names the sample and the field (or the message the unknown key).
    assert ei.value.path is not None and ei.value.path.startswith(f"samples[{i}]")
    assert key in str(ei.value)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples_st, st.integers(0, 48))
def test_sample_limit_is_reported_at_the_first_offender(
    default_codec: SampleCodec, samples: list[Any], limit: int
) -> None:
    sizes = [len(expected_payload(s)) for s in samples]
    offenders = [i for i, n in enumerate(sizes) if n > limit]
    raw = json.dumps({"samples": samples}).encode()
    if not offenders:
        out = default_codec.decode_json_batch(raw, ring_size=RING, max_sample_bytes=limit)
        assert out.count == len(samples)
        return
    with pytest.raises(RecordTooLargeError) as ei:
        default_codec.decode_json_batch(raw, ring_size=RING, max_sample_bytes=limit)
    assert ei.value.index == offenders[0]
