"""BTF_KIND_ENUM / ENUM64: by enumerator name (``"OP_ADD"``) or by value."""

from __future__ import annotations

from typing import Any, Literal

from .. import model
from .base import Buffer, ReadBuffer, Scalar
from .integer import IntNode

__all__ = ["EnumNode", "compile_enum"]


class EnumNode(Scalar):
    """An enum: a JSON string names an enumerator; a JSON integer is the value.

    Any integer the underlying type holds is accepted, as in C (flag-style
    enums combine values); names are exact.
    """

    def __init__(self, t: model.Enum) -> None:
        self.size = t.size
        self.signed = t.signed
        self.int = IntNode(t.size, t.signed)
        self.ctype = f"enum {t.name}" if t.name else "anonymous enum"
        self.by_name = dict(t.values)
        self.by_value: dict[int, str] = {}
        for name, value in t.values:
            self.by_value.setdefault(value, name)
        self.code = None  # names need converting: no as-is struct format

    def json_type(self) -> Any:
        if not self.by_name:
            return self.int.json_type()
        names = Literal[tuple(self.by_name)]  # type: ignore[valid-type]
        return names | self.int.json_type()

    def json_schema(self) -> dict[str, Any]:
        return {
            "title": self.ctype,
            "oneOf": [{"enum": list(self.by_name)}, self.int.json_schema()]
            if self.by_name
            else [self.int.json_schema()],
        }

    def to_int(self, value: Any) -> int:
        if isinstance(value, str):
            return self.by_name[value]  # msgspec admitted only known names
        return self.int.check(value)

    def from_int(self, raw: int) -> Any:
        return self.by_value.get(raw, raw)

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        self.int.pack(buf, off, self.to_int(value))

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        return self.from_int(self.int.unpack(buf, off))

    def unpack_number(self, buf: ReadBuffer, off: int) -> int:
        return self.int.unpack_number(buf, off)

    def names_hint(self) -> str:
        shown = ", ".join(repr(n) for n in list(self.by_name)[:16])
        more = ", ..." if len(self.by_name) > 16 else ""
        lo, hi = self.int.lo, self.int.hi
        return f"one of {shown}{more} or an integer {lo}..{hi}"


def compile_enum(t: model.Enum) -> EnumNode:
    return EnumNode(t)
