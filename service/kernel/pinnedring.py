"""Feed a user ring another loader pinned (bpfman, a Go agent...): no object of ours.

The service opens the pin, checks it is a user ring buffer, locks it (one
producer per ring: the ring's producer lock, :mod:`ringbridge.ring.lock`) and maps it.
Nothing is loaded, attached or pinned, and the drain is the other loader's
business.

The sample type's BTF comes from the kernel (:func:`ringbridge.kernel.ringmap.ring_btf`).
"""

from __future__ import annotations

from pathlib import Path

from ..closing import Closing
from ..errors import ConfigError, KernelError, PinError
from . import libbpf as lb
from .ringmap import check_user_ringbuf, ring_btf

__all__ = ["PinnedRing", "open_ring_pin"]


class PinnedRing(Closing):
    """An open user ring pinned by someone else."""

    def __init__(self, path: Path, fd: lb.Fd, info: lb.MapInfo) -> None:
        self.path = path
        self._fd = fd
        self.info = info

    @property
    def ring_fd(self) -> int:
        return self._fd.fd

    @property
    def ring_size(self) -> int:
        return self.info.max_entries

    @property
    def closed(self) -> bool:
        return self._fd.closed

    def btf(self) -> lb.KernelBtf:
        """The BTF that describes this ring's samples (see the module doc)."""
        return ring_btf(self.info, f"--sample-type: the ring pinned at {self.path}")

    def close(self) -> None:
        self._fd.close()

    def __repr__(self) -> str:
        return f"PinnedRing({str(self.path)!r}, {self.ring_size} bytes)"


def open_ring_pin(path: Path, ring_size: int, *, size_given: bool) -> PinnedRing:
    """Opens the user ring pinned at ``path``.

    Its size is the pinned map's; a ``--ring-size`` given explicitly must match.
    """
    try:
        fd = lb.obj_get(path)
    except KernelError as exc:
        raise PinError(f"--ring-pin {path}: cannot open the pin: {exc.message}") from exc
    try:
        info = check_user_ringbuf(fd, f"--ring-pin {path}", what="the pin")
        if size_given and info.max_entries != ring_size:
            raise ConfigError(
                f"--ring-pin {path}: the pinned ring has {info.max_entries} bytes but "
                f"--ring-size {ring_size} was given; drop --ring-size or set it to "
                f"{info.max_entries}"
            )
    except BaseException:
        fd.close()
        raise
    return PinnedRing(path, fd, info)
