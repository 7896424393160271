"""The sample-count bound taken before decoding knows how many JSON objects one
sample of the type may hold (nested structs, unions, {"base64"} strings)."""

from __future__ import annotations

import json

import pytest

from ringbridge.errors import RecordTooLargeError
from ringbridge.schema import SampleCodec

NESTED = {
    "hdr": {"in": {"ops": [1]}},
    "list": [{}, {"delta": 1}],
    "name": {"base64": "AA=="},
    "u": {"bits": 1},
}


def test_nested_samples_up_to_the_bound_are_decoded(every: SampleCodec) -> None:
    n = every.max_samples(4096)
    body = json.dumps({"samples": [NESTED] * n}).encode()
    assert body.count(b"{") - 1 == 7 * n  # seven objects per sample
    out = every.decode_json_batch(body, ring_size=1 << 24, max_sample_bytes=4096, max_samples=n)
    assert out.count == n


def test_more_objects_than_any_batch_of_max_samples_holds_is_refused_before_decoding(
    every: SampleCodec,
) -> None:
    n = 10
    per = every._objects_per_sample
    # `{}` samples: each counts one object, so n * per + 1 of them cannot be n samples.
    body = json.dumps({"samples": [{}] * (n * per + 1)}).encode()
    with pytest.raises(RecordTooLargeError, match="more than the 10"):
        every.decode_json_batch(body, ring_size=1 << 24, max_sample_bytes=4096, max_samples=n)
    # A flat type is bounded by one object per sample.
    flat = json.dumps({"samples": [{}] * (n + 1)}).encode()
    with pytest.raises(RecordTooLargeError):
        SampleCodec.raw_only().decode_json_batch(
            flat, ring_size=1 << 24, max_sample_bytes=4096, max_samples=n
        )
