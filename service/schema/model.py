"""The BTF type model: the C types a sample can be made of, as plain data.

:mod:`ringbridge.schema.btf` reads these from a BTF handle (a BPF object's, or
the kernel's BTF of a loaded map); :mod:`ringbridge.schema.compiler` turns them
into decoders, packers and a JSON Schema. The model is pure data: no libbpf,
no I/O, so every later stage is testable on its own.

Qualifiers and aliases (typedef, const, volatile, restrict, type tags) do not
change a layout; the reader follows them and keeps nothing of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Array",
    "Composite",
    "Enum",
    "Float",
    "Int",
    "Member",
    "Opaque",
    "Type",
]


@dataclass(frozen=True)
class Int:
    """BTF_KIND_INT: ``size`` bytes; ``bool`` and plain ``char`` are flagged."""

    name: str
    size: int
    signed: bool
    is_bool: bool = False
    is_char: bool = False


@dataclass(frozen=True)
class Enum:
    """BTF_KIND_ENUM / ENUM64: an integer of ``size`` bytes with named values."""

    name: str
    size: int
    signed: bool
    values: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Float:
    name: str
    size: int


@dataclass(frozen=True)
class Array:
    """``elem[count]``; ``count == 0`` is a flexible array member (no bytes)."""

    elem: Type
    count: int

    @property
    def size(self) -> int:
        return self.elem.size * self.count


@dataclass(frozen=True)
class Member:
    """A struct/union member. ``name`` is "" for an anonymous struct or union
    (or unnamed bitfield padding); ``bits`` is 0 unless it is a bitfield."""

    name: str
    bit_offset: int
    type: Type
    bits: int = 0


@dataclass(frozen=True)
class Composite:
    """BTF_KIND_STRUCT / UNION (``name`` is "" when anonymous)."""

    kind: Literal["struct", "union"]
    name: str
    size: int
    members: tuple[Member, ...]

    @property
    def c_name(self) -> str:
        return f"{self.kind} {self.name}" if self.name else f"anonymous {self.kind}"


@dataclass(frozen=True)
class Opaque:
    """A kind no JSON value maps to (pointer, function, forward declaration...).

    Kept in the model so the refusal can name the member; compiling one is a
    configuration error.
    """

    what: str
    name: str
    size: int


Type = Int | Enum | Float | Array | Composite | Opaque
