"""Settings: defaults for a first run, RINGBRIDGE_* variables, refused combinations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ringbridge.errors import ConfigError
from ringbridge.settings import MiB, Settings
from ringbridge.settings_access import is_loopback


def test_defaults_suit_a_first_run() -> None:
    s = Settings()
    assert (s.host, s.port, s.drain, s.ring_size) == ("127.0.0.1", 8470, "timer", 8 * MiB)
    assert (s.max_batch_bytes, s.max_sample_bytes) == (4 * MiB, 65536)
    assert s.admission_limit == 64 * MiB and s.token is None
    assert s.ws_frame_bytes == 4 * MiB + 64 * 1024
    assert s.pin_dir == Path("/sys/fs/bpf/ringbridge") and s.bpf_object is None
    assert s.drain_period_ns == 100_000


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGBRIDGE_PORT", "9001")
    monkeypatch.setenv("RINGBRIDGE_DRAIN", "kick")
    monkeypatch.setenv("RINGBRIDGE_RING_SIZE", str(MiB))
    monkeypatch.setenv("RINGBRIDGE_TOKEN", "t")
    # Variables of other parts (the test suite's own) are not settings.
    monkeypatch.setenv("RINGBRIDGE_REQUIRE_KERNEL", "1")
    s = Settings()
    assert (s.port, s.drain, s.ring_size, s.token) == (9001, "kick", MiB, "t")


def test_limits_left_default_follow_a_small_ring() -> None:
    s = Settings(ring_size=64 * 1024)
    assert s.max_batch_bytes == 64 * 1024
    assert s.max_sample_bytes == 64 * 1024 - 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ring_size": 3 * 4096}, "power of two"),
        ({"ring_size": 64 * 1024, "max_batch_bytes": 128 * 1024}, "exceeds ring_size"),
        ({"max_batch_bytes": 4096, "max_sample_bytes": 8192}, "does not fit"),
        ({"admission_bytes": 4 * MiB}, "could never be admitted"),
        ({"host": "0.0.0.0"}, "without a token"),
        ({"host": "10.1.2.3"}, "without a token"),
        ({"token": "  "}, "empty"),
    ],
)
def test_inconsistent_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings(**kwargs)


def test_non_loopback_needs_a_token_or_an_explicit_opt_out() -> None:
    assert Settings(host="0.0.0.0", token="x").token == "x"
    assert Settings(host="0.0.0.0", allow_unauthenticated=True).token is None
    assert is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("example.org")


def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(Exception, match="ring_sise"):
        Settings(ring_sise=1)  # type: ignore[call-arg]


def test_sizes_take_suffixes_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGBRIDGE_RING_SIZE", "1M")
    monkeypatch.setenv("RINGBRIDGE_MAX_BATCH_BYTES", "256K")
    monkeypatch.setenv("RINGBRIDGE_ADMISSION_BYTES", "512KiB")
    s = Settings()
    assert (s.ring_size, s.max_batch_bytes, s.admission_limit) == (MiB, 256 << 10, 512 << 10)
    monkeypatch.setenv("RINGBRIDGE_RING_SIZE", "8Q")
    with pytest.raises(ValidationError, match="invalid size '8Q'"):
        Settings()


def test_settings_file_is_below_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "ringbridge.toml"
    cfg.write_text('ring-size = "1M"\nport = 9100\ndrain = "kick"\nws_window = 3\n')
    s = Settings.load(config=cfg)
    assert (s.ring_size, s.port, s.drain, s.ws_window) == (MiB, 9100, "kick", 3)
    monkeypatch.setenv("RINGBRIDGE_PORT", "9200")
    s = Settings.load({"drain": "external"}, config=cfg)
    assert (s.port, s.drain, s.ring_size) == (9200, "external", MiB)
    # The variable names the file when no flag does.
    monkeypatch.setenv("RINGBRIDGE_CONFIG", str(cfg))
    assert Settings().ws_window == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [("ring_sise = 1\n", "unknown settings: ring_sise"), ("port = [\n", "not valid TOML")],
)
def test_bad_settings_file_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=f"settings file {cfg}: {re.escape(match)}"):
        Settings.load(config=cfg)
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load(config=tmp_path / "absent.toml")


def test_token_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("s3cret\n")
    assert Settings(token_file=f, host="0.0.0.0").token == "s3cret"
    with pytest.raises(ConfigError, match="both set"):
        Settings(token_file=f, token="x")
    f.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        Settings(token_file=f)
    with pytest.raises(ConfigError, match="cannot read"):
        Settings(token_file=tmp_path / "absent")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drain_period_us": 9}, "greater than or equal to 10"),
        ({"drain_budget": 131_073}, "less than or equal to 131072"),
        ({"drain_idle_period_us": 5}, "greater than or equal to 10"),
    ],
)
def test_drain_bounds(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(**kwargs)


def test_drain_idle_period_is_at_least_the_period() -> None:
    with pytest.raises(ConfigError, match="only ever slows down"):
        Settings(drain_period_us=1000, drain_idle_period_us=500)
    s = Settings(drain_period_us=10, drain_budget=131_072, drain_idle_period_us=10)
    assert (s.drain_period_ns, s.drain_idle_period_ns) == (10_000, 10_000)
