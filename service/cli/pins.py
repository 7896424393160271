"""``ringbridge drain`` and ``ringbridge unpin``: operate the pins of a service.

Both default to the pin dir ``serve`` uses (``$RINGBRIDGE_PIN_DIR``, else
the Settings default), so that the same environment addresses the same ring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ProducerLockedError, RingbridgeError
from .common import EXIT_OK, default_pin_dir, fail


def _pin_dir(args: argparse.Namespace) -> Path:
    given: Path | None = args.pin_dir
    return given if given is not None else default_pin_dir()


def cmd_drain(args: argparse.Namespace) -> int:
    """Run the pinned on-demand drain program once (bpftool cannot: it always
    passes data_in, which the kernel refuses for syscall programs)."""
    from ..kernel.bpfobj import open_pinned_drain

    pin_dir = _pin_dir(args)
    try:
        n = open_pinned_drain(pin_dir)
    except RingbridgeError as exc:
        return fail(f"drain {pin_dir}: {exc.message}")
    print(n)
    return EXIT_OK


def _ring_in_use(pin_dir: Path) -> str | None:
    """Why a producer still holds a ring pinned in ``pin_dir`` (its lock's refusal), or None."""
    from ..kernel import libbpf as lb
    from ..kernel.pins import retire_legacy_lock
    from ..kernel.ringmap import check_user_ringbuf
    from ..ring import ProducerLock

    try:
        retire_legacy_lock(pin_dir)
    except ProducerLockedError as exc:
        return exc.message
    for pin in sorted(pin_dir.iterdir()):
        try:
            with lb.obj_get(pin) as fd:
                info = check_user_ringbuf(fd, str(pin))
                # Probed while the fd keeps the map (and so its id) alive.
                ProducerLock.acquire(info.id, what=f"the ring pinned at {pin}").close()
        except ProducerLockedError as exc:
            return exc.message
        except RingbridgeError:
            continue  # not a user ring buffer (or gone meanwhile)
    return None


def cmd_unpin(args: argparse.Namespace) -> int:
    """Remove our pins; a missing pin dir is already the wanted state."""
    from ..kernel.pins import retire_leftover_lock, unpin

    pin_dir = _pin_dir(args)
    if not pin_dir.exists():
        retire_leftover_lock(pin_dir)
        print(f"nothing to remove: {pin_dir} does not exist")
        return EXIT_OK
    if not pin_dir.is_dir():
        return fail(f"unpin: {pin_dir} is not a directory")
    if not args.force:
        # A running producer holds its ring's lock; pulling its pins would
        # leave it running on a ring nobody else can find or clean up.
        held = _ring_in_use(pin_dir)
        if held is not None:
            return fail(
                f"unpin: a running ringbridge service holds the ring pinned under {pin_dir}; "
                "stop the service first (its pins are its ring, counters and seq), or pass "
                f"--force to remove them anyway ({held})"
            )
    try:
        removed = unpin(pin_dir)
    except RingbridgeError as exc:
        return fail(f"unpin {pin_dir}: {exc.message}")
    if not removed:
        print(f"nothing to remove: no ringbridge pins under {pin_dir}")
    for p in removed:
        print(f"removed {p}")
    return EXIT_OK
