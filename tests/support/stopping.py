"""Stopping a child process the way the service and nats-server expect."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM (an orderly shutdown: acks flushed, stores synced), SIGKILL only
    if it lingers past ``timeout``; the exit status. Nothing if it already ended."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
