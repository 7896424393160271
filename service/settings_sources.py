"""Where settings come from besides flags: the TOML file, and the ``RINGBRIDGE_`` namespace.

Both refuse names that are not settings, naming the nearest one: a misspelt
``RINGBRIDGE_TOKN`` or ``tokn = "..."`` would otherwise be ignored and leave
the service unauthenticated. The environment is shared with other programs,
so only the ``RINGBRIDGE_`` prefix is checked, and the variables other parts
of this project read under it (:data:`OTHER_VARIABLES`) are not settings but
are not mistakes either.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from .errors import ConfigError

ENV_PREFIX = "RINGBRIDGE_"
CONFIG_ENV = "RINGBRIDGE_CONFIG"

#: ``RINGBRIDGE_*`` variables that are not ``serve`` settings, and who reads them.
#: A test greps the repository for every ``RINGBRIDGE_*`` name it uses: a new
#: one must be a setting or be listed here.
OTHER_VARIABLES: Mapping[str, str] = {
    CONFIG_ENV: "the settings file (this module)",
    "RINGBRIDGE_URL": "the client's and the client commands' server URL (ringbridge.client)",
    "RINGBRIDGE_NATIVE_LIB": "path of a native helper (ringbridge.artifacts)",
    "RINGBRIDGE_VALIDATE_LIB": "path of a native helper (ringbridge.artifacts)",
    "RINGBRIDGE_DRAINER_LIB": "path of a native helper (ringbridge.artifacts)",
    "RINGBRIDGE_CLANG": "the clang that compiles --sample-header (ringbridge.schema.header)",
    "RINGBRIDGE_REQUIRE_KERNEL": "the test suite: a kernel test may not skip (.ci/run)",
    "RINGBRIDGE_REQUIRE_DOCKER": "the test suite: the container test may not skip (.ci/run)",
    "RINGBRIDGE_REQUIRE_NATS": "the test suite: a NATS test may not skip (.ci/run)",
    "RINGBRIDGE_LOAD_SECONDS": "the test suite: length of the load test",
    "RINGBRIDGE_BIND": "deploy/compose.yaml: the published address",
    "RINGBRIDGE_PUBLISH_PORT": "deploy/compose.yaml: the published port",
    "RINGBRIDGE_DOCKER_LOG": ".ci/docker-engine: the engine's log file",
    "RINGBRIDGE_DOCKER_DATA_ROOT": ".ci/docker-engine: the engine's data root",
}

#: Variables Kubernetes (service links of a Service named ``ringbridge``) and
#: Docker links define in a container: not ours to refuse. The manifests turn
#: service links off (``enableServiceLinks: false``); users' own may not.
INJECTED = re.compile(
    r"RINGBRIDGE_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)"
)

#: The settings file in use while a Settings is being built (see ``Settings.load``).
config_file: ContextVar[Path | None] = ContextVar("ringbridge_config_file", default=None)


def nearest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the known name closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def unknown_variables(fields: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    """``RINGBRIDGE_*`` variables in ``environ`` that nobody reads, each with a hint."""
    settings = {env_name(f) for f in fields}
    known = settings | set(OTHER_VARIABLES)
    out = []
    for var in sorted(environ):
        # pydantic-settings reads the environment case-insensitively.
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or INJECTED.fullmatch(upper):
            continue
        out.append(f"{var}{nearest(upper, settings)}")
    return out


class EnvNamespaceCheck(PydanticBaseSettingsSource):
    """Contributes no value; refuses a ``RINGBRIDGE_*`` variable that is no setting."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ checks the whole environment at once

    def __call__(self) -> dict[str, Any]:
        unknown = unknown_variables(self.settings_cls.model_fields, os.environ)
        if unknown:
            raise ConfigError(
                f"unknown environment variable{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}: not a setting; fix the name or unset it"
            )
        return {}


class TomlFileSource(PydanticBaseSettingsSource):
    """Field values from the TOML settings file, below the environment in priority."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = config_file.get()
        if path is None:
            env = os.environ.get(CONFIG_ENV)
            path = Path(env) if env else None
        if path is None:
            return {}
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"settings file {path}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {path}: not valid TOML: {exc}") from exc
        values = {str(k).replace("-", "_"): v for k, v in data.items()}
        fields = self.settings_cls.model_fields
        unknown = [f"{k}{nearest(k, fields)}" for k in sorted(set(values) - set(fields))]
        if unknown:
            raise ConfigError(f"settings file {path}: unknown settings: {', '.join(unknown)}")
        return values
