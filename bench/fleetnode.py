"""``ringbridge serve`` that notes when each JetStream message was committed: for ``bench.fleet``.

``python -m bench.fleetnode COMMITS_FILE serve ARGS...`` runs the real CLI in
this process; the fleet front door's ``after_commit`` (called once a message
is in the ring, before its ack) appends ``"<stream seq> <CLOCK_MONOTONIC ns>"``
to ``COMMITS_FILE``: one ``write(2)`` per message. CLOCK_MONOTONIC is one
clock for every process of the machine, so the benchmark compares these
times with its own publish times.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ringbridge.cli import main
from ringbridge.fleet import frontdoor


def install(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    init = frontdoor.FrontDoor.__init__

    def note(seq: int) -> None:
        os.write(fd, f"{seq} {time.monotonic_ns()}\n".encode())

    def patched_init(self: frontdoor.FrontDoor, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._after_commit = note

    frontdoor.FrontDoor.__init__ = patched_init  # type: ignore[method-assign]


def commits(path: str | os.PathLike[str]) -> dict[int, int]:
    """stream seq -> monotonic ns of its commit, from a node's file (the first if several)."""
    out: dict[int, int] = {}
    try:
        with open(path) as f:
            for line in f:
                seq, _, ns = line.partition(" ")
                if ns.endswith("\n"):
                    out.setdefault(int(seq), int(ns))
    except FileNotFoundError:
        pass
    return out


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
