"""Property tests of the BTF packer against the C compiler's layout.

Values are drawn from the compiled node tree of each test type (so every
kind, union branch and bitfield is exercised); the packed bytes must equal a
ctypes mirror of the C struct filled with the same values (tests/schema/
oracle.py, laid out by the host compiler's rules), and decoding the bytes then
encoding them again must give the same bytes.
"""

from __future__ import annotations

import base64
import ctypes
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbridge.schema import SampleCodec
from ringbridge.schema.kinds.array import ArrayNode
from ringbridge.schema.kinds.base import Node
from ringbridge.schema.kinds.bitfield import BitfieldNode
from ringbridge.schema.kinds.chars import CharArrayNode
from ringbridge.schema.kinds.composite import CompositeNode
from ringbridge.schema.kinds.enum import EnumNode
from ringbridge.schema.kinds.floating import FloatNode
from ringbridge.schema.kinds.integer import BoolNode, IntNode

from .oracle import Every, Msg, OpSample

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def values(node: Node) -> st.SearchStrategy[Any]:
    """JSON values the node accepts, every form included."""
    if isinstance(node, BoolNode):
        return st.booleans()
    if isinstance(node, EnumNode):
        lo, hi = node.int.lo, node.int.hi
        return st.one_of(st.sampled_from(sorted(node.by_name)), st.integers(lo, hi))
    if isinstance(node, IntNode):
        return st.integers(node.lo, node.hi)
    if isinstance(node, BitfieldNode):
        ints = st.integers(node.lo, node.hi)
        if isinstance(node.base, EnumNode):
            names = [n for n, v in node.base.by_name.items() if node.lo <= v <= node.hi]
            return st.one_of(st.sampled_from(names), ints) if names else ints
        if isinstance(node.base, BoolNode):
            return st.booleans()
        return ints
    if isinstance(node, FloatNode):
        width: Literal[16, 32, 64] = 32 if node.size == 4 else 64 if node.size == 8 else 16
        return st.floats(width=width, allow_nan=False, allow_infinity=False)
    if isinstance(node, CharArrayNode):
        n = node.count
        text = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]))
        return st.one_of(
            text.filter(lambda s: len(s.encode()) <= n),
            st.binary(max_size=n).map(lambda b: {"base64": base64.b64encode(b).decode()}),
        )
    if isinstance(node, ArrayNode):
        items = st.lists(values(node.elem), max_size=node.count)
        if node.elem.size == 1 and node.elem.code in ("B", "b"):
            b64 = st.binary(max_size=node.count).map(lambda b: base64.b64encode(b).decode())
            return st.one_of(items, b64)
        return items
    assert isinstance(node, CompositeNode), node
    return composite_values(node)


@st.composite
def composite_values(draw: st.DrawFn, node: CompositeNode) -> dict[str, Any]:
    """Some members of the composite, one branch per union."""
    branch: dict[int, int] = {}
    out: dict[str, Any] = {}
    for s in node.slots:
        if not all(branch.setdefault(uid, draw(st.integers(0, 8))) == m for uid, m in s.groups):
            continue
        if draw(st.booleans()):
            out[s.name] = draw(values(s.node))
    return out


# -- the ctypes oracle, filled from the same JSON values -------------------------

_RENAMED = {"in": "in_"}


def fill(obj: Any, value: dict[str, Any], node: CompositeNode) -> None:
    for name, v in value.items():
        slot = node.by_name[name]
        attr = _RENAMED.get(name, name)
        if isinstance(slot.node, CharArrayNode):
            # ctypes assigns char arrays as C strings (stops at a NUL): copy
            # the bytes into the field's memory instead.
            raw = v.encode() if isinstance(v, str) else base64.b64decode(v["base64"])
            at = ctypes.addressof(obj) + getattr(type(obj), attr).offset
            ctypes.memmove(at, raw, len(raw))
            continue
        setattr(obj, attr, c_value(getattr(obj, attr), v, slot.node))


def c_value(current: Any, v: Any, node: Node) -> Any:
    if isinstance(node, BitfieldNode):
        return node.base.to_int(v) if isinstance(node.base, EnumNode) else v
    if isinstance(node, EnumNode):
        return node.to_int(v)
    if isinstance(node, CompositeNode):
        fill(current, v, node)
        return current
    if isinstance(node, ArrayNode):
        if isinstance(v, str):
            v = list(base64.b64decode(v))
        for i, item in enumerate(v):
            current[i] = c_value(current[i], item, node.elem)
        return current
    return v


def oracle_bytes(ctype: type[ctypes.Structure | ctypes.Union], codec: SampleCodec, v: Any) -> bytes:
    obj = ctype()
    fill(obj, v, codec.node)
    return bytes(obj)


def check(codec: SampleCodec, ctype: Any, v: dict[str, Any]) -> None:
    packed = codec.encode_sample(**v)
    assert len(packed) == ctypes.sizeof(ctype) == codec.sample_size
    assert packed == oracle_bytes(ctype, codec, v), v
    # decode then encode: the same bytes (the widest member of each union is
    # read back, and in these types it spans the whole union).
    assert codec.encode_sample(**codec.decode_sample(packed)) == packed


@SETTINGS
@given(data=st.data())
def test_every_kind_packs_like_the_c_compiler(every: SampleCodec, data: st.DataObject) -> None:
    check(every, Every, data.draw(values(every.node)))


@SETTINGS
@given(data=st.data())
def test_anonymous_union_sample(op_sample: SampleCodec, data: st.DataObject) -> None:
    check(op_sample, OpSample, data.draw(values(op_sample.node)))


@SETTINGS
@given(data=st.data())
def test_union_sample_type(msg: SampleCodec, data: st.DataObject) -> None:
    v = data.draw(values(msg.node))
    packed = msg.encode_sample(**v)
    assert packed == oracle_bytes(Msg, msg, v)
    # `set` has padding that `word` fills: bytes may not survive a read-back
    # through `set`, but the decoded value does.
    once = msg.decode_sample(packed)
    assert msg.decode_sample(msg.encode_sample(**once)) == once


@SETTINGS
@given(data=st.data())
def test_batches_of_typed_samples_are_records_of_the_packed_samples(
    every: SampleCodec, data: st.DataObject
) -> None:
    import json

    from ringbridge.core import ring as core

    samples = data.draw(st.lists(values(every.node), min_size=1, max_size=5))
    out = every.decode_json_batch(
        json.dumps({"samples": samples}).encode(), ring_size=1 << 20, max_sample_bytes=4096
    )
    assert bytes(out.records) == core.encode_batch([every.encode_sample(**s) for s in samples])
