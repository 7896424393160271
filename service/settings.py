"""Service settings: one pydantic-settings model, ``RINGBRIDGE_*`` environment variables.

``ringbridge serve`` builds a :class:`Settings` from its flags (each flag has
the environment variable of the same name, e.g. ``--ring-size`` and
``RINGBRIDGE_RING_SIZE``). Inconsistent combinations raise
:class:`~ringbridge.errors.ConfigError` when the model is built, so the service
refuses to start instead of failing on the first request.
"""

from __future__ import annotations

import ipaddress
import mmap
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .core import ring as core
from .errors import ConfigError

MiB = 1024 * 1024

DrainMode = Literal["timer", "kick", "external"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RINGBRIDGE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    ring_size: int = Field(default=8 * MiB, gt=0, description="ring data size in bytes")
    drain: DrainMode = "timer"
    drain_period_us: int = Field(default=100, gt=0, description="timer drain period")
    drain_budget: int = Field(default=4096, gt=0, description="max samples per drain call")
    bpf_object: Path | None = Field(default=None, description="BPF object; None = the default")
    pin_dir: Path = Path("/sys/fs/bpf/ringbridge")
    max_sample_bytes: int = Field(default=65536, gt=0)
    max_batch_bytes: int = Field(
        default=4 * MiB, gt=0, description="max body / frame / batch bytes"
    )
    submit_timeout: float = Field(default=5.0, gt=0, description="default wait for ring space, s")
    max_timeout: float = Field(default=300.0, gt=0, description="upper bound of ?timeout=, s")
    token: str | None = Field(default=None, description="bearer token; None = no auth")
    allow_unauthenticated: bool = False
    queue_max_bytes: int | None = Field(
        default=None,
        gt=0,
        description="batch queue limit in ring bytes; None = 2 * max_batch_bytes",
    )
    ws_window: int = Field(default=32, gt=0, description="max un-acked batches per WebSocket")
    shutdown_grace: float = Field(default=5.0, ge=0, description="time to finish queued batches, s")
    retry_after: int = Field(default=1, ge=0, description="Retry-After seconds on 503")
    ready_stall_seconds: float = Field(
        default=10.0, gt=0, description="readyz fails when the consumer is stuck this long"
    )
    log_level: LogLevel = "info"
    log_json: bool = False
    access_log: bool = True
    # Give up every capability once the ring is loaded, mapped and locked.
    drop_privileges: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # ConfigError (not ValueError) so that it propagates as is: the CLI
        # and the app report one error type for every bad configuration.
        core.check_ring_size(self.ring_size, mmap.PAGESIZE)
        # Limits left at their defaults follow a smaller ring, so that
        # `--ring-size 64K` alone is a valid configuration; limits given
        # explicitly are checked as given.
        if "max_batch_bytes" not in self.model_fields_set:
            self.max_batch_bytes = min(self.max_batch_bytes, self.ring_size)
        if "max_sample_bytes" not in self.model_fields_set:
            self.max_sample_bytes = min(self.max_sample_bytes, self.max_batch_bytes - core.HDR_SIZE)
        if self.max_batch_bytes > self.ring_size:
            raise ConfigError(
                f"max_batch_bytes ({self.max_batch_bytes}) exceeds ring_size "
                f"({self.ring_size}): such a batch could never be committed"
            )
        if core.record_size(self.max_sample_bytes) > self.max_batch_bytes:
            raise ConfigError(
                f"max_sample_bytes ({self.max_sample_bytes}) does not fit in one batch "
                f"of max_batch_bytes ({self.max_batch_bytes})"
            )
        if self.max_sample_bytes > core.MAX_SAMPLE_LEN:
            raise ConfigError(
                f"max_sample_bytes ({self.max_sample_bytes}) exceeds the kernel's "
                f"limit of {core.MAX_SAMPLE_LEN}"
            )
        if self.queue_max_bytes is not None and self.queue_max_bytes < self.max_batch_bytes:
            raise ConfigError(
                f"queue_max_bytes ({self.queue_max_bytes}) is smaller than max_batch_bytes "
                f"({self.max_batch_bytes}): the largest batch could never be queued"
            )
        if self.token is not None and not self.token.strip():
            raise ConfigError("token is empty; unset it to disable authentication")
        if self.token is None and not is_loopback(self.host) and not self.allow_unauthenticated:
            raise ConfigError(
                f"refusing to listen on {self.host} without a token: anyone who can reach "
                "the port could write into the kernel ring; set --token (RINGBRIDGE_TOKEN) "
                "or --allow-unauthenticated"
            )
        return self

    @property
    def queue_limit(self) -> int:
        """Bytes of batches the producer queue holds at most."""
        if self.queue_max_bytes is not None:
            return self.queue_max_bytes
        return 2 * self.max_batch_bytes

    @property
    def drain_period_ns(self) -> int:
        return self.drain_period_us * 1000
