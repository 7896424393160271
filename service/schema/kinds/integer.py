"""BTF_KIND_INT: integers of any width and signedness, ``bool``, plain ``char``."""

from __future__ import annotations

import struct
from typing import Annotated, Any, Final

from msgspec import Meta

from .. import model
from .base import Buffer, PackError, ReadBuffer, Scalar

__all__ = ["BoolNode", "IntNode", "compile_int"]

_CODES: Final = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
                 (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}  # fmt: skip
_INT64_MAX: Final = (1 << 63) - 1


class IntNode(Scalar):
    """A ``size``-byte integer, little-endian, range-checked."""

    def __init__(self, size: int, signed: bool, name: str = "") -> None:
        self.size = size
        self.signed = signed
        self.ctype = f"{'i' if signed else 'u'}{size * 8}"
        self.lo, self.hi = self.int_range()
        code = _CODES.get((size, signed))
        self.code = code
        # Widths struct has no code for (e.g. __int128) go through int.to_bytes.
        self._struct = struct.Struct("<" + code) if code else None

    def json_type(self) -> Any:
        # msgspec only takes bounds that fit an int64: the top of u64 and of
        # wider integers is checked when packing.
        if self.hi > _INT64_MAX or self.lo < -_INT64_MAX - 1:
            lo = max(self.lo, -_INT64_MAX - 1)
            return Annotated[int, Meta(ge=lo)]
        return Annotated[int, Meta(ge=self.lo, le=self.hi)]

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}

    def check(self, value: int) -> int:
        if not self.lo <= value <= self.hi:
            raise PackError(f"{value} is out of range {self.lo}..{self.hi} ({self.ctype})")
        return value

    def to_int(self, value: Any) -> int:
        return self.check(value)

    def from_int(self, raw: int) -> Any:
        return raw

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        s = self._struct
        if s is None:
            buf[off : off + self.size] = self.check(value).to_bytes(
                self.size, "little", signed=self.signed
            )
            return
        try:
            s.pack_into(buf, off, value)
        except struct.error:
            self.check(value)
            raise

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        return int.from_bytes(buf[off : off + self.size], "little", signed=self.signed)

    def unpack_number(self, buf: ReadBuffer, off: int) -> int:
        return int.from_bytes(buf[off : off + self.size], "little", signed=self.signed)


class BoolNode(Scalar):
    """C ``_Bool``: JSON ``true``/``false`` only (``1`` is not a bool)."""

    signed = False

    def __init__(self, size: int) -> None:
        self.size = size
        self.ctype = "bool"
        self.code = "?" if size == 1 else None

    def json_type(self) -> Any:
        return bool

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def to_int(self, value: Any) -> int:
        return int(value)

    def from_int(self, raw: int) -> Any:
        return bool(raw)

    def int_range(self) -> tuple[int, int]:
        return 0, 1

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        buf[off] = 1 if value else 0

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        return any(buf[off : off + self.size])

    def unpack_number(self, buf: ReadBuffer, off: int) -> int:
        # The byte as stored: a bool the program set to 2 reads 2, not 1.
        return int.from_bytes(buf[off : off + self.size], "little")


def compile_int(t: model.Int) -> Scalar:
    if t.is_bool:
        return BoolNode(t.size)
    node = IntNode(t.size, t.signed, t.name)
    if t.is_char:
        # A lone `char` is a small integer; `char[N]` arrays are strings.
        node.ctype = "char"
    return node
