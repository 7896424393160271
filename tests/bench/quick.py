"""Runs a benchmark module's ``--quick`` mode as ``make bench`` would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_quick(module: str, out_dir: Path) -> None:
    """``python -m <module> --quick --out-dir=<out_dir>``; fails the test with
    the run's stderr when it does not exit 0."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--quick", f"--out-dir={out_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
