"""Where the built native artifacts are: the BPF object and the C helpers.

Looked up in this order, first hit wins:

1. the environment variable named by the caller (``RINGBRIDGE_BPF_OBJECT``,
   ``RINGBRIDGE_NATIVE_LIB``, ``RINGBRIDGE_VALIDATE_LIB``,
   ``RINGBRIDGE_DRAINER_LIB``): an operator's
   explicit choice is always honoured, even if the file is missing (the
   error then names that path);
2. the package's own ``_bpf/`` directory: the wheel ships the built
   artifacts there as package data (``bpf/Makefile`` installs them into
   ``service/_bpf/`` for a source checkout, and the wheel build does the same);
3. the source tree's ``build/`` (``make -C bpf`` alone builds only there).

When none exists, the package path is returned, so the error that follows
names where an installed package expects the file. The C helpers are opened
through :mod:`ringbridge.nativelib`.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent / "_bpf"
#: The source tree's build directory; meaningless (and absent) in an installed wheel.
SOURCE_BUILD_DIR = Path(__file__).resolve().parents[1] / "build"


def build_artifact(env_var: str, filename: str) -> Path:
    """``$env_var`` if set, else the first of ``_bpf/<filename>``, ``build/<filename>``."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    packaged = PACKAGE_DIR / filename
    if packaged.exists():
        return packaged
    source = SOURCE_BUILD_DIR / filename
    if source.exists():
        return source
    return packaged
