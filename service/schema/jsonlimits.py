"""The sample-count bound of a JSON body, checked before it is decoded."""

from __future__ import annotations

import re
from typing import Any, Final

from ..errors import RecordTooLargeError
from .kinds.array import ArrayNode
from .kinds.base import Node
from .kinds.chars import CharArrayNode
from .kinds.composite import CompositeNode

__all__ = ["check_sample_count", "max_objects"]


def max_objects(node: Node) -> int:
    """The most JSON objects one value of ``node`` can hold (itself included)."""
    if isinstance(node, CompositeNode):
        return 1 + sum(max_objects(s.node) for s in node.slots)
    if isinstance(node, ArrayNode):
        return node.count * max_objects(node.elem)
    return 1 if isinstance(node, CharArrayNode) else 0


# A JSON string literal; removing them leaves only structure and scalars.
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_STRING_TEXT: Final = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def check_sample_count(body: bytes | str, max_samples: int, per_sample: int) -> None:
    """Refuse a body holding more than ``max_samples`` samples *before* decoding it.

    msgspec checks a list's length only once the whole list is decoded, so a
    body of a million ``{}`` would cost its full decode (seconds, hundreds of
    MiB) before any limit applied. Every valid sample is a JSON object holding
    at most ``per_sample`` objects in all (itself, nested structs, ``{"base64"}``
    strings), so the ``{`` outside strings bound the sample count from above
    (the top-level object, and objects inside a frame's ``id``, only add to
    it). The cheap count over the raw body settles the common case in C; only
    a body whose raw count is over the bound pays for stripping its strings.
    """
    bound = max_samples * per_sample
    brace: Any = b"{" if isinstance(body, bytes) else "{"
    if body.count(brace) - 1 <= bound:
        return
    pattern: Any = _STRING if isinstance(body, bytes) else _STRING_TEXT
    objects = pattern.sub(brace[:0], body).count(brace) - 1
    if objects > bound:
        at_least = -(-objects // per_sample)
        raise RecordTooLargeError(
            f"batch holds about {at_least} samples, more than the {max_samples} that the batch "
            "limit (max_batch_bytes) allows; split it"
        )
