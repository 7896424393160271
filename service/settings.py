"""Service settings: one pydantic-settings model, the single source of truth.

Every field is settable, with the same parsing, from four places (highest first):

1. a ``ringbridge serve`` flag, generated from the field (``ring_size`` -> ``--ring-size``);
2. an environment variable ``RINGBRIDGE_<FIELD>`` (``RINGBRIDGE_RING_SIZE=8M``);
3. a TOML settings file named by ``--config`` or ``RINGBRIDGE_CONFIG``
   (``ring_size = "8M"`` or ``ring-size = 8388608``);
4. the default.

Sizes take K/M/G suffixes everywhere (:mod:`ringbridge.units`); durations are
finite seconds up to a day; a boolean is a value only for a switch (TOML's
``submit_timeout = true`` is refused, not read as 1 s). A ``RINGBRIDGE_*``
variable or a file key that is no setting is refused, naming the nearest one
(:mod:`ringbridge.settings_sources`). The token can come from a file
(``token_file``) so that it never appears in argv or the environment of a
container. Inconsistent combinations raise
:class:`~ringbridge.errors.ConfigError` when the model is built, so the service
refuses to start instead of failing on the first request.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .core import ring as core
from .errors import ConfigError
from .events.options import EventSettings
from .fleet.options import NatsSettings
from .kernel.environment import bpffs_name_problem
from .schema.header import HeaderOptions
from .settings_access import AccessSettings
from .settings_clients import ClientSettings
from .settings_sources import CONFIG_ENV, EnvNamespaceCheck, TomlFileSource, config_file
from .settings_types import (
    MAX_SECONDS,
    Globals,
    MapSizes,
    Names,
    Paths,
    Seconds,
    Size,
)

__all__ = ["CONFIG_ENV", "MAX_SECONDS", "MiB", "Settings"]

MiB = 1024 * 1024

#: Below ~10 µs a timer softirq per period costs more CPU than the drains do.
MIN_DRAIN_PERIOD_US = 10
MAX_DRAIN_PERIOD_US = 10_000_000
#: bpf_user_ringbuf_drain() processes at most this many records per call.
MAX_DRAIN_BUDGET = 131_072

DrainMode = Literal["timer", "kick", "external"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

class Settings(BaseSettings, NatsSettings, EventSettings, ClientSettings, AccessSettings):
    """Every setting of the service; ``nats*`` fields come from :class:`NatsSettings`,
    ``event_*`` ones from :class:`EventSettings`, ``ws_*`` ones from :class:`ClientSettings`,
    the token's and the privileges' from :class:`AccessSettings`."""

    model_config = SettingsConfigDict(env_prefix="RINGBRIDGE_", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            EnvNamespaceCheck(settings_cls),
            env_settings,
            TomlFileSource(settings_cls),
        )

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None, config: Path | None = None) -> Settings:
        """Settings from ``overrides`` (flags) over env over ``config`` (or $RINGBRIDGE_CONFIG)."""
        token = config_file.set(config)
        try:
            return cls(**(overrides or {}))
        finally:
            config_file.reset(token)

    host: str = Field(default="127.0.0.1", description="listen address")
    port: int = Field(default=8470, ge=0, le=65535, description="listen port (0 = any free)")
    ring_size: Size = Field(
        default=8 * MiB, description="ring data size: power of two, page multiple (K/M/G)"
    )
    drain: DrainMode = Field(default="timer", description="who drains the ring")
    drain_period_us: int = Field(
        default=100,
        ge=MIN_DRAIN_PERIOD_US,
        le=MAX_DRAIN_PERIOD_US,
        description="timer drain period while drains leave samples behind, µs (twice it while "
        "each drain empties the ring)",
    )
    drain_idle_period_us: int = Field(
        default=100_000,
        ge=MIN_DRAIN_PERIOD_US,
        le=MAX_DRAIN_PERIOD_US,
        description="longest timer drain period while the ring stays empty, µs (the period "
        "doubles after each empty drain up to this; a commit restores it)",
    )
    drain_budget: int = Field(
        default=4096,
        gt=0,
        le=MAX_DRAIN_BUDGET,
        description="max samples per bpf_user_ringbuf_drain() call (the kernel's cap: 131072)",
    )
    bpf_object: Path | None = Field(
        default=None,
        description="BPF object (.bpf.o) with a user ring buffer map (default: built-in)",
    )
    ring_map: str | None = Field(
        default=None,
        description="the object's user ring buffer map (default: its only one)",
    )
    map_size: MapSizes = Field(
        default_factory=dict,
        description="NAME=SIZE: size of a map the object leaves at max_entries 0 "
        "(entries, or bytes for ring buffers; K/M/G; repeatable)",
    )
    sample_type: str | None = Field(
        default=None,
        description="struct or union in the object's BTF that one sample is "
        "(JSON fields are packed into it); binary batches work without it",
    )
    sample_btf: Paths = Field(
        default_factory=list,
        description="more BTF to find --sample-type in, after the object's own: an ELF object "
        "(e.g. made by `ringbridge types`) or a raw BTF file (repeatable, searched in order)",
    )
    sample_header: Path | None = Field(
        default=None,
        description="C header that defines --sample-type, compiled with clang at start-up "
        "(searched after --sample-btf; without clang use `ringbridge types`)",
    )
    header_include: Names = Field(
        default_factory=list,
        description="file (or <name>) to include before --sample-header instead of "
        "<linux/types.h>, e.g. vmlinux.h (repeatable, in order)",
    )
    header_include_dir: Paths = Field(
        default_factory=list,
        description="include dir for compiling --sample-header (repeatable)",
    )
    drain_program: str | None = Field(
        default=None,
        description='the object\'s SEC("syscall") program that drains the ring on demand '
        "(for --drain timer|kick with your own object)",
    )
    attach: bool = Field(
        default=True,
        description="attach the object's programs that have an attach point "
        "(fentry, kprobe, tracepoint...) while serving",
    )
    set_global: Globals = Field(
        default_factory=dict,
        description="NAME=VALUE: an integer global (.bss or .data) of your object, written "
        "after it loads and before its programs attach, as a loader sets "
        "skel->bss->NAME (e.g. a pid filter; repeatable)",
        json_schema_extra={"metavar": "NAME=VALUE"},
    )
    ring_pin: Path | None = Field(
        default=None,
        description="feed a user ring another loader pinned at this bpffs path "
        "(no object is loaded; the drain is external)",
    )
    export_map: Names = Field(
        default_factory=list,
        description="map of the object to export on /metrics: key fields become labels, "
        "value fields samples (repeatable)",
    )
    export_globals: bool = Field(
        default=True,
        description="export the integer globals (.bss, .data, .rodata) of your own object",
    )
    pin_dir: Path = Field(
        default=Path("/sys/fs/bpf/ringbridge"), description="bpffs dir for the pins"
    )
    max_sample_bytes: Size = Field(default=65536, description="max bytes of one sample")
    max_batch_bytes: Size = Field(default=4 * MiB, description="max body / frame / batch bytes")
    submit_timeout: Seconds = Field(
        default=5.0,
        gt=0,
        description="default ?timeout=: how long a batch may wait, from admission, behind "
        "other batches and for ring space before it is refused (503), s",
    )
    max_timeout: Seconds = Field(default=300.0, gt=0, description="upper bound of ?timeout=, s")
    body_timeout: Seconds = Field(
        default=10.0,
        gt=0,
        description="time a client has to send its whole body once admitted, else 408; "
        "bounds how long a slow client holds admission credit, s",
    )
    header_timeout: Seconds = Field(
        default=10.0,
        gt=0,
        description="time a client has to send a request's line and headers, from connecting "
        "(or from the request's first byte on a kept-alive connection), else the connection "
        "is closed (408 if the request had begun); bounds slowloris clients, s",
    )
    max_connections: int | None = Field(
        default=None,
        gt=0,
        description="most connections open at once, HTTP and WebSocket; beyond it a new one "
        "closes the connection that waited longest without a request in progress, else gets "
        "503 at once (default 16384, lowered to fit the fd limit, which is raised to its "
        "hard limit at start)",
    )
    admission_bytes: Size | None = Field(
        default=None,
        gt=0,
        description="admission budget: bytes of bodies being read, WebSocket frame buffers "
        "and batches waiting to commit, all together; beyond it requests get 503 at once, "
        "unread (default: the larger of 64 MiB and 8 * max_batch_bytes)",
    )
    shutdown_grace: Seconds = Field(
        default=5.0, ge=0, description="time to finish queued batches, s"
    )
    retry_after: int = Field(default=1, ge=0, description="Retry-After seconds on 503")
    ready_stall_seconds: Seconds = Field(
        default=10.0, gt=0, description="readyz fails when the consumer is stuck this long"
    )
    log_level: LogLevel = Field(default="info", description="log level")
    log_json: bool = Field(default=False, description="JSON log lines")
    access_log: bool = Field(default=True, description="one log line per HTTP request")

    @field_validator("*", mode="before")
    @classmethod
    def _switches_only_take_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for a number; from a TOML file that is a
        # mistake (`submit_timeout = true`), never a duration or a count.
        name = info.field_name
        if isinstance(value, bool) and name and cls.model_fields[name].annotation is not bool:
            raise ValueError(f"got the boolean {str(value).lower()}: {name} is not a switch")
        return value

    @field_validator("pin_dir", "ring_pin")
    @classmethod
    def _bpffs_takes_the_name(cls, value: Path | None) -> Path | None:
        problem = bpffs_name_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    # The fields given (flags, env, file) before the validator derived others.
    _given: frozenset[str] = PrivateAttr(default=frozenset())

    def with_ring_size(self, ring_size: int) -> Settings:
        """The same settings for a ring of ``ring_size`` (a pinned ring's own size).

        Limits derived from the ring size are derived again; limits given
        explicitly are checked against the new size.
        """
        data = {name: getattr(self, name) for name in self._given}
        if "token_file" in data:
            data.pop("token", None)
        data["ring_size"] = ring_size
        return Settings(**data)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # ConfigError (not ValueError) so that it propagates as is: the CLI
        # and the app report one error type for every bad configuration.
        self._given = frozenset(self.model_fields_set)
        if self.ring_pin is not None:
            self._check_ring_pin()
        self._check_events()
        if self.sample_header is None and (self.header_include or self.header_include_dir):
            raise ConfigError(
                "--header-include and --header-include-dir only apply to --sample-header"
            )
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
        if self.admission_bytes is not None and self.admission_bytes < self.ws_frame_bytes:
            raise ConfigError(
                f"admission_bytes ({self.admission_bytes}) is smaller than one WebSocket frame "
                f"buffer ({self.ws_frame_bytes} = max_batch_bytes + 64 KiB): the largest "
                "batch could never be admitted"
            )
        if self.drain_idle_period_us < self.drain_period_us:
            raise ConfigError(
                f"drain_idle_period_us ({self.drain_idle_period_us}) is shorter than "
                f"drain_period_us ({self.drain_period_us}): the idle timer only ever slows down"
            )
        self._check_access(self.host)
        return self

    @property
    def header_options(self) -> HeaderOptions:
        """How to compile ``sample_header``, the way the BPF program includes it."""
        return HeaderOptions(
            include_dirs=tuple(self.header_include_dir),
            includes=tuple(self.header_include) if self.header_include else None,
        )

    def _check_ring_pin(self) -> None:
        if self.bpf_object is not None:
            raise ConfigError("ring_pin and bpf_object are both set: --ring-pin loads no object")
        given = self.model_fields_set
        clash = [
            flag
            for name, flag in (
                ("ring_map", "--ring-map"),
                ("map_size", "--map-size"),
                ("drain_program", "--drain-program"),
                ("set_global", "--set-global"),
                ("export_map", "--export-map"),
                ("event_map", "--event-map"),
            )
            if name in given and getattr(self, name)
        ]
        if "drain" in given and self.drain != "external":
            clash.append(f"--drain {self.drain}")
        if clash:
            raise ConfigError(
                f"{', '.join(clash)}: not with --ring-pin, which loads no object "
                "(the loader that pinned the ring drains it)"
            )

    @property
    def admission_limit(self) -> int:
        """The admission budget in bytes (see ``admission_bytes``)."""
        if self.admission_bytes is not None:
            return self.admission_bytes
        return max(64 * MiB, 8 * self.max_batch_bytes)

    @property
    def ws_frame_bytes(self) -> int:
        """Largest WebSocket frame read (and what a connection's read buffer is admitted for).

        A little over the batch limit, so that a batch somewhat over it gets
        an error ack rather than a closed connection (1009 beyond this).
        """
        return self.max_batch_bytes + 64 * 1024

    @property
    def drain_period_ns(self) -> int:
        return self.drain_period_us * 1000

    @property
    def drain_idle_period_ns(self) -> int:
        return self.drain_idle_period_us * 1000
