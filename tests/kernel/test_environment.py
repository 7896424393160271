"""Startup errors say how to fix them where the service runs (host or container)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ringbridge.errors import PinError
from ringbridge.kernel import environment
from ringbridge.kernel.bpfobj import load_default


def test_container_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/cgroup").write_text("0::/init.scope\n")
    assert not environment.in_container(tmp_path)
    (tmp_path / "proc/1/cgroup").write_text("0::/kubepods/besteffort/pod1/abc\n")
    assert environment.in_container(tmp_path)
    (tmp_path / "proc/1/cgroup").write_text("0::/\n")
    (tmp_path / ".dockerenv").touch()
    assert environment.in_container(tmp_path)


def test_missing_capabilities_are_named(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(f"Name:\tx\nCapEff:\t{1 << 12:016x}\n")  # CAP_NET_ADMIN only
    assert environment.missing_capabilities(status) == ["CAP_BPF", "CAP_PERFMON"]
    status.write_text(f"CapEff:\t{1 << 39:016x}\n")  # CAP_BPF only
    assert environment.missing_capabilities(status) == ["CAP_PERFMON"]
    # The kernel takes CAP_SYS_ADMIN for both (Docker 20.10 knows no CAP_BPF).
    status.write_text(f"Name:\tx\nCapEff:\t{1 << 21:016x}\n")
    assert environment.missing_capabilities(status) == []
    status.write_text(f"CapEff:\t{(1 << 38) | (1 << 39):016x}\n")
    assert environment.missing_capabilities(status) == []
    hint = environment.capabilities_hint(["CAP_BPF"], container=True)
    assert "missing capabilities: CAP_BPF" in hint and "--cap-add BPF" in hint
    assert "--cap-add SYS_ADMIN" in hint
    assert "run as root" in environment.capabilities_hint(["CAP_BPF"], container=False)


@pytest.mark.parametrize("container", [True, False])
def test_a_pin_dir_off_bpffs_says_how_to_mount_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: bool
) -> None:
    monkeypatch.setattr(environment, "in_container", lambda root=Path("/"): container)
    with pytest.raises(PinError) as e:
        load_default(Path("unused.bpf.o"), tmp_path / "pins", 1 << 20)
    if container:
        assert "-v /sys/fs/bpf:/sys/fs/bpf" in e.value.message
    else:
        assert "mount -t bpf bpf /sys/fs/bpf" in e.value.message


@pytest.mark.kernel
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
def test_a_start_without_capabilities_names_the_ones_needed(pin_dir: Path) -> None:
    # Root minus the BPF capabilities: the bounding set caps what exec grants.
    r = subprocess.run(
        ["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", sys.executable, "-m",
         "ringbridge", "serve", "--port=0", f"--pin-dir={pin_dir}", "--ring-size=1M"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("RINGBRIDGE_")},
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "EPERM" in r.stderr
    assert "missing capabilities: CAP_BPF, CAP_PERFMON " in r.stderr, r.stderr
    assert "--cap-add SYS_ADMIN" in r.stderr
    assert "Traceback" not in r.stderr
    assert not pin_dir.exists()
