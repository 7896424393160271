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


def test_sample_type_sources_from_flags_env_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = _parse(
        ["--sample-btf", "a.bpf.o", "--sample-btf", "b.btf", "--sample-header", "wire.h",
         "--header-include", "vmlinux.h", "--header-include-dir", "inc"]
    )  # fmt: skip
    assert s.sample_btf == [Path("a.bpf.o"), Path("b.btf")]
    assert s.sample_header == Path("wire.h")
    opts = s.header_options
    assert opts.includes == ("vmlinux.h",) and opts.include_dirs == (Path("inc"),)
    assert opts.prelude == ("vmlinux.h",)
    # Without --header-include the program's usual prelude: <linux/types.h>.
    assert _parse(["--sample-header", "wire.h"]).header_options.prelude == ("linux/types.h",)
    assert _parse([]).sample_btf == [] and _parse([]).sample_header is None
    monkeypatch.setenv("RINGBRIDGE_SAMPLE_BTF", "x.o, y.o")
    assert Settings().sample_btf == [Path("x.o"), Path("y.o")]
    monkeypatch.delenv("RINGBRIDGE_SAMPLE_BTF")
    conf = tmp_path / "rb.toml"
    conf.write_text('sample-btf = ["t.bpf.o"]\nsample_header = "h.h"\n')
    s = Settings.load(config=conf)
    assert s.sample_btf == [Path("t.bpf.o")] and s.sample_header == Path("h.h")


def test_header_flags_need_a_header() -> None:
    with pytest.raises(ConfigError, match="only apply to --sample-header"):
        Settings.model_validate({"header_include": ["vmlinux.h"]})
    with pytest.raises(ConfigError, match="only apply to --sample-header"):
        Settings.model_validate({"header_include_dir": ["inc"]})


def test_sample_btf_works_with_ring_pin() -> None:
    s = Settings(ring_pin=Path("/sys/fs/bpf/x/ring"), sample_btf=[Path("t.o")], sample_type="m")
    assert s.sample_btf == [Path("t.o")]
