"""Finding a sample type where the user keeps it (ringbridge.schema.sources).

Order: the object's own BTF, then --sample-btf files (ELF objects or raw
BTF), then a --sample-header compiled at start-up. A name defined in more
than one place must be laid out the same everywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ringbridge.errors import SchemaError
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.objplan import plan_object
from ringbridge.kernel.pinnedring import open_ring_pin
from ringbridge.kernel.userobj import load_object
from ringbridge.schema import TypeSources, compile_header
from ringbridge.schema import btf as btf_reader
from tests.support.upstream import (
    FIXTURES,
    PROTO_HEADER,
    PROTO_OBJ,
    clang_or_skip,
    compile_bpf,
    ensure_built,
)


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    clang_or_skip()
    ensure_built()


@pytest.fixture(scope="module")
def proto_types(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("types") / "proto_types.bpf.o"
    compile_header(PROTO_HEADER, out)
    return out


def _object_with(tmp_path: Path, body: str, name: str = "obj") -> Path:
    src = tmp_path / f"{name}.bpf.c"
    src.write_text(
        "#include <linux/types.h>\n#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'char _license[] SEC("license") = "GPL";\n' + body
    )
    return compile_bpf(src, tmp_path / f"{name}.bpf.o")


def test_a_type_missing_from_the_object_is_found_in_a_types_file(proto_types: Path) -> None:
    with lb.BpfObject.open(PROTO_OBJ) as obj:
        assert btf_reader.lookup_type(obj.btf(), "test_msg") is None
        with TypeSources.open(
            primary=(str(PROTO_OBJ), obj.btf()), btf_files=[proto_types]
        ) as sources:
            found = sources.find("test_msg")
            assert found.where == f"--sample-btf {proto_types}"
            codec = sources.codec("test_msg")
    # Enum by name, anonymous-union member by name, packed as the C compiler lays it out.
    assert codec.encode_sample(msg_op="TEST_MSG_OP_MUL32", operand_32=-2) == (
        (3).to_bytes(4, "little") + bytes(4) + (-2).to_bytes(4, "little", signed=True) + bytes(4)
    )
    raw = (1).to_bytes(4, "little") + bytes(4) + (9).to_bytes(8, "little")
    assert codec.decode_sample(raw) == {"msg_op": "TEST_MSG_OP_INC32", "operand_64": 9}


def test_the_objects_own_btf_comes_first(tmp_path: Path, proto_types: Path) -> None:
    obj_path = _object_with(
        tmp_path, f'#include "{PROTO_HEADER}"\nstruct test_reply reply_anchor;\n'
    )
    with (
        lb.BpfObject.open(obj_path) as obj,
        TypeSources.open(
            primary=(str(obj_path), obj.btf()), btf_files=[proto_types], header=PROTO_HEADER
        ) as sources,
    ):
        assert sources.find("test_reply").where == str(obj_path)
        assert sources.wheres == [
            str(obj_path), f"--sample-btf {proto_types}", f"--sample-header {PROTO_HEADER}"
        ]  # fmt: skip


def test_definitions_that_disagree_are_refused(tmp_path: Path, proto_types: Path) -> None:
    stale = _object_with(
        tmp_path,
        "struct test_reply { __u64 seq; __u32 msg_op; __s32 status; };\n"
        "struct test_reply reply_anchor;\n",
    )
    with (
        lb.BpfObject.open(stale) as obj,
        TypeSources.open(primary=(str(stale), obj.btf()), btf_files=[proto_types]) as sources,
    ):
        with pytest.raises(SchemaError) as info:
            sources.find("test_reply")
        msg = info.value.message
        assert f"defined differently in {stale} and in --sample-btf {proto_types}" in msg
        assert "16 vs 24 bytes" in msg and "stale" in msg
        # Types that agree are still found.
        assert sources.find("test_msg").where == f"--sample-btf {proto_types}"


def test_raw_btf_files_are_read_too(tmp_path: Path, proto_types: Path) -> None:
    objcopy = shutil.which("llvm-objcopy") or shutil.which("objcopy")
    if objcopy is None:
        pytest.skip("no objcopy to cut the .BTF section out")
    raw = tmp_path / "proto.btf"
    subprocess.run([objcopy, "--dump-section", f".BTF={raw}", str(proto_types)], check=True)
    assert raw.read_bytes()[:2] == b"\x9f\xeb"  # BTF magic, little-endian
    with TypeSources.open(btf_files=[raw]) as sources:
        assert sources.decoder("struct test_reply").size == 24


def test_files_that_are_not_btf_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an ELF object at all")
    with pytest.raises(SchemaError, match=r"--sample-btf .*junk.o: neither an ELF object"):
        TypeSources.open(btf_files=[junk])
    with pytest.raises(SchemaError, match="no such file"):
        TypeSources.open(btf_files=[tmp_path / "missing.o"])


def test_a_type_found_nowhere_names_every_place_searched(proto_types: Path) -> None:
    with (
        lb.BpfObject.open(PROTO_OBJ) as obj,
        TypeSources.open(primary=(str(PROTO_OBJ), obj.btf()), btf_files=[proto_types]) as sources,
        pytest.raises(SchemaError) as info,
    ):
        sources.find("struct not_there")
    msg = info.value.message
    assert str(PROTO_OBJ) in msg and f"--sample-btf {proto_types}" in msg
    assert "--sample-header HEADER.h" in msg and "ringbridge types HEADER.h" in msg


def test_the_header_at_start_up(proto_types: Path) -> None:
    with (
        TypeSources.open(header=PROTO_HEADER) as from_header,
        TypeSources.open(btf_files=[proto_types]) as from_file,
    ):
        a, b = from_header.find("test_msg"), from_file.find("test_msg")
    assert a.type == b.type and a.where == f"--sample-header {PROTO_HEADER}"


@pytest.mark.kernel
def test_with_a_ring_pinned_by_another_loader(pin_dir: Path, proto_types: Path) -> None:
    # --ring-pin: the kernel's BTF for the ring comes from its loader's programs,
    # which lack test_msg too; the types file supplies it.
    plan = plan_object(PROTO_OBJ, ring_size=64 * 1024, map_sizes={"kernel_ringbuf": 4096})
    with (
        load_object(plan, pin_dir, attach=False),
        open_ring_pin(pin_dir / "user_ringbuf", 0, size_given=False) as ring,
        ring.btf() as kbtf,
    ):
        assert btf_reader.lookup_type(kbtf, "test_msg") is None
        with TypeSources.open(
            primary=(f"BTF of the ring pinned at {ring.path}", kbtf), btf_files=[proto_types]
        ) as sources:
            assert sources.codec("test_msg").sample_size == 16


def test_fixtures_dir_is_where_the_header_is() -> None:
    assert PROTO_HEADER.parent == FIXTURES and (FIXTURES / "user_ringbuf_proto.bpf.c").exists()
