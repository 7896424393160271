"""The idempotency keys kept with a pin set: ``ringbridge_idempotency_keys`` (a ``KeyStore``).

The service remembers the last N keyed batches it committed
(:mod:`ringbridge.producer.keys`); kept here, the memory survives a restart
as the ring and the seqs do, so a client resending a batch after a crash of
the service still gets its first ack. An mmapable array map of N 64-byte
slots, written in place (a store into the mapping before each keyed commit,
no syscall); made by the service next to the pins of either kind of set,
optional in a set (an older set without it gets one).

Slot: ``key[16] body[16] u64 first_seq u64 end_pos u32 count u32 valid
u64 reserved``. ``valid`` is written last (and cleared first), so a record
cut short by a crash is not read back.
"""

from __future__ import annotations

import errno
import logging
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from ...errors import KernelError, PinError
from .. import libbpf as lb
from .unpin import unpin_hint

__all__ = ["PinnedKeys"]

log = logging.getLogger("ringbridge.pins")

_MAP_NAME: Final = "rb_keys"
_SLOT: Final = struct.Struct("=16s16sQQI")
_VALID: Final = struct.Struct("=I")
_VALID_OFF: Final = _SLOT.size
_SLOT_SIZE: Final = 64


class PinnedKeys:
    """The open ``ringbridge_idempotency_keys`` map of a pin set, mapped."""

    def __init__(self, fd: lb.Fd, capacity: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self._capacity = capacity
        length = -(-capacity * _SLOT_SIZE // mmap.PAGESIZE) * mmap.PAGESIZE
        try:
            self._map: mmap.mmap | None = mmap.mmap(fd.fd, length, mmap.MAP_SHARED)
        except OSError as exc:
            raise KernelError("mmap", str(path), exc.errno or errno.EIO) from exc

    @classmethod
    def open_or_create(cls, path: Path, capacity: int) -> PinnedKeys:
        """The keys pinned at ``path``, or a new map of ``capacity`` slots pinned there.

        A pinned map keeps its own capacity (a changed setting applies once
        the pins are made anew).
        """
        try:
            fd = lb.obj_get(path)
        except KernelError as exc:
            if exc.errno != errno.ENOENT:
                raise PinError(f"cannot open {path}: {exc.message}") from exc
            return cls._create(path, capacity)
        try:
            info = lb.map_info(fd, name=_MAP_NAME)
            if (
                info.type != lb.BPF_MAP_TYPE_ARRAY
                or info.value_size != _SLOT_SIZE
                or info.key_size != 4
            ):
                raise PinError(
                    f"{path} is not ringbridge's idempotency key map; " + unpin_hint(path.parent)
                )
            if info.max_entries != capacity:
                log.info(
                    "idempotency keys: the pinned map keeps its size",
                    extra={"pinned": info.max_entries, "asked": capacity, "path": str(path)},
                )
            keys = cls(fd, info.max_entries, path)
            fd.close()  # the mapping holds the map; one fd fewer (api/connguard.py's cap)
            return keys
        except BaseException:
            fd.close()
            raise

    @classmethod
    def _create(cls, path: Path, capacity: int) -> PinnedKeys:
        fd = lb.map_create(
            lb.BPF_MAP_TYPE_ARRAY, _MAP_NAME, 4, _SLOT_SIZE, capacity, map_flags=lb.BPF_F_MMAPABLE
        )
        try:
            keys = cls(fd, capacity, path)
            lb.obj_pin(fd, path)
        finally:
            fd.close()  # the mapping and the pin hold the map
        return keys

    @property
    def capacity(self) -> int:
        return self._capacity

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            raise PinError(f"{self.path} is closed")
        return self._map

    def records(self) -> Iterator[tuple[int, bytes, bytes, int, int, int]]:
        """``(slot, key, body, first_seq, count, end_pos)`` of every valid slot."""
        m = self._mapping()
        for slot in range(self._capacity):
            off = slot * _SLOT_SIZE
            if _VALID.unpack_from(m, off + _VALID_OFF)[0] != 1:
                continue
            key, body, first_seq, end_pos, count = _SLOT.unpack_from(m, off)
            yield slot, key, body, first_seq, count, end_pos

    def put(
        self, slot: int, key: bytes, body: bytes, first_seq: int, count: int, end_pos: int
    ) -> None:
        m = self._mapping()
        off = slot * _SLOT_SIZE
        _VALID.pack_into(m, off + _VALID_OFF, 0)
        _SLOT.pack_into(m, off, key, body, first_seq, end_pos, count)
        _VALID.pack_into(m, off + _VALID_OFF, 1)

    def clear(self, slot: int) -> None:
        _VALID.pack_into(self._mapping(), slot * _SLOT_SIZE + _VALID_OFF, 0)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self.fd.close()
