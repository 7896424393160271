"""One test group per decoder/packer in ringbridge.schema.kinds.

Scalars are built directly; composites are compiled from types.bpf.c's BTF.
Each checks: what JSON msgspec admits (json_type), the bytes ``pack`` writes
(against struct / ctypes), that ``unpack`` inverts it, and the JSON Schema.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import msgspec
import pytest

from ringbridge.errors import SchemaError
from ringbridge.schema import model
from ringbridge.schema.btf import find_type
from ringbridge.schema.compiler import KINDS, Compiler, compile_type
from ringbridge.schema.kinds.array import ArrayNode
from ringbridge.schema.kinds.base import Node, PackError
from ringbridge.schema.kinds.bitfield import BitfieldNode
from ringbridge.schema.kinds.chars import CharArrayNode
from ringbridge.schema.kinds.composite import CompositeNode
from ringbridge.schema.kinds.enum import EnumNode
from ringbridge.schema.kinds.floating import FloatNode
from ringbridge.schema.kinds.integer import BoolNode, IntNode, compile_int


def admit(node: Node, raw: str) -> Any:
    return msgspec.json.decode(raw, type=node.json_type())


def refused(node: Node, raw: str) -> str:
    with pytest.raises(msgspec.ValidationError) as ei:
        admit(node, raw)
    return str(ei.value)


def packed(node: Node, value: Any, size: int | None = None) -> bytes:
    buf = bytearray(size or node.size)
    node.pack(buf, 0, value)
    return bytes(buf)


def test_every_model_class_has_one_registered_kind() -> None:
    assert set(KINDS) == {
        model.Int,
        model.Enum,
        model.Float,
        model.Array,
        model.Composite,
        model.Opaque,
    }


# -- integer ----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "signed", "code"), [(1, False, "B"), (1, True, "b"),
    (2, False, "H"), (2, True, "h"), (4, False, "I"), (4, True, "i"), (8, False, "Q"),
    (8, True, "q")])  # fmt: skip
def test_int_every_width_and_sign(size: int, signed: bool, code: str) -> None:
    n = IntNode(size, signed)
    lo, hi = n.int_range()
    assert (lo, hi) == ((-(1 << (size * 8 - 1)), (1 << (size * 8 - 1)) - 1) if signed
                        else (0, (1 << (size * 8)) - 1))  # fmt: skip
    for v in (lo, hi, 0, 1):
        got = packed(n, admit(n, str(v)))
        assert got == struct.pack("<" + code, v)
        assert n.unpack(got, 0) == v
    assert n.json_schema() == {"type": "integer", "minimum": lo, "maximum": hi}
    assert "int" in refused(n, "true")
    assert "int" in refused(n, "1.5")
    if hi < 1 << 63:
        assert "<=" in refused(n, str(hi + 1))
    else:
        # Above int64 msgspec cannot bound it: the packer does, naming the range.
        with pytest.raises(PackError, match=r"out of range 0\.\.18446744073709551615 \(u64\)"):
            n.pack(bytearray(8), 0, admit(n, str(hi + 1)))
    assert ">=" in refused(n, str(lo - 1))


def test_int_wider_than_struct_codes_goes_through_to_bytes() -> None:
    n = IntNode(16, False)
    assert n.code is None
    assert packed(n, (1 << 100) + 5) == ((1 << 100) + 5).to_bytes(16, "little")
    with pytest.raises(PackError, match="out of range"):
        packed(n, 1 << 128)


def test_bool_and_char() -> None:
    b = compile_int(model.Int("_Bool", 1, False, is_bool=True))
    assert isinstance(b, BoolNode)
    assert packed(b, admit(b, "true")) == b"\x01"
    assert b.unpack(b"\x00", 0) is False
    assert "bool" in refused(b, "1")
    c = compile_int(model.Int("char", 1, True, is_char=True))
    assert c.ctype == "char" and packed(c, -1) == b"\xff"


# -- enum -----------------------------------------------------------------------


def test_enum_by_name_or_value() -> None:
    e = EnumNode(model.Enum("op", 4, False, (("OP_ADD", 1), ("OP_MUL", 2))))
    assert packed(e, admit(e, '"OP_MUL"')) == struct.pack("<I", 2)
    assert packed(e, admit(e, "7")) == struct.pack("<I", 7)  # any value, as in C
    assert e.unpack(struct.pack("<I", 1), 0) == "OP_ADD"
    assert e.unpack(struct.pack("<I", 7), 0) == 7
    assert "OP_DIV" in refused(e, '"OP_DIV"')
    assert ">=" in refused(e, "-1")
    assert e.json_schema()["oneOf"][0] == {"enum": ["OP_ADD", "OP_MUL"]}
    neg = EnumNode(model.Enum("neg", 4, True, (("NEG_MIN", -5),)))
    assert packed(neg, "NEG_MIN") == struct.pack("<i", -5)
    assert neg.unpack(struct.pack("<i", -5), 0) == "NEG_MIN"


# -- float ------------------------------------------------------------------------


def test_float_f32_f64_and_range() -> None:
    f = FloatNode(4)
    assert packed(f, admit(f, "0.5")) == struct.pack("<f", 0.5)
    assert packed(f, admit(f, "3")) == struct.pack("<f", 3.0)  # JSON ints are numbers
    assert "<=" in refused(f, "1e39")
    d = FloatNode(8)
    assert d.unpack(packed(d, -1e300), 0) == -1e300
    assert d.json_schema()["type"] == "number"


def test_float128_is_a_schema_error() -> None:
    from ringbridge.schema.kinds.floating import compile_float

    with pytest.raises(SchemaError, match="128-bit floats"):
        compile_float(model.Float("long double", 16), "t.x")


# -- char[N] ----------------------------------------------------------------------


def test_char_array_string_nul_padded_or_base64() -> None:
    c = CharArrayNode(6)
    assert packed(c, admit(c, '"ab"')) == b"ab\0\0\0\0"
    assert packed(c, admit(c, '"h\\u00e9llo"')) == "héllo".encode()  # 6 bytes: fits exactly
    assert packed(c, admit(c, '{"base64": "AAEC"}')) == b"\x00\x01\x02\0\0\0"
    with pytest.raises(PackError, match=r"7 bytes of UTF-8 do not fit char\[6\]"):
        packed(c, admit(c, '"ééé!"'))
    assert "length <= 6" in refused(c, '"abcdefg"')
    assert "length <= 6" in refused(c, '{"base64": "AAAAAAAAAA=="}')
    assert c.unpack(b"ab\0\0\0\0", 0) == "ab"
    assert c.unpack(b"\0\x01\0\0\0\0", 0) == {"base64": "AAEAAAAA"}  # not text: base64


# -- arrays -----------------------------------------------------------------------


def test_array_of_scalars_short_list_zero_tail() -> None:
    a = ArrayNode(IntNode(2, False), 3)
    assert a.ctype == "u16[3]"
    assert packed(a, admit(a, "[1, 2]")) == struct.pack("<3H", 1, 2, 0)
    assert a.unpack(struct.pack("<3H", 4, 5, 6), 0) == [4, 5, 6]
    assert "length <= 3" in refused(a, "[1, 2, 3, 4]")
    assert "[1]" in refused(a, "[1, 70000]")


def test_array_element_errors_carry_the_index() -> None:
    a = ArrayNode(IntNode(8, False), 2)
    with pytest.raises(PackError) as ei:
        packed(a, [1, 1 << 64])
    assert ei.value.path == "[1]"


def test_byte_arrays_take_base64_and_multi_dim_nest() -> None:
    b = ArrayNode(IntNode(1, False), 4)
    assert packed(b, admit(b, '"AQID"')) == b"\x01\x02\x03\x00"
    grid = ArrayNode(ArrayNode(IntNode(2, False), 3), 2)
    assert grid.ctype == "u16[2][3]"
    assert packed(grid, admit(grid, "[[1], [2, 3]]")) == struct.pack("<6H", 1, 0, 0, 2, 3, 0)
    assert grid.unpack(struct.pack("<6H", *range(6)), 0) == [[0, 1, 2], [3, 4, 5]]


# -- bitfields ----------------------------------------------------------------------


def test_bitfields_pack_into_shared_bytes() -> None:
    class BF(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint32, 3), ("b", ctypes.c_int32, 5), ("c", ctypes.c_uint32, 9)]

    a = BitfieldNode(IntNode(4, False), 0, 3)
    b = BitfieldNode(IntNode(4, True), 3, 5)
    c = BitfieldNode(IntNode(4, False), 0, 9)  # bit 8..16: starts in byte 1
    buf = bytearray(4)
    a.pack(buf, 0, 5)
    b.pack(buf, 0, -7)
    c.pack(buf, 1, 300)
    assert bytes(buf) == bytes(BF(a=5, b=-7, c=300))
    assert (a.unpack(buf, 0), b.unpack(buf, 0), c.unpack(buf, 1)) == (5, -7, 300)
    with pytest.raises(PackError, match=r"8 is out of range 0\.\.7 \(u32:3\)"):
        a.pack(buf, 0, 8)
    with pytest.raises(PackError, match=r"-17 is out of range -16\.\.15"):
        b.pack(buf, 0, -17)
    assert b.json_schema()["minimum"] == -16


def test_bitfield_of_an_enum_takes_names() -> None:
    e = EnumNode(model.Enum("op", 4, False, (("OP_SET", 3),)))
    bf = BitfieldNode(e, 4, 4)
    buf = bytearray(1)
    bf.pack(buf, 0, "OP_SET")
    assert buf == b"\x30" and bf.unpack(buf, 0) == "OP_SET"


# -- structs and unions -----------------------------------------------------------


def test_struct_members_padding_and_nesting(types_btf: Any) -> None:
    hdr = Compiler().compile(find_type(types_btf, "hdr"), "hdr")
    assert isinstance(hdr, CompositeNode) and hdr.size == 24
    v = admit(hdr, '{"version": 1, "in": {"ops": [7], "delta": -1}, "seq": 9}')
    got = packed(hdr, v)
    # u8 version, pad, struct inner {u16 ops[3]; s8 delta} at 2, pad, u64 seq at 16
    assert got == struct.pack("<BxHHHbxxxxxxxQ", 1, 7, 0, 0, -1, 9)
    assert hdr.unpack(got, 0) == {"version": 1, "in": {"ops": [7, 0, 0], "delta": -1}, "seq": 9}
    assert "unknown field `x`" in refused(hdr, '{"in": {"x": 1}}')
    sch = hdr.json_schema()
    assert sch["additionalProperties"] is False and set(sch["properties"]) == {
        "version",
        "in",
        "seq",
    }


def test_anonymous_union_members_are_outer_fields_and_exclusive(types_btf: Any) -> None:
    node = compile_type(find_type(types_btf, "op_sample"), "op_sample")
    assert [s.name for s in node.slots] == ["op", "operand64", "operand32", "slot"]
    with pytest.raises(PackError, match="'operand64' and 'operand32' are members of one union"):
        packed(node, admit(node, '{"operand64": 1, "operand32": 2}'))
    assert {"not": {"required": ["operand64", "operand32"]}} in node.json_schema()["allOf"]


def test_named_union_one_member_at_most(types_btf: Any) -> None:
    node = compile_type(find_type(types_btf, "msg"), "msg")
    assert node.kind == "union" and node.size == 16
    assert packed(node, admit(node, '{"word": 5}')) == struct.pack("<Q8x", 5)
    got = packed(node, admit(node, '{"set": {"slot": 2, "value": -1}}'))
    assert got == struct.pack("<I4xq", 2, -1)
    # read back through the widest member
    assert node.unpack(got, 0) == {"set": {"slot": 2, "value": -1}}
    with pytest.raises(PackError, match="'set' and 'word'"):
        packed(node, admit(node, '{"set": {}, "word": 1}'))


def test_pointer_member_is_a_schema_error_naming_it(types_btf: Any) -> None:
    with pytest.raises(SchemaError, match=r"with_ptr\.p: a pointer has no JSON form"):
        compile_type(find_type(types_btf, "with_ptr"), "with_ptr")


def test_flexible_array_member_is_left_to_data_samples(types_btf: Any) -> None:
    node = compile_type(find_type(types_btf, "with_flex"), "with_flex")
    assert [s.name for s in node.slots] == ["n"] and node.size == 4
