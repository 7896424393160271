"""BTF: the kinds and records of ``linux/btf.h``, read through libbpf from an
open object (:class:`Btf`) or from the kernel by id (:class:`KernelBtf`)."""

from __future__ import annotations

import ctypes
import dataclasses
import errno as _errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ...closing import Closing
from ...errors import BpfObjectError, KernelError
from .library import check_int, check_ptr, lib, raise_error
from .structs import RawBtfArray, RawBtfMember, RawBtfType

if TYPE_CHECKING:
    from .objects import BpfObject


# BTF kinds and int encodings (uapi linux/btf.h).
BTF_KIND_INT: Final = 1
BTF_KIND_PTR: Final = 2
BTF_KIND_ARRAY: Final = 3
BTF_KIND_STRUCT: Final = 4
BTF_KIND_UNION: Final = 5
BTF_KIND_ENUM: Final = 6
BTF_KIND_FWD: Final = 7
BTF_KIND_TYPEDEF: Final = 8
BTF_KIND_VOLATILE: Final = 9
BTF_KIND_CONST: Final = 10
BTF_KIND_RESTRICT: Final = 11
BTF_KIND_VAR: Final = 14
BTF_KIND_DATASEC: Final = 15
BTF_KIND_FLOAT: Final = 16
BTF_KIND_TYPE_TAG: Final = 18
BTF_KIND_ENUM64: Final = 19
BTF_INT_SIGNED: Final = 1
BTF_INT_CHAR: Final = 2
BTF_INT_BOOL: Final = 4


@dataclass(frozen=True)
class BtfMember:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 unless the member is a bitfield


@dataclass(frozen=True)
class BtfArray:
    elem_type_id: int
    index_type_id: int
    nelems: int


@dataclass(frozen=True)
class DatasecVar:
    """One variable of a BTF_KIND_DATASEC (a global of ``.bss``, ``.data``...)."""

    var_type_id: int  # the BTF_KIND_VAR; its size_or_type is the variable's type
    offset: int
    size: int


@dataclass(frozen=True)
class BtfType:
    """One decoded ``struct btf_type`` plus the kind-specific data we use."""

    id: int
    kind: int
    name: str
    vlen: int
    kflag: bool
    # `size` for INT/ENUM/STRUCT/UNION/FLOAT/ENUM64; `type` for the
    # reference kinds (PTR, TYPEDEF, CONST, VOLATILE, ...).
    size_or_type: int
    int_encoding: int = 0
    int_bits: int = 0
    int_offset: int = 0
    members: tuple[BtfMember, ...] = ()
    array: BtfArray | None = None
    datasec: tuple[DatasecVar, ...] = ()
    # ENUM/ENUM64: (enumerator name, value), signed when ``kflag`` is set.
    enumerators: tuple[tuple[str, int], ...] = ()


