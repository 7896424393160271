"""Shared fixtures.

Kernel tests need root (CAP_BPF), a mounted bpffs and the built BPF object.
Without them they skip -- unless RINGBRIDGE_REQUIRE_KERNEL=1 (set by .ci/run),
which turns every such skip into a failure: CI never passes by skipping the kernel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbridge.artifacts import PACKAGE_DIR
from ringbridge.schema import SampleCodec

from .support.natsserver import NatsServer, nats_server_binary, running_nats

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
BPFFS = Path("/sys/fs/bpf")


#: Marker -> the variable under which a test with it must not skip (set by .ci/run).
#: Most specific first: a test with several of these markers follows only the
#: first one's variable. The container and NATS tests need the kernel too, but
#: a machine with a kernel and no Docker engine (or no nats-server) may skip
#: them under RINGBRIDGE_REQUIRE_KERNEL=1; only their own variable
#: (RINGBRIDGE_REQUIRE_DOCKER, RINGBRIDGE_REQUIRE_NATS) makes the skip fail.
REQUIRED_BY_ENV = {
    "container": "RINGBRIDGE_REQUIRE_DOCKER",
    "nats": "RINGBRIDGE_REQUIRE_NATS",
    "kernel": "RINGBRIDGE_REQUIRE_KERNEL",
}


def required(env_var: str) -> bool:
    return os.environ.get(env_var, "") not in ("", "0")


def require_kernel() -> bool:
    return required(REQUIRED_BY_ENV["kernel"])


def _kernel_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root (CAP_BPF)"
    if not BPFFS.is_dir():
        return "bpffs mount point /sys/fs/bpf is missing"
    mounts = Path("/proc/mounts").read_text().split("\n")
    if not any(line.split()[1:3] == [str(BPFFS), "bpf"] for line in mounts if line):
        return "bpffs is not mounted at /sys/fs/bpf (make setup mounts it)"
    if not (BUILD / "ringbridge.bpf.o").exists():
        if shutil.which("clang") is None:
            return "clang is missing: cannot build the BPF object (run make setup)"
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)
    return None


def kernel_or_skip() -> None:
    reason = _kernel_unavailable_reason()
    if reason is None:
        return
    if require_kernel():
        pytest.fail(f"RINGBRIDGE_REQUIRE_KERNEL=1 but {reason}")
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel: needs root, CAP_BPF and bpffs (real kernel)")
    config.addinivalue_line("markers", "slow: takes tens of seconds (CI still runs it)")
    config.addinivalue_line("markers", "nats: starts a real nats-server (JetStream)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        # A skip, never a failure here: the report hook below decides, from
        # the test's most specific marker, whether this skip may stand.
        reason = _kernel_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)


def governing_variable(item: pytest.Item) -> tuple[str, str] | None:
    """``(marker, variable)`` that decides whether ``item`` may skip, or None."""
    for marker, env_var in REQUIRED_BY_ENV.items():
        if item.get_closest_marker(marker) is not None:
            return marker, env_var
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skip of a test whose governing marker's variable is set is a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    governing = governing_variable(item)
    if not report.skipped or governing is None:
        return
    marker, env_var = governing
    if required(env_var):
        report.outcome = "failed"
        reason = report.longrepr
        report.longrepr = f"{marker} test skipped under {env_var}=1: {reason}"


@pytest.fixture(scope="session")
def bpf_object_path() -> Path:
    kernel_or_skip()
    path = BUILD / "ringbridge.bpf.o"
    assert path.exists(), f"BPF object {path} was not built"
    return path


@pytest.fixture(scope="session")
def default_codec() -> SampleCodec:
    """The JSON codec of the default object (opened, not loaded: no privileges)."""
    obj = BUILD / "ringbridge.bpf.o"
    if not obj.exists():
        if shutil.which("clang") is None:
            pytest.skip("clang is missing: cannot build the BPF object (run make setup)")
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)
    return SampleCodec.from_object(obj)


@pytest.fixture(scope="session")
def native_lib_path() -> Path:
    """The helper as the service finds it: the package's copy (bpf/Makefile installs it)."""
    path = PACKAGE_DIR / "libringbridge_native.so"
    if not path.exists():
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)
    return path


def _remove_tree(path: Path) -> None:
    # bpffs holds no regular files: unlink each pin, then the dirs, bottom up.
    if not path.exists():
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(path)


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """A fresh, not yet created pin dir on bpffs; removed with its pins afterwards."""
    kernel_or_skip()
    path = BPFFS / f"ringbridge-test-{uuid.uuid4().hex[:12]}" / "pins"
    try:
        yield path
    finally:
        _remove_tree(path.parent)


def nats_binary_or_skip() -> str:
    """Debian's nats-server; a skip without it (a failure under RINGBRIDGE_REQUIRE_NATS=1)."""
    binary = nats_server_binary()
    if binary is None:
        reason = "nats-server is not installed (make setup installs Debian's)"
        if required(REQUIRED_BY_ENV["nats"]):
            pytest.fail(f"{REQUIRED_BY_ENV['nats']}=1 but {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream on a temp store, on loopback, for this test alone."""
    with running_nats(tmp_path / "nats", nats_binary_or_skip()) as server:
        yield server
