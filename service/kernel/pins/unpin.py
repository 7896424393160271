"""Removing pins: the one unlink-then-rmdir loop, and ``unpin`` for both pin sets."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterable
from pathlib import Path

from ...errors import PinError
from .layout import META_PIN, RING_MAP, STATE_PINS, RingbridgePins
from .legacy import legacy_lock_path

__all__ = ["refuse_orphan_state", "remove_pins", "retire_leftover_lock", "unpin", "unpin_hint"]


def unpin_hint(pin_dir: Path) -> str:
    """How to clear a pin dir that was refused (the fix named by every pin refusal)."""
    return (
        f"run `ringbridge unpin --pin-dir {pin_dir}` to remove the old pins "
        "(this drops the ring's contents and the kernel state kept in the maps), "
        "or use another --pin-dir"
    )


def refuse_orphan_state(pin_dir: Path, present: set[str]) -> None:
    """PinError when ``pin_dir`` holds ringbridge's state records and nothing else.

    They were kept for a ring that is not pinned there (one served with
    ``--ring-pin``, or a set whose pins were removed by hand): a new set must
    not inherit them, nor are they deleted behind the operator's back.
    """
    if present and present <= STATE_PINS:
        raise PinError(
            f"pin dir {pin_dir} holds only ringbridge's state records "
            f"({', '.join(sorted(present))}) of a ring not pinned there (a --ring-pin "
            "service's pin dir, or pins removed by hand); " + unpin_hint(pin_dir)
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
    names and ringbridge's state records go (a ``--ring-pin`` service's pin
    dir holds only those), so entries of others stay. The producer lock older
    versions left next to the pin dir goes with it.

    Returns what was removed. Objects still held open elsewhere (a running
    service) stay alive until their last fd closes.
    """
    user_set = (pin_dir / META_PIN).exists() and not (pin_dir / RING_MAP).exists()
    names = None if user_set else RingbridgePins.under(pin_dir).names() | STATE_PINS
    removed = remove_pins(pin_dir, names)
    retire_leftover_lock(pin_dir)
    return removed


def retire_leftover_lock(pin_dir: Path) -> None:
    """Removes the lock directory older versions left next to ``pin_dir`` once the
    pin dir is gone (none are made any more)."""
    if not pin_dir.exists():
        with contextlib.suppress(OSError):
            legacy_lock_path(pin_dir).rmdir()
