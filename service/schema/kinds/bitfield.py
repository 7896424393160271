"""Bitfield members: an integer or enum stored in ``bits`` bits of a storage unit.

Packed read-modify-write into the little-endian bytes the field spans, so
neighbouring bitfields in the same bytes are kept; values are range-checked
against the bit width (signed fields sign-extend).
"""

from __future__ import annotations

from typing import Any

from .base import Buffer, Node, PackError, ReadBuffer, Scalar

__all__ = ["BitfieldNode"]


class BitfieldNode(Node):
    def __init__(self, base: Scalar, shift: int, bits: int) -> None:
        self.base = base
        self.shift = shift  # bit offset inside the first byte
        self.bits = bits
        self.size = (shift + bits + 7) // 8  # bytes spanned
        self.ctype = f"{base.ctype}:{bits}"
        self.code = None
        self.mask = ((1 << bits) - 1) << shift
        if base.signed:
            self.lo, self.hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        else:
            self.lo, self.hi = 0, (1 << bits) - 1

    def json_type(self) -> Any:
        return self.base.json_type()

    def json_schema(self) -> dict[str, Any]:
        out = self.base.json_schema()
        if out.get("type") == "integer":
            out = {**out, "minimum": self.lo, "maximum": self.hi}
        return {**out, "description": f"bitfield of {self.bits} bits"}

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        v = self.base.to_int(value)
        if not self.lo <= v <= self.hi:
            raise PackError(f"{v} is out of range {self.lo}..{self.hi} ({self.ctype})")
        end = off + self.size
        word = int.from_bytes(buf[off:end], "little")
        word = (word & ~self.mask) | ((v << self.shift) & self.mask)
        buf[off:end] = word.to_bytes(self.size, "little")

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        return self.base.from_int(self.unpack_number(buf, off))

    def unpack_number(self, buf: ReadBuffer, off: int) -> int:
        word = int.from_bytes(buf[off : off + self.size], "little")
        v = (word & self.mask) >> self.shift
        if self.base.signed and v >= 1 << (self.bits - 1):
            v -= 1 << self.bits
        return v
