"""``ringbridge types``: run as an operator would (a subprocess), then its file used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ringbridge.cli import build_parser
from ringbridge.schema import TypeSources
from tests.support.upstream import PROTO_HEADER, REPO, clang_or_skip


def _types(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringbridge", "types", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _clang() -> None:
    clang_or_skip()


def test_types_writes_a_file_for_sample_btf(tmp_path: Path) -> None:
    out = tmp_path / "out" / "proto.bpf.o"
    done = _types(str(PROTO_HEADER), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "enum test_msg_op",
        "struct test_msg",
        "struct test_reply",
        "struct sample",
        f"wrote 4 types to {out}",
    ]
    with TypeSources.open(btf_files=[out]) as sources:
        assert sources.codec("test_msg").encode_sample(msg_op="TEST_MSG_OP_INC64", operand_64=1)
        assert sources.decoder("test_reply").size == 24


def test_include_and_include_dirs(tmp_path: Path) -> None:
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "mytypes.h").write_text("typedef unsigned long long u64;\n")
    (tmp_path / "h.h").write_text("struct m { u64 a; };\ntypedef struct m m_t;\n")
    out = tmp_path / "m.o"
    done = _types(str(tmp_path / "h.h"), "-I", str(inc), "--include", "mytypes.h", "-o", str(out))
    # "mytypes.h" is no file here: it is included as <mytypes.h>, found through -I.
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["struct m", "m_t"]
    done = _types(str(tmp_path / "h.h"), "--include", "<linux/types.h>", "-o", str(out), "-q")
    assert done.returncode == 1 and done.stdout == ""
    assert "ringbridge: types: " in done.stderr and "unknown type name 'u64'" in done.stderr


def test_bad_usage(tmp_path: Path) -> None:
    done = _types(str(tmp_path / "missing.h"), "-o", str(tmp_path / "x.o"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = _types(str(PROTO_HEADER))
    assert done.returncode == 2 and "-o/--output" in done.stderr
    assert not (tmp_path / "x.o").exists()


def test_listed_in_the_help() -> None:
    assert "types" in build_parser().format_help()
