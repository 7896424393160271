"""The README's "Python library" example, run as written.

Its shell block (bpftool makes the ring and loads the consumer) runs with
bash, its Python block with this interpreter; only the pin dir is swapped for
this test's own (tests never use fixed pin paths). Every ``# ...`` line at
the end of the Python block is output the run must print, in that order.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.bpftool_ring import REPO, ensure_built

pytestmark = pytest.mark.kernel

SECTION = "## Python library"
DEMO = "/sys/fs/bpf/rbdemo"


def readme_blocks() -> tuple[str, str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    sh = re.search(r"```sh\n(.*?)```", section, re.S)
    py = re.search(r"```python\n(.*?)```", section, re.S)
    assert sh and py, "the README section lost its shell or Python block"
    return sh.group(1), py.group(1)


def test_readme_python_library_example_runs_as_written(pin_dir: Path) -> None:
    ensure_built()
    sh, py = readme_blocks()
    assert DEMO in sh and DEMO in py
    expected = [line[2:] for line in py.splitlines() if line.startswith("# ")]
    assert len(expected) == 2
    setup = subprocess.run(
        ["bash", "-e", "-c", sh.replace(DEMO, str(pin_dir))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert setup.returncode == 0, setup.stderr
    run = subprocess.run(
        [sys.executable, "-c", py.replace(DEMO, str(pin_dir))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == expected
