"""The producer lock of older versions: a directory next to the pin dir, on bpffs.

Before the lock was keyed by the ring itself (:mod:`ringbridge.ring.lock`),
``serve`` locked ``<pin dir>_producer_lock``, a sibling of the pin dir on
bpffs, which every pin dir left behind. Two things remain of it:

- :func:`retire_legacy_lock` at start: an older ringbridge still running on
  the pin dir holds it (refused, as any second producer is); otherwise the
  leftover directory is removed;
- ``unpin`` removes it with the pin dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ...errors import ProducerLockedError

__all__ = ["legacy_lock_path", "retire_legacy_lock"]


def legacy_lock_path(pin_dir: Path) -> Path:
    """Where older versions kept the producer lock of ``pin_dir``."""
    # bpffs refuses names with dots.
    return pin_dir.with_name(f"{pin_dir.name}_producer_lock")


def retire_legacy_lock(pin_dir: Path) -> None:
    """Removes the old lock directory of ``pin_dir``, unless an older ringbridge
    holds it: then :class:`ProducerLockedError`."""
    path = legacy_lock_path(pin_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # none (or not a directory: not ours to touch)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProducerLockedError(
                f"an older ringbridge produces into the ring pinned under {pin_dir} "
                f"(it holds {path}); a user ring buffer takes one producer only: stop it first"
            ) from None
        with contextlib.suppress(OSError):
            os.rmdir(path)
    finally:
        os.close(fd)
