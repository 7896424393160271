"""BTF_KIND_ARRAY: ``elem[N]`` of any element type, as a JSON list.

Shorter lists leave the tail zero; longer ones are refused. Byte arrays
(``__u8`` / ``__s8`` / ``unsigned char`` elements) also take a base64 string.
Plain ``char[N]`` is a string: see :mod:`ringbridge.schema.kinds.chars`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Annotated, Any

from msgspec import Meta

from .base import BASE64_PATTERN, Buffer, Node, PackError, ReadBuffer, Steps

__all__ = ["ArrayNode"]


class ArrayNode(Node):
    def __init__(self, elem: Node, count: int) -> None:
        self.elem = elem
        self.count = count
        self.size = elem.size * count
        self.ctype = _array_ctype(elem.ctype, count)
        self.code = None
        # Elements struct packs as they are go in one call per array.
        self._scalar = elem.code
        self._bytes = elem.size == 1 and elem.code in ("B", "b")

    def json_type(self) -> Any:
        items = Annotated[list[self.elem.json_type()], Meta(max_length=self.count)]  # type: ignore[misc,valid-type]
        if self._bytes:
            return items | Annotated[bytes, Meta(max_length=self.count)]
        return items

    def json_schema(self) -> dict[str, Any]:
        items = {"type": "array", "items": self.elem.json_schema(), "maxItems": self.count}
        if not self._bytes:
            return {"title": self.ctype, **items}
        b64 = {
            "type": "string",
            "contentEncoding": "base64",
            "pattern": BASE64_PATTERN,
            "description": "raw bytes",
        }
        return {"title": self.ctype, "oneOf": [items, b64]}

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        if isinstance(value, bytes):
            buf[off : off + len(value)] = value
            return
        code = self._scalar
        if code is not None:
            try:
                struct.pack_into(f"<{len(value)}{code}", buf, off, *value)
                return
            except (struct.error, OverflowError):
                pass  # the loop below names the element at fault
        step = self.elem.size
        pack = self.elem.pack
        for i, v in enumerate(value):
            try:
                pack(buf, off + i * step, v)
            except PackError as exc:
                raise exc.push(f"[{i}]") from None

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        step = self.elem.size
        return [self.elem.unpack(buf, off + i * step) for i in range(self.count)]

    def child(self, key: str | int) -> Node | None:
        return self.elem if isinstance(key, int) else None

    def leaves(self, off: int) -> Iterator[tuple[Steps, int, Node]]:
        step = self.elem.size
        for i in range(self.count):
            for steps, at, node in self.elem.leaves(off + i * step):
                yield (i, *steps), at, node


def _array_ctype(elem: str, count: int) -> str:
    # int a[2][3]: the outer count goes first, as C spells it.
    head, bracket, rest = elem.partition("[")
    return f"{head}[{count}]{bracket}{rest}"
