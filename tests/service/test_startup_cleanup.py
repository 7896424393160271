"""A start that fails leaves no pins behind, whenever it fails (issue #19, item 6).

Real ``ringbridge serve`` child processes:

- two services racing for one port: the listening socket is bound *and
  listening* before anything is loaded, so the loser fails at once, with one
  clear line and exit 3, before it pins anything. Binding alone is not
  enough: two ``SO_REUSEADDR`` sockets may bind one port while neither
  listens, and the loser only learns at ``listen()``;
- a start that fails after the privilege drop (``--user``): the unprivileged
  process may no longer unlink its pins, so a helper forked before the drop
  removes them.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.launch import REPO
from tests.support.stopping import terminate

pytestmark = pytest.mark.kernel


def _serve(
    args: list[str], log: Path, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "ringbridge", "serve", *args],
            stdout=subprocess.DEVNULL,
            stderr=f,
            cwd=REPO,
            preexec_fn=preexec_fn,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    return terminate(proc, 30)


def test_the_loser_of_a_race_for_the_port_pins_nothing(pin_dir: Path, tmp_path: Path) -> None:
    # The rival: bound with SO_REUSEADDR like the service's socket, not yet
    # listening -- the state of a second `serve` that started at the same
    # moment. It listens as soon as the service's pins appear.
    rival = socket.socket()
    rival.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rival.bind(("127.0.0.1", 0))
    port = rival.getsockname()[1]
    log = tmp_path / "serve.log"
    proc = _serve([f"--port={port}", f"--pin-dir={pin_dir}", "--ring-size=1M"], log)
    try:
        deadline = time.monotonic() + 30
        while not pin_dir.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert pin_dir.exists() or proc.poll() is not None, log.read_text()
        try:
            rival.listen()
        except OSError as exc:
            # The service listened before it pinned: the rival lost, cleanly.
            assert exc.errno == errno.EADDRINUSE
            rival_lost = True
        else:
            rival_lost = False
        if rival_lost:
            assert proc.poll() is None, log.read_text()
            _stop(proc)
            assert "Traceback" not in log.read_text(), log.read_text()
            return
        # The service lost: it must fail like any start that cannot listen.
        code = proc.wait(timeout=30)
        text = log.read_text()
        assert code == 3, text
        assert "Traceback" not in text, text
        assert f"cannot listen on 127.0.0.1:{port}" in text, text
        assert not pin_dir.exists(), sorted(p.name for p in pin_dir.iterdir())
    finally:
        _stop(proc)
        rival.close()


def _no_threads_for_others() -> None:
    # RLIMIT_NPROC counts the processes and threads of the *real uid*; root
    # is exempt, an unprivileged user is not. So the start loads and pins
    # as root and then, as the --user, cannot start its drain worker thread:
    # a start that fails after the privilege drop.
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def test_a_start_that_fails_after_the_privilege_drop_removes_its_pins(
    pin_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    args = [
        "--port=0",
        f"--pin-dir={pin_dir}",
        "--ring-size=1M",
        "--drain=kick",
        "--user=65534:65534",
    ]
    proc = _serve(args, log, preexec_fn=_no_threads_for_others)
    try:
        code = proc.wait(timeout=60)
    finally:
        _stop(proc)
    text = log.read_text()
    assert code == 3, text
    assert "dropped all capabilities" in text, text  # it did fail after the drop
    assert "startup failed" in text, text
    assert not pin_dir.exists(), (text, sorted(p.name for p in pin_dir.iterdir()))
    assert "left its new pins behind" not in text, text


def test_a_start_that_fails_after_the_drop_keeps_pins_it_reused(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    # Pins a previous run made hold its ring, counters and seqs: a failed
    # start must never take them away.
    from ringbridge.kernel.bpfobj import load_default

    with load_default(bpf_object_path, pin_dir, 1 << 20) as lr:
        lr.store_seq(42)
    log = tmp_path / "serve.log"
    args = ["--port=0", f"--pin-dir={pin_dir}", "--ring-size=1M", "--drain=kick"]
    proc = _serve([*args, "--user=65534:65534"], log, preexec_fn=_no_threads_for_others)
    try:
        assert proc.wait(timeout=60) == 3, log.read_text()
    finally:
        _stop(proc)
    with load_default(bpf_object_path, pin_dir, 1 << 20) as lr:
        assert lr.reused and lr.load_seq() == 42
    assert os.path.isdir(pin_dir)
