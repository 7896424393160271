"""The maps and programs of an open :class:`~.objects.BpfObject`, and the
links that keep a program attached."""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ...errors import KernelError
from .library import check_int, lib, raise_error
from .syscalls import (
    MapInfo,
    map_info,
    map_lookup,
    map_update,
    num_possible_cpus,
    percpu_value_stride,
    prog_test_run,
)

if TYPE_CHECKING:
    from .objects import BpfObject


class _Member:
    """A map or program of an open :class:`BpfObject` (valid until it closes).

    libbpf names the calls of both alike (``bpf_map__fd`` / ``bpf_program__fd``),
    so the shared ones are looked up by ``_prefix``.
    """

    _kind: ClassVar[str]
    _prefix: ClassVar[str]

    def __init__(self, owner: BpfObject, ptr: int) -> None:
        self._owner = owner
        self._ptr = ptr
        raw = getattr(lib(), f"{self._prefix}name")(ptr)
        self.name: str = raw.decode() if raw else "?"

    def _p(self, op: str) -> int:
        self._owner._require_open(f"{op} {self._kind} {self.name!r}")
        return self._ptr

    def _call(self, what: str, *args: Any) -> Any:
        """libbpf's ``<prefix><what>`` on this member (while its object is open)."""
        op = self._prefix + what
        return getattr(lib(), op)(self._p(op), *args)

    @property
    def fd(self) -> int:
        """The fd, owned by the object (only after load)."""
        rc = self._call("fd")
        return check_int(rc, f"{self._prefix}fd", self.name, obj=True, detail="object not loaded?")

    def pin(self, path: str | os.PathLike[str]) -> None:
        rc = self._call("pin", os.fsencode(os.fspath(path)))
        check_int(rc, f"{self._prefix}pin", f"{self.name} -> {os.fspath(path)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class BpfMap(_Member):
    """A map of an open :class:`BpfObject` (valid until the object closes)."""

    _kind = "map"
    _prefix = "bpf_map__"

    @property
    def type(self) -> int:
        return int(self._call("type"))

    @property
    def max_entries(self) -> int:
        return int(self._call("max_entries"))

    @property
    def key_size(self) -> int:
        return int(self._call("key_size"))

    @property
    def value_size(self) -> int:
        return int(self._call("value_size"))

    @property
    def btf_value_type_id(self) -> int:
        """The BTF type of the map's declared value (``__type(value, T)``), or 0."""
        return int(self._call("btf_value_type_id"))

    @property
    def is_internal(self) -> bool:
        """A map libbpf made for global data (.bss, .data, .rodata, .kconfig)."""
        return bool(self._call("is_internal"))

    def set_max_entries(self, n: int) -> None:
        """Resizes the map; only before the object is loaded (EBUSY after)."""
        rc = self._call("set_max_entries", n)
        check_int(rc, "bpf_map__set_max_entries", self.name, obj=True)

    def set_pin_path(self, path: str | os.PathLike[str] | None) -> None:
        raw = os.fsencode(os.fspath(path)) if path is not None else None
        rc = self._call("set_pin_path", raw)
        check_int(rc, "bpf_map__set_pin_path", self.name, obj=True)

    def lookup(self, key: bytes) -> bytes:
        self._check_key(key)
        return map_lookup(self.fd, key, self._lookup_size(), name=self.name)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self._check_key(key)
        if len(value) != self._lookup_size():
            raise KernelError(
                "bpf_map_update_elem",
                self.name,
                _errno.EINVAL,
                f"value is {len(value)} bytes, map wants {self._lookup_size()}",
            )
        map_update(self.fd, key, value, flags, name=self.name)

    def info(self) -> MapInfo:
        return map_info(self.fd, name=self.name)

    def _check_key(self, key: bytes) -> None:
        if len(key) != self.key_size:
            raise KernelError(
                "bpf_map_lookup_elem",
                self.name,
                _errno.EINVAL,
                f"key is {len(key)} bytes, map wants {self.key_size}",
            )

    def _lookup_size(self) -> int:
        # Per-CPU maps take a buffer for every possible CPU.
        if self.type in _PERCPU_MAP_TYPES:
            return percpu_value_stride(self.value_size) * num_possible_cpus()
        return self.value_size


# PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE
_PERCPU_MAP_TYPES: Final = frozenset({5, 6, 10, 21})


class BpfProgram(_Member):
    """A program of an open :class:`BpfObject` (valid until the object closes)."""

    _kind = "program"
    _prefix = "bpf_program__"

    def test_run(self, ctx: bytes | None = None) -> int:
        return prog_test_run(self.fd, ctx, name=self.name)

    @property
    def type(self) -> int:
        return int(self._call("type"))

    @property
    def section(self) -> str:
        raw = self._call("section_name")
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def autoattach(self) -> bool:
        """False when the object asked libbpf not to auto-attach this program."""
        return bool(self._call("autoattach"))

    def attach(self) -> BpfLink | None:
        """Attaches at the point its section names (libbpf auto-attach).

        None when the section has no attach point libbpf knows (``syscall``,
        a bare ``kprobe``...): libbpf answers EOPNOTSUPP, which is no error
        here. The link keeps the program attached until it is destroyed.
        """
        ptr = self._call("attach")
        if not ptr:
            err = ctypes.get_errno()
            if err == _errno.EOPNOTSUPP:
                return None
            raise_error("bpf_program__attach", f"{self.name} ({self.section})", err, obj=False)
        return BpfLink(ptr, self.name)


class BpfLink:
    """An attachment of a program; :meth:`destroy` detaches it."""

    def __init__(self, ptr: int, program: str) -> None:
        self._ptr: int | None = ptr
        self.program = program

    @property
    def active(self) -> bool:
        return self._ptr is not None

    def destroy(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib().bpf_link__destroy(ptr)

    def __repr__(self) -> str:
        return f"BpfLink({self.program!r}, {'attached' if self.active else 'destroyed'})"
