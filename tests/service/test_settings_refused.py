"""Settings that used to start wrong, or crash, are refused with one clear line.

Each of these was measured on a real ``ringbridge serve``: ``--shutdown-grace
inf`` died with an OverflowError traceback, ``ring_size = [1, 2]`` with an
AttributeError, a pin dir with a dot with a PermissionError from bpffs;
``submit_timeout = true`` started with a 1 s timeout and a misspelt
``RINGBRIDGE_TOKN`` started with no authentication at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ringbridge.errors import ConfigError
from ringbridge.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXIT_USAGE = 2
#: The longest duration a setting takes (a day).
MAX_SECONDS = 86_400.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RINGBRIDGE_")}
    return env | extra


#: Off bpffs: a start that got past the settings fails there, having pinned nothing.
NOWHERE = "/nonexistent-ringbridge-test/pins"


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``ringbridge serve ARGS`` with ``env``; its pin dir (unless given) is :data:`NOWHERE`."""
    return subprocess.run(
        [sys.executable, "-m", "ringbridge", "serve", *args],
        capture_output=True, text=True, timeout=30, cwd=REPO,
        env=clean_env(RINGBRIDGE_PIN_DIR=NOWHERE, **env),
    )  # fmt: skip


def as_kwargs(name: str, value: object) -> dict[str, Any]:
    return {name: value}


