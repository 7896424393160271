"""An opened (and maybe loaded) BPF ELF object: the owner of its maps,
programs and BTF."""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Iterator
from pathlib import Path

from ...closing import Closing
from ...errors import BpfObjectError
from .btf import Btf
from .library import check_int, check_ptr, lib
from .members import BpfMap, BpfProgram


class BpfObject(Closing):
    """An opened (and maybe loaded) BPF ELF object.

    Closing frees every map and program libbpf holds for it; their fds close
    with it, so dup (or re-open from pins) what must outlive the object.
    """

    def __init__(self, path: Path, ptr: int) -> None:
        self.path = path
        self._ptr: int | None = ptr
        self._loaded = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BpfObject:
        p = Path(path)
        ptr = lib().bpf_object__open_file(os.fsencode(os.fspath(p)), None)
        return cls(p, check_ptr(ptr, "bpf_object__open_file", str(p), obj=True))

    def _require_open(self, what: str) -> int:
        if self._ptr is None:
            raise BpfObjectError(what, str(self.path), _errno.EBADF, "object is closed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return self._ptr is None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        ptr = self._require_open("bpf_object__load")
        rc = lib().bpf_object__load(ptr)
        check_int(
            rc,
            "bpf_object__load",
            str(self.path),
            obj=True,
            detail="see the ringbridge.libbpf log for libbpf's reason",
        )
        self._loaded = True

    def map(self, name: str) -> BpfMap:
        ptr = self._require_open("bpf_object__find_map_by_name")
        found = lib().bpf_object__find_map_by_name(ptr, name.encode())
        check_ptr(found, "bpf_object__find_map_by_name", f"{self.path}:{name}", obj=True)
        return BpfMap(self, found)

    def program(self, name: str) -> BpfProgram:
        ptr = self._require_open("bpf_object__find_program_by_name")
        found = lib().bpf_object__find_program_by_name(ptr, name.encode())
        check_ptr(found, "bpf_object__find_program_by_name", f"{self.path}:{name}", obj=True)
        return BpfProgram(self, found)

    def maps(self) -> Iterator[BpfMap]:
        ptr = self._require_open("bpf_object__next_map")
        cur = lib().bpf_object__next_map(ptr, None)
        while cur:
            yield BpfMap(self, cur)
            cur = lib().bpf_object__next_map(self._require_open("bpf_object__next_map"), cur)

    def programs(self) -> Iterator[BpfProgram]:
        ptr = self._require_open("bpf_object__next_program")
        cur = lib().bpf_object__next_program(ptr, None)
        while cur:
            yield BpfProgram(self, cur)
            cur = lib().bpf_object__next_program(
                self._require_open("bpf_object__next_program"), cur
            )

    def btf(self) -> Btf:
        ptr = self._require_open("bpf_object__btf")
        raw = lib().bpf_object__btf(ptr)
        if not raw:
            raise BpfObjectError(
                "bpf_object__btf",
                str(self.path),
                _errno.ENOENT,
                "object has no BTF (build it with clang -g)",
            )
        return Btf(self, raw)

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib().bpf_object__close(ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self._loaded else "open")
        return f"BpfObject({str(self.path)!r}, {state})"
