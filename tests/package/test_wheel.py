"""The built wheel serves on its own: no source tree, no build/ directory.

Builds the wheel from this checkout as a user would (``pip wheel``; the
build compiles the BPF object and native helpers into the package), installs
it into a fresh virtualenv, and runs that venv's ``ringbridge serve`` from an
empty working directory with no ``RINGBRIDGE_*`` artifact overrides: a sample
POSTed to it must show up in the kernel counters of ``/v1/stats``, which
proves the packaged BPF object was loaded and drained.

Installing the wheel's dependencies needs the package index (as ``make
setup`` does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.launch import REPO, served

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

PACKAGED = {
    "ringbridge.bpf.o",
    "libringbridge_native.so",
    "libringbridge_validate.so",
    "libringbridge_drainer.so",
}


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that could point back at the checkout."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RINGBRIDGE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    r = subprocess.run(
        cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)], REPO)
    (whl,) = out.glob("ringbridge-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(root)], root.parent)
    _run([str(root / "bin" / "pip"), "install", "-q", str(wheel)], root.parent)
    yield root


def test_wheel_holds_the_native_artifacts_and_no_test_helpers(wheel: Path) -> None:
    assert "-py3-none-linux_" in wheel.name  # platform wheel: it holds machine code
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {Path(n).name for n in names if n.startswith("ringbridge/_bpf/")}
    assert packaged >= PACKAGED
    assert not [n for n in names if n.startswith(("service/", "tests/", "bench/"))]
    assert "ringbridge/launch.py" not in names


def test_installed_wheel_serves_from_an_empty_directory(
    venv: Path, pin_dir: Path, tmp_path: Path
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import ringbridge, ringbridge.kernel.bpfobj as b; "
            "print(ringbridge.__file__); print(b.default_object_path())",
        ],
        cwd,
    ).split()
    # The package and its BPF object come from the venv, not from this checkout.
    assert all(Path(p).is_relative_to(venv) for p in where), where

    log = tmp_path / "serve.log"
    args = [f"--pin-dir={pin_dir}", "--ring-size=1M", "--drain=kick"]
    with (
        served(
            args, log, command=[str(venv / "bin" / "ringbridge")], cwd=cwd, base_env=_clean_env()
        ) as addr,
        httpx.Client(base_url=f"http://{addr}", timeout=10) as c,
    ):
        r = c.post("/v1/samples", json={"samples": [{"kind": 11, "value": 1234}] * 3})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 3
        deadline = time.monotonic() + 10
        kernel: dict[str, object] = {}
        while time.monotonic() < deadline:
            kernel = c.get("/v1/stats").json()["kernel"]
            if kernel["samples"] == 3:
                break
            time.sleep(0.05)
        assert kernel["samples"] == 3, kernel
        assert kernel["kinds"] == {"11": {"samples": 3, "value": 3 * 1234}}
    assert "ringbridge started" in log.read_text()
