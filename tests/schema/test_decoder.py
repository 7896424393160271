"""TypeDecoder: map keys/values of any BTF type read back as values and leaves."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from ringbridge.errors import SchemaError
from ringbridge.kernel import libbpf as lb
from ringbridge.schema import TypeDecoder

from .oracle import Hdr, Inner, OpSample


def decoder(btf: Any, name: str, kind: int = lb.BTF_KIND_STRUCT) -> TypeDecoder:
    tid = btf.find_by_name_kind(name, kind)
    assert tid is not None
    return TypeDecoder.from_btf(btf, tid)


def test_struct_with_enum_union_and_string(types_btf: Any) -> None:
    d = decoder(types_btf, "op_sample")
    raw = bytes(OpSample(op=2, operand64=-7, slot=b"slot1"))
    assert d.decode(raw) == {"op": "OP_MUL", "operand64": -7, "slot": "slot1"}
    assert d.leaves(raw) == [("op", "OP_MUL"), ("operand64", -7), ("slot", "slot1")]


def test_nested_leaves_are_joined_names(types_btf: Any) -> None:
    d = decoder(types_btf, "hdr")
    raw = bytes(Hdr(version=1, in_=Inner(ops=(4, 5, 6), delta=-1), seq=9))
    assert d.leaves(raw, prefix="k") == [
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
    assert d.leaves(struct.pack("<xxxxI", 3), 4, prefix="op") == [("op", "OP_SET")]
    with pytest.raises(ValueError, match="shorter than enum op"):
        d.decode(b"\x01")


def test_types_without_json_form_are_refused(types_btf: Any) -> None:
    with pytest.raises(SchemaError, match="pointer"):
        decoder(types_btf, "with_ptr")
