"""Reads the :mod:`~ringbridge.schema.model` of a named type from BTF.

The BTF comes through the ctypes layer (:class:`ringbridge.kernel.libbpf.Btf`):
a BPF object's own BTF (opened, not loaded: no privileges needed) or the
kernel's BTF of an already loaded map. Anything with the two calls of
:class:`BtfSource` will do.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import SchemaError
from ..kernel import libbpf as lb
from . import model

__all__ = ["BtfSource", "find_type", "lookup_type", "read_type"]

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
# BTF kinds that have no JSON form, by name for the refusal message.
_OPAQUE = {
    lb.BTF_KIND_PTR: "pointer",
    lb.BTF_KIND_FWD: "forward-declared type",
    12: "function",  # BTF_KIND_FUNC
    13: "function prototype",  # BTF_KIND_FUNC_PROTO
    14: "variable",  # BTF_KIND_VAR
    15: "data section",  # BTF_KIND_DATASEC
    17: "declaration tag",  # BTF_KIND_DECL_TAG
}
# The kinds a sample type may be named by, in lookup order.
_NAMED = (lb.BTF_KIND_STRUCT, lb.BTF_KIND_UNION, lb.BTF_KIND_TYPEDEF)


class BtfSource(Protocol):
    """What the reader needs of a BTF handle (see :class:`lb.Btf`)."""

    def find_by_name_kind(self, name: str, kind: int) -> int | None: ...

    def type_by_id(self, type_id: int) -> lb.BtfType: ...


def _split_name(name: str) -> tuple[tuple[int, ...], str]:
    kinds: tuple[int, ...] = _NAMED
    bare = name.strip()
    for word, kind in (("struct ", lb.BTF_KIND_STRUCT), ("union ", lb.BTF_KIND_UNION)):
        if bare.startswith(word):
            kinds, bare = (kind,), bare[len(word) :].strip()
    return kinds, bare


def lookup_type(btf: BtfSource, name: str) -> model.Type | None:
    """The struct, union or typedef called ``name``, or None when the BTF has none.

    ``name`` may carry its C keyword (``"struct foo"``, ``"union bar"``) to
    pick one kind; else struct, union and typedef are tried in that order.
    """
    kinds, bare = _split_name(name)
    for kind in kinds:
        type_id = btf.find_by_name_kind(bare, kind)
        if type_id is not None:
            return read_type(btf, type_id)
    return None


def find_type(btf: BtfSource, name: str, *, where: str = "BTF") -> model.Type:
    """:func:`lookup_type`, or a SchemaError naming ``where`` (the BTF's origin)."""
    found = lookup_type(btf, name)
    if found is not None:
        return found
    raise SchemaError(
        f"{where}: no struct, union or typedef named {_split_name(name)[1]!r} in the BTF "
        "(clang emits BTF only for types the program uses)"
    )


def read_type(btf: BtfSource, type_id: int) -> model.Type:
    """The model of type ``type_id``, qualifiers and typedefs followed."""
    return _Reader(btf).read(type_id)


class _Reader:
    def __init__(self, btf: BtfSource) -> None:
        self.btf = btf
        # Types are a DAG (one struct used by many members): read each once.
        self.memo: dict[int, model.Type] = {}

    def read(self, type_id: int) -> model.Type:
        got = self.memo.get(type_id)
        if got is None:
            got = self.memo[type_id] = self._read(type_id)
        return got

    def _read(self, type_id: int) -> model.Type:
        if type_id == 0:
            return model.Opaque("void", "void", 0)
        t = self.btf.type_by_id(type_id)
        if t.kind in _TRANSPARENT:
            return self.read(t.size_or_type)
        if t.kind == lb.BTF_KIND_INT:
            return self._int(t)
        if t.kind in (lb.BTF_KIND_ENUM, lb.BTF_KIND_ENUM64):
            return self._enum(t)
        if t.kind == lb.BTF_KIND_FLOAT:
            return model.Float(t.name, t.size_or_type)
        if t.kind == lb.BTF_KIND_ARRAY:
            assert t.array is not None
            return model.Array(self.read(t.array.elem_type_id), t.array.nelems)
        if t.kind in (lb.BTF_KIND_STRUCT, lb.BTF_KIND_UNION):
            members = tuple(
                model.Member(m.name, m.bit_offset, self.read(m.type_id), m.bitfield_size)
                for m in t.members
            )
            if t.kind == lb.BTF_KIND_STRUCT:
                return model.Composite("struct", t.name, t.size_or_type, members)
            return model.Composite("union", t.name, t.size_or_type, members)
        what = _OPAQUE.get(t.kind, f"BTF kind {t.kind}")
        size = 8 if t.kind == lb.BTF_KIND_PTR else 0
        return model.Opaque(what, t.name, size)

    @staticmethod
    def _enum(t: lb.BtfType) -> model.Enum:
        values = t.enumerators
        signed = t.kflag
        if t.kind == lb.BTF_KIND_ENUM and not t.kflag and any(v >= 1 << 31 for _, v in values):
            # clang < 15 marks no enum as signed (kind_flag) and stores each
            # value as the s32 of the original uapi: `enum { E = -5 }` reads as
            # 4294967291. Read such values as s32, so -5 is -5; the bytes
            # written are the same either way.
            values = tuple((n, v - (1 << 32) if v >= 1 << 31 else v) for n, v in values)
            signed = True
        return model.Enum(t.name, t.size_or_type, signed, values)

    @staticmethod
    def _int(t: lb.BtfType) -> model.Int | model.Opaque:
        enc = t.int_encoding
        size = t.size_or_type
        if t.int_offset or t.int_bits != size * 8:
            # The pre-kind_flag way to describe a bitfield (in the INT type
            # itself); compilers no longer emit it, and nothing here packs it.
            what = f"{t.int_bits}-bit integer at bit {t.int_offset} (old bitfield encoding)"
            return model.Opaque(what, t.name, size)
        if enc & lb.BTF_INT_BOOL:
            return model.Int(t.name, size, False, is_bool=True)
        signed = bool(enc & lb.BTF_INT_SIGNED)
        # clang encodes plain `char` as a 1-byte int named "char" (BTF_INT_CHAR
        # is seldom set); `signed char` / `unsigned char` stay numbers.
        is_char = size == 1 and bool(enc & lb.BTF_INT_CHAR or t.name == "char")
        return model.Int(t.name, size, signed, is_char=is_char)
