"""One producer per ring: the pin dir's producer lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ringbridge.errors import PinError
from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.pins import lock_producer

pytestmark = pytest.mark.kernel


def test_second_producer_is_refused_until_the_first_exits(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    with load_default(bpf_object_path, pin_dir, 4096):
        lock = lock_producer(pin_dir)
        with pytest.raises(PinError, match="another ringbridge producer"):
            lock_producer(pin_dir)
        # Another process is refused the same way (flock is per open file).
        code = (
            "import sys; from pathlib import Path;"
            "from ringbridge.kernel.pins import lock_producer;"
            "from ringbridge.errors import PinError\n"
            f"try: lock_producer(Path({str(pin_dir)!r}))\n"
            "except PinError: sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", code]).returncode == 3
        lock.close()
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0
        lock_producer(pin_dir).close()


def test_lock_on_missing_dir_names_it(tmp_path: Path) -> None:
    with pytest.raises(PinError, match="nope"):
        lock_producer(tmp_path / "nope")
