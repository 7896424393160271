"""Struct layouts read from BTF: the default object, and a purpose-built one."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from ringbridge.errors import BpfObjectError
from ringbridge.kernel import bpfobj
from ringbridge.kernel.btf import Field, struct_layout
from tests.conftest import require_kernel

# A struct per case; global pointers make clang emit the pointees' BTF.
_SOURCE = r"""
#include <linux/types.h>

typedef __u32 u32_alias;
typedef const volatile u32_alias cv_u32;
enum color { RED, GREEN = 5 };
enum big { BIG = 0x100000000ULL };

struct all_kinds {
	__u8 u8;
	__s8 s8;
	_Bool flag;
	char c;
	__s16 s16;
	cv_u32 cv;
	enum color color;
	__s64 s64;
	enum big big;
	double d;
	float f;
	char name[12];
	__u8 raw[4];
	__u16 grid[2][3];
	__u32 tail[];
};

struct with_bitfield { __u32 a:3; __u32 b:5; };
struct with_ptr { __u64 x; void *p; };
struct inner { __u32 x; };
struct with_nested { __u32 y; struct inner in; };
struct with_union { union { __u32 a; float b; } u; };

struct all_kinds *g_all;
struct with_bitfield *g_bf;
struct with_ptr *g_ptr;
struct with_nested *g_nested;
struct with_union *g_union;
"""


@pytest.fixture(scope="module")
def custom_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clang = shutil.which("clang")
    if clang is None:
        if require_kernel():
            pytest.fail("clang is missing: cannot build the BTF test object")
        pytest.skip("clang is missing")
    d = tmp_path_factory.mktemp("btf")
    src = d / "kinds.bpf.c"
    src.write_text(_SOURCE)
    out = d / "kinds.bpf.o"
    multiarch = subprocess.run(
        ["cc", "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    include = [f"-I/usr/include/{multiarch}"] if multiarch else []
    subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", *include, "-c", str(src), "-o", str(out)],
        check=True,
    )
    return out


# -- the default object -------------------------------------------------------


@pytest.mark.kernel
def test_ringbridge_sample(bpf_object_path: Path) -> None:
    layout = struct_layout(bpf_object_path, "ringbridge_sample")
    assert layout.name == "ringbridge_sample"
    assert layout.size == 16
    assert layout.fields == (
        Field("kind", 0, 4, "uint", False, 1, "uint", 4),
        Field("flags", 4, 4, "uint", False, 1, "uint", 4),
        Field("value", 8, 8, "uint", False, 1, "uint", 8),
    )
    assert layout.names == ("kind", "flags", "value")
    assert layout.field("value").end == 16


@pytest.mark.kernel
def test_ringbridge_ctl(bpf_object_path: Path) -> None:
    layout = struct_layout(bpf_object_path, "ringbridge_ctl")
    assert layout.size == bpfobj.CTL_VALUE_SIZE
    assert [(f.name, f.offset, f.size, f.kind) for f in layout.fields] == [
        ("producer_waiting", 0, 4, "uint"),
        ("drain_budget", 4, 4, "uint"),
        ("period_ns", 8, 8, "uint"),
        ("next_seq", 16, 8, "uint"),
        ("idle_drains", 24, 4, "uint"),
        ("_reserved", 28, 4, "uint"),
        ("idle_period_ns", 32, 8, "uint"),
    ]


@pytest.mark.kernel
def test_ringbridge_counters_matches_bpfobj(bpf_object_path: Path) -> None:
    # bpfobj decodes the counters with a fixed layout: keep it honest.
    layout = struct_layout(bpf_object_path, "ringbridge_counters")
    assert layout.size == bpfobj.COUNTERS_VALUE_SIZE
    assert [(f.name, f.offset, f.count) for f in layout.fields] == [
        ("samples", 0, 1),
        ("bytes", 8, 1),
        ("drain_calls", 16, 1),
        ("drain_errors", 24, len(bpfobj.DRAIN_ERROR_NAMES)),
        ("short_samples", 56, 1),
        ("kind_overflow", 64, 1),
        ("kind_count", 72, bpfobj.MAX_KINDS),
        ("kind_value", 72 + 8 * bpfobj.MAX_KINDS, bpfobj.MAX_KINDS),
    ]
    assert all(f.elem_size == 8 and f.elem_kind == "uint" for f in layout.fields)


@pytest.mark.kernel
def test_unknown_struct(bpf_object_path: Path) -> None:
    with pytest.raises(BpfObjectError) as info:
        struct_layout(bpf_object_path, "no_such_struct")
    assert info.value.errno == errno.ENOENT
    assert info.value.target == f"{bpf_object_path}:no_such_struct"


@pytest.mark.kernel
def test_nested_struct_in_default_object_is_rejected(bpf_object_path: Path) -> None:
    with pytest.raises(BpfObjectError) as info:
        struct_layout(bpf_object_path, "timer_elem")
    assert info.value.target.endswith("timer_elem.timer")


def test_missing_object(tmp_path: Path) -> None:
    with pytest.raises(BpfObjectError) as info:
        struct_layout(tmp_path / "missing.bpf.o", "ringbridge_sample")
    assert info.value.errno == errno.ENOENT


# -- every supported and rejected kind ------------------------------------------


def test_all_supported_kinds(custom_object: Path) -> None:
    layout = struct_layout(custom_object, "all_kinds")
    f = {x.name: x for x in layout.fields}
    assert list(f) == [
        "u8", "s8", "flag", "c", "s16", "cv", "color", "s64", "big", "d", "f",
        "name", "raw", "grid", "tail",
    ]  # fmt: skip
    assert f["u8"] == Field("u8", 0, 1, "uint", False, 1, "uint", 1)
    assert f["s8"] == Field("s8", 1, 1, "int", True, 1, "int", 1)
    assert (f["flag"].offset, f["flag"].kind, f["flag"].size) == (2, "bool", 1)
    assert f["c"].offset == 3 and f["c"].kind in ("int", "uint") and f["c"].count == 1
    assert f["s16"] == Field("s16", 4, 2, "int", True, 1, "int", 2)
    # typedef + const + volatile resolve to the underlying u32
    assert f["cv"] == Field("cv", 8, 4, "uint", False, 1, "uint", 4)
    # enums are unsigned integers of their size
    assert f["color"] == Field("color", 12, 4, "uint", False, 1, "uint", 4)
    assert f["s64"] == Field("s64", 16, 8, "int", True, 1, "int", 8)
    assert (f["big"].offset, f["big"].size, f["big"].kind) == (24, 8, "uint")
    assert (f["d"].offset, f["d"].size, f["d"].kind) == (32, 8, "float")
    assert (f["f"].offset, f["f"].size, f["f"].kind) == (40, 4, "float")
    assert (f["name"].offset, f["name"].kind, f["name"].count, f["name"].size) == (
        44,
        "char_array",
        12,
        12,
    )
    assert f["raw"] == Field("raw", 56, 4, "array", False, 4, "uint", 1)
    # int grid[2][3] is flattened
    assert f["grid"] == Field("grid", 60, 12, "array", False, 6, "uint", 2)
    # a flexible array member takes no room
    assert f["tail"] == Field("tail", 72, 0, "array", False, 0, "uint", 4)
    assert layout.size == 72


@pytest.mark.parametrize(
    ("struct", "field", "why"),
    [
        ("with_bitfield", "a", "bitfield"),
        ("with_ptr", "p", "pointer"),
        ("with_nested", "in", "nested struct"),
        ("with_union", "u", "union"),
    ],
)
def test_rejected_members_are_named(custom_object: Path, struct: str, field: str, why: str) -> None:
    with pytest.raises(BpfObjectError) as info:
        struct_layout(custom_object, struct)
    assert info.value.target == f"{custom_object}:{struct}.{field}"
    assert info.value.errno == errno.EOPNOTSUPP
    assert why in str(info.value)
