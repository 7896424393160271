"""Another local user can neither fill a pin dir, nor hold the producer lock,
nor keep a restart from taking it (pin dirs 0700; the lock a 0600 file in a
0700 runtime directory; a lock directory of someone else's refused)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbridge.backends import open_backend
from ringbridge.errors import PinError
from ringbridge.kernel.bpfobj import load_default
from ringbridge.ring import ProducerLock, UserRingBuffer
from ringbridge.ring.lock import lock_path
from ringbridge.settings import Settings

pytestmark = pytest.mark.kernel

NOBODY = 65534

# Run as an unprivileged user: open a path (directory or file) and flock it, then wait.
_HOLD = """
import fcntl, os, sys
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
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


@pytest.fixture
def lock_dir() -> Iterator[Path]:
    """A lock directory of its own in /run (others can reach /run), removed afterwards."""
    path = Path("/run") / f"ringbridge-test-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_pin_dir_and_lock_are_private(
    bpf_object_path: Path, pin_dir: Path, lock_dir: Path
) -> None:
    with load_default(bpf_object_path, pin_dir, 4096) as lr:
        assert stat.S_IMODE(os.stat(pin_dir).st_mode) == 0o700
        with UserRingBuffer(lr.ring_fd, lock_dir=lock_dir) as rb:
            lock = lock_path(rb.map_id, lock_dir)
            st = os.stat(lock_dir)
            assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
            st = os.stat(lock)
            assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
            for target in (pin_dir, lock_dir, lock):
                child = _hold_as_nobody(target)
                out, _ = child.communicate("", timeout=30)
                assert out.strip() == "denied", target


def test_a_lock_another_user_holds_does_not_block_a_restart(
    bpf_object_path: Path, pin_dir: Path, lock_dir: Path
) -> None:
    with load_default(bpf_object_path, pin_dir, 4096) as lr:
        map_id = UserRingBuffer(lr.ring_fd, lock=False, recover=False).map_id
        lock = lock_path(map_id, lock_dir)
        # A lock directory and file others could open (made by hand, or with
        # a wide umask), and a pin dir made readable: another user opens and
        # locks them, then keeps the fds.
        lock_dir.mkdir(mode=0o755)
        os.chmod(lock_dir, 0o755)
        lock.touch(mode=0o644)
        os.chmod(lock, 0o644)
        os.chmod(pin_dir, 0o755)
        holders = [_hold_as_nobody(p) for p in (lock, pin_dir)]
        try:
            for h in holders:
                assert h.stdout is not None
                assert h.stdout.readline().strip() == "locked"
            with UserRingBuffer(lr.ring_fd, lock_dir=lock_dir):
                # The directory is ours alone again; the file they lock is gone.
                assert stat.S_IMODE(os.stat(lock_dir).st_mode) == 0o700
                assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
            # A service starting on the pins makes the pin dir private again.
            settings = Settings(pin_dir=pin_dir, bpf_object=bpf_object_path, ring_size=4096)
            open_backend(settings).close()
            assert stat.S_IMODE(os.stat(pin_dir).st_mode) == 0o700
        finally:
            for h in holders:
                h.communicate("", timeout=30)


def test_a_lock_dir_of_someone_else_is_refused(lock_dir: Path) -> None:
    lock_dir.mkdir(mode=0o700)
    os.chown(lock_dir, NOBODY, NOBODY)
    with pytest.raises(PinError, match=rf"{lock_dir} belongs to uid {NOBODY}.*rm -r"):
        ProducerLock.acquire(7, what="ring", lock_dir=lock_dir)
    assert list(lock_dir.iterdir()) == []  # nothing of it trusted or touched


def test_a_symlinked_lock_dir_is_refused(lock_dir: Path, tmp_path: Path) -> None:
    lock_dir.symlink_to(tmp_path)
    with pytest.raises(PinError, match="symlink"):
        ProducerLock.acquire(7, what="ring", lock_dir=lock_dir)
    assert list(tmp_path.iterdir()) == []
