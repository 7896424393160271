"""The servers of the benchmark, by name, and how each one starts.

- ``kick`` / ``timer``: ``ringbridge serve`` (uvicorn) with that drain mode;
- ``many``: a second kick server for the many-clients rows (its own, so the
  memory they leave resident counts in no other row), with the default
  admission budget;
- ``bare``: the bare FastAPI endpoint (``bench/bare_app.py``) under the same
  uvicorn setup as ringbridge (httptools, uvloop, no access log, one worker);
- ``baseline``: ``ringbridge serve --drain kick`` of another source tree
  (``--baseline DIR``, e.g. ``git archive main``), run with this interpreter
  and packages: a change measured against the code before it, in the same
  interleaved rounds;
- ``granian`` / ``granian-bare``: the same two apps under granian (a Rust
  HTTP server; ASGI interface, uvloop, one worker, HTTP/1), when granian is
  installed (the ``bench`` extra). ringbridge's app comes from its factory,
  ``ringbridge.api.app:create_app``, which reads its settings from
  ``RINGBRIDGE_*`` variables; granian runs its lifespan (load, map, producer)
  before it serves. None of uvicorn-specific parts of ``api/server.py`` run
  there (the body-chunk and joined-write changes, the WebSocket read-ahead, pong
  bound and shutdown order).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import procs
from ringbridge.kernel.pins import unpin

REPO = Path(__file__).resolve().parents[1]
BPFFS = Path("/sys/fs/bpf")
RING_SIZE = 8 << 20
MAX_BATCH_BYTES = 1 << 20
NAMES = (
    "kick",
    "many",
    "timer",
    "bare",
    "floor",
    "granian",
    "granian-bare",
    "baseline",
)
#: The latency floor (bench/http_floor.c, built by ``make setup``).
HTTP_FLOOR = REPO / "build" / "http_floor"
#: ``--baseline DIR``: another checkout (with its own .venv) served as "baseline".
BASELINE: dict[str, Path] = {}

_QUIET = {"RINGBRIDGE_ACCESS_LOG": "false"}


def granian_available() -> bool:
    return importlib.util.find_spec("granian") is not None


@contextmanager
def pinned_dir(tag: str) -> Iterator[Path]:
    path = BPFFS / f"ringbridge-bench-{tag}-{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        unpin(path)


def ringbridge_cmd(pins: Path, drain: str, ring_size: int = RING_SIZE) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ringbridge",
        "serve",
        "--port=0",
        f"--pin-dir={pins}",
        f"--ring-size={ring_size}",
        f"--drain={drain}",
        f"--max-batch-bytes={MAX_BATCH_BYTES}",
    ]


def bare_cmd() -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_app:app",
        "--port=0",
        "--http=httptools",
        "--loop=uvloop",
        "--no-access-log",
        "--workers=1",
        "--log-level=info",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def granian_cmd(target: str, port: int, *, factory: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface=asgi",
        "--loop=uvloop",
        "--http=1",
        "--workers=1",
        "--no-access-log",
        "--log-level=warning",
        "--host=127.0.0.1",
        f"--port={port}",
        *(["--factory"] if factory else []),
        target,
    ]


@contextmanager
def _baseline(stack: ExitStack, log: Path) -> Iterator[procs.Server]:
    """The service of the source tree ``--baseline`` names, with this
    interpreter and its packages: ``ringbridge`` imported from that tree (a
    link on PYTHONPATH ahead of this install), its BPF object built there."""
    root = BASELINE["dir"]
    if not (root / "service" / "_bpf" / "ringbridge.bpf.o").exists():
        subprocess.run(["make", "-s", "-C", str(root / "bpf"), "OUT=../build"], check=True)
    path = root / "build" / "bench-pythonpath"
    path.mkdir(parents=True, exist_ok=True)
    link = path / "ringbridge"
    if not link.is_symlink():
        link.symlink_to(root / "service")
    pins = stack.enter_context(pinned_dir("baseline"))
    env = {**_QUIET, "PYTHONPATH": str(path)}
    with procs.spawned("baseline", ringbridge_cmd(pins, "kick"), log, cwd=root, env=env) as srv:
        yield srv


def start(name: str, stack: ExitStack, tmp: Path) -> procs.Server:
    """Starts server ``name`` (one of :data:`NAMES`); it stops when ``stack`` closes."""
    log = tmp / f"{name}.log"
    if name == "bare":
        return stack.enter_context(procs.spawned(name, bare_cmd(), log, cwd=REPO))
    if name == "baseline":
        return stack.enter_context(_baseline(stack, log))
    if name == "floor":
        port = _free_port()
        cmd = [str(HTTP_FLOOR), str(port)]
        return stack.enter_context(
            procs.spawned_at(name, cmd, f"127.0.0.1:{port}", "/", log, cwd=REPO, any_status=True)
        )
    if name in ("kick", "many", "timer"):
        pins = stack.enter_context(pinned_dir(name))
        many = name == "many"
        # The default admission budget (64 MiB) for the many-clients rows too:
        # a stream holds credit only for its frames in flight, and a frame
        # that finds none waits unread (api/wslimits.py); 256 connections x
        # 4 frames of 64 KiB fit it (measured: the same rate as with 512 MiB).
        cmd = ringbridge_cmd(pins, "kick" if many else name)
        return stack.enter_context(procs.spawned(name, cmd, log, cwd=REPO, env=_QUIET))
    if name not in ("granian", "granian-bare"):
        raise ValueError(f"unknown server {name!r}")
    if not granian_available():
        raise RuntimeError("granian is not installed: pip install -e '.[bench]'")
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    if name == "granian-bare":
        cmd = granian_cmd("bench.bare_app:app", port, factory=False)
        return stack.enter_context(
            procs.spawned_at(name, cmd, addr, "/", log, cwd=REPO, any_status=True)
        )
    pins = stack.enter_context(pinned_dir(name))
    env = {
        **_QUIET,
        "RINGBRIDGE_PIN_DIR": str(pins),
        "RINGBRIDGE_RING_SIZE": str(RING_SIZE),
        "RINGBRIDGE_DRAIN": "kick",
        "RINGBRIDGE_MAX_BATCH_BYTES": str(MAX_BATCH_BYTES),
    }
    cmd = granian_cmd("ringbridge.api.app:create_app", port, factory=True)
    # /v1/stats answers 200 only once the lifespan has started the producer.
    return stack.enter_context(
        procs.spawned_at(name, cmd, addr, "/v1/stats", log, cwd=REPO, env=env)
    )
