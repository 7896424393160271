"""Run inside a private mount namespace (``unshare --mount --propagation private``):
unmount tracefs there, then let the service's attach code find it missing and mount it.

Nothing here touches the host's mounts: the namespace has its own copy of the
mount table, and it goes away with this process. Prints one JSON object for
the test (tests/kernel/test_attach.py) to check.

Usage: python -m tests.support.tracefs_child PIN_DIR
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

from ringbridge.errors import KernelError
from ringbridge.kernel.eventring import KernelRingReader
from ringbridge.kernel.objplan import plan_object
from ringbridge.kernel.tracefs import (
    DEBUGFS_TRACING,
    TRACEFS,
    ensure_tracefs,
    find_tracefs,
    is_mounted,
)
from ringbridge.kernel.userobj import load_object
from ringbridge.ring import UserRingBuffer
from tests.support.upstream import PROTO_OBJ, claim, prctl, raw_msg


def _umount(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def main(pin_dir: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    if os.access(DEBUGFS_TRACING, os.F_OK) and is_mounted(Path("/sys/kernel/debug"), "debugfs"):
        _umount(Path("/sys/kernel/debug"))  # libbpf would look there first
    if is_mounted(TRACEFS, "tracefs"):
        _umount(TRACEFS)
        out["was_mounted"] = True
    out["found_before"] = str(find_tracefs())
    try:
        ensure_tracefs(mount=False)
    except KernelError as exc:
        out["refused"] = exc.message
    plan = plan_object(PROTO_OBJ, ring_size=64 * 1024, map_sizes={"kernel_ringbuf": 4096})
    with load_object(plan, pin_dir) as loaded:
        out["attached"] = loaded.attached
        out["mounted_after"] = is_mounted(TRACEFS, "tracefs")
        claim(loaded.obj)
        with (
            UserRingBuffer(loaded.ring_fd) as ring,
            KernelRingReader(loaded.map("kernel_ringbuf").fd, "kernel_ringbuf") as reader,
        ):
            ring.commit_samples([raw_msg(0, 5), raw_msg(2, 3)])
            prctl()
            out["replies"] = [r.hex() for r in reader.poll(5.0).records]
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
