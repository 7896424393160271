"""Helpers for tests of user ("bring your own") BPF objects: read kernel state from pins.

Kernel state is read straight from the pinned maps, with variable offsets
from the object's own BTF: independent of the service's metrics export,
which the tests check against these readings.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
from pathlib import Path

from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.globals import DATA_SECTIONS, global_vars, section_of
from ringbridge.kernel.pins import pin_name

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
EXAMPLE_OBJ = BUILD / "examples" / "ops.bpf.o"
SELFTEST_OBJ = BUILD / "selftests" / "user_ringbuf_msg.bpf.o"
SELFTEST_VARIANT_OBJ = BUILD / "selftests" / "user_ringbuf_msg_variant.bpf.o"
TWO_RINGS_OBJ = BUILD / "selftests" / "two_rings.bpf.o"

# struct ops_msg (bpf/examples/ops.bpf.c): u32 op, u32 tag, union {s64 add; s64 mul;
# struct {char name[16]; u64 value;} set;} -- 32 bytes.
OPS_ADD, OPS_MUL, OPS_SET = 0, 1, 2
_OPS_NUM = struct.Struct("<IIq16x")
_OPS_SET = struct.Struct("<II16sQ")
# struct test_msg (bpf/selftests/user_ringbuf_msg.bpf.c): enum op; union {s64; s32;}
INC64, INC32, MUL64, MUL32 = 0, 1, 2, 3
_TEST_MSG = struct.Struct("<I4xq")
_TEST_MSG32 = struct.Struct("<I4xi4x")


def ensure_built() -> None:
    if not all(p.exists() for p in (EXAMPLE_OBJ, SELFTEST_OBJ, SELFTEST_VARIANT_OBJ)):
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)


def ops_msg(op: int, operand: int = 0, *, tag: int = 0) -> bytes:
    return _OPS_NUM.pack(op, tag, operand)


def ops_set(name: str, value: int, *, tag: int = 0) -> bytes:
    return _OPS_SET.pack(OPS_SET, tag, name.encode(), value)


def selftest_msg(op: int, operand: int) -> bytes:
    if op in (INC32, MUL32):
        return _TEST_MSG32.pack(op, operand)
    return _TEST_MSG.pack(op, operand)


def wrap64(v: int, signed: bool = False) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if signed and v >= 1 << 63 else v


def read_globals(obj_path: Path, pin_dir: Path) -> dict[str, int]:
    """Every integer global of the object, read from its pinned data-section maps."""
    out: dict[str, int] = {}
    with lb.BpfObject.open(obj_path) as obj:
        btf = obj.btf()
        for m in obj.maps():
            sec = section_of(m.name)
            if not m.is_internal or sec not in DATA_SECTIONS:
                continue
            with lb.obj_get(pin_dir / pin_name(m.name)) as fd:
                raw = lb.map_lookup(fd, b"\0\0\0\0", m.value_size)
            for var in global_vars(btf, sec):
                t = btf.type_by_id(btf.resolve_type(var.type_id))
                if t.kind not in (lb.BTF_KIND_INT, lb.BTF_KIND_ENUM):
                    continue
                signed = (
                    bool(t.int_encoding & lb.BTF_INT_SIGNED) if t.kind == lb.BTF_KIND_INT else False
                )
                chunk = raw[var.offset : var.offset + var.size]
                out[var.name] = int.from_bytes(chunk, "little", signed=signed)
    return out


def read_hash(pin: Path, key_size: int, value_size: int) -> dict[bytes, bytes]:
    with lb.obj_get(pin) as fd:
        return {k: lb.map_lookup(fd, k, value_size) for k in lb.map_keys(fd, key_size)}


def trigger_syscall(name: str) -> None:
    """Make the syscall a test object's raw tracepoint program drains on."""
    if name == "getpgid":
        os.getpgid(0)
    elif name == "prctl":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE: harmless
    else:
        raise ValueError(name)
