"""What the start-up checks before it serves event maps and typed samples (through ``assemble``).

Every refusal names the flag, the map and why, and leaves no pins behind when
it happens before the load. (A type found outside the object is checked
against the value a map declares: tests/schema/test_layout.py, as
``TypeSources.find_for`` does it for the backends and the event feeds.)
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from ringbridge.assemble import assemble
from ringbridge.errors import ConfigError
from ringbridge.kernel.objplan import plan_object
from ringbridge.kernel.userobj import load_object
from ringbridge.settings import Settings
from tests.support.upstream import PROTO_HEADER, PROTO_OBJ, ensure_built

pytestmark = pytest.mark.kernel

RING = 64 * 1024


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


def proto(pin_dir: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "pin_dir": pin_dir,
        "bpf_object": PROTO_OBJ,
        "ring_size": RING,
        "map_size": {"kernel_ringbuf": 4096},
        "sample_header": PROTO_HEADER,
    }
    values.update(kw)
    return Settings.model_validate(values)


async def _start(settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        await assemble(settings, stack)


async def test_an_event_map_that_is_not_a_kernel_ring_buffer_is_refused_before_the_load(
    pin_dir: Path,
) -> None:
    for name, why in (
        ("user_ringbuf", "has a map of another type called 'user_ringbuf'"),
        ("nope", "has no map 'nope'"),
    ):
        with pytest.raises(ConfigError) as info:
            await _start(proto(pin_dir, event_map=[name]))
        assert f"--event-map {name}: BPF object {PROTO_OBJ} {why}" in info.value.message
        assert "its BPF_MAP_TYPE_RINGBUF maps: kernel_ringbuf" in info.value.message
        assert not pin_dir.exists()


async def test_an_event_type_found_nowhere_names_the_flag_and_every_place(pin_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        await _start(proto(pin_dir, event_map=["kernel_ringbuf=test_replyy"]))
    message = info.value.message
    assert message.startswith("--event-map kernel_ringbuf=test_replyy: no struct")
    assert f"--sample-header {PROTO_HEADER}" in message and str(PROTO_OBJ) in message
    assert not pin_dir.exists()  # a failed start forgets the pins it made


async def test_the_built_in_consumer_takes_no_event_map_nor_globals(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    for extra, flag in (
        ({"event_map": ["m"]}, "--event-map"),
        ({"set_global": {"x": 1}}, "--set-global"),
    ):
        settings = Settings.model_validate(
            {"pin_dir": pin_dir, "bpf_object": bpf_object_path, **extra}
        )
        with pytest.raises(ConfigError, match=f"{flag}: only for your own --bpf-object"):
            await _start(settings)  # fmt: skip


async def test_event_pins_that_are_not_kernel_ring_buffers_are_refused(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    plan = plan_object(PROTO_OBJ, ring_size=RING, map_sizes={"kernel_ringbuf": 4096})
    other = pin_dir.parent / "other"
    with load_object(plan, other, attach=False):
        for pin, why in (
            (other / "user_ringbuf", "has type 31, not BPF_MAP_TYPE_RINGBUF"),
            (other / "missing", "cannot open the pin"),
        ):
            settings = Settings(pin_dir=pin_dir, bpf_object=bpf_object_path, event_pin=[str(pin)])
            with pytest.raises(ConfigError) as info:
                await _start(settings)
            assert info.value.message.startswith(f"--event-pin {pin}: ")
            assert why in info.value.message
