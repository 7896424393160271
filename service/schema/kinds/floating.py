"""BTF_KIND_FLOAT: IEEE half, single and double precision."""

from __future__ import annotations

import struct
from typing import Annotated, Any, Final

from msgspec import Meta

from ...errors import SchemaError
from .. import model
from .base import Buffer, Node, PackError, ReadBuffer

__all__ = ["FloatNode", "compile_float"]

_CODES: Final = {2: "e", 4: "f", 8: "d"}
# Largest finite value of half and single precision: larger ones cannot be stored.
_MAX: Final = {2: 65504.0, 4: 3.4028234663852886e38}


class FloatNode(Node):
    def __init__(self, size: int) -> None:
        self.size = size
        self.ctype = f"f{size * 8}"
        self.code = _CODES[size]
        self.max = _MAX.get(size)
        self._struct = struct.Struct("<" + self.code)

    def json_type(self) -> Any:
        if self.max is None:
            return float
        return Annotated[float, Meta(ge=-self.max, le=self.max)]

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.max is not None:
            out |= {"minimum": -self.max, "maximum": self.max}
        return out

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        try:
            self._struct.pack_into(buf, off, value)
        except (struct.error, OverflowError):
            raise PackError(f"{value!r} does not fit a {self.ctype}") from None

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        return self._struct.unpack_from(buf, off)[0]

    def unpack_number(self, buf: ReadBuffer, off: int) -> float:
        return float(self._struct.unpack_from(buf, off)[0])


def compile_float(t: model.Float, where: str) -> FloatNode:
    if t.size not in _CODES:
        raise SchemaError(f"{where}: {t.size * 8}-bit floats ({t.name}) are not supported")
    return FloatNode(t.size)
