"""``char[N]``: a string (UTF-8, NUL-padded; too long is refused) or base64.

A JSON string is text: its UTF-8 bytes fill the array and the rest is NUL
(a string of exactly N bytes leaves no terminator, as ``strncpy`` would).
``{"base64": "..."}`` sets raw bytes, for arrays that hold binary data.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from .base import BASE64_PATTERN, Buffer, Node, PackError, ReadBuffer

__all__ = ["CharArrayNode"]


class CharArrayNode(Node):
    def __init__(self, count: int) -> None:
        self.count = count
        self.size = count
        self.ctype = f"char[{count}]"
        self.code = None
        self._b64 = msgspec.defstruct(
            f"char{count}_base64",
            [("base64", Annotated[bytes, Meta(max_length=count)])],
            forbid_unknown_fields=True,
        )

    def json_type(self) -> Any:
        # max_length counts characters; the byte length is checked on packing.
        return Annotated[str, Meta(max_length=self.count)] | self._b64

    def json_schema(self) -> dict[str, Any]:
        return {
            "title": self.ctype,
            "oneOf": [
                {
                    "type": "string",
                    "maxLength": self.count,
                    "description": f"text: at most {self.count} bytes of UTF-8, NUL-padded",
                },
                {
                    "type": "object",
                    "required": ["base64"],
                    "additionalProperties": False,
                    "properties": {
                        "base64": {
                            "type": "string",
                            "contentEncoding": "base64",
                            "pattern": BASE64_PATTERN,
                        }
                    },
                },
            ],
        }

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        if isinstance(value, str):
            raw = value.encode()
            if len(raw) > self.count:
                raise PackError(
                    f"{len(raw)} bytes of UTF-8 do not fit {self.ctype} ({self.count} bytes)"
                )
        else:
            raw = value.base64
        buf[off : off + len(raw)] = raw

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        raw = bytes(buf[off : off + self.count])
        text, _, rest = raw.partition(b"\0")
        if not rest.strip(b"\0"):
            try:
                return text.decode()
            except UnicodeDecodeError:
                pass
        return {"base64": base64.b64encode(raw).decode()}

    numeric = False

    def unpack_label(self, buf: ReadBuffer, off: int) -> str:
        # A label is the C string: up to the first NUL, whatever follows it.
        raw = bytes(buf[off : off + self.count])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def child(self, key: str | int) -> Node | None:
        return None
