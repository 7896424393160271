"""A new pin set appears whole or not at all: made in a staging dir, renamed into place.

A loader killed half-way never leaves an incomplete set under the real pin
dir, and of two loaders racing for a fresh dir exactly one wins (rename onto
a non-empty directory fails).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from ...errors import PinError
from .bpffs import is_bpffs
from .unpin import remove_pins

__all__ = ["staged"]


def _staging_dir(pin_dir: Path, pid: int) -> Path:
    # No dots: bpffs refuses names containing "." (reserved).
    return pin_dir.parent / f"{pin_dir.name}-staging-{pid}"


def _remove_stale(pin_dir: Path) -> None:
    # A loader killed while pinning leaves its staging dir behind; it never
    # blocks anyone (the pin dir itself was not touched), but is tidied here.
    prefix = f"{pin_dir.name}-staging-"
    for entry in pin_dir.parent.glob(prefix + "*"):
        pid = entry.name[len(prefix) :]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(PinError):
            remove_pins(entry)


def _create(pin_dir: Path) -> Path:
    try:
        pin_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PinError(f"cannot create the parent of pin dir {pin_dir}: {exc}") from exc
    # Re-checked on the directory itself: a symlink could point off bpffs.
    if not is_bpffs(pin_dir.parent):
        raise PinError(f"pin dir {pin_dir} is not on a BPF filesystem")
    _remove_stale(pin_dir)
    staging = _staging_dir(pin_dir, os.getpid())
    # Ours from an earlier attempt of this very process.
    with contextlib.suppress(PinError):
        remove_pins(staging)
    try:
        # 0700: another local user must not fill it or hold it open.
        staging.mkdir(mode=0o700)
    except OSError as exc:
        raise PinError(f"cannot create staging dir {staging}: {exc}") from exc
    return staging


@contextlib.contextmanager
def staged(pin_dir: Path) -> Iterator[Path]:
    """Yields a fresh private staging dir next to ``pin_dir`` to pin into.

    When the block ends normally the staging dir is renamed onto ``pin_dir``
    (which must be missing or empty: PinError otherwise); when it raises, or
    the rename fails, the staging dir and its pins are removed.
    """
    staging = _create(pin_dir)
    try:
        yield staging
        try:
            # Replaces pin_dir only if it is missing or empty.
            os.rename(staging, pin_dir)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise PinError(f"pin dir {pin_dir} appeared while loading; retry") from None
            raise PinError(f"cannot move pins into {pin_dir}: {exc}") from exc
    except BaseException:
        # Never mask the original error with a cleanup failure.
        with contextlib.suppress(PinError):
            remove_pins(staging)
        raise
