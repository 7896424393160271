"""The BTF reader: model types read back from a clang-built object."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from ringbridge.errors import BpfObjectError, SchemaError
from ringbridge.kernel import libbpf as lb
from ringbridge.schema import model
from ringbridge.schema.btf import find_type

from .oracle import Every


def members(t: model.Type) -> dict[str, model.Member]:
    assert isinstance(t, model.Composite)
    return {m.name: m for m in t.members}


def test_scalars_typedefs_and_qualifiers(types_btf: Any) -> None:
    t = find_type(types_btf, "every")
    assert isinstance(t, model.Composite)
    assert (t.kind, t.name, t.size) == ("struct", "every", 168)
    m = members(t)
    assert m["u8"].type == model.Int("unsigned char", 1, False)
    assert m["s64"].type == model.Int("long long", 8, True)
    assert m["flag"].type == model.Int("_Bool", 1, False, is_bool=True)
    assert m["c"].type == model.Int("char", 1, True, is_char=True)
    # typedef const volatile u32_alias: the qualifiers and the alias are followed
    assert m["cv"].type == model.Int("unsigned int", 4, False)
    assert m["f32"].type == model.Float("float", 4)
    assert m["f64"].type == model.Float("double", 8)


def test_enums_keep_names_values_and_sign(types_btf: Any) -> None:
    m = members(find_type(types_btf, "every"))
    assert m["op"].type == model.Enum("op", 4, False, (("OP_ADD", 1), ("OP_MUL", 2), ("OP_SET", 3)))
    neg = m["neg"].type
    assert isinstance(neg, model.Enum) and neg.signed
    assert neg.values == (("NEG_MIN", -5), ("NEG_ZERO", 0))
    big = m["big"].type
    assert isinstance(big, model.Enum) and big.size == 8
    # clang >= 15 emits ENUM64 with the value; clang 14 a 32-bit ENUM that
    # truncates it. The reader reports what the BTF holds.
    assert big.values in ((("BIG64", 1 << 32),), (("BIG64", 0),))


def test_arrays_nested_and_offsets_match_the_c_compiler(types_btf: Any) -> None:
    m = members(find_type(types_btf, "every"))
    grid = m["grid"].type
    assert isinstance(grid, model.Array) and grid.count == 2
    assert isinstance(grid.elem, model.Array) and grid.elem.count == 3
    hdr = m["hdr"].type
    assert isinstance(hdr, model.Composite) and hdr.name == "hdr"
    # Every named member sits where the host C compiler puts it.
    for name in ("u8", "s16", "u64", "flag", "cv", "big", "name", "grid", "hdr", "list", "u"):
        assert m[name].bit_offset == getattr(Every, name).offset * 8, name


def test_anonymous_members_and_bitfields(types_btf: Any) -> None:
    t = find_type(types_btf, "every")
    assert isinstance(t, model.Composite)
    anon = [m for m in t.members if not m.name and isinstance(m.type, model.Composite)]
    assert [a.type.kind for a in anon if isinstance(a.type, model.Composite)] == [
        "struct",
        "union",
    ]
    m = members(t)
    assert (m["bf_a"].bits, m["bf_a"].bit_offset) == (3, 160 * 8)
    assert (m["bf_b"].bits, m["bf_b"].bit_offset) == (5, 160 * 8 + 3)
    assert isinstance(m["bf_op"].type, model.Enum) and m["bf_op"].bits == 4


def test_lookup_by_kind_keyword_and_typedef(types_btf: Any) -> None:
    assert isinstance(find_type(types_btf, "union msg"), model.Composite)
    assert find_type(types_btf, "every_t") == find_type(types_btf, "struct every")
    with pytest.raises(SchemaError, match="no struct, union or typedef named 'msg'"):
        find_type(types_btf, "struct msg")


def test_pointers_and_flexible_arrays_are_modelled(types_btf: Any) -> None:
    p = members(find_type(types_btf, "with_ptr"))["p"].type
    assert isinstance(p, model.Opaque) and p.what == "pointer"
    flex = members(find_type(types_btf, "with_flex"))["items"].type
    assert isinstance(flex, model.Array) and (flex.count, flex.size) == (0, 0)


def test_default_object(bpf_object_path: Path) -> None:
    with lb.BpfObject.open(bpf_object_path) as obj:
        t = find_type(obj.btf(), "ringbridge_sample")
    assert isinstance(t, model.Composite) and t.size == 16
    assert [(m.name, m.bit_offset // 8, m.type.size) for m in t.members] == [
        ("kind", 0, 4),
        ("flags", 4, 4),
        ("value", 8, 8),
    ]


def test_missing_object(tmp_path: Path) -> None:
    from ringbridge.schema import SampleCodec

    with pytest.raises(BpfObjectError) as info:
        SampleCodec.from_object(tmp_path / "missing.bpf.o")
    assert info.value.errno == errno.ENOENT
