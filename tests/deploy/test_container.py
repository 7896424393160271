"""The image, built and run the way the README says: ``make image``, then ``docker run``.

One test walks the whole life of a container on this host's kernel: build,
start with the host's bpffs on a non-default port, wait for the image's own
HEALTHCHECK to call it healthy, ingest from the host with and without the
token, see the samples in the kernel's counters (read from the host through
the pins), check that the process inside ended with no capability and a
non-root uid, restart it and see the same pins and seq numbers reused, stop
it. Everything it starts is removed, whatever happens.

The engine's flags are the README's least-privilege ones for that engine:
``--cap-add BPF --cap-add PERFMON --security-opt seccomp=unconfined`` where
the engine knows those capabilities, else (Docker 20.10 as Debian 12
packages it) ``--cap-add SYS_ADMIN`` alone, default seccomp profile kept.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringbridge.kernel.bpfobj import load_default
from tests.conftest import REPO

pytestmark = [pytest.mark.kernel, pytest.mark.container]

DOCKER = os.environ.get("DOCKER", "docker")
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
IMAGE = f"ringbridge:{VERSION.group(1) if VERSION else 'unknown'}"
RING = 1 << 20
TOKEN = f"test-{uuid.uuid4().hex}"

LEAST_PRIVILEGE = ["--cap-add", "BPF", "--cap-add", "PERFMON"]
SECCOMP = ["--security-opt", "seccomp=unconfined"]
LEAST_PRIVILEGE_DOCKER_20_10 = ["--cap-add", "SYS_ADMIN"]


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    r = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout.strip()


def logs(name: str) -> str:
    """The container's output: the service logs to stderr."""
    r = subprocess.run(
        [DOCKER, "logs", name], capture_output=True, text=True, timeout=60, check=True
    )
    return r.stdout + r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    assert port != 8470
    return port


