"""Hostile typed input: every bad value is refused with the sample index and the
path of the value, the whole batch with it; the JSON Schema agrees."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbridge.core import ring as core
from ringbridge.errors import SampleError
from ringbridge.schema import SampleCodec

from .test_props import values

RING = 1 << 20

HOSTILE: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"op": "OP_DIV"}, "samples[2].op", ["'OP_DIV'", "'OP_ADD'", "enum op"]),
    ({"op": 1.5}, "samples[2].op", ["enum op"]),
    ({"a": 1, "lo": 2}, "samples[2]", ["'a' and 'lo'", "one union"]),
    ({"b": 1.0, "a": 1}, "samples[2]", ["'a' and 'b'"]),
    ({"u": {"bits": 1, "bytes": [1]}}, "samples[2].u", ["'bits' and 'bytes'"]),
    ({"name": "123456789"}, "samples[2].name", ["length <= 8", "char[8]"]),
    ({"name": "ééééé"}, "samples[2].name", ["10 bytes of UTF-8 do not fit char[8]"]),
    ({"name": {"base64": "AAAAAAAAAAAA"}}, "samples[2].name.base64", ["length <= 8"]),
    ({"hdr": {"in": {"ops": [1, 2, 65536]}}}, "samples[2].hdr.in.ops[2]", ["<= 65535", "u16"]),
    ({"hdr": {"in": {"delta": -129}}}, "samples[2].hdr.in.delta", [">= -128", "i8"]),
    ({"hdr": {"seq": 2**64}}, "samples[2].hdr.seq", ["out of range", "u64"]),
    ({"list": [{}, {"ops": [-1]}]}, "samples[2].list[1].ops[0]", [">= 0"]),
    ({"list": [{}, {}, {}]}, "samples[2].list", ["length <= 2"]),
    ({"hdr": {"verison": 1}}, "samples[2].hdr", ["unknown field 'verison'", "'version'"]),
    ({"nope": 1}, "samples[2]", ["unknown field 'nope'", "struct every"]),
    ({"u32": "7"}, "samples[2].u32", ["expected `int`, got `str`", "u32"]),
    ({"flag": 1}, "samples[2].flag", ["expected `bool`", "bool"]),
    ({"grid": [[1, 2, 3, 4]]}, "samples[2].grid[0]", ["length <= 3"]),
    ({"bf_a": 8}, "samples[2].bf_a", ["8 is out of range 0..7", "u32:3"]),
    ({"bf_b": 16}, "samples[2].bf_b", ["-16..15"]),
    ({"bf_op": "OP_DIV"}, "samples[2].bf_op", ["'OP_DIV'"]),
    ({"f32": 1e39}, "samples[2].f32", ["f32"]),
    ({"raw": "!!"}, "samples[2].raw", ["u8[4]"]),
]


def batch(bad: dict[str, Any]) -> bytes:
    return json.dumps({"samples": [{"u8": 1}, {"op": "OP_ADD"}, bad, {"u8": 2}]}).encode()


@pytest.mark.parametrize(("bad", "path", "words"), HOSTILE)
def test_hostile_value_names_index_and_path(
    every: SampleCodec, bad: dict[str, Any], path: str, words: list[str]
) -> None:
    with pytest.raises(SampleError) as ei:
        every.decode_json_batch(batch(bad), ring_size=RING, max_sample_bytes=4096)
    err = ei.value
    assert (err.index, err.path, err.status_hint) == (2, path, 422)
    assert str(err).startswith(f"{path}: ")
    for w in words:
        assert w in str(err), (w, str(err))


# What JSON Schema cannot express: UTF-8 byte counts, the decoded length of
# base64 (its alphabet is a pattern in the schema). The packer refuses these (above).
_SCHEMA_BLIND = [
    {"name": "ééééé"},
    {"name": {"base64": "AAAAAAAAAAAA"}},
]


@pytest.mark.parametrize(("bad", "path", "words"), HOSTILE)
def test_json_schema_refuses_the_hostile_values_too(
    every: SampleCodec, bad: dict[str, Any], path: str, words: list[str]
) -> None:
    validator = jsonschema.Draft202012Validator(every.json_schema())
    assert validator.is_valid(bad) == (bad in _SCHEMA_BLIND), bad


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_json_schema_accepts_what_the_codec_accepts(
    every: SampleCodec, op_sample: SampleCodec, msg: SampleCodec, data: st.DataObject
) -> None:
    for codec in (every, op_sample, msg):
        v = data.draw(values(codec.node))
        codec.encode_sample(**v)  # accepted
        validator = jsonschema.Draft202012Validator(codec.json_schema())
        validator.validate(v)
        validator.validate(codec.decode_sample(codec.encode_sample(**v)))


def test_schema_is_a_valid_draft_2020_12_schema(every: SampleCodec) -> None:
    jsonschema.Draft202012Validator.check_schema(every.json_schema())
    raw = {"data": "AAEC"}
    jsonschema.Draft202012Validator(every.json_schema()).validate(raw)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _mangled(draw: st.DrawFn, codec: SampleCodec) -> dict[str, Any]:
    """A valid sample with some members replaced by arbitrary JSON."""
    sample: dict[str, Any] = draw(values(codec.node))
    names = [s.name for s in codec.node.slots] + ["data", "zz"]
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        sample[name] = draw(_json)
    return sample


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_arbitrary_json_is_packed_or_refused_with_a_path(
    every: SampleCodec, op_sample: SampleCodec, data: st.DataObject
) -> None:
    for codec in (every, op_sample):
        good = data.draw(values(codec.node))
        bad = data.draw(_mangled(codec))
        body = json.dumps({"samples": [good, bad]}).encode()
        try:
            out = codec.decode_json_batch(body, ring_size=RING, max_sample_bytes=4096)
        except SampleError as err:
            assert err.index in (1, -1), str(err)
            if err.index == 1:
                assert err.path is not None and err.path.startswith("samples[1]"), str(err)
        else:
            assert out.count == 2
            if "data" not in bad:
                # Accepted: the second record is what the sample alone packs to.
                one = core.encode_batch([codec.encode_sample(**bad)])
                assert bytes(out.records).endswith(one)
