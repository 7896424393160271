"""Settings of a user's object: repeatable flags, the same values from env and a file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from ringbridge.cli.serve import add_settings_flags, settings_from_args
from ringbridge.errors import ConfigError
from ringbridge.settings import Settings


def _parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    settings: Settings = settings_from_args(parser.parse_args(argv))
    return settings


def test_repeatable_flags_collect_every_use() -> None:
    s = _parse(
        ["--map-size", "slots=1K", "--map-size", "kernel_ringbuf=4M",
         "--export-map", "slots", "--export-map", "op_stats"]
    )  # fmt: skip
    assert s.map_size == {"slots": 1024, "kernel_ringbuf": 4 << 20}
    assert s.export_map == ["slots", "op_stats"]
    assert _parse([]).map_size == {} and _parse([]).export_map == []


def test_environment_and_settings_file_give_the_same(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RINGBRIDGE_MAP_SIZE", "slots=1K, kernel_ringbuf=4M")
    monkeypatch.setenv("RINGBRIDGE_EXPORT_MAP", "slots,op_stats")
    s = Settings()
    assert s.map_size == {"slots": 1024, "kernel_ringbuf": 4 << 20}
    assert s.export_map == ["slots", "op_stats"]
    monkeypatch.delenv("RINGBRIDGE_MAP_SIZE")
    monkeypatch.delenv("RINGBRIDGE_EXPORT_MAP")
    conf = tmp_path / "rb.toml"
    conf.write_text('map-size = {slots = "1K"}\nexport_map = ["slots"]\n')
    s = Settings.load(config=conf)
    assert s.map_size == {"slots": 1024}
    assert s.export_map == ["slots"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (["slots"], r"expected NAME=SIZE"),
        (["slots=1K", "slots=2K"], r"given twice"),
        (["slots=lots"], r"invalid size 'lots'"),
        (["=1K"], r"expected NAME=SIZE"),
    ],
)
def test_bad_map_sizes_are_refused(value: list[str], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings.model_validate({"map_size": value})


def test_ring_pin_excludes_an_object() -> None:
    with pytest.raises(ConfigError, match="ring_pin and bpf_object are both set"):
        Settings(ring_pin=Path("/sys/fs/bpf/x"), bpf_object=Path("x.bpf.o"))
    with pytest.raises(ConfigError, match=r"--map-size, --export-map: not with --ring-pin"):
        Settings.model_validate(
            {"ring_pin": "/sys/fs/bpf/x", "map_size": ["a=1K"], "export_map": ["a"]}
        )


def test_with_ring_size_derives_limits_again() -> None:
    s = Settings(ring_size=8 << 20)
    small = s.with_ring_size(64 * 1024)
    assert small.ring_size == 64 * 1024
    assert small.max_batch_bytes == 64 * 1024
    given = Settings(ring_size=8 << 20, max_batch_bytes=1 << 20)
    with pytest.raises(ConfigError, match="exceeds ring_size"):
        given.with_ring_size(64 * 1024)
