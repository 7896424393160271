"""C header -> BTF (ringbridge.schema.header): every type it defines, nothing else.

The headers are compiled by the real clang; what ends up in the output's BTF
is read back through libbpf (no privileges needed).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ringbridge.errors import SchemaError
from ringbridge.kernel import libbpf as lb
from ringbridge.schema import HeaderOptions, TypeSources, compile_header, header_types
from ringbridge.schema.header import CLANG_ENV, find_clang
from tests.support.upstream import PROTO_HEADER, clang_or_skip

HEADERS = Path(__file__).with_name("headers")
KINDS = HEADERS / "wire_kinds.h"

EXPECTED = [
    "enum wire_op",
    "struct wire_inner",
    "struct wire_msg",
    "union wire_value",
    "wire_anon_t",
    "wire_id_t",
    "wire_fn_t",
    "wire_opaque_t",
    "struct wire_pair",
]


@pytest.fixture(autouse=True)
def _clang() -> None:
    clang_or_skip()


def test_finds_exactly_what_the_header_defines() -> None:
    # Not: types of the headers it includes (common_hdr), forward declarations,
    # anonymous enums, types local to its inline functions.
    assert [t.c_name for t in header_types(KINDS)] == EXPECTED


def test_every_type_lands_in_the_output_btf(tmp_path: Path) -> None:
    out = tmp_path / "kinds.bpf.o"
    types = compile_header(KINDS, out)
    assert [t.c_name for t in types] == EXPECTED
    kinds = {
        "struct": lb.BTF_KIND_STRUCT,
        "union": lb.BTF_KIND_UNION,
        "enum": lb.BTF_KIND_ENUM,
        "typedef": lb.BTF_KIND_TYPEDEF,
    }
    with lb.FileBtf.open(out) as btf:
        for t in types:
            assert btf.find_by_name_kind(t.name, kinds[t.kind]) is not None, t
        # Types the header's types use come along whole (common_hdr from the sub-header).
        hdr = btf.type_by_id(btf.find_by_name_kind("common_hdr", lb.BTF_KIND_STRUCT) or 0)
        assert [m.name for m in hdr.members] == ["version", "flags"]


def test_the_compiled_types_pack_and_read_like_the_c_compiler(tmp_path: Path) -> None:
    out = tmp_path / "kinds.bpf.o"
    compile_header(KINDS, out)
    with TypeSources.open(btf_files=[out]) as sources:
        codec = sources.codec("struct wire_msg")
        anon = sources.codec("wire_anon_t")
    assert codec.sample_size == 24 and anon.sample_size == 16
    payload = codec.encode_sample(
        hdr={"version": 2, "flags": 1}, op="WIRE_SET", i64=-2, inner={"a": 7, "b": 9}
    )
    assert payload == (
        (2).to_bytes(2, "little") + (1).to_bytes(2, "little") + (5).to_bytes(4, "little")
        + (-2).to_bytes(8, "little", signed=True)
        + (7).to_bytes(4, "little") + (9).to_bytes(4, "little")
    )  # fmt: skip
    assert codec.decode_sample(payload)["op"] == "WIRE_SET"


def test_the_upstream_header_needs_linux_types_first(tmp_path: Path) -> None:
    # It uses __u32/__s64 without including <linux/types.h>: the default
    # prelude provides them; an empty prelude shows why it is needed.
    assert [t.c_name for t in header_types(PROTO_HEADER)] == [
        "enum test_msg_op",
        "struct test_msg",
        "struct test_reply",
        "struct sample",
    ]
    with pytest.raises(SchemaError, match=r"(?s)clang failed.*unknown type name '__s64'"):
        header_types(PROTO_HEADER, HeaderOptions(includes=()))


def test_include_replaces_the_prelude(tmp_path: Path) -> None:
    prelude = tmp_path / "my_types.h"
    prelude.write_text("typedef unsigned int u32;\ntypedef long long s64;\n")
    header = tmp_path / "uses_u32.h"
    header.write_text("struct kmsg { u32 op; s64 arg; };\n")
    with pytest.raises(SchemaError, match="unknown type name 'u32'"):
        header_types(header)  # <linux/types.h> has __u32, not u32
    opts = HeaderOptions(includes=(str(prelude),))
    out = tmp_path / "t.bpf.o"
    assert [t.c_name for t in compile_header(header, out, opts)] == ["struct kmsg"]
    with TypeSources.open(btf_files=[out]) as sources:
        assert sources.codec("kmsg").sample_size == 16


def test_include_dirs_reach_the_header(tmp_path: Path) -> None:
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "base.h").write_text("struct base { __u64 x; };\n")
    header = tmp_path / "top.h"
    header.write_text('#include "base.h"\nstruct top { struct base b; __u32 y; };\n')
    with pytest.raises(SchemaError, match=r"base\.h"):
        header_types(header)
    types = header_types(header, HeaderOptions(include_dirs=(inc,)))
    assert [t.c_name for t in types] == ["struct top"]


def test_vmlinux_h_as_the_prelude(tmp_path: Path) -> None:
    bpftool = shutil.which("bpftool")
    vmlinux_btf = Path("/sys/kernel/btf/vmlinux")
    if bpftool is None or not vmlinux_btf.exists():
        pytest.skip("needs bpftool and the kernel's BTF to make a vmlinux.h")
    vmlinux = tmp_path / "vmlinux.h"
    with vmlinux.open("w") as f:
        subprocess.run(
            [bpftool, "btf", "dump", "file", str(vmlinux_btf), "format", "c"], stdout=f, check=True
        )
    header = tmp_path / "task_msg.h"
    header.write_text("struct task_msg { pid_t pid; u64 when; struct timespec64 ts; };\n")
    out = tmp_path / "t.bpf.o"
    types = compile_header(header, out, HeaderOptions(includes=(str(vmlinux),)))
    # Only the header's own type: the 100k+ types of vmlinux.h stay in the prelude.
    assert [t.c_name for t in types] == ["struct task_msg"]
    with TypeSources.open(btf_files=[out]) as sources:
        assert sources.codec("task_msg").sample_size == 32


def test_a_header_with_errors_is_refused_with_clangs_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h"
    bad.write_text("struct broken { __u32 a }\n")
    with pytest.raises(SchemaError, match=r"(?s)clang failed .*expected ';'"):
        compile_header(bad, tmp_path / "out.o")
    assert not (tmp_path / "out.o").exists()


def test_a_header_without_types_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.h"
    empty.write_text("#define ONLY_A_MACRO 1\nstruct only_declared;\n")
    with pytest.raises(SchemaError, match="defines no struct, union, enum or typedef"):
        compile_header(empty, tmp_path / "out.o")


def test_without_clang_the_error_names_ringbridge_types(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CLANG_ENV, "/nonexistent/clang-for-ringbridge")
    with pytest.raises(SchemaError) as info:
        find_clang()
    assert "ringbridge types HEADER.h" in info.value.message
    assert "--sample-btf" in info.value.message
    with pytest.raises(SchemaError, match="ringbridge types"):
        TypeSources.open(header=PROTO_HEADER)
    monkeypatch.delenv(CLANG_ENV)
    assert find_clang() == shutil.which("clang")


def test_missing_header(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        compile_header(tmp_path / "nope.h", tmp_path / "out.o")
