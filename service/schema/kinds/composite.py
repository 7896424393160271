"""BTF_KIND_STRUCT / UNION: a JSON object of the members, named as in C.

Members of an anonymous struct or union are fields of the enclosing object
(C's ``s.x`` for ``struct s { union { int x; float y; }; }``). Of the members
of one union at most one may be given: ``union { int a; struct { int b, c; }; }``
takes ``a``, or ``b`` and ``c``, never ``a`` with ``b``. Missing members stay
zero, as do padding bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from .base import Buffer, Node, PackError, ReadBuffer, Steps, tuple_getter

__all__ = ["CompositeNode", "Slot"]

# (union id, index of the union member the slot sits in), outermost first.
Groups = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Slot:
    """One JSON field of a composite: where it lives and what it is."""

    name: str
    offset: int  # bytes from the start of the composite
    node: Node
    groups: Groups  # the unions (named or anonymous) it is a member of
    attr: str  # attribute name in the msgspec Struct (C names may be keywords)


class CompositeNode(Node):
    def __init__(self, kind: str, name: str, size: int, slots: list[Slot], unions: int) -> None:
        self.kind = kind
        self.name = name
        self.size = size
        self.ctype = f"{kind} {name}" if name else f"anonymous {kind}"
        self.code = None
        self.slots = tuple(slots)
        self.by_name = {s.name: s for s in slots}
        self._has_unions = unions > 0
        # (offset, bound pack, name) per slot, and the slots inside unions:
        # the per-sample loops touch nothing else.
        self._plan = tuple((s.offset, s.node.pack, s.name) for s in slots)
        self._in_unions = tuple((i, s.groups, s.name) for i, s in enumerate(slots) if s.groups)
        self.values = tuple_getter([s.attr for s in slots])
        self._type = self.struct_type()

    def struct_type(
        self, extra: list[tuple[str, Any, Any]] | None = None, type_name: str | None = None
    ) -> type[msgspec.Struct]:
        """The msgspec Struct: every member optional (UNSET = not given)."""
        fields: list[tuple[str, Any, Any]] = [
            (s.attr, s.node.json_type() | UnsetType, msgspec.field(default=UNSET, name=s.name))
            for s in self.slots
        ]
        return msgspec.defstruct(
            type_name or (self.ctype.replace(" ", "_")),
            fields + (extra or []),
            forbid_unknown_fields=True,
            kw_only=True,
        )

    def json_type(self) -> Any:
        return self._type

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "title": self.ctype,
            "type": "object",
            "properties": {s.name: s.node.json_schema() for s in self.slots},
            "additionalProperties": False,
        }
        conflicts = self.conflicting_pairs()
        if conflicts:
            out["description"] = "members of one union exclude each other; missing members are 0"
            out["allOf"] = [{"not": {"required": [a, b]}} for a, b in conflicts]
        else:
            out["description"] = "missing members are 0"
        return out

    def conflicting_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for i, a in enumerate(self.slots):
            for b in self.slots[i + 1 :]:
                if _conflict(a.groups, b.groups):
                    pairs.append((a.name, b.name))
        return pairs

    def pack(self, buf: Buffer, off: int, value: Any) -> None:
        vals = self.values(value)
        if self._has_unions:
            self.check_unions(vals)
        plan = self._plan
        for i, v in enumerate(vals):
            if v is UNSET:
                continue
            moff, pack, name = plan[i]
            try:
                pack(buf, off + moff, v)
            except PackError as exc:
                raise exc.push(f".{name}") from None

    def check_unions(self, vals: tuple[Any, ...]) -> None:
        chosen: dict[int, tuple[int, str]] = {}
        for i, groups, name in self._in_unions:
            if vals[i] is UNSET:
                continue
            for uid, member in groups:
                seen = chosen.setdefault(uid, (member, name))
                if seen[0] != member:
                    raise PackError(
                        f"{seen[1]!r} and {name!r} are members of one union: give at most one"
                    )

    def unpack(self, buf: ReadBuffer, off: int) -> Any:
        # Of a union, the member that covers the most bytes is read back (its
        # bytes are the union's); members of other union branches are left out.
        out: dict[str, Any] = {}
        for s in self.readback_slots():
            out[s.name] = s.node.unpack(buf, off + s.offset)
        return out

    def readback_slots(self) -> tuple[Slot, ...]:
        got: tuple[Slot, ...] | None = getattr(self, "_readback", None)
        if got is None:
            got = self._readback = _pick_branches(self.slots)
        return got

    def child(self, key: str | int) -> Node | None:
        s = self.by_name.get(key) if isinstance(key, str) else None
        return s.node if s else None

    def leaves(self, off: int) -> Iterator[tuple[Steps, int, Node]]:
        for s in self.slots:
            for steps, at, node in s.node.leaves(off + s.offset):
                yield (s.name, *steps), at, node

    def known_names(self) -> str:
        return ", ".join(repr(s.name) for s in self.slots)


def _conflict(a: Groups, b: Groups) -> bool:
    members = dict(a)
    return any(uid in members and members[uid] != m for uid, m in b)


def _pick_branches(slots: tuple[Slot, ...]) -> tuple[Slot, ...]:
    """The slots of one consistent branch per union: the one spanning most bytes."""
    # Span of each (union, member) branch, so the widest member can be chosen.
    span: dict[tuple[int, int], int] = {}
    for s in slots:
        for g in s.groups:
            span[g] = max(span.get(g, 0), s.offset + s.node.size)
    best: dict[int, int] = {}
    for (uid, member), end in sorted(span.items()):
        if uid not in best or end > span[(uid, best[uid])]:
            best[uid] = member
    return tuple(s for s in slots if all(best[uid] == m for uid, m in s.groups))
