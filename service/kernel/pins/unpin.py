"""Removing pins: the one unlink-then-rmdir loop, and ``unpin`` for both pin sets."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterable
from pathlib import Path

from ...errors import PinError
from .layout import META_PIN, RING_MAP, RingbridgePins
from .legacy import legacy_lock_path

__all__ = ["remove_pins", "retire_leftover_lock", "unpin", "unpin_hint"]


def unpin_hint(pin_dir: Path) -> str:
    """How to clear a pin dir that was refused (the fix named by every pin refusal)."""
    return (
        f"run `ringbridge unpin --pin-dir {pin_dir}` to remove the old pins "
        "(this drops the ring's contents and the kernel state kept in the maps), "
        "or use another --pin-dir"
    )


def remove_pins(pin_dir: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Unlinks ``names`` in ``pin_dir`` (every entry when None), then the dir if empty.

    The identity record goes last: a removal cut short still leaves a dir
    recognisably ours, which a second unpin can finish. Returns what was
    removed; a missing entry or dir is not an error, anything else a
    :class:`PinError`.
    """
    if names is None:
        try:
            names = [p.name for p in pin_dir.iterdir()]
        except FileNotFoundError:
            return []
    removed: list[Path] = []
    for name in sorted(names, key=lambda n: n == META_PIN):
        path = pin_dir / name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PinError(f"cannot remove pin {path}: {exc}") from exc
        removed.append(path)
    try:
        pin_dir.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise PinError(f"cannot remove pin dir {pin_dir}: {exc}") from exc
    else:
        removed.append(pin_dir)
    return removed


def unpin(pin_dir: Path) -> list[Path]:
    """Removes ringbridge's pins under ``pin_dir``, then the dir if empty.

    A user object's set (identity record, no built-in ring) goes whole:
    ringbridge made that dir whole. Of anything else only the built-in set's
    names go, so entries of others stay. The producer lock older versions
    left next to the pin dir goes with it.

    Returns what was removed. Objects still held open elsewhere (a running
    service) stay alive until their last fd closes.
    """
    user_set = (pin_dir / META_PIN).exists() and not (pin_dir / RING_MAP).exists()
    names = None if user_set else RingbridgePins.under(pin_dir).names()
    removed = remove_pins(pin_dir, names)
    retire_leftover_lock(pin_dir)
    return removed


def retire_leftover_lock(pin_dir: Path) -> None:
    """Removes the lock directory older versions left next to ``pin_dir`` once the
    pin dir is gone (none are made any more)."""
    if not pin_dir.exists():
        with contextlib.suppress(OSError):
            legacy_lock_path(pin_dir).rmdir()
