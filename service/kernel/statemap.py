"""A small record ringbridge keeps on bpffs: a one-entry BPF array map it creates and pins.

bpffs holds BPF objects only, so state that must live exactly as long as the
pins (a ring's ``producer_pos`` lives in the ring map itself) is kept in a
map of our own, whatever object -- ours, a user's, or a ring another loader
pinned -- the service feeds. The map is created with ``bpf_map_create`` (no
object, no program uses it) and pinned at a path the caller chooses.

Reads and writes go through the ``bpf()`` syscall, not an mmap: one
``BPF_MAP_UPDATE_ELEM`` copies the whole value inside the kernel, and a
process killed with SIGKILL dies between syscalls, never inside one, so a
reader after a crash sees the record before or after a write, never half of
it. (Stores through a mapping are separate instructions: a kill -9 between
two of them would leave a torn record.)
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from ..closing import Closing
from ..errors import KernelError, PinError
from . import libbpf as lb

__all__ = ["PinnedRecord"]

_KEY0: Final = b"\0\0\0\0"


class PinnedRecord(Closing):
    """One fixed-size value in a pinned one-entry array map; ``load``/``store`` whole."""

    def __init__(self, fd: lb.Fd, path: Path, name: str, size: int, created: bool) -> None:
        self._fd = fd
        self.path = path
        self.name = name
        self.size = size
        #: True when this open created the map (its value is all zeros).
        self.created = created

    @classmethod
    def open_or_create(cls, path: Path, name: str, size: int) -> PinnedRecord:
        """The record pinned at ``path``, made (all zeros) and pinned there if absent.

        ``name`` is the map's kernel name (at most 15 characters); an existing
        pin must be a one-entry array map of ``size``-byte values with that
        name, else :class:`PinError` (it is someone else's).
        """
        if len(name) > 15:
            raise ValueError(f"BPF map name {name!r} is longer than 15 characters")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PinError(f"cannot create pin dir {path.parent}: {exc.strerror or exc}") from exc
        if not path.exists():
            fd = lb.map_create(lb.BPF_MAP_TYPE_ARRAY, name, 4, size, 1)
            try:
                lb.obj_pin(fd, path)
            except KernelError as exc:
                fd.close()
                if exc.errno != errno.EEXIST:
                    raise
                # Pinned by someone else in between: fall through and check theirs.
            else:
                return cls(fd, path, name, size, created=True)
        return cls._open(path, name, size)

    @classmethod
    def _open(cls, path: Path, name: str, size: int) -> PinnedRecord:
        try:
            fd = lb.obj_get(path)
        except KernelError as exc:
            raise PinError(f"cannot open pin {path}: {exc.message}") from exc
        try:
            fdinfo = Path(f"/proc/self/fdinfo/{fd.fd}").read_text()
            info = lb.map_info(fd, name=str(path)) if "map_type:" in fdinfo else None
            if info is None or (
                info.type,
                info.key_size,
                info.value_size,
                info.max_entries,
                info.name,
            ) != (lb.BPF_MAP_TYPE_ARRAY, 4, size, 1, name):
                what = "not a BPF map" if info is None else f"map {info.name!r}"
                raise PinError(
                    f"{path} is {what}, not ringbridge's {name!r} record "
                    f"(a one-entry array of {size}-byte values); remove it or choose another path"
                )
        except BaseException:
            fd.close()
            raise
        return cls(fd, path, name, size, created=False)

    @property
    def map_id(self) -> int:
        return lb.map_info(self._fd, name=self.name).id

    def load(self) -> bytes:
        return lb.map_lookup(self._fd, _KEY0, self.size, name=self.name)

    def store(self, value: bytes) -> None:
        """Replaces the whole value in one syscall (atomic for a process that dies)."""
        if len(value) != self.size:
            raise ValueError(f"{self.name}: value of {len(value)} bytes, expected {self.size}")
        lb.map_update(self._fd, _KEY0, value, name=self.name)

    @property
    def closed(self) -> bool:
        return self._fd.closed

    def close(self) -> None:
        self._fd.close()

    def unpin(self) -> None:
        """Removes the pin (the map lives on while this or another fd holds it)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PinError(f"cannot remove pin {self.path}: {exc.strerror or exc}") from exc
