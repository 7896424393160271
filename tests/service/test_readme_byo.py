"""The README's "Bring your own program" walk-throughs, run as written.

The shell block is taken from README.md and run with bash; only the port,
the pin dir and the object's output path are swapped for this test's own
(tests never use fixed ports or pin paths). Every ``# ...`` line under a
command is output the run must print, in that order.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.byo import REPO

pytestmark = pytest.mark.kernel

SECTION = "## Bring your own program"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m, "no shell block in the README section"
    return m.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_bring_your_own_program_runs_as_written(pin_dir: Path, tmp_path: Path) -> None:
    block = readme_block()
    expected = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    assert len(expected) >= 3
    port = _free_port()
    script = (
        block.replace("8471", str(port))
        .replace("/sys/fs/bpf/ops", str(pin_dir))
        .replace("/tmp/ops.bpf.o", str(tmp_path / "ops.bpf.o"))
        .replace(".venv/bin/ringbridge", str(Path(sys.executable).parent / "ringbridge"))
    )
    run = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout.splitlines()
    pos = 0
    for want in expected:
        assert want in out[pos:], f"missing {want!r} after line {pos} of:\n{run.stdout}"
        pos = out.index(want, pos) + 1
    assert not pin_dir.exists(), "the walk-through ends with unpin"


HEADER_SECTION = "### From a header and an object nobody edited"


def readme_python_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(HEADER_SECTION) :]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block in the README section"
    return m.group(1)


def test_readme_from_a_header_and_an_object_nobody_edited_runs_as_written(
    pin_dir: Path,
) -> None:
    """The upstream-style object (no anchor) with its header: typed JSON in, typed replies
    out, exactly as the README prints them. The script runs in a session of its own, so
    that a server it started cannot outlive the test."""
    from tests.support.upstream import ensure_built

    ensure_built()
    block = readme_python_block()
    expected = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    assert len(expected) >= 5
    port = _free_port()
    script = (
        block.replace("8472", str(port))
        .replace("/sys/fs/bpf/proto", str(pin_dir))
        .replace(".venv/bin/ringbridge", str(Path(sys.executable).parent / "ringbridge"))
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    lines = out.splitlines()
    pos = 0
    for want in expected:
        if want.endswith("..."):
            found = [i for i, got in enumerate(lines[pos:], pos) if got.startswith(want[:-3])]
            assert found, f"missing {want!r} after line {pos} of:\n{out}"
            pos = found[0] + 1
            continue
        assert want in lines[pos:], f"missing {want!r} after line {pos} of:\n{out}"
        pos = lines.index(want, pos) + 1
    assert not pin_dir.exists(), "the walk-through ends with unpin"
