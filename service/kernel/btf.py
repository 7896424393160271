"""Struct layouts read from a BPF object's BTF.

The service never copies C struct definitions into Python: it reads them from
the object it loads, so a user's own ``.bpf.o`` (or a changed default) packs
and validates samples in the exact C layout. Only flat structs are supported
(scalars, enums, floats and arrays of those); anything whose byte layout a
JSON encoder cannot fill field by field (bitfields, nested structs or unions,
pointers) is rejected up front, naming the field.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ringbridge.errors import BpfObjectError
from ringbridge.kernel import libbpf as lb

__all__ = ["Field", "FieldKind", "ScalarKind", "StructLayout", "struct_layout"]

FieldKind = Literal["uint", "int", "bool", "char_array", "array", "float"]
ScalarKind = Literal["uint", "int", "bool", "char", "float"]

# Qualifiers and aliases that do not change the layout of what they wrap.
_TRANSPARENT = frozenset(
    {
        lb.BTF_KIND_TYPEDEF,
        lb.BTF_KIND_CONST,
        lb.BTF_KIND_VOLATILE,
        lb.BTF_KIND_RESTRICT,
        lb.BTF_KIND_TYPE_TAG,
    }
)
_KIND_NAMES = {
    lb.BTF_KIND_PTR: "pointer",
    lb.BTF_KIND_STRUCT: "nested struct",
    lb.BTF_KIND_UNION: "union",
    lb.BTF_KIND_FWD: "forward-declared type",
}


@dataclass(frozen=True)
class Field:
    """One member of a flat struct.

    ``size`` is the whole field in bytes; for arrays ``count`` is the number
    of elements (multi-dimensional arrays are flattened, a flexible array
    member has ``count == 0`` and ``size == 0``) and ``elem_kind`` /
    ``elem_size`` describe one element. For scalars ``count`` is 1 and
    ``elem_kind`` equals the scalar kind.
    """

    name: str
    offset: int
    size: int
    kind: FieldKind
    signed: bool
    count: int = 1
    elem_kind: ScalarKind = "uint"
    elem_size: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class StructLayout:
    name: str
    size: int
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True)
class _Scalar:
    kind: ScalarKind
    size: int
    signed: bool


def struct_layout(obj_path: Path, name: str) -> StructLayout:
    """Reads ``struct name`` from the BTF of the object at ``obj_path``.

    The object is opened, not loaded: this needs no privileges and does not
    touch the kernel.
    """
    with lb.BpfObject.open(obj_path) as obj:
        btf = obj.btf()
        type_id = btf.find_by_name_kind(name, lb.BTF_KIND_STRUCT)
        if type_id is None:
            raise BpfObjectError(
                "find struct", f"{obj_path}:{name}", errno.ENOENT, "no such struct in the BTF"
            )
        return _layout(btf, obj_path, type_id)


def _layout(btf: lb.Btf, obj_path: Path, type_id: int) -> StructLayout:
    st = btf.type_by_id(type_id)
    fields: list[Field] = []
    for i, m in enumerate(st.members):
        fname = m.name or f"<anonymous #{i}>"
        where = f"{obj_path}:{st.name}.{fname}"
        if m.bitfield_size or m.bit_offset % 8:
            raise BpfObjectError(
                "read struct layout", where, errno.EOPNOTSUPP, "bitfields are not supported"
            )
        fields.append(_field(btf, where, fname, m.type_id, m.bit_offset // 8))
    return StructLayout(name=st.name, size=st.size_or_type, fields=tuple(fields))


def _strip(btf: lb.Btf, type_id: int) -> lb.BtfType:
    t = btf.type_by_id(type_id)
    while t.kind in _TRANSPARENT:
        t = btf.type_by_id(t.size_or_type)
    return t


def _field(btf: lb.Btf, where: str, name: str, type_id: int, offset: int) -> Field:
    t = _strip(btf, type_id)
    if t.kind != lb.BTF_KIND_ARRAY:
        s = _scalar(btf, where, t)
        # A lone char is a small integer; only char arrays are strings.
        kind: FieldKind = ("int" if s.signed else "uint") if s.kind == "char" else s.kind
        return Field(name, offset, s.size, kind, s.signed, 1, s.kind, s.size)

    # Flatten int a[2][3] into six elements: the byte layout is the same.
    count = 1
    while t.kind == lb.BTF_KIND_ARRAY:
        assert t.array is not None
        count *= t.array.nelems
        t = _strip(btf, t.array.elem_type_id)
    s = _scalar(btf, where, t)
    # A string is an array of plain `char`; `unsigned char` / __u8 arrays
    # are bytes and stay numeric arrays.
    akind: FieldKind = "char_array" if s.kind == "char" else "array"
    return Field(name, offset, count * s.size, akind, s.signed, count, s.kind, s.size)


def _scalar(btf: lb.Btf, where: str, t: lb.BtfType) -> _Scalar:
    if t.kind == lb.BTF_KIND_INT:
        if t.int_offset or t.int_bits != t.size_or_type * 8:
            raise BpfObjectError(
                "read struct layout",
                where,
                errno.EOPNOTSUPP,
                "bitfield-sized integers are not supported",
            )
        if t.int_encoding & lb.BTF_INT_BOOL:
            return _Scalar("bool", t.size_or_type, False)
        signed = bool(t.int_encoding & lb.BTF_INT_SIGNED)
        # clang encodes plain `char` as a signed 1-byte int named "char"
        # (BTF_INT_CHAR is seldom set); `signed char` stays a number.
        if t.size_or_type == 1 and (t.int_encoding & lb.BTF_INT_CHAR or t.name == "char"):
            return _Scalar("char", 1, signed)
        return _Scalar("int" if signed else "uint", t.size_or_type, signed)
    if t.kind in (lb.BTF_KIND_ENUM, lb.BTF_KIND_ENUM64):
        # Enums travel as unsigned integers of their size.
        return _Scalar("uint", t.size_or_type, False)
    if t.kind == lb.BTF_KIND_FLOAT:
        return _Scalar("float", t.size_or_type, True)
    what = _KIND_NAMES.get(t.kind, f"BTF kind {t.kind}")
    raise BpfObjectError(
        "read struct layout",
        where,
        errno.EOPNOTSUPP,
        f"{what} members are not supported (flat structs only)",
    )
