"""A user ring loaded and pinned by ``bpftool`` -- not by ringbridge -- for the library's tests.

The object is ``bpf/selftests/user_ringbuf_success.bpf.c``, in the style of
the kernel's ``progs/user_ringbuf_success.c``: its ring has no max_entries,
so the ring is made at the size a test needs (``bpftool map create``) and the
program loaded against it (``bpftool prog loadall ... map name user_ringbuf
pinned RING pinmaps DIR``), the way a user sizes such a map with bpftool. The
test drains it by running the object's ``SEC("syscall")`` program through
BPF_PROG_TEST_RUN (our libbpf layer) and reads what the program counted from
its pinned ``.bss`` map, with offsets from the object's own BTF.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ringbridge.closing import Closing
from ringbridge.errors import KernelError
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.globals import global_vars

REPO = Path(__file__).resolve().parents[2]
SUCCESS_OBJ = REPO / "build" / "selftests" / "user_ringbuf_success.bpf.o"
BPFFS = Path("/sys/fs/bpf")
DRAIN_PROG = "test_user_ringbuf_drain"
MAX_KINDS = 256


def ensure_built() -> None:
    if not SUCCESS_OBJ.exists():
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)


def bpftool(*args: str) -> None:
    out = subprocess.run(["bpftool", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bpftool {' '.join(args)} failed: {out.stderr.strip()}")


@dataclass(frozen=True)
class Counters:
    """What the object's drain callback counted (its globals)."""

    samples: int
    bytes: int
    short_samples: int
    kind_overflow: int
    kind_count: tuple[int, ...]
    kind_value: tuple[int, ...]
    drain_calls: int
    #: Failed drains by errno name ("EINVAL", "E2BIG", ...).
    drain_errors: Counter[str]


def _read_bss() -> dict[str, tuple[int, int]]:
    """(offset, size) of each .bss variable of the object, from its BTF."""
    with lb.BpfObject.open(SUCCESS_OBJ) as obj:
        return {v.name: (v.offset, v.size) for v in global_vars(obj.btf(), ".bss")}


class BpftoolRing(Closing):
    """``user_ringbuf`` of the selftest object, ``size`` bytes, pinned under ``root``."""

    def __init__(self, size: int, root: Path | None = None) -> None:
        ensure_built()
        self.root = root or BPFFS / f"ringbridge-test-bpftool-{uuid.uuid4().hex[:12]}"
        self.root.mkdir(parents=True)
        self.ring_pin = self.root / "user_ringbuf"
        self.size = size
        self._prog: lb.Fd | None = None
        self._bss: lb.Fd | None = None
        try:
            bpftool(
                "map", "create", str(self.ring_pin), "type", "user_ringbuf",
                "key", "0", "value", "0", "entries", str(size), "name", "user_ringbuf",
            )  # fmt: skip
            bpftool(
                "prog", "loadall", str(SUCCESS_OBJ), str(self.root / "progs"),
                "map", "name", "user_ringbuf", "pinned", str(self.ring_pin),
                "pinmaps", str(self.root / "maps"),
            )  # fmt: skip
            self._prog = lb.obj_get(self.root / "progs" / DRAIN_PROG)
            self._bss = lb.obj_get(self.root / "maps" / "user_rin_bss")
            self._vars = _read_bss()
            self._bss_size = lb.map_info(self._bss).value_size
        except BaseException:
            self.close()
            raise

    def drain(self) -> int:
        """Runs the drain program once: samples drained, or KernelError(-errno)."""
        assert self._prog is not None
        ret = lb.prog_test_run(self._prog, name=DRAIN_PROG)
        if ret < 0:
            raise KernelError("bpf_user_ringbuf_drain", str(self.ring_pin), -ret)
        return ret

    def counters(self) -> Counters:
        assert self._bss is not None
        raw = lb.map_lookup(self._bss, b"\0\0\0\0", self._bss_size)

        def u64(name: str, index: int = 0) -> int:
            off, _ = self._vars[name]
            return int.from_bytes(raw[off + 8 * index : off + 8 * index + 8], "little")

        def array(name: str) -> tuple[int, ...]:
            return tuple(u64(name, i) for i in range(self._vars[name][1] // 8))

        errors = array("drain_errors")
        return Counters(
            samples=u64("read"),
            bytes=u64("bytes"),
            short_samples=u64("short_samples"),
            kind_overflow=u64("kind_overflow"),
            kind_count=array("kind_count"),
            kind_value=array("kind_value"),
            drain_calls=u64("drain_calls"),
            drain_errors=Counter(
                {errno.errorcode.get(e, str(e)): n for e, n in enumerate(errors) if n}
            ),
        )

    def close(self) -> None:
        for fd in (self._prog, self._bss):
            if fd is not None:
                fd.close()
        self._prog = self._bss = None
        # bpffs holds only pins: removing them unloads what nothing else holds.
        shutil.rmtree(self.root, ignore_errors=True)
