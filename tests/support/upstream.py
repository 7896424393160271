"""Objects written in the style of the kernel's selftests, and what tests need around them.

tests/fixtures/upstream_style/ holds them as such a user would leave them: no
BTF anchor, the wire structs only in the header beside them (which uses
__u32/__s64 without including <linux/types.h>). bpf/Makefile builds them
into build/upstream_style/. Their programs only act for the process whose
tgid is in their ``pid`` global, so concurrent tests (and other processes
making the same syscalls) do not disturb them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.globals import global_vars, section_of
from tests.conftest import require_kernel

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "upstream_style"
BUILT = REPO / "build" / "upstream_style"
PROTO_HEADER = FIXTURES / "test_user_ringbuf_proto.h"
PROTO_OBJ = BUILT / "user_ringbuf_proto.bpf.o"
SAMPLE_OBJ = BUILT / "user_ringbuf_sample.bpf.o"

# enum test_msg_op
INC64, INC32, MUL64, MUL32 = 0, 1, 2, 3
OP_NAMES = ("TEST_MSG_OP_INC64", "TEST_MSG_OP_INC32", "TEST_MSG_OP_MUL64", "TEST_MSG_OP_MUL32")
PR_GET_DUMPABLE = 3


def ensure_built() -> None:
    if not all(p.exists() for p in (PROTO_OBJ, SAMPLE_OBJ)):
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)


def clang_or_skip() -> str:
    clang = shutil.which("clang")
    if clang is None:
        if require_kernel():
            pytest.fail("clang is missing (make setup installs it)")
        pytest.skip("clang is missing (run make setup)")
    return clang


def compile_bpf(src: Path, out: Path, defines: Sequence[str] = ()) -> Path:
    """``clang -O2 -g -target bpf`` of a test's own source, as bpf/Makefile does."""
    clang = clang_or_skip()
    multiarch = subprocess.run(
        ["cc", "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    include = [f"-I/usr/include/{multiarch}"] if multiarch else []
    subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", *include, *(f"-D{d}" for d in defines),
         "-c", str(src), "-o", str(out)],
        check=True,
    )  # fmt: skip
    return out


def _bss(obj: lb.BpfObject) -> tuple[lb.BpfMap, dict[str, tuple[int, int]]]:
    for m in obj.maps():
        if m.is_internal and section_of(m.name) == ".bss":
            return m, {v.name: (v.offset, v.size) for v in global_vars(obj.btf(), ".bss")}
    raise AssertionError(f"{obj} has no .bss")


def set_global(obj: lb.BpfObject, name: str, value: int) -> None:
    """Writes an integer global of a loaded object (in its .bss map)."""
    m, vars_ = _bss(obj)
    off, size = vars_[name]
    raw = bytearray(m.lookup(b"\0\0\0\0"))
    raw[off : off + size] = value.to_bytes(size, "little", signed=value < 0)
    m.update(b"\0\0\0\0", bytes(raw))


def get_global(obj: lb.BpfObject, name: str, *, signed: bool = False) -> int:
    m, vars_ = _bss(obj)
    off, size = vars_[name]
    return int.from_bytes(m.lookup(b"\0\0\0\0")[off : off + size], "little", signed=signed)


def claim(obj: lb.BpfObject) -> None:
    """Makes the object's programs act for this process (upstream's ``skel->bss->pid``)."""
    set_global(obj, "pid", os.getpid())


def prctl() -> None:
    """The syscall the protocol object drains on (a harmless PR_GET_DUMPABLE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)


def getpgid() -> None:
    """The syscall the sample object drains on."""
    os.getpgid(0)


def wrap_s64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


class Counter:
    """The protocol object's kern_mutated, as the kernel computes it."""

    def __init__(self) -> None:
        self.value = 0
        self.seq = 0

    def apply(self, op: int, operand: int) -> dict[str, object]:
        """The reply the object publishes for one request (as typed JSON)."""
        self.seq += 1
        status = 0
        if op in (INC64, INC32):
            self.value += operand
        elif op in (MUL64, MUL32):
            self.value *= operand
        else:
            status = -22
        self.value = wrap_s64(self.value)
        name = OP_NAMES[op] if 0 <= op < len(OP_NAMES) else op
        return {"seq": self.seq, "msg_op": name, "status": status, "kern_mutated": self.value}


def raw_msg(op: int, operand: int) -> bytes:
    """struct test_msg packed by hand (an op the enum does not name)."""
    return struct.pack("<I4xq", op, operand)
