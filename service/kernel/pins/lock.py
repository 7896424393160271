"""One producer per ring: the producer lock.

A user ring buffer has exactly one producer by contract: two processes
advancing producer_pos would overwrite each other's records and can poison
the ring. The lock is ``flock`` (per inode: it holds across containers
sharing the host's bpffs), released by the kernel when its holder exits,
even on a crash.

- A pin dir of ours (built-in consumer, user object): :func:`lock_producer`,
  on a private directory next to the pin dir.
- A ring another loader pinned: :func:`lock_ring_pin`, on the directory
  holding the pin (a map pin cannot be opened as a file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from ...errors import PinError, ProducerLockedError
from .. import libbpf as lb

__all__ = ["lock_producer", "lock_ring_pin", "producer_lock_path"]


def producer_lock_path(pin_dir: Path) -> Path:
    """The producer lock of ``pin_dir``: a private directory next to it on bpffs."""
    # bpffs refuses names with dots.
    return pin_dir.with_name(f"{pin_dir.name}_producer_lock")


def _private_dir_fd(path: Path) -> int:
    """An fd of directory ``path``, created 0700; one others could open is replaced.

    Anybody who can open a directory can ``flock`` it, and a lock held through
    an fd opened while the directory was accessible outlives any chmod. So a
    lock directory that is not ours alone (another owner, group/other bits, a
    symlink, not a directory) is removed and created afresh: a stale fd keeps
    its lock on the old inode, which no longer matters.
    """
    for _ in range(3):
        try:
            os.mkdir(path, 0o700)  # umask can only take bits away
        except FileExistsError:
            pass
        except OSError as exc:
            raise PinError(f"cannot create producer lock {path}: {exc}") from exc
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                st = os.fstat(fd)
                if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0:
                    return fd
                os.close(fd)
                os.rmdir(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue  # raced with another starter: try again
        except OSError as exc:
            raise PinError(f"cannot replace producer lock {path} (not private): {exc}") from exc
    raise PinError(f"producer lock {path} keeps being replaced by someone else")


def lock_producer(pin_dir: Path) -> lb.Fd:
    """Take the pin dir's producer lock: one producer per ring.

    The lock is on a directory only this user can open
    (:func:`producer_lock_path`, mode 0700, on bpffs next to the pin dir), so
    another local user can neither take it nor keep a restart from taking it.
    The pin dir itself is made 0700 when it is ours and was not.
    """
    try:
        st = os.stat(pin_dir)
    except OSError as exc:
        raise PinError(f"cannot open pin dir {pin_dir} to lock it: {exc}") from exc
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        # Made by an older version, or by hand: nobody else needs to look in.
        with contextlib.suppress(OSError):
            os.chmod(pin_dir, 0o700)
    path = producer_lock_path(pin_dir)
    return _flock(
        _private_dir_fd(path),
        f"{pin_dir} (producer lock)",
        held=f"another ringbridge producer holds the ring pinned under {pin_dir}; "
        "a user ring buffer takes one producer only: stop it or use another --pin-dir",
        failed=f"cannot lock {path}",
    )


def lock_ring_pin(path: Path) -> lb.Fd:
    """Take the lock of the ring pinned at ``path`` by another loader.

    One ringbridge per directory of pins: the lock is the directory's, as
    the pin itself cannot be opened to be locked.
    """
    failed = f"--ring-pin {path}: cannot lock the pin"
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise PinError(f"{failed}: {os.strerror(exc.errno or errno.EIO)}") from exc
    return _flock(
        fd,
        f"{path} (producer lock)",
        held=f"--ring-pin {path}: another ringbridge producer holds this ring "
        f"(or another ring pinned in {path.parent}); a user ring buffer takes "
        "one producer only",
        failed=failed,
    )


def _flock(fd: int, what: str, *, held: str, failed: str) -> lb.Fd:
    """Takes an exclusive, non-blocking flock on ``fd``, which it owns from here:
    the lock as an Fd, or ProducerLockedError(``held``) / PinError(``failed``)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ProducerLockedError(held) from None
    except OSError as exc:
        os.close(fd)
        raise PinError(f"{failed}: {os.strerror(exc.errno or errno.EIO)}") from exc
    return lb.Fd(fd, what)
