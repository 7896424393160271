"""Another local user can neither fill a pin dir, nor hold the producer lock,
nor keep a restart from taking it (pin dirs 0700, lock on a private dir)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.pins import lock_producer, producer_lock_path

pytestmark = pytest.mark.kernel

NOBODY = 65534

# Run as an unprivileged user: open a directory and flock it, then wait.
_HOLD = """
import fcntl, os, sys
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
except PermissionError:
    print("denied", flush=True); sys.exit(0)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


def _hold_as_nobody(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_pin_dir_and_lock_are_private(bpf_object_path: Path, pin_dir: Path) -> None:
    with load_default(bpf_object_path, pin_dir, 4096):
        assert stat.S_IMODE(os.stat(pin_dir).st_mode) == 0o700
        with lock_producer(pin_dir):
            lock = producer_lock_path(pin_dir)
            st = os.stat(lock)
            assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
            for target in (pin_dir, lock):
                child = _hold_as_nobody(target)
                out, _ = child.communicate("", timeout=30)
                assert out.strip() == "denied", target


def test_a_lock_another_user_holds_does_not_block_a_restart(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    with load_default(bpf_object_path, pin_dir, 4096):
        # A pin dir and lock made readable by others (an older version, or by
        # hand): another user opens and locks them, then keeps the fds.
        lock = producer_lock_path(pin_dir)
        lock.mkdir(mode=0o755)
        os.chmod(lock, 0o755)
        os.chmod(pin_dir, 0o755)
        holders = [_hold_as_nobody(p) for p in (lock, pin_dir)]
        try:
            for h in holders:
                assert h.stdout is not None
                assert h.stdout.readline().strip() == "locked"
            with lock_producer(pin_dir):
                assert stat.S_IMODE(os.stat(pin_dir).st_mode) == 0o700
                assert stat.S_IMODE(os.stat(lock).st_mode) == 0o700
        finally:
            for h in holders:
                h.communicate("", timeout=30)
