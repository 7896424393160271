"""Who may use the service and as whom it runs, mixed into ``Settings`` (as the clients' are).

Kept apart from :mod:`ringbridge.settings` so that model stays readable; the
fields are ordinary Settings fields (a ``serve`` flag, a ``RINGBRIDGE_*``
variable and a settings-file key each). :meth:`AccessSettings._check_access`
is called by the model's one consistency check, once the listen address is known.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field

from .errors import ConfigError
from .kernel.privileges import resolve_user
from .settings_types import usable_token

__all__ = ["AccessSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A host name other than localhost may resolve to anything: treat it
        # as reachable from the network (the safe side for the auth check).
        return False


class AccessSettings(BaseModel):
    """The bearer token, what it protects, and the privileges kept after start-up."""

    token: str | None = Field(
        default=None,
        description="bearer token clients must send (prefer token_file: argv is public)",
    )
    token_file: Path | None = Field(
        default=None, description="file holding the bearer token (a Secret, a docker secret)"
    )
    protect_metrics: bool = Field(
        default=False,
        description="require the token on /metrics, /docs and /openapi.json too",
    )
    allow_unauthenticated: bool = Field(
        default=False, description="allow a non-loopback listener without a token"
    )
    drop_privileges: bool = Field(
        default=False,
        description="give up every capability once the ring is loaded, mapped and locked",
    )
    user: str | None = Field(
        default=None,
        description=(
            "after start-up run as this user: a name, uid or uid:gid "
            "(implies drop_privileges; the held fds keep working)"
        ),
    )

    def _check_access(self, host: str) -> None:
        """Read the token (from its file), then refuse what would leave the ring open
        or the service unable to become ``user``; :class:`ConfigError` names why."""
        if self.token_file is not None:
            if self.token is not None:
                raise ConfigError("token and token_file are both set; keep one")
            try:
                self.token = self.token_file.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"token_file {self.token_file}: cannot read: {exc.strerror or exc}"
                ) from exc
        if self.token is not None:
            self.token = usable_token(self.token)
        if self.protect_metrics and self.token is None:
            raise ConfigError(
                "protect_metrics needs a token (--token or --token-file) to protect them with"
            )
        if self.user is not None:
            # Resolved now so that an unknown user stops the service before
            # it loads or pins anything.
            resolve_user(self.user)
        if self.token is None and not is_loopback(host) and not self.allow_unauthenticated:
            raise ConfigError(
                f"refusing to listen on {host} without a token: anyone who can reach "
                "the port could write into the kernel ring; set --token (RINGBRIDGE_TOKEN) "
                "or --allow-unauthenticated"
            )
