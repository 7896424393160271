"""Feed a user ring another loader pinned (bpfman, a Go agent...): no object of ours.

The service opens the pin, checks it is a user ring buffer, locks it (one
producer per ring: :func:`ringbridge.kernel.pins.lock_ring_pin`) and maps it.
Nothing is loaded, attached or pinned, and the drain is the other loader's
business.

The sample type's BTF comes from the kernel: the map's own BTF when its
loader created it with one, else the BTF of a loaded program that uses the
map (libbpf creates ring buffer maps without BTF, but every program of the
object carries the object's BTF, sample struct included).
"""

from __future__ import annotations

from pathlib import Path

from ..closing import Closing
from ..errors import ConfigError, KernelError, PinError
from . import libbpf as lb

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
        if self.info.btf_id:
            return lb.KernelBtf.load(self.info.btf_id)
        for prog_id in lb.prog_ids():
            try:
                with lb.prog_by_id(prog_id) as fd:
                    info = lb.prog_info(fd, map_ids=True)
            except KernelError:
                continue  # unloaded meanwhile
            if self.info.id in info.map_ids and info.btf_id:
                return lb.KernelBtf.load(info.btf_id)
        raise ConfigError(
            f"--sample-type: the ring pinned at {self.path} has no BTF, and no loaded "
            "program that uses it carries any (build the loader's object with clang -g)"
        )

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
        # Info by fd answers for programs and links too: fdinfo says what it is.
        fdinfo = Path(f"/proc/self/fdinfo/{fd.fd}").read_text()
        if "map_type:" not in fdinfo:
            raise PinError(f"--ring-pin {path}: the pin is not a BPF map (a program or link?)")
        info = lb.map_info(fd, name=str(path))
        if info.type != lb.BPF_MAP_TYPE_USER_RINGBUF:
            raise PinError(
                f"--ring-pin {path}: map {info.name!r} has type {info.type}, "
                "not BPF_MAP_TYPE_USER_RINGBUF"
            )
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