def privilege_flags() -> list[str]:
    """The README's least-privilege flags for the engine at hand."""
    probe = f"ringbridge-capprobe-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(
        [DOCKER, "create", "--name", probe, *LEAST_PRIVILEGE, IMAGE, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    docker("rm", "-f", probe, check=False)
    if r.returncode == 0:
        return LEAST_PRIVILEGE + SECCOMP
    assert "capabilit" in r.stderr.lower(), r.stderr  # refused for the caps, nothing else
    return LEAST_PRIVILEGE_DOCKER_20_10


def wait_health(name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", name)
        if status == "running healthy":
            return
        assert status.split()[0] in ("created", "running"), (status, logs(name))
        time.sleep(0.5)
    raise AssertionError(f"{name}: still {status!r} after {timeout} s:\n{logs(name)}")


def proc_status(name: str) -> dict[str, str]:
    text = docker("exec", name, "cat", "/proc/1/status")
    return dict((k, v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``make image`` (BASE_IMAGE and DOCKER_BUILD_FLAGS from the environment)."""
    log = tmp_path_factory.mktemp("image") / "make-image.log"
    with log.open("w") as out:
        r = subprocess.run(
            ["make", "-s", "image"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    assert r.returncode == 0, f"make image failed:\n{log.read_text()[-4000:]}"
    assert docker("image", "inspect", "-f", "{{.Id}}", IMAGE) == docker(
        "image", "inspect", "-f", "{{.Id}}", "ringbridge:latest"
    )
    return IMAGE


@pytest.fixture
def container(image: str, pin_dir: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    name = f"ringbridge-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)  # root-only: read at start-up, before the service drops root
    args = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        *privilege_flags(),
        "-v",
        "/sys/fs/bpf:/sys/fs/bpf",
        "-v",
        f"{token}:/run/secrets/ringbridge-token:ro",
        "-e",
        "RINGBRIDGE_TOKEN_FILE=/run/secrets/ringbridge-token",
        "-e",
        "RINGBRIDGE_HOST=127.0.0.1",
        "-e",
        f"RINGBRIDGE_PORT={port}",
        "-e",
        f"RINGBRIDGE_PIN_DIR={pin_dir}",
        "-e",
        f"RINGBRIDGE_RING_SIZE={RING // 1024}K",
        # The image's own HEALTHCHECK command, probed more often than its
        # 10 s default so that the test does not idle.
        "--health-interval",
        "1s",
        "--health-start-period",
        "30s",
        image,
    ]
    docker(*args)
    try:
        yield name, port
    finally:
        docker("rm", "-f", name, check=False)


def post(port: int, samples: list[dict[str, int]], token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/samples",
        json={"samples": samples},
        headers=headers,
        timeout=30,
    )


def kernel_kind(pin_dir: Path, bpf_object_path: Path, kind: int) -> tuple[int, int]:
    # From the host, through the pins the container made: the kernel's view.
    with load_default(bpf_object_path, pin_dir, RING) as lr:
        assert lr.reused
        kc = lr.read_counters()
        return kc.kind_count[kind], kc.kind_value[kind]


def wait_kernel(pin_dir: Path, obj: Path, kind: int, want: tuple[int, int]) -> None:
    deadline = time.monotonic() + 10
    while kernel_kind(pin_dir, obj, kind) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kernel_kind(pin_dir, obj, kind) == want


def image_object(name: str, dest: Path) -> Path:
    """The BPF object the image built and serves (pins accept only their own object)."""
    inside = docker(
        "exec",
        name,
        "python3",
        "-c",
        "from ringbridge.kernel.bpfobj import default_object_path; print(default_object_path())",
    )
    assert inside.startswith("/opt/ringbridge/"), inside  # the wheel's package data
    docker("cp", f"{name}:{inside}", str(dest))
    return dest


def test_container_life(container: tuple[str, int], pin_dir: Path, tmp_path: Path) -> None:
    name, port = container
    wait_health(name)
    bpf_object_path = image_object(name, tmp_path / "ringbridge.bpf.o")

    # Auth: the token came from the mounted file.
    assert post(port, [{"kind": 9, "value": 1}], None).status_code == 401
    assert post(port, [{"kind": 9, "value": 1}], "wrong").status_code == 403
    r = post(port, [{"kind": 9, "value": 5}] * 4, TOKEN)
    assert r.status_code == 200, r.text
    assert (r.json()["first_seq"], r.json()["last_seq"]) == (0, 3)
    wait_kernel(pin_dir, bpf_object_path, 9, (4, 20))
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'ringbridge_kernel_kind_value_total{kind="9"} 20.0' in metrics

    # The process inside: no capability left, not root.
    st = proc_status(name)
    assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == int(st["CapAmb"], 16) == 0, st
    assert st["Uid"].split() == ["10470"] * 4 and st["Gid"].split() == ["10470"] * 4, st
    assert st["NoNewPrivs"] == "1"
    assert "dropped all capabilities" in logs(name)

    # Swagger UI is served by the container itself.
    docs = httpx.get(f"http://127.0.0.1:{port}/docs", timeout=10)
    assert docs.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in docs.text

    # Restart: the same pins (ring, counters) and the seqs go on.
    docker("restart", "-t", "20", name, timeout=60)
    wait_health(name)
    stats = httpx.get(
        f"http://127.0.0.1:{port}/v1/stats",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).json()
    assert stats["config"]["pins_reused"] is True
    assert stats["kernel"]["kinds"]["9"] == {"samples": 4, "value": 20}
    r = post(port, [{"kind": 9, "value": 7}] * 2, TOKEN)
    assert r.status_code == 200, r.text
    assert (r.json()["first_seq"], r.json()["last_seq"]) == (4, 5)
    wait_kernel(pin_dir, bpf_object_path, 9, (6, 34))
    text = logs(name)
    assert "pins_reused=true" in text and "ringbridge stopped" in text, text

    # Stop: a clean shutdown (SIGTERM to the service, exit status 0).
    docker("stop", "-t", "20", name, timeout=60)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
