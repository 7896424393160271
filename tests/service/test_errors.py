"""The exception tree drawn in ``ringbridge.errors``' docstring is the code.

Every error class of the module is drawn once, under its one base, and a
``(status)`` stands exactly where a class sets its own ``status_hint`` (and
says which).
"""

from __future__ import annotations

import re

from ringbridge import errors
from ringbridge.errors import RingbridgeError

#: A drawn class: its tree prefix (4 characters a level), name, optional (status).
_NODE = re.compile(
    r"^(?P<prefix>(?:[│ ]   )*(?:[├└]── )?)(?P<name>[A-Z]\w*)(?:\s+\((?P<status>[^)]*)\))?"
)


def _drawing() -> list[tuple[int, str, str | None]]:
    """(depth, class name, status as drawn) for each node of the docstring's tree."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    nodes = []
    for line in block.splitlines():
        if not line.strip():
            continue
        m = _NODE.match(line[4:])
        if m is None:
            continue  # a description carried over to the next line
        nodes.append((len(m["prefix"]) // 4, m["name"], m["status"]))
    return nodes


def _drawn_tree() -> tuple[dict[str, str | None], dict[str, str | None]]:
    parents: dict[str, str | None] = {}
    statuses: dict[str, str | None] = {}
    line: list[str] = []
    for depth, name, status in _drawing():
        assert name not in parents, f"{name} is drawn twice"
        del line[depth:]
        assert len(line) == depth, f"{name} is drawn with no parent at depth {depth}"
        parents[name] = line[-1] if line else None
        statuses[name] = status
        line.append(name)
    return parents, statuses


def _classes() -> dict[str, type[RingbridgeError]]:
    return {
        name: c
        for name, c in vars(errors).items()
        if isinstance(c, type) and issubclass(c, RingbridgeError)
    }


def test_the_drawing_has_every_class_at_its_parent() -> None:
    parents, _ = _drawn_tree()
    code: dict[str, str | None] = {}
    for name, cls in _classes().items():
        assert len(cls.__bases__) == 1, f"{name}: a tree has one base per class"
        base = cls.__bases__[0]
        code[name] = None if cls is RingbridgeError else base.__name__
    assert parents == code


def test_the_drawing_shows_each_status_hint_where_it_is_set() -> None:
    _, statuses = _drawn_tree()
    for name, cls in _classes().items():
        if "status_hint" in vars(cls):
            hint = cls.status_hint
            assert statuses[name] == ("none" if hint is None else str(hint)), name
        else:
            assert statuses[name] is None, f"{name} is drawn with a status it inherits"


def test_the_drawing_is_read_as_a_tree() -> None:
    # The parser above must see the whole drawing, or the tests prove nothing.
    nodes = _drawing()
    assert nodes[0] == (0, "RingbridgeError", "500")
    assert (2, "ProducerLockedError", None) in nodes
    assert (3, "RingTimeoutError", None) in nodes
    assert len(nodes) == len(_classes())
