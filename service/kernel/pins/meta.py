"""The identity record kept with a pin set: which object made these pins.

Pins outlive the service, and a rebuilt object may keep every map name and
size while changing what its programs do or how they read a sample. Re-using
such pins would run the new code against the old state (or, for the built-in
set, the old consumer against a new layout) without any error. So every pin
set ringbridge makes holds one more pin, ``ringbridge_meta``: a one-entry,
mmapable array map whose value records the SHA-256 of the object file the
set was made from. Re-opening compares it with the object given and refuses
a mismatch, pointing at ``ringbridge unpin``.

The same value carries the service's next sample sequence number (written in
place through the mapping before each commit, read at start), so sample
seqs stay unique across restarts for any object.

bpffs holds only BPF objects (no regular files), hence a map for the record.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import struct
from pathlib import Path
from typing import Final

from ...errors import KernelError, PinError
from .. import libbpf as lb
from .layout import META_PIN
from .unpin import unpin_hint

__all__ = ["PinMeta", "object_digest"]

_MAGIC: Final = b"ringbridge-pins\0"
_VERSION: Final = 1
# magic[16], u32 version, u32 reserved, sha256[32], u64 next_seq
_VALUE: Final = struct.Struct("=16sII32sQ")
_SEQ_OFF: Final = 56
_SEQ: Final = struct.Struct("=Q")
_KEY0: Final = b"\0\0\0\0"


def object_digest(path: Path) -> bytes:
    """SHA-256 of the object file's bytes."""
    h = hashlib.sha256()
    try:
        with Path(path).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise PinError(f"cannot read BPF object {path}: {exc.strerror or exc}") from exc
    return h.digest()


class PinMeta:
    """The open ``ringbridge_meta`` map of a pin set (a producer ``SeqStore`` too)."""

    def __init__(self, fd: lb.Fd, path: Path) -> None:
        self.fd = fd
        self.path = path
        self._map: mmap.mmap | None = None

    @classmethod
    def create(cls, digest: bytes, pin_path: Path) -> PinMeta:
        """A new record for an object of ``digest``, pinned at ``pin_path``."""
        fd = lb.map_create(
            lb.BPF_MAP_TYPE_ARRAY, META_PIN, 4, _VALUE.size, 1, map_flags=lb.BPF_F_MMAPABLE
        )
        try:
            lb.map_update(fd, _KEY0, _VALUE.pack(_MAGIC, _VERSION, 0, digest, 0), name=META_PIN)
            lb.obj_pin(fd, pin_path)
        except BaseException:
            fd.close()
            raise
        return cls(fd, pin_path)

    @classmethod
    def open(cls, pin_path: Path) -> PinMeta:
        try:
            fd = lb.obj_get(pin_path)
        except KernelError as exc:
            raise PinError(f"cannot open {pin_path}: {exc.message}") from exc
        try:
            info = lb.map_info(fd, name=META_PIN)
            if info.type != lb.BPF_MAP_TYPE_ARRAY or info.value_size != _VALUE.size:
                hint = unpin_hint(pin_path.parent)
                raise PinError(f"{pin_path} is not a ringbridge identity record; {hint}")
            meta = cls(fd, pin_path)
            meta._check_magic()
        except BaseException:
            fd.close()
            raise
        return meta

    def _read(self) -> tuple[bytes, int, bytes, int]:
        raw = lb.map_lookup(self.fd, _KEY0, _VALUE.size, name=META_PIN)
        magic, version, _, digest, seq = _VALUE.unpack(raw)
        return magic, version, digest, seq

    def _check_magic(self) -> None:
        magic, version, _, _ = self._read()
        if magic != _MAGIC or version != _VERSION:
            raise PinError(
                f"{self.path} holds an identity record of another format (version {version}); "
                + unpin_hint(self.path.parent)
            )

    @property
    def digest(self) -> bytes:
        return self._read()[2]

    def check(self, digest: bytes, obj_path: Path) -> None:
        """Refuses (PinError) unless the pins were made from an object of ``digest``."""
        pinned = self.digest
        if pinned != digest:
            raise PinError(
                f"the pins under {self.path.parent} were made from another BPF object "
                f"(sha256 {pinned.hex()[:16]}...) than {obj_path} "
                f"(sha256 {digest.hex()[:16]}...): its programs would run against maps laid "
                "out and filled by the old one; " + unpin_hint(self.path.parent)
            )

    def load_seq(self) -> int:
        return self._read()[3]

    def store_seq(self, next_seq: int) -> None:
        # In place through the mapping: called before every commit, a map
        # update syscall each time would cost more than the commit.
        if self._map is None:
            try:
                self._map = mmap.mmap(self.fd.fd, mmap.PAGESIZE, mmap.MAP_SHARED)
            except OSError as exc:
                raise KernelError("mmap", META_PIN, exc.errno or errno.EIO) from exc
        _SEQ.pack_into(self._map, _SEQ_OFF, next_seq)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self.fd.close()