def assert_refused(r: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 (bad usage), one line on stderr naming the problem, no traceback."""
    assert r.returncode == EXIT_USAGE, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ringbridge: invalid settings: "), r.stderr
    for word in words:
        assert word in lines[0], r.stderr


@pytest.fixture(autouse=True)
def no_ringbridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.upper().startswith("RINGBRIDGE_"):
            monkeypatch.delenv(var)


# -- durations --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300", str(MAX_SECONDS + 1)])
@pytest.mark.parametrize(
    "name", ["shutdown_grace", "submit_timeout", "max_timeout", "body_timeout"]
)
def test_durations_are_finite_and_at_most_a_day(name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(**as_kwargs(name, value))


def test_shutdown_grace_inf_is_one_line_not_a_traceback() -> None:
    assert_refused(serve("--shutdown-grace", "inf"), "shutdown_grace", "finite")
    assert Settings(shutdown_grace=MAX_SECONDS).shutdown_grace == MAX_SECONDS


# -- values of the wrong type in the settings file --------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ring_size = [1, 2]\n", ("ring_size", "invalid size [1, 2]")),
        ("ring_size = 1.5\n", ("ring_size", "invalid size 1.5")),
        ("map_size = {slots = [1]}\n", ("map_size", "invalid size [1]")),
        ("export_map = [1, 2]\n", ("export_map", "list of names")),
        ("submit_timeout = true\n", ("submit_timeout", "boolean true", "not a switch")),
        ("ws_window = false\n", ("ws_window", "boolean false")),
        ("port = true\n", ("port", "boolean true")),
    ],
)
def test_wrong_types_in_the_settings_file_are_refused(
    tmp_path: Path, text: str, words: tuple[str, ...]
) -> None:
    cfg = tmp_path / "ringbridge.toml"
    cfg.write_text(text)
    with pytest.raises(ValidationError) as info:
        Settings.load(config=cfg)
    for word in words:
        assert word in str(info.value)
    assert_refused(serve(f"--config={cfg}"), *words)


def test_switches_still_take_booleans(tmp_path: Path) -> None:
    cfg = tmp_path / "ringbridge.toml"
    cfg.write_text("access_log = false\nattach = false\nlog_json = true\n")
    s = Settings.load(config=cfg)
    assert (s.access_log, s.attach, s.log_json) == (False, False, True)


# -- pin dirs bpffs would refuse ------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "path"),
    [
        ("--pin-dir", "/sys/fs/bpf/my.pins"),
        ("--pin-dir", "/sys/fs/bpf/ok/v1.2"),
        ("--ring-pin", "/sys/fs/bpf/their.ring"),
    ],
)
def test_a_dot_in_a_bpffs_name_is_refused_at_start(flag: str, path: str) -> None:
    if not Path("/proc/self/mountinfo").read_text().count(" /sys/fs/bpf "):
        pytest.skip("no bpffs at /sys/fs/bpf")
    name = flag.removeprefix("--").replace("-", "_")
    with pytest.raises(ValidationError, match=rf"{name}[\s\S]*has a '\.'"):
        Settings(**as_kwargs(name, path))
    assert_refused(serve(f"{flag}={path}"), name, "bpffs refuses")


def test_a_dot_off_bpffs_is_left_to_the_bpffs_check(tmp_path: Path) -> None:
    # Not a bpffs name: the service's own "not on bpffs" error handles it later.
    assert Settings(pin_dir=tmp_path / "a.b" / "pins").pin_dir == tmp_path / "a.b" / "pins"


# -- names that are no setting ----------------------------------------------------------


def test_a_misspelt_variable_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RINGBRIDGE_TOKN", "s3cret")
    with pytest.raises(ConfigError, match=r"RINGBRIDGE_TOKN \(did you mean RINGBRIDGE_TOKEN\?\)"):
        Settings()
    r = serve(RINGBRIDGE_TOKN="s3cret")
    assert_refused(r, "RINGBRIDGE_TOKN", "did you mean RINGBRIDGE_TOKEN?")
    monkeypatch.setenv("ringbridge_ring_sise", "1M")  # read case-insensitively: checked so too
    hint = r"ringbridge_ring_sise \(did you mean RINGBRIDGE_RING_SIZE"
    with pytest.raises(ConfigError, match=hint):
        Settings()


def test_variables_the_project_reads_elsewhere_are_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ringbridge.settings_sources import OTHER_VARIABLES

    for var in OTHER_VARIABLES:
        monkeypatch.setenv(var, "1" if var != "RINGBRIDGE_CONFIG" else os.devnull)
    # What Kubernetes injects for a Service named ringbridge (and Docker links).
    for var in (
        "RINGBRIDGE_SERVICE_HOST",
        "RINGBRIDGE_SERVICE_PORT",
        "RINGBRIDGE_SERVICE_PORT_HTTP",
        "RINGBRIDGE_PORT_8470_TCP",
        "RINGBRIDGE_PORT_8470_TCP_ADDR",
    ):
        monkeypatch.setenv(var, "10.0.0.1")
    assert Settings().port == 8470


def test_a_misspelt_key_in_the_settings_file_names_the_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "ringbridge.toml"
    cfg.write_text('tokn = "s3cret"\nsubmit-timout = 3\n')
    with pytest.raises(ConfigError) as info:
        Settings.load(config=cfg)
    assert "submit_timout (did you mean submit_timeout?)" in info.value.message
    assert "tokn (did you mean token?)" in info.value.message
    assert_refused(serve(f"--config={cfg}"), "did you mean token?")


_NAME = re.compile(r"\bRINGBRIDGE_[A-Z0-9_]*[A-Z0-9]\b")
#: Names made up to test a lookup, and the README's example of a misspelling:
#: no variables anyone sets.
_MADE_UP = {"RINGBRIDGE_X", "RINGBRIDGE_TEST_LIB", "RINGBRIDGE_TOKN"}


def test_every_ringbridge_variable_the_project_uses_is_known() -> None:
    """A new RINGBRIDGE_* variable must be a setting or listed in OTHER_VARIABLES.

    Otherwise ``serve`` would refuse to start wherever it is set. C macros
    (``bpf/``) share the prefix and are no variables.
    """
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    macros: set[str] = set()
    used: dict[str, str] = {}
    for name in files:
        path = REPO / name
        if path == Path(__file__) or not path.is_file() or path.suffix in (".o", ".so", ".png"):
            continue  # this file names wrong variables on purpose
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found = set(_NAME.findall(text))
        if path.suffix in (".c", ".h"):
            macros |= found
        else:
            for var in found:
                used.setdefault(var, name)
    from ringbridge.settings_sources import INJECTED, OTHER_VARIABLES

    settings = {f"RINGBRIDGE_{f.upper()}" for f in Settings.model_fields}
    known = settings | set(OTHER_VARIABLES) | macros | _MADE_UP
    unknown = {
        var: where
        for var, where in used.items()
        if var not in known and not INJECTED.fullmatch(var)
    }
    assert not unknown, f"RINGBRIDGE_* names neither settings nor OTHER_VARIABLES: {unknown}"
