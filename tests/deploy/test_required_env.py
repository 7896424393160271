"""Which variable may turn the container test's skip into a failure.

The container test needs a Docker engine (and the kernel). On a machine with
a kernel and no engine, ``RINGBRIDGE_REQUIRE_KERNEL=1 make test`` must pass:
the container test skips there unless ``RINGBRIDGE_REQUIRE_DOCKER=1``. The
real test module is run in a child pytest with the Docker client pointed at
a path that does not exist, so it can only skip (nothing is built or run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CONTAINER_TEST = "tests/deploy/test_container.py"


def run_container_test(**env: str) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("RINGBRIDGE_REQUIRE_")}
    child_env["DOCKER"] = "/nonexistent/docker"
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CONTAINER_TEST],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_require_kernel_alone_lets_the_container_test_skip() -> None:
    r = run_container_test(RINGBRIDGE_REQUIRE_KERNEL="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout and "no /nonexistent/docker client" in r.stdout, r.stdout


@pytest.mark.parametrize("kernel", ["0", "1"])
def test_require_docker_makes_the_skip_a_failure(kernel: str) -> None:
    r = run_container_test(RINGBRIDGE_REQUIRE_DOCKER="1", RINGBRIDGE_REQUIRE_KERNEL=kernel)
    assert r.returncode == 1, r.stdout + r.stderr
    # Failed in its setup (an error) or after it: not skipped, not passed.
    assert "1 error" in r.stdout or "1 failed" in r.stdout, r.stdout
    assert "skipped" not in r.stdout and "RINGBRIDGE_REQUIRE_DOCKER=1" in r.stdout, r.stdout


def test_a_kernel_test_that_skips_still_fails_under_require_kernel(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import pytest\n\n"
        "@pytest.mark.kernel\n"
        "def test_needs_the_kernel():\n"
        "    pytest.skip('no kernel here')\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGBRIDGE_REQUIRE_")}
    for required, want in (("1", "1 failed"), ("0", "1 skipped")):
        env["RINGBRIDGE_REQUIRE_KERNEL"] = required
        r = subprocess.run(
            [*cmd, str(probe)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert want in r.stdout, r.stdout + r.stderr
