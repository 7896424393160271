"""The fleet front door's settings: ``--nats*`` fields, mixed into ``Settings``.

Kept apart from :mod:`ringbridge.settings` so that model stays readable; the
fields are ordinary Settings fields (a ``serve`` flag, a ``RINGBRIDGE_NATS_*``
variable and a settings-file key each). Nothing here imports the rest of the
fleet package (nats-py included): ``Settings`` loads without it.

Credentials come from files only -- a creds file (JWT + NKey seed), a
password file (with ``--nats-user``) or a token file -- never from argv or
the environment, which other users of the host can read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from ..errors import ConfigError
from ..units import parse_size
from .subjects import check_name, check_subject, subject_matches

__all__ = ["CursorMode", "NatsSettings"]

CursorMode = Literal["durable", "pins"]
_SCHEMES = ("nats", "tls", "ws", "wss")


def _list(value: Any) -> list[str]:
    """Items of a repeated flag, each possibly comma-separated (and the env's one string)."""
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _node_name(value: Any) -> Any:
    """A node's name as a consumer name: NATS refuses dots there; a host's FQDN or a
    Kubernetes node name (``spec.nodeName``) has them. The same rule as the default."""
    return value.replace(".", "-") if isinstance(value, str) else value


_Size = Annotated[int, BeforeValidator(parse_size)]
_Items = Annotated[list[str], NoDecode, BeforeValidator(_list)]


def _readable(path: Path, flag: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from exc


class NatsSettings(BaseModel):
    """Fleet delivery through NATS JetStream (off unless ``nats`` is set)."""

    nats: _Items = Field(
        default_factory=list,
        description="NATS server URL(s) for fleet delivery through JetStream "
        "(nats://host:4222; repeatable or comma-separated); off when empty",
        json_schema_extra={"metavar": "URL"},
    )
    nats_stream: str | None = Field(
        default=None, description="the JetStream stream to consume (the operator's; not created)"
    )
    nats_subject: _Items = Field(
        default_factory=list,
        description="subject this node takes batches from, e.g. fleet.all and "
        "fleet.node.NAME (repeatable)",
    )
    nats_durable: Annotated[str | None, BeforeValidator(_node_name)] = Field(
        default=None,
        description="this node's durable consumer name, also its name in receipts "
        "(default: the host name; dots, as in a FQDN or a Kubernetes node name, become -)",
    )
    nats_cursor: CursorMode = Field(
        default="durable",
        description="durable: a durable pull consumer per subject keeps the node's place "
        "(acks); pins: no per-node state in JetStream, the node reads on from the stream "
        "seq kept with its pins and writes receipts to a KV bucket",
    )
    nats_receipts: str = Field(
        default="ringbridge_receipts",
        description="KV bucket of rollout receipts (--nats-cursor pins; made if missing)",
    )
    nats_creds: Path | None = Field(
        default=None, description="NATS credentials file (JWT and NKey seed)"
    )
    nats_user: str | None = Field(
        default=None, description="NATS user name (with --nats-password-file)"
    )
    nats_password_file: Path | None = Field(
        default=None, description="file holding the NATS password of --nats-user"
    )
    nats_token_file: Path | None = Field(
        default=None, description="file holding a NATS authentication token"
    )
    nats_tls_ca: Path | None = Field(
        default=None, description="CA bundle to verify the NATS servers with (implies TLS)"
    )
    nats_tls_cert: Path | None = Field(
        default=None, description="client certificate for NATS TLS (with --nats-tls-key)"
    )
    nats_tls_key: Path | None = Field(default=None, description="client key for NATS TLS")
    nats_dead_letter: str | None = Field(
        default=None,
        description="subject that invalid messages are republished to, with the error in "
        "headers (they are terminated either way)",
    )
    nats_max_inflight: int = Field(
        default=64, gt=0, description="max JetStream messages fetched and not yet resolved"
    )
    nats_max_inflight_bytes: _Size = Field(
        default=8 << 20,
        description="max bytes of those messages (taken from the admission budget; at least "
        "the servers' max_payload)",
    )
    nats_ack_wait: float = Field(
        default=30.0,
        gt=0,
        description="ack wait of the durable consumers ringbridge creates, s (held "
        "messages are kept alive with progress acks)",
    )

    @model_validator(mode="after")
    def _nats_consistent(self) -> NatsSettings:
        if not self.nats:
            given = sorted(
                name
                for name in self.model_fields_set
                if name.startswith("nats_") and getattr(self, name) not in (None, [], "")
            )
            if given:
                flags = ", ".join("--" + n.replace("_", "-") for n in given)
                raise ConfigError(f"{flags}: fleet delivery needs --nats URL")
            return self
        try:
            self._check_names()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        secrets = [
            flag
            for flag, value in (
                ("--nats-creds", self.nats_creds),
                ("--nats-password-file", self.nats_password_file),
                ("--nats-token-file", self.nats_token_file),
            )
            if value is not None
        ]
        if len(secrets) > 1:
            raise ConfigError(f"{' and '.join(secrets)}: give one way to authenticate to NATS")
        if (self.nats_user is None) != (self.nats_password_file is None):
            raise ConfigError("--nats-user and --nats-password-file go together")
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ConfigError("--nats-tls-cert and --nats-tls-key go together")
        for flag, path in (
            ("--nats-creds", self.nats_creds),
            ("--nats-password-file", self.nats_password_file),
            ("--nats-token-file", self.nats_token_file),
            ("--nats-tls-ca", self.nats_tls_ca),
            ("--nats-tls-cert", self.nats_tls_cert),
            ("--nats-tls-key", self.nats_tls_key),
        ):
            if path is not None:
                _readable(path, flag)
        return self

    def _check_names(self) -> None:
        for url in self.nats:
            scheme = urlsplit(url if "://" in url else f"nats://{url}").scheme
            if scheme not in _SCHEMES:
                raise ValueError(f"--nats {url}: scheme must be one of {', '.join(_SCHEMES)}")
        if self.nats_stream is None:
            raise ValueError("--nats needs --nats-stream (the stream to consume)")
        check_name(self.nats_stream, "--nats-stream")
        if not self.nats_subject:
            raise ValueError("--nats needs at least one --nats-subject")
        for s in self.nats_subject:
            check_subject(s, what="--nats-subject")
        if len(set(self.nats_subject)) != len(self.nats_subject):
            raise ValueError(f"--nats-subject: a subject is given twice ({self.nats_subject})")
        if self.nats_durable is not None:
            check_name(self.nats_durable, "--nats-durable")
        check_name(self.nats_receipts, "--nats-receipts")
        if self.nats_dead_letter is not None:
            check_subject(self.nats_dead_letter, wildcards=False, what="--nats-dead-letter")
            for s in self.nats_subject:
                if subject_matches(s, self.nats_dead_letter):
                    raise ValueError(
                        f"--nats-dead-letter {self.nats_dead_letter} is one of this node's "
                        f"subjects ({s}): dead letters would come back"
                    )
