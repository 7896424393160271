"""Sample types for the schema tests come from real BTF: types.bpf.c is compiled
with ``clang -g -target bpf`` once per session (no privileges needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ringbridge.kernel import libbpf as lb
from ringbridge.schema import SampleCodec
from tests.conftest import require_kernel

SOURCE = Path(__file__).with_name("types.bpf.c")


def compile_bpf(src: Path, out: Path) -> Path:
    clang = shutil.which("clang")
    if clang is None:
        if require_kernel():
            pytest.fail("clang is missing: cannot build the BTF test object")
        pytest.skip("clang is missing (run make setup)")
    multiarch = subprocess.run(
        ["cc", "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    include = [f"-I/usr/include/{multiarch}"] if multiarch else []
    subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", *include, "-c", str(src), "-o", str(out)],
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def types_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf(SOURCE, tmp_path_factory.mktemp("schema") / "types.bpf.o")


@pytest.fixture(scope="session")
def types_btf(types_object: Path) -> object:
    """An open object's BTF handle, for tests of the reader itself."""
    obj = lb.BpfObject.open(types_object)
    yield obj.btf()
    obj.close()


@pytest.fixture(scope="session")
def every(types_object: Path) -> SampleCodec:
    return SampleCodec.from_object(types_object, "every")


@pytest.fixture(scope="session")
def op_sample(types_object: Path) -> SampleCodec:
    return SampleCodec.from_object(types_object, "op_sample")


@pytest.fixture(scope="session")
def msg(types_object: Path) -> SampleCodec:
    return SampleCodec.from_object(types_object, "msg")
