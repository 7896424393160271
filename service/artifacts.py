"""Where the built native artifacts are: an environment override, else ``build/``.

``make setup`` builds them into the repository's ``build/``; an installed
package (the Docker image) points at them with ``RINGBRIDGE_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_artifact(env_var: str, filename: str) -> Path:
    """``$env_var`` if set, else ``<repo>/build/<filename>``."""
    env = os.environ.get(env_var)
    return Path(env) if env else REPO / "build" / filename
