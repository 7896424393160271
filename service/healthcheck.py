"""``python -m ringbridge.healthcheck``: exit 0 when the local service answers /healthz.

The container's HEALTHCHECK. It reads the listen address from the same
settings the service reads (``RINGBRIDGE_*`` variables, ``RINGBRIDGE_CONFIG``),
so a container started with ``RINGBRIDGE_PORT=9000`` is probed on 9000. A
wildcard listen address is probed on loopback. Flags given to ``serve`` on
its command line are not visible here: in a container, set the address
through the environment or the settings file.

Only the listen address is read: a token file the probe cannot read, or any
other setting, does not matter to it (``/healthz`` is open).
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from .settings import CONFIG_ENV, Settings

_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _address() -> tuple[str, int]:
    fields = Settings.model_fields
    host = fields["host"].default
    port = fields["port"].default
    config = os.environ.get(CONFIG_ENV)
    if config:
        # Settings' own file reading, minus the validation of the other
        # settings (which may rely on flags this probe does not see).
        with Path(config).open("rb") as f:
            values = tomllib.load(f)
        host = values.get("host", host)
        port = values.get("port", port)
    host = os.environ.get("RINGBRIDGE_HOST", host)
    port = int(os.environ.get("RINGBRIDGE_PORT", port))
    return _WILDCARD.get(host, host), port


def url() -> str:
    host, port = _address()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main() -> int:
    target = url()
    try:
        with urllib.request.urlopen(target, timeout=2) as resp:
            ok = resp.status == 200
    except (OSError, urllib.error.URLError) as exc:
        print(f"ringbridge healthcheck: {target}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"ringbridge healthcheck: {target}: status {resp.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
