"""The NATS connection of a node or of the control-plane commands.

Credentials are read from files at connect time (a creds file is handed to
nats-py as a path and read by it): nothing secret is on a command line, in
the environment or in the settings' repr. TLS is used when a ``tls://`` URL
or any ``--nats-tls-*`` file is given; the CA file replaces the system's
trust store for these servers.

The connection reconnects forever on its own (nats-py); :class:`LinkState`
follows it for metrics and ``/readyz``.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from ..errors import ConfigError

__all__ = ["Auth", "LinkState", "connect", "connect_options", "stream_created"]

log = logging.getLogger("ringbridge.fleet")


@dataclass(frozen=True, slots=True)
class Auth:
    """How to reach and authenticate to the servers (files only for secrets)."""

    servers: tuple[str, ...]
    creds: Path | None = None
    user: str | None = None
    password_file: Path | None = None
    token_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_settings(cls, s: Any) -> Auth:
        return cls(
            servers=tuple(s.nats),
            creds=s.nats_creds,
            user=s.nats_user,
            password_file=s.nats_password_file,
            token_file=s.nats_token_file,
            tls_ca=s.nats_tls_ca,
            tls_cert=s.nats_tls_cert,
            tls_key=s.nats_tls_key,
        )


@dataclass
class LinkState:
    """The connection as metrics and readiness see it."""

    state: str = "connecting"  # connecting | connected | disconnected | closed
    disconnects: int = 0
    reconnects: int = 0
    last_error: str | None = None
    server: str | None = None
    _listeners: list[Callable[[str], None]] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def set(self, state: str) -> None:
        self.state = state
        for fn in self._listeners:
            fn(state)

    def listen(self, fn: Callable[[str], None]) -> None:
        self._listeners.append(fn)


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc
    if not value:
        raise ConfigError(f"{what} {path} is empty")
    return value


def _tls(auth: Auth) -> ssl.SSLContext | None:
    wanted = any(u.startswith(("tls://", "wss://")) for u in auth.servers)
    if not (wanted or auth.tls_ca or auth.tls_cert):
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(auth.tls_ca) if auth.tls_ca else None)
        if auth.tls_cert is not None and auth.tls_key is not None:
            ctx.load_cert_chain(str(auth.tls_cert), str(auth.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"NATS TLS files: {exc}") from exc
    return ctx


def connect_options(auth: Auth, name: str) -> dict[str, Any]:
    """Keyword arguments of ``nats.connect`` (secrets read from their files now)."""
    opts: dict[str, Any] = {"servers": list(auth.servers), "name": name}
    if auth.creds is not None:
        opts["user_credentials"] = str(auth.creds)
    if auth.user is not None and auth.password_file is not None:
        opts["user"] = auth.user
        opts["password"] = _read_secret(auth.password_file, "--nats-password-file")
    if auth.token_file is not None:
        opts["token"] = _read_secret(auth.token_file, "--nats-token-file")
    tls = _tls(auth)
    if tls is not None:
        opts["tls"] = tls
    return opts


async def connect(
    auth: Auth,
    name: str,
    link: LinkState | None = None,
    *,
    reconnect: bool = True,
    connect_timeout: float = 5.0,
) -> Client:
    """A connection to the first server that answers; reconnects forever if ``reconnect``."""
    link = link if link is not None else LinkState()

    async def disconnected() -> None:
        if nc.is_closed:
            return  # closed on purpose
        link.disconnects += 1
        link.set("disconnected")
        log.warning("NATS connection lost", extra={"disconnects": link.disconnects})

    async def reconnected() -> None:
        link.reconnects += 1
        link.set("connected")
        log.info("NATS connection back", extra={"server": _server(nc)})

    async def closed() -> None:
        link.set("closed")

    async def error(exc: Exception) -> None:
        link.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("NATS error", extra={"error": link.last_error})

    nc = await nats.connect(
        **connect_options(auth, name),
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        closed_cb=closed,
        error_cb=error,
        allow_reconnect=reconnect,
        max_reconnect_attempts=-1 if reconnect else 0,
        reconnect_time_wait=1,
        connect_timeout=max(1, round(connect_timeout)),
    )
    link.server = _server(nc)
    link.set("connected")
    return nc


def _server(nc: Client) -> str | None:
    url = nc.connected_url
    return url.netloc if url is not None else None


async def stream_created(nc: Client, stream: str) -> str | None:
    """The stream's creation time (with its name, its identity); None if it does not exist.

    Read from the API's answer itself: older nats-py's StreamInfo lacks ``created``.
    """
    resp = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5.0)
    doc = json.loads(resp.data)
    err = doc.get("error")
    if err is not None:
        if err.get("code") == 404:
            return None
        raise RuntimeError(f"stream info {stream}: {err.get('description', err)}")
    return str(doc.get("created", ""))
