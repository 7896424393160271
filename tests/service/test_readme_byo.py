"""The README's "Bring your own program" walk-through, run as written.

The shell block is taken from README.md and run with bash; only the port,
the pin dir and the object's output path are swapped for this test's own
(tests never use fixed ports or pin paths). Every ``# ...`` line under a
command is output the run must print, in that order.
"""

from __future__ import annotations

import re
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
