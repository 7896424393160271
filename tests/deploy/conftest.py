"""The Docker engine for the container test: found, never started here.

``make test`` on a laptop uses an engine only if one is already running;
it never starts a daemon. ``.ci/run`` starts one (``.ci/docker-engine``)
and sets ``RINGBRIDGE_REQUIRE_DOCKER=1``, under which a container test that
would skip fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REQUIRED_BY_ENV, required


def require_docker() -> bool:
    # A container test that skips under it fails (the hook in tests/conftest.py).
    return required(REQUIRED_BY_ENV["container"])


def _docker_unavailable_reason() -> str | None:
    docker = os.environ.get("DOCKER", "docker")
    if shutil.which(docker) is None:
        return f"no {docker} client on PATH"
    try:
        r = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 30 s"
    if r.returncode != 0 or not r.stdout.strip():
        return f"no Docker engine reachable: {r.stderr.strip() or r.stdout.strip()}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "container: needs a running Docker engine (builds and runs the image)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("container") is None:
        return
    reason = _docker_unavailable_reason()
    if reason is None:
        return
    if require_docker():
        pytest.fail(f"RINGBRIDGE_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)