class Btf:
    """The BTF of an open :class:`BpfObject`; owned (and freed) by the object."""

    def __init__(self, owner: BpfObject | None, ptr: int) -> None:
        self._owner = owner
        self._ptr = ptr

    def _p(self) -> int:
        assert self._owner is not None
        self._owner._require_open("btf")
        return self._ptr

    @property
    def where(self) -> str:
        """Where this BTF comes from, for error messages."""
        return str(self._owner.path) if self._owner is not None else "BTF"

    def find_by_name_kind(self, name: str, kind: int) -> int | None:
        """Type id of ``name`` of ``kind``, or None when absent."""
        rc = int(lib().btf__find_by_name_kind(self._p(), name.encode(), kind))
        if rc == -_errno.ENOENT:
            return None
        return check_int(rc, "btf__find_by_name_kind", f"{self.where}:{name}", obj=True)

    def name_by_offset(self, offset: int) -> str:
        raw = lib().btf__name_by_offset(self._p(), offset)
        return raw.decode("utf-8", "replace") if raw else ""

    def resolve_type(self, type_id: int) -> int:
        """Strips typedef/const/volatile/restrict/type_tag off ``type_id``."""
        rc = int(lib().btf__resolve_type(self._p(), type_id))
        return check_int(rc, "btf__resolve_type", f"{self.where}:type {type_id}", obj=True)

    def type_by_id(self, type_id: int) -> BtfType:
        ptr = lib().btf__type_by_id(self._p(), type_id)
        if not ptr:
            raise_error(
                "btf__type_by_id",
                f"{self.where}:type {type_id}",
                ctypes.get_errno() or _errno.EINVAL,
                obj=True,
            )
        t = ptr.contents
        kind = (t.info >> 24) & 0x1F
        vlen = t.info & 0xFFFF
        kflag = bool(t.info >> 31)
        base = BtfType(
            id=type_id,
            kind=kind,
            name=self.name_by_offset(t.name_off),
            vlen=vlen,
            kflag=kflag,
            size_or_type=t.size_or_type,
        )
        # Kind-specific data follows the fixed 12-byte header in memory.
        tail = ctypes.addressof(t) + ctypes.sizeof(RawBtfType)
        if kind == BTF_KIND_INT:
            enc = ctypes.c_uint32.from_address(tail).value
            return dataclasses.replace(
                base,
                int_encoding=(enc >> 24) & 0x0F,
                int_offset=(enc >> 16) & 0xFF,
                int_bits=enc & 0xFF,
            )
        if kind == BTF_KIND_ARRAY:
            arr = RawBtfArray.from_address(tail)
            return dataclasses.replace(base, array=BtfArray(arr.type, arr.index_type, arr.nelems))
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            members = []
            for i in range(vlen):
                m = RawBtfMember.from_address(tail + i * ctypes.sizeof(RawBtfMember))
                # With kind_flag set, offset packs (bitfield_size << 24 | bit_offset).
                if kflag:
                    bit_off, bf_size = m.offset & 0xFFFFFF, m.offset >> 24
                else:
                    bit_off, bf_size = m.offset, 0
                members.append(BtfMember(self.name_by_offset(m.name_off), m.type, bit_off, bf_size))
            return dataclasses.replace(base, members=tuple(members))
        if kind == BTF_KIND_DATASEC:
            # struct btf_var_secinfo {u32 type; u32 offset; u32 size;}
            raw = (ctypes.c_uint32 * (3 * vlen)).from_address(tail)
            secs = tuple(
                DatasecVar(raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]) for i in range(vlen)
            )
            return dataclasses.replace(base, datasec=secs)
        if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return dataclasses.replace(base, enumerators=self._enumerators(tail, kind, vlen, kflag))
        return base

    def _enumerators(
        self, tail: int, kind: int, vlen: int, signed: bool
    ) -> tuple[tuple[str, int], ...]:
        # struct btf_enum {u32 name_off; s32 val} / btf_enum64 {name_off; lo32; hi32}.
        words = 2 if kind == BTF_KIND_ENUM else 3
        raw = (ctypes.c_uint32 * (words * vlen)).from_address(tail)
        bits = 32 if kind == BTF_KIND_ENUM else 64
        out = []
        for i in range(vlen):
            name_off, lo = raw[i * words], raw[i * words + 1]
            value = lo if kind == BTF_KIND_ENUM else lo | raw[i * words + 2] << 32
            if signed and value >= 1 << (bits - 1):
                value -= 1 << bits
            out.append((self.name_by_offset(name_off), value))
        return tuple(out)


class KernelBtf(Btf, Closing):
    """BTF loaded from the kernel by id (a loaded map's ``btf_id``); owns its memory."""

    def __init__(self, ptr: int, btf_id: int) -> None:
        super().__init__(None, ptr)
        self.btf_id = btf_id
        self._closed = False

    @classmethod
    def load(cls, btf_id: int) -> KernelBtf:
        ptr = lib().btf__load_from_kernel_by_id(btf_id)
        return cls(check_ptr(ptr, "btf__load_from_kernel_by_id", f"btf id {btf_id}"), btf_id)

    def _p(self) -> int:
        if self._closed:
            raise KernelError("use btf", f"btf id {self.btf_id}", _errno.EBADF, "freed")
        return self._ptr

    @property
    def where(self) -> str:
        return f"kernel BTF id {self.btf_id}"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            lib().btf__free(self._ptr)


class FileBtf(Btf, Closing):
    """BTF read from a file: an ELF object's ``.BTF`` section or a raw BTF blob
    (``btf__parse`` tells them apart); owns its memory. Needs no privileges."""

    def __init__(self, ptr: int, path: Path) -> None:
        super().__init__(None, ptr)
        self.path = path
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FileBtf:
        p = Path(path)
        ptr = lib().btf__parse(os.fsencode(os.fspath(p)), None)
        return cls(check_ptr(ptr, "btf__parse", str(p), obj=True), p)

    def _p(self) -> int:
        if self._closed:
            raise BpfObjectError("use btf", str(self.path), _errno.EBADF, "freed")
        return self._ptr

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            lib().btf__free(self._ptr)
