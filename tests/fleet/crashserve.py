"""``ringbridge serve`` that kills itself with SIGKILL at a chosen point of one message.

``python -m tests.fleet.crashserve WHERE:SEQ serve ARGS...`` runs the real CLI
(settings, uvicorn, lifespan, assemble, the fleet front door) in this process,
with one test hook put in from outside -- the service has none:

- ``after-commit:S``: right after stream seq S's commit, before its ack (the
  front door's ``after_commit``);
- ``after-stamp:S``: right after the cursor record announcing S's commit is
  stored, before the ring's ``producer_pos`` is published.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from ringbridge.cli import main
from ringbridge.fleet import frontdoor
from ringbridge.fleet.cursor import Cursor


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(where: str, seq: int) -> None:
    if where == "after-commit":
        init = frontdoor.FrontDoor.__init__

        def patched_init(self: frontdoor.FrontDoor, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self._after_commit = lambda s: _die() if s == seq else None

        frontdoor.FrontDoor.__init__ = patched_init  # type: ignore[method-assign]
    elif where == "after-stamp":
        stamp = Cursor.stamp

        def patched_stamp(self: Cursor, s: int, end_pos: int) -> None:
            stamp(self, s, end_pos)
            if s == seq:
                _die()

        setattr(Cursor, "stamp", patched_stamp)  # noqa: B010 (mypy: a method replaced)
    else:
        raise SystemExit(f"crashserve: unknown point {where!r}")


if __name__ == "__main__":
    point, _, at = sys.argv[1].partition(":")
    install(point, int(at))
    sys.exit(main(sys.argv[2:]))
