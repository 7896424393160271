"""Bytes -> values for any BTF type: map keys and values, globals.

The same compiled nodes that pack samples read bytes back, so a map's key or
value is decoded in exactly the layout the packer writes. :meth:`TypeDecoder.fields`
flattens a type into its scalars (:class:`Field`: member path, array indices,
offset), the shape metric labels and samples want
(``struct key { u32 pid; char comm[16]; }`` -> ``pid``, ``comm``); each field
reads its value, its number (enums and bools as integers) or its label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import btf as btf_reader
from . import model
from .compiler import Compiler
from .kinds.base import Node, ReadBuffer

__all__ = ["Field", "TypeDecoder"]


@dataclass(frozen=True)
class Field:
    """One scalar (or ``char[N]`` string) inside a decoded type."""

    path: tuple[str, ...]  # member names down to it (anonymous members left out)
    index: tuple[int, ...]  # array indices on the way, outermost first
    offset: int  # bytes from the start of the buffer
    node: Node

    @property
    def numeric(self) -> bool:
        """False for ``char[N]`` (a label, not a sample)."""
        return self.node.numeric

    def value(self, buf: ReadBuffer) -> Any:
        """The JSON value (an enum by name, ``char[N]`` as text)."""
        return self.node.unpack(buf, self.offset)

    def number(self, buf: ReadBuffer) -> int | float:
        """The number stored (enums and bools as their integer)."""
        return self.node.unpack_number(buf, self.offset)

    def label(self, buf: ReadBuffer) -> str:
        """The value as a label: enum names, ``char[N]`` up to its NUL, else the number."""
        return self.node.unpack_label(buf, self.offset)


class TypeDecoder:
    """Decodes values of one BTF type (any kind with a JSON form)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.size = node.size
        self.ctype = node.ctype

    @classmethod
    def from_type(
        cls, t: model.Type, *, where: str = "BTF", skip_unsupported: bool = False
    ) -> TypeDecoder:
        """The decoder of a model type; SchemaError if it has no JSON form.

        With ``skip_unsupported`` the members of structs and unions that have
        none (pointers, long doubles...) are left out instead.
        """
        return cls(Compiler(skip_unsupported=skip_unsupported).compile(t, where))

    @classmethod
    def from_btf(
        cls,
        btf: btf_reader.BtfSource,
        type_id: int,
        *,
        where: str = "BTF",
        skip_unsupported: bool = False,
    ) -> TypeDecoder:
        """The decoder of type ``type_id`` (see :meth:`from_type`)."""
        t = btf_reader.read_type(btf, type_id)
        return cls.from_type(t, where=f"{where}: type {type_id}", skip_unsupported=skip_unsupported)

    def decode(self, buf: ReadBuffer, offset: int = 0) -> Any:
        """The JSON value of the bytes at ``buf[offset:]`` (enums by name when known)."""
        if len(buf) - offset < self.size:
            raise ValueError(
                f"{len(buf) - offset} bytes are shorter than {self.ctype} ({self.size})"
            )
        return self.node.unpack(buf, offset)

    def fields(self, path: tuple[str, ...] = (), offset: int = 0) -> list[Field]:
        """Every scalar of the type laid out from ``offset``, in layout order.

        ``path`` prefixes each field's path; a scalar type (not a struct) is
        one field with ``path`` itself. Of a union every member is a field.
        """
        out = []
        for steps, at, node in self.node.leaves(offset):
            names = tuple(s for s in steps if isinstance(s, str))
            index = tuple(s for s in steps if isinstance(s, int))
            out.append(Field((*path, *names), index, at, node))
        return out
