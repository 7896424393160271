"""msgspec's decode errors -> :class:`~ringbridge.errors.SampleError` naming the
sample index, the path of the bad value and what its C type wants."""

from __future__ import annotations

import re
from typing import Final

import msgspec

from ..errors import SampleError
from .jsonshape import DATA
from .kinds.base import Node
from .kinds.composite import CompositeNode
from .kinds.enum import EnumNode

__all__ = ["NO_TYPE", "lower_first", "sample_error", "sample_index"]

NO_TYPE: Final = (
    'the service has no sample type (start it with --sample-type NAME): send {"data": '
    '"<base64>"} samples or binary batches'
)

_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>.*)`)?$", re.S)
_SAMPLE_PATH = re.compile(r"^\.samples\[(?P<index>\d+)\](?P<rest>.*)$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>.*)`$")


def lower_first(s: str) -> str:
    """msgspec's "Expected `int`" reads better mid-sentence; keep "JSON"."""
    return s if s[1:2].isupper() else s[:1].lower() + s[1:]


def sample_index(exc: msgspec.DecodeError) -> int:
    """The index of the sample msgspec stopped at, or -1 (the body as a whole)."""
    m = _AT.match(str(exc))
    path = (m.group("path") if m else None) or ""
    pm = _SAMPLE_PATH.match(path)
    return int(pm.group("index")) if pm else -1


def _node_at(root: CompositeNode, rest: str, accepts_raw: bool) -> Node | None:
    """The node a msgspec path below ``samples[i]`` points at."""
    node: Node | None = root
    for m in _STEP.finditer(rest):
        if node is None:
            return None
        if m.group(1) is not None:
            if m.group(1) == DATA and node is root and accepts_raw:
                return None
            node = node.child(m.group(1))
        else:
            node = node.child(int(m.group(2)))
    return node


def sample_error(
    exc: msgspec.ValidationError, root: CompositeNode, *, typed: bool, accepts_raw: bool
) -> SampleError:
    """The refusal of a batch of ``root`` samples that msgspec could not type."""
    m = _AT.match(str(exc))
    text = m.group("text") if m else str(exc)
    path = (m.group("path") if m else None) or ""
    pm = _SAMPLE_PATH.match(path)
    if pm is None:
        # Whole-body problems: not an object, no "samples", stray keys.
        um = _UNKNOWN.match(text)
        if um and not path:
            return SampleError(
                f"invalid batch: unknown top-level field {um.group('name')!r} "
                f'(expected {{"samples": [...]}})',
                -1,
            )
        where = f" at {path.lstrip('.') or 'the top level'}" if path else ""
        return SampleError(f"invalid batch{where}: {lower_first(text)}", -1)
    index = int(pm.group("index"))
    rest = pm.group("rest")
    where = f"samples[{index}]{rest}"
    if rest == f".{DATA}" and accepts_raw:
        return SampleError(f"{lower_first(text)} (base64 bytes)", index, where)
    node = _node_at(root, rest, accepts_raw)
    um = _UNKNOWN.match(text)
    if um and not typed:
        return SampleError(NO_TYPE, index, where)
    if um and isinstance(node, CompositeNode):
        raw = ' or {"data": "<base64>"} alone' if node is root and accepts_raw else ""
        return SampleError(
            f"unknown field {um.group('name')!r}: {node.ctype} has "
            f"{node.known_names() or 'no members'}{raw}",
            index,
            where,
        )
    detail = lower_first(text)
    if isinstance(node, EnumNode) and "enum" in detail.lower():
        detail += f"; expected {node.names_hint()}"
    if node is None:
        return SampleError(detail, index, where)
    return SampleError(f"{detail} ({node.ctype})", index, where)
