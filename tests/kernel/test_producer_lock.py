"""One producer per ring: the producer lock, keyed by the ring's map id."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ringbridge.errors import PinError, ProducerLockedError
from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.pins import RingbridgePins, legacy_lock_path, retire_legacy_lock
from ringbridge.ring import DEFAULT_LOCK_DIR, ProducerLock, UserRingBuffer
from ringbridge.ring.lock import lock_path

pytestmark = pytest.mark.kernel

# Another process opens the same ring through its pin and takes its lock.
_SECOND = """
import sys
from ringbridge.errors import PinError
from ringbridge.ring import UserRingBuffer
try:
    UserRingBuffer.from_pin(sys.argv[1]).close()
except PinError as exc:
    print(exc, flush=True)
    sys.exit(3)
"""


def _second(pin: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SECOND, str(pin)], capture_output=True, text=True, check=False
    )


def test_second_producer_is_refused_until_the_first_exits(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    with load_default(bpf_object_path, pin_dir, 4096) as lr:
        pin = RingbridgePins.under(pin_dir).ring
        first = UserRingBuffer(lr.ring_fd)
        # The lock is the ring's: any path to it meets it (here the pin).
        with pytest.raises(PinError, match="another ringbridge producer") as ei:
            UserRingBuffer.from_pin(pin)
        assert f"pid {os.getpid()}" in str(ei.value)  # the holder, named
        assert f"map id {first.map_id}" in str(ei.value)
        # Another process is refused the same way (flock is per open file).
        refused = _second(pin)
        assert refused.returncode == 3, refused.stderr
        assert f"pid {os.getpid()}" in refused.stdout
        first.close()
        first.close()  # idempotent
        assert _second(pin).returncode == 0
        UserRingBuffer.from_pin(pin).close()


def test_lock_lives_in_a_private_runtime_dir_not_on_bpffs(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    with load_default(bpf_object_path, pin_dir, 4096) as lr, UserRingBuffer(lr.ring_fd) as rb:
        path = lock_path(rb.map_id)
        assert path.parent == DEFAULT_LOCK_DIR == Path("/run/ringbridge")
        st = os.stat(path.parent)
        assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
        st = os.stat(path)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert path.read_text().strip() == str(os.getpid())
        # Nothing next to the pin dir on bpffs any more.
        assert not legacy_lock_path(pin_dir).exists()
        assert sorted(p.name for p in pin_dir.parent.iterdir()) == [pin_dir.name]
    assert not path.exists()  # the holder removes its file when it lets go


def test_the_lock_is_taken_before_anything_is_written(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    with load_default(bpf_object_path, pin_dir, 4096) as lr, UserRingBuffer(lr.ring_fd) as rb:
        s = rb.reserve(16)  # BUSY, as a live producer's record is
        # A second producer refused at the lock never recovers (rewrites) it.
        with pytest.raises(ProducerLockedError):
            UserRingBuffer(lr.ring_fd)
        assert lr.drain() == 0
        s.submit()
        assert lr.drain() == 1


def test_a_held_legacy_lock_refuses_a_start_and_a_leftover_one_is_removed(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    load_default(bpf_object_path, pin_dir, 4096).close()
    legacy = legacy_lock_path(pin_dir)
    legacy.mkdir(mode=0o700)
    fd = os.open(legacy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # an older ringbridge, running
        with pytest.raises(ProducerLockedError, match="an older ringbridge"):
            retire_legacy_lock(pin_dir)
        assert legacy.is_dir()
    finally:
        os.close(fd)
    retire_legacy_lock(pin_dir)  # left behind, held by nobody: removed
    assert not legacy.exists()


def test_lock_on_missing_dir_names_it(tmp_path: Path) -> None:
    with pytest.raises(PinError, match="nope"):
        ProducerLock.acquire(1, what="ring", lock_dir=tmp_path / "nope" / "deeper")

