"""TypeDecoder: map keys/values of any BTF type read back as values and fields."""

from __future__ import annotations

import struct
from ctypes import sizeof
from typing import Any

import pytest

from ringbridge.errors import SchemaError
from ringbridge.kernel import libbpf as lb
from ringbridge.schema import TypeDecoder
from ringbridge.schema.decoder import Field

from .oracle import Every, Hdr, Inner, OpSample


def decoder(
    btf: Any, name: str, kind: int = lb.BTF_KIND_STRUCT, *, skip_unsupported: bool = False
) -> TypeDecoder:
    tid = btf.find_by_name_kind(name, kind)
    assert tid is not None
    return TypeDecoder.from_btf(btf, tid, skip_unsupported=skip_unsupported)


def named(fields: list[Field], raw: bytes) -> list[tuple[str, Any]]:
    """``(name, value)`` per field: path and indices joined with ``_``."""
    return [("_".join((*f.path, *map(str, f.index))), f.value(raw)) for f in fields]


def test_struct_with_enum_union_and_string(types_btf: Any) -> None:
    d = decoder(types_btf, "op_sample")
    raw = bytes(OpSample(op=2, operand64=-7, slot=b"slot1"))
    assert d.decode(raw) == {"op": "OP_MUL", "operand64": -7, "slot": "slot1"}
    # Of a union every member is a field (each reads the same bytes).
    assert named(d.fields(), raw) == [
        ("op", "OP_MUL"),
        ("operand64", -7),
        ("operand32", -7),
        ("slot", "slot1"),
    ]


def test_nested_leaves_are_joined_names(types_btf: Any) -> None:
    d = decoder(types_btf, "hdr")
    raw = bytes(Hdr(version=1, in_=Inner(ops=(4, 5, 6), delta=-1), seq=9))
    assert named(d.fields(("k",)), raw) == [
        ("k_version", 1),
        ("k_in_ops_0", 4),
        ("k_in_ops_1", 5),
        ("k_in_ops_2", 6),
        ("k_in_delta", -1),
        ("k_seq", 9),
    ]


def test_scalar_types_and_offsets(types_btf: Any) -> None:
    tid = types_btf.find_by_name_kind("op", lb.BTF_KIND_ENUM)
    d = TypeDecoder.from_btf(types_btf, tid)
    (f,) = d.fields(("op",), 4)
    raw = struct.pack("<xxxxI", 3)
    assert (f.path, f.index, f.offset, f.value(raw)) == (("op",), (), 4, "OP_SET")
    assert (f.number(raw), f.label(raw)) == (3, "OP_SET")
    assert f.label(struct.pack("<xxxxI", 9)) == "9"  # no enumerator: the number
    with pytest.raises(ValueError, match="shorter than enum op"):
        d.decode(b"\x01")


def test_types_without_json_form_are_refused(types_btf: Any) -> None:
    with pytest.raises(SchemaError, match="pointer"):
        decoder(types_btf, "with_ptr")


def _every() -> Every:
    e = Every(u8=200, s8=-3, flag=True, c=-1, op=2, neg=-5, f32=1.5, f64=-2.25)
    e.name = b"ab"
    e.raw[:] = (1, 2, 3, 4)
    e.grid[1][2] = 12
    e.list[1].ops[2] = 7
    e.x, e.lo, e.hi = 5, 0x1234, 0x5678
    e.u.bits = 0x0102030405060708
    e.bf_a, e.bf_b, e.bf_op, e.bf_c, e.tail = 5, -9, 3, 0xBEEF, 0xEE
    return e


def test_fields_read_numbers_and_labels_as_the_c_compiler_lays_them_out(types_btf: Any) -> None:
    e = _every()
    raw = bytes(e)
    fields = decoder(types_btf, "every").fields(("v",))
    by = {(f.path, f.index): f for f in fields}

    def number(*path: str, index: tuple[int, ...] = ()) -> int | float:
        return by[(("v", *path), index)].number(raw)

    # Offsets are the host compiler's (ctypes), not the decoder's own layout.
    assert by[(("v", "tail"), ())].offset == Every.tail.offset
    assert by[(("v", "list", "ops"), (1, 2))].offset == Every.list.offset + sizeof(Inner) + 4
    assert (number("u8"), number("s8"), number("c"), number("neg")) == (200, -3, -1, -5)
    # Enums and bools are numbers for samples, names for labels.
    assert (number("op"), by[(("v", "op"), ())].label(raw)) == (2, "OP_MUL")
    assert (number("flag"), by[(("v", "flag"), ())].label(raw)) == (1, "1")
    assert (number("f32"), number("f64")) == (1.5, -2.25)
    assert number("grid", index=(1, 2)) == 12 and number("raw", index=(3,)) == 4
    assert number("list", "ops", index=(1, 2)) == 7
    # Anonymous members are fields of the enclosing struct; every union member is listed.
    assert (number("x"), number("a"), number("lo"), number("hi")) == (5, 0x56781234, 0x1234, 0x5678)
    assert number("u", "bits") == 0x0102030405060708
    assert [number("u", "bytes", index=(i,)) for i in range(8)] == [8, 7, 6, 5, 4, 3, 2, 1]
    # Bitfields: shifted out of their bytes, signed ones sign-extended.
    assert (number("bf_a"), number("bf_b"), number("bf_c")) == (5, -9, 0xBEEF)
    assert (number("bf_op"), by[(("v", "bf_op"), ())].label(raw)) == (3, "OP_SET")
    # char[N] is text: a label up to its NUL, not a number.
    name = by[(("v", "name"), ())]
    assert not name.numeric and name.label(raw) == "ab"
    with pytest.raises(TypeError, match="not a number"):
        name.number(raw)
    e.name = b"cd\0junk"
    assert name.label(bytes(e)) == "cd"


def test_unsupported_members_can_be_left_out(types_btf: Any) -> None:
    with pytest.raises(SchemaError, match="pointer"):
        decoder(types_btf, "with_ptr")
    d = decoder(types_btf, "with_ptr", skip_unsupported=True)
    raw = struct.pack("<QQ", 42, 0xFFFF_0000)
    assert [(f.path, f.number(raw)) for f in d.fields()] == [(("x",), 42)]
    flex = decoder(types_btf, "with_flex", skip_unsupported=True)
    assert [f.path for f in flex.fields()] == [("n",)]
