"""The schema compiler: BTF model -> layout of nodes (decoder, packer, JSON Schema).

One small node class per BTF kind (:mod:`ringbridge.schema.kinds`), chosen
through the one table :data:`KINDS`. Compiling checks everything that can be
known without a sample: unsupported kinds (pointers, 128-bit floats...) are a
:class:`~ringbridge.errors.SchemaError` naming the member path, so a bad
``--sample-type`` refuses start instead of failing requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from ..errors import SchemaError
from . import model
from .kinds.array import ArrayNode
from .kinds.base import Node, Scalar
from .kinds.bitfield import BitfieldNode
from .kinds.chars import CharArrayNode
from .kinds.composite import CompositeNode, Groups, Slot
from .kinds.enum import compile_enum
from .kinds.floating import compile_float
from .kinds.integer import compile_int

__all__ = ["KINDS", "Compiler", "compile_type"]


class Compiler:
    """Compiles model types; one instance per sample type (numbers the unions).

    ``skip_unsupported`` leaves out the members of structs and unions that
    have no JSON form (for reading maps) instead of refusing the type.
    """

    def __init__(self, *, skip_unsupported: bool = False) -> None:
        self._union_ids = itertools.count()
        self._attr_ids = itertools.count()
        # Reading a map for metrics takes what it can: a member with no JSON
        # form (a pointer, a long double) is left out instead of refused.
        self._skip = skip_unsupported

    def compile(self, t: model.Type, where: str) -> Node:
        build = KINDS.get(type(t))
        if build is None:  # pragma: no cover - every model class is registered
            raise SchemaError(f"{where}: no decoder for {type(t).__name__}")
        return build(self, t, where)

    # -- the kinds that need the compiler (they hold other types) ------------

    def array(self, t: model.Array, where: str) -> Node:
        if t.count == 0:
            raise SchemaError(f"{where}: a flexible array member has no fixed size")
        elem = t.elem
        if isinstance(elem, model.Int) and elem.is_char:
            return CharArrayNode(t.count)
        return ArrayNode(self.compile(elem, f"{where}[]"), t.count)

    def composite(self, t: model.Composite, where: str) -> CompositeNode:
        slots: list[Slot] = []
        unions = self._flatten(t, 0, (), where, slots)
        return CompositeNode(t.kind, t.name, t.size, slots, unions)

    def _flatten(
        self, t: model.Composite, base: int, groups: Groups, where: str, out: list[Slot]
    ) -> int:
        """Adds the JSON fields of ``t`` at byte ``base``; returns unions seen."""
        unions = 0
        uid = -1
        if t.kind == "union":
            uid = next(self._union_ids)
            unions = 1
        for i, m in enumerate(t.members):
            mg = (*groups, (uid, i)) if uid >= 0 else groups
            try:
                unions += self._member(t, m, i, base, mg, where, out)
            except SchemaError:
                if not self._skip:
                    raise
        return unions

    def _member(
        self,
        t: model.Composite,
        m: model.Member,
        i: int,
        base: int,
        groups: Groups,
        where: str,
        out: list[Slot],
    ) -> int:
        """Adds member ``m`` (the ``i``-th of ``t``); returns the unions it holds."""
        name = m.name or f"<anonymous #{i}>"
        mwhere = f"{where}.{name}"
        if not m.name and isinstance(m.type, model.Composite) and not m.bits:
            if m.bit_offset % 8:
                raise SchemaError(f"{mwhere}: not byte-aligned")
            return self._flatten(m.type, base + m.bit_offset // 8, groups, where, out)
        if not m.name:
            return 0  # unnamed bitfield: padding, stays zero
        if isinstance(m.type, model.Array) and m.type.count == 0:
            return 0  # flexible array member: no bytes in the struct (use a data sample)
        if m.bits:
            node: Node = self._bitfield(m, mwhere)
        else:
            if m.bit_offset % 8:
                raise SchemaError(f"{mwhere}: not byte-aligned")
            node = self.compile(m.type, mwhere)
        offset = base + m.bit_offset // 8
        if offset + node.size > base + t.size:
            raise SchemaError(f"{mwhere}: ends past its {t.kind} ({t.size} bytes)")
        out.append(Slot(m.name, offset, node, groups, f"f{next(self._attr_ids)}"))
        return 0

    def _bitfield(self, m: model.Member, where: str) -> Node:
        base = self.compile(m.type, where)
        if not isinstance(base, Scalar):
            raise SchemaError(f"{where}: a bitfield of {base.ctype} cannot be packed")
        return BitfieldNode(base, m.bit_offset % 8, m.bits)


def _opaque(c: Compiler, t: model.Opaque, where: str) -> Node:
    named = f" {t.name}" if t.name else ""
    raise SchemaError(
        f"{where}: a {t.what}{named} has no JSON form (only integers, bools, enums, floats, "
        "arrays, structs and unions can be sent)"
    )


#: BTF kind (model class) -> its compiler. One entry per decoder/packer.
KINDS: dict[type, Callable[[Compiler, Any, str], Node]] = {
    model.Int: lambda c, t, w: compile_int(t),
    model.Enum: lambda c, t, w: compile_enum(t),
    model.Float: lambda c, t, w: compile_float(t, w),
    model.Array: Compiler.array,
    model.Composite: Compiler.composite,
    model.Opaque: _opaque,
}


def compile_type(t: model.Type, where: str) -> CompositeNode:
    """The node of a sample type: a struct or a union."""
    if not isinstance(t, model.Composite):
        raise SchemaError(f"{where}: a sample type must be a struct or a union")
    return Compiler().composite(t, where)
