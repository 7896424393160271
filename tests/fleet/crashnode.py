"""A fleet node in a process of its own, that can kill itself with SIGKILL at a chosen point.

``python -m tests.fleet.crashnode URL PIN_DIR OBJECT SUBJECT... [--crash WHERE:SEQ]``

- ``--crash after-stamp:S``: right after the cursor record announcing stream
  seq S's commit is written, before the ring's ``producer_pos`` is published;
- ``--crash after-commit:S``: right after S's commit, before its ack.

Without ``--crash`` it runs until every message of the stream is resolved
and JetStream has nothing left unacked for it, then stops cleanly and prints
its statistics as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import nats

from ringbridge.fleet.cursor import CursorRecord, PinnedCursorStore

from .conftest import fleet_config, running_node


class CrashingStore:
    """The real store, and SIGKILL once the record of ``seq``'s commit is in it."""

    def __init__(self, store: PinnedCursorStore, seq: int) -> None:
        self._store = store
        self._seq = seq

    def load_cursor(self) -> CursorRecord | None:
        return self._store.load_cursor()

    def store_cursor(self, record: CursorRecord) -> None:
        self._store.store_cursor(record)
        if record.seq == self._seq and record.end_pos:
            os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        self._store.close()


async def last_seq(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("FLEET")
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def main(args: argparse.Namespace) -> int:
    where, _, at = (args.crash or ":").partition(":")
    crash_at = int(at) if at else -1

    def after_commit(seq: int) -> None:
        if where == "after-commit" and seq == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = fleet_config(args.url, args.subjects, mode=args.mode, ack_wait=args.ack_wait)
    target = await last_seq(args.url)
    async with running_node(
        Path(args.object), Path(args.pin_dir), cfg, after_commit=after_commit
    ) as node:
        if where == "after-stamp":
            node.cursor._store = CrashingStore(node.store, crash_at)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            st = node.door.statistics()
            done = st.last_resolved_seq >= target
            if done and (args.mode == "pins" or (st.ack_pending == 0 and st.pending == 0)):
                break
            await asyncio.sleep(0.05)
        st = node.door.statistics()
    print(json.dumps(dataclasses.asdict(st)), flush=True)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("pin_dir")
    p.add_argument("object")
    p.add_argument("subjects", nargs="+")
    p.add_argument("--crash")
    p.add_argument("--mode", default="durable")
    # Of the durables the node makes (the first run makes them).
    p.add_argument("--ack-wait", type=float, default=2.0)
    sys.exit(asyncio.run(main(p.parse_args())))
