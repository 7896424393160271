"""Bytes -> values for any BTF type: map keys and values, globals.

The same compiled nodes that pack samples read bytes back, so a map's key or
value is decoded in exactly the layout the packer writes. :meth:`leaves`
flattens a decoded value into ``(name, scalar)`` pairs (nested members joined
with ``_``, array elements by index), the shape metric labels and samples
want (``struct key { u32 pid; char comm[16]; }`` -> ``pid``, ``comm``).
"""

from __future__ import annotations

from typing import Any

from . import btf as btf_reader
from . import model
from .compiler import Compiler
from .kinds.base import Node, ReadBuffer

__all__ = ["TypeDecoder"]

Scalar = int | float | str | bool


class TypeDecoder:
    """Decodes values of one BTF type (any kind with a JSON form)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.size = node.size
        self.ctype = node.ctype

    @classmethod
    def from_btf(
        cls, btf: btf_reader.BtfSource, type_id: int, *, where: str = "BTF"
    ) -> TypeDecoder:
        """The decoder of type ``type_id``; SchemaError if it has no JSON form."""
        t = btf_reader.read_type(btf, type_id)
        return cls(Compiler().compile(t, f"{where}: type {type_id}"))

    @classmethod
    def from_type(cls, t: model.Type, *, where: str = "BTF") -> TypeDecoder:
        """The decoder of a type already read (e.g. found across BTF sources)."""
        return cls(Compiler().compile(t, where))

    def decode(self, buf: ReadBuffer, offset: int = 0) -> Any:
        """The JSON value of the bytes at ``buf[offset:]`` (enums by name when known)."""
        if len(buf) - offset < self.size:
            raise ValueError(
                f"{len(buf) - offset} bytes are shorter than {self.ctype} ({self.size})"
            )
        return self.node.unpack(buf, offset)

    def leaves(
        self, buf: ReadBuffer, offset: int = 0, prefix: str = ""
    ) -> list[tuple[str, Scalar]]:
        """``(name, scalar)`` for every scalar in the value, in layout order.

        A scalar type (not a struct) yields one pair named ``prefix``.
        """
        out: list[tuple[str, Scalar]] = []
        _walk(self.decode(buf, offset), prefix, out)
        return out


def _walk(value: Any, name: str, out: list[tuple[str, Scalar]]) -> None:
    if isinstance(value, dict):
        if set(value) == {"base64"} and isinstance(value["base64"], str):
            out.append((name, value["base64"]))  # a char[N] that is not text
            return
        for k, v in value.items():
            _walk(v, f"{name}_{k}" if name else k, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{name}_{i}" if name else str(i), out)
    else:
        out.append((name, value))
