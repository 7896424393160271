"""What every kind's decoder/packer provides, and the error they raise.

A node is compiled once per type (see :mod:`ringbridge.schema.compiler`) and
then serves every sample: ``json_type`` is the msgspec type that checks a JSON
value in C (types, ranges, lengths, unknown fields), ``pack`` writes an already
checked value into a zeroed buffer at an offset (so padding and missing fields
stay zero), ``unpack`` reads it back as JSON data, and ``json_schema``
documents it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any

#: Base64 as the decoders take it (padded, standard alphabet): in the JSON
#: Schema as a pattern, since generators and validators ignore
#: ``contentEncoding``; without it the schema would allow any string.
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

__all__ = ["Buffer", "Node", "PackError", "ReadBuffer", "Scalar", "Steps", "tuple_getter"]

Buffer = bytearray
ReadBuffer = bytes | bytearray | memoryview
#: A path into a value: member names and array indices, outermost first.
Steps = tuple[str | int, ...]


def tuple_getter(attrs: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of ``attrs`` of an object, always as a tuple, at C speed.

    ``attrgetter`` of one name returns the value itself, not a 1-tuple: the
    per-sample loops unpack the result, so every arity gives a tuple.
    """
    if len(attrs) >= 2:
        return attrgetter(*attrs)
    if attrs:
        one = attrgetter(attrs[0])

        def get_one(v: Any) -> tuple[Any, ...]:
            return (one(v),)

        return get_one

    def get_none(v: Any) -> tuple[Any, ...]:
        return ()

    return get_none


class PackError(Exception):
    """A value msgspec let through that the C type cannot hold.

    ``segments`` is the path below the node that raised, innermost last once
    reversed: composites and arrays add ``.name`` / ``[i]`` on the way up.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.segments: list[str] = []

    def push(self, segment: str) -> PackError:
        self.segments.append(segment)
        return self

    @property
    def path(self) -> str:
        return "".join(reversed(self.segments))


class Node(ABC):
    """One compiled C type."""

    #: bytes the type takes
    size: int
    #: C spelling for messages: ``u32``, ``enum op``, ``char[16]``, ``struct hdr``
    ctype: str
    #: struct format of one value packed as is (no conversion), or None
    code: str | None = None

    @abstractmethod
    def json_type(self) -> Any:
        """The msgspec type of the JSON value."""

    @abstractmethod
    def json_schema(self) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of the JSON value."""

    @abstractmethod
    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        """Writes ``value`` (as decoded by ``json_type``) at ``buf[off:]``."""

    @abstractmethod
    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        """The JSON value of the bytes at ``buf[off:]`` (``pack``'s inverse)."""

    def child(self, key: str | int) -> Node | None:
        """The node under a JSON path step (composites and arrays have some)."""
        return None

    #: Whether :meth:`unpack_number` reads this type (``char[N]`` is text).
    numeric = True

    def leaves(self, off: int) -> Iterator[tuple[Steps, int, Node]]:
        """Every scalar (and ``char[N]``) of the type: its path steps, offset, node.

        Steps are member names and array indices, outermost first; members
        of anonymous structs and unions are steps of the enclosing type, and
        every member of a union is listed (each reads the same bytes).
        """
        yield (), off, self

    def unpack_number(self, buf: ReadBuffer, off: int) -> int | float:
        """The number the bytes hold: enums and bools as their integer."""
        raise TypeError(f"{self.ctype} is not a number")

    def unpack_label(self, buf: ReadBuffer, off: int) -> str:
        """The value as a metric label: an enum's name when it has one, else the number."""
        value = self.unpack(buf, off)
        return value if isinstance(value, str) else str(self.unpack_number(buf, off))


class Scalar(Node):
    """An integer-like node (int, bool, enum) that bitfields can wrap."""

    signed: bool

    @abstractmethod
    def to_int(self, value: Any) -> int:
        """The integer a checked JSON value stands for."""

    @abstractmethod
    def from_int(self, raw: int) -> Any:
        """The JSON value of an integer read back."""

    def int_range(self) -> tuple[int, int]:
        bits = self.size * 8
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1
