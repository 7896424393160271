"""What the JSON decoder refuses before or instead of decoding: sample-count
bombs, duplicate keys, invalid UTF-8, deep nesting -- each a clean 4xx error
(SampleError / RecordTooLargeError), never an unexpected exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbridge.errors import RecordTooLargeError, SampleError
from ringbridge.nativelib import VALIDATE
from ringbridge.schema import SampleCodec, frame_id
from ringbridge.schema.jsonkeys import check_duplicate_keys, duplicate_key_exact

RING = 1 << 20


def decode(c: SampleCodec, body: bytes | str, max_samples: int | None = None) -> int:
    return c.decode_json_batch(
        body, ring_size=RING, max_sample_bytes=4096, max_samples=max_samples
    ).count


def test_a_sample_count_bomb_is_refused_before_decoding(default_codec: SampleCodec) -> None:
    limit = default_codec.max_samples(64 * 1024)
    assert limit == 64 * 1024 // 8  # the smallest record: an empty data sample
    bomb = b'{"samples":[' + b",".join([b"{}"] * (limit + 1)) + b"]}"
    with pytest.raises(RecordTooLargeError, match="more than the 8192"):
        decode(default_codec, bomb, limit)
    # Braces inside strings are not samples: the bound is exact for them.
    fine = {"samples": [{"data": ""}], "pad": "{" * (limit * 2)}
    with pytest.raises(SampleError, match="unknown top-level field 'pad'"):
        decode(default_codec, json.dumps(fine), limit)
    assert decode(default_codec, json.dumps({"samples": [{}] * limit}), limit) == limit


@pytest.mark.parametrize(
    ("body", "index", "key"),
    [
        (b'{"samples":[{"kind":1},{"kind":1,"kind":2}]}', 1, "kind"),
        (b'{"samples":[{"value":1,"flags":0,"value":1}]}', 0, "value"),
        (b'{"samples":[{"kind":1}],"samples":[{"kind":2}]}', -1, "samples"),
        # A key spelled with an escape is the same key.
        (b'{"samples":[{"kind":1,"\\u006bind":2}]}', -1, "kind"),
        (b'{"samples":[{"data":"AA==","data":"AQ=="}]}', 0, "data"),
    ],
)
def test_duplicate_keys_are_refused_with_the_sample_index(
    default_codec: SampleCodec, body: bytes, index: int, key: str
) -> None:
    with pytest.raises(SampleError, match=f"names key '{key}' twice") as err:
        decode(default_codec, body)
    if index >= 0:
        assert err.value.index == index
    with pytest.raises(SampleError):
        decode(default_codec, body.decode())  # WebSocket text frames are str


def test_keys_repeated_across_objects_or_inside_strings_are_fine(
    default_codec: SampleCodec,
) -> None:
    assert decode(default_codec, b'{"samples":[{"kind":1},{"kind":1}]}') == 2
    body = b'{"samples":[{"data":"AA=="}], "x": "\\"data\\":1,\\"data\\":2"}'
    with pytest.raises(SampleError, match="unknown top-level field 'x'"):
        decode(default_codec, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"samples":[{"kind":1}],"k\xffy":1}',  # in a key
        b'{"samples":[{"data":"\xff\xfe"}]}',  # in a value
        b'{"samples":[{"kind":1}]}\xc3',  # truncated sequence after the body
        b'{"samples":[{"kind":1}],"\xed\xa0\x80":1}',  # an encoded surrogate
    ],
)
def test_invalid_utf8_is_a_sample_error_not_a_crash(
    default_codec: SampleCodec, body: bytes
) -> None:
    with pytest.raises(SampleError):
        decode(default_codec, body)


def test_deep_nesting_is_a_sample_error_and_keeps_the_frame_id(
    default_codec: SampleCodec,
) -> None:
    deep = '{"id":"f1","samples":[{"kind":1}],"x":' + "[" * 50_000 + "]" * 50_000 + "}"
    with pytest.raises(SampleError, match="nested"):
        default_codec.decode_ws_text_frame(deep, ring_size=RING, max_sample_bytes=4096)
    assert frame_id(deep) == "f1"
    deep_id = '{"id":' + "[" * 50_000 + "]" * 50_000 + ',"samples":[{"kind":1}]}'
    with pytest.raises(SampleError, match="nested"):
        default_codec.decode_ws_text_frame(deep_id, ring_size=RING, max_sample_bytes=4096)


# -- the C scan agrees with the exact stdlib check -----------------------------------

_keys = st.sampled_from(["kind", "flags", "value", "data", "a", "", "k\\u0069nd", 'q"x'])
_scalars = st.one_of(st.integers(-5, 5), st.text(max_size=4), st.none(), st.booleans())


def _render(node: Any) -> str:
    """JSON text that may repeat keys (a dict cannot): objects are pair lists."""
    if isinstance(node, tuple):
        return "{" + ",".join(f'"{k}":{_render(v)}' for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_render(v) for v in node) + "]"
    return json.dumps(node)


_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(_keys, inner), max_size=5).map(tuple),
    ),
    max_leaves=25,
)


@pytest.mark.skipif(not VALIDATE.built(), reason="the C validator library is not built")
@settings(max_examples=400, deadline=None)
@given(_json)
def test_native_duplicate_scan_agrees_with_the_exact_check(node: Any) -> None:
    text = _render(node).replace('"q"x"', '"q\\"x"')
    raw = text.encode()
    try:
        json.loads(raw)
    except ValueError:
        return  # not JSON: msgspec reports it; the scan need not agree
    exact = duplicate_key_exact(raw)
    try:
        check_duplicate_keys(raw)
    except SampleError as exc:
        # Both found a repeated key (not always the same one: the scan reports
        # the first in document order, the stdlib the first object closed).
        assert exact is not None, f"scan refused {text!r}: {exc}"
    else:
        assert exact is None, f"scan missed duplicate {exact!r} in {text!r}"
