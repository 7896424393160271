"""Every backend kind through the one start-up path, :func:`ringbridge.assemble.assemble`.

The same test body runs for the built-in consumer, a user's object and a ring
another loader pinned (bpftool): it assembles the service in-process, sends
typed JSON samples through the backend's own codec, checks that the kernel
side consumed them and that stats, exporters and map lookup answer, then
unwinds the start-up as a shutdown does. A start that fails after the load
forgets the pins it made and keeps the ones it re-used. With ``--nats`` each
kind keeps the fleet cursor with its pins, and they go together.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ringbridge.api import health
from ringbridge.assemble import assemble
from ringbridge.errors import ConfigError, PinError, ProducerLockedError
from ringbridge.fleet.cursor import PinnedCursorStore
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.pins import CURSOR_PIN, legacy_lock_path, unpin
from ringbridge.ring import ProducerLock, UserRingBuffer
from ringbridge.runtime import Runtime
from ringbridge.settings import Settings
from tests.support.byo import EXAMPLE_OBJ, TWO_RINGS_OBJ, ensure_built, read_globals

pytestmark = pytest.mark.kernel

RING = 64 * 1024


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


@dataclass
class Kind:
    """One backend kind: its settings, a batch of its samples, and how to see them consumed."""

    name: str
    settings: Settings
    samples: list[dict[str, Any]]
    exported: set[str]  # metric families the backend's exporters yield (some of them)
    a_map: str  # a map the backend can look up by name
    consumed: Callable[[Runtime], Awaitable[None]]
    keeps_seq: bool = True


async def _wait_consumed(rt: Runtime) -> None:
    await rt.ring.wait_consumed_async(rt.ring.producer_pos, 10.0)


def _builtin(bpf_object_path: Path, pin_dir: Path) -> Kind:
    settings = Settings(pin_dir=pin_dir, bpf_object=bpf_object_path, ring_size=RING, drain="kick")

    async def consumed(rt: Runtime) -> None:
        await _wait_consumed(rt)
        stats = rt.backend.kernel_stats()
        assert stats["samples"] == 2
        assert stats["kinds"] == {"3": {"samples": 2, "value": 12}}

    samples = [{"kind": 3, "value": 5}, {"kind": 3, "value": 7}]
    return Kind(
        "builtin", settings, samples, {"ringbridge_kernel_samples"}, "ringbridge_ctl", consumed
    )


def _object(pin_dir: Path) -> Kind:
    settings = Settings(
        pin_dir=pin_dir,
        bpf_object=EXAMPLE_OBJ,
        ring_size=RING,
        map_size={"slots": 64},
        drain="kick",
        drain_program="ops_drain",
        sample_type="ops_msg",
        export_map=["op_stats"],
    )

    async def consumed(rt: Runtime) -> None:
        await _wait_consumed(rt)
        assert read_globals(EXAMPLE_OBJ, pin_dir)["acc"] == (1 + 41) * 2
        assert rt.backend.kernel_stats()["drain_program"] == "ops_drain"

    samples = [{"op": "OPS_ADD", "add": 41}, {"op": "OPS_MUL", "mul": 2}]
    return Kind(
        "object",
        settings,
        samples,
        {"ringbridge_map_op_stats_count", "ringbridge_global_acc"},
        "slots",
        consumed,
    )


def _ring_pin(foreign: Path) -> Kind:
    ring = foreign / "maps" / "ring_a"
    settings = Settings(pin_dir=foreign / "unused", ring_pin=ring, sample_type="pinned_sample")

    async def consumed(rt: Runtime) -> None:
        # The other loader drains its ring: our side only produced.
        with lb.obj_get(foreign / "progs" / "drain_a") as prog:
            assert lb.prog_test_run(prog) == 2
        assert rt.ring.consumer_pos() == rt.ring.producer_pos
        assert rt.backend.kernel_stats()["ring_pin"] == str(ring)

    samples: list[dict[str, Any]] = [{"id": 1, "delta": -2, "name": "abc"}, {"id": 2}]
    return Kind("ring_pin", settings, samples, set(), "ring_a", consumed, keeps_seq=False)


@pytest.fixture
def foreign(pin_dir: Path) -> Iterator[Path]:
    """two_rings.bpf.o loaded and pinned by bpftool: another loader's ring."""
    pin_dir.mkdir(parents=True)
    subprocess.run(
        ["bpftool", "prog", "loadall", str(TWO_RINGS_OBJ), str(pin_dir / "progs"),
         "pinmaps", str(pin_dir / "maps")],
        check=True, capture_output=True,
    )  # fmt: skip
    yield pin_dir


@pytest.fixture(params=["builtin", "object", "ring_pin"])
def kind(request: pytest.FixtureRequest, bpf_object_path: Path, pin_dir: Path) -> Kind:
    if request.param == "builtin":
        return _builtin(bpf_object_path, pin_dir)
    if request.param == "object":
        return _object(pin_dir)
    return _ring_pin(request.getfixturevalue("foreign"))


async def _send(rt: Runtime, samples: list[dict[str, Any]], first_seq: int = 0) -> None:
    batch = rt.codec.decode_json_batch(
        json.dumps({"samples": samples}),
        ring_size=rt.settings.ring_size,
        max_sample_bytes=rt.settings.max_sample_bytes,
    )
    ack = await rt.producer.submit(batch, rt.producer.admit(batch.nbytes, 10.0))
    assert (ack.first_seq, ack.last_seq) == (first_seq, first_seq + len(samples) - 1)


async def test_every_kind_assembles_serves_and_shuts_down_through_one_path(kind: Kind) -> None:
    async with AsyncExitStack() as stack:
        rt = await assemble(kind.settings, stack)
        backend = rt.backend
        assert backend.kind == kind.name
        assert rt.settings.ring_size == backend.ring_size == RING
        assert (rt.producer.alive, backend.closed) == (True, False)
        # One producer per ring, whatever the kind: the ring's own lock.
        map_id = rt.ring.map_id
        with pytest.raises(ProducerLockedError):
            UserRingBuffer(backend.ring_fd)
        with pytest.raises(ProducerLockedError):
            ProducerLock.acquire(map_id, what="a second producer")
        await _send(rt, kind.samples)
        await kind.consumed(rt)
        names = {m.name for e in rt.exports for m in e.collect()}
        assert kind.exported <= names and bool(names) == bool(kind.exported)
        with backend.map_fd(kind.a_map) as fd:
            assert lb.map_info(fd).name == kind.a_map
        with pytest.raises(ConfigError, match="no_such_map"):
            backend.map_fd("no_such_map")
    # Unwound: the producer stopped, the ring unmapped, the backend closed, the lock freed.
    assert (rt.producer.alive, backend.closed) == (False, True)
    ProducerLock.acquire(map_id, what="the next producer").close()


async def test_seqs_carry_over_a_restart_where_the_kind_keeps_them(kind: Kind) -> None:
    async def one_start() -> tuple[int, bool]:
        async with AsyncExitStack() as stack:
            rt = await assemble(kind.settings, stack)
            first = rt.producer.statistics().next_seq
            await _send(rt, kind.samples, first)
            return first, rt.backend.seq_store is not None

    assert await one_start() == (0, kind.keeps_seq)
    # Kept with the pins: the next start goes on; a foreign ring has no place
    # of ours to keep it, so it starts at 0 again.
    again = len(kind.samples) if kind.keeps_seq else 0
    assert await one_start() == (again, kind.keeps_seq)


async def test_a_failed_start_forgets_new_pins_and_keeps_reused_ones(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    bad = Settings(pin_dir=pin_dir, bpf_object=bpf_object_path, sample_type="no_such_struct")
    with pytest.raises(ConfigError, match="no_such_struct"):
        async with AsyncExitStack() as stack:
            await assemble(bad, stack)
    # The load pinned a fresh set; the start failed after it: the set is gone.
    assert not pin_dir.exists()
    assert not legacy_lock_path(pin_dir).exists()

    good = Settings(pin_dir=pin_dir, bpf_object=bpf_object_path)
    async with AsyncExitStack() as stack:
        await assemble(good, stack)
    kept = sorted(p.name for p in pin_dir.iterdir())
    with pytest.raises(ConfigError, match="no_such_struct"):
        async with AsyncExitStack() as stack:
            await assemble(bad, stack)
    # Re-used pins are the previous run's state: a failed start leaves them.
    assert sorted(p.name for p in pin_dir.iterdir()) == kept


async def test_the_fleet_cursor_lives_and_goes_with_each_kinds_pins(kind: Kind) -> None:
    # --nats with no server answering: the node serves anyway (degraded) and
    # its cursor is kept where the kind keeps its pins.
    given = {name: getattr(kind.settings, name) for name in kind.settings._given}
    fleet = Settings(
        **given,
        nats=["nats://127.0.0.1:9"],
        nats_stream="FLEET",
        nats_subject=["fleet.all"],
        shutdown_grace=0.5,
    )
    pins_of_ours = fleet.pin_dir
    for start in range(2):
        async with AsyncExitStack() as stack:
            rt = await assemble(fleet, stack)
            where = rt.backend.state_pin(CURSOR_PIN)
            assert where == pins_of_ours / CURSOR_PIN and where.exists()
            assert rt.fleet is not None and not rt.fleet.healthy
            ready, checks = health.readiness(rt)
            assert ready and health.degraded(checks) == ["nats_connected"]
            await _send(rt, kind.samples, len(kind.samples) * start if kind.keeps_seq else 0)
            # A second service cannot take the same cursor (one writer per cursor).
            with PinnedCursorStore.open(where) as second, pytest.raises(ProducerLockedError):
                ProducerLock.acquire(second.map_id, what="a second cursor writer")
        # The second start re-opened the pin set with the cursor in it; unwound,
        # the cursor's lock is free again.
        with PinnedCursorStore.open(where) as store:
            assert store.load_cursor() is not None
            ProducerLock.acquire(store.map_id, what="the next writer").close()
    removed = unpin(pins_of_ours)
    assert where in removed and not where.exists() and not pins_of_ours.exists()


async def test_a_ring_pins_cursor_never_goes_into_a_pin_set(
    foreign: Path, bpf_object_path: Path
) -> None:
    # --ring-pin keeps its state in --pin-dir: not in a dir holding a pin set
    # (the built-in consumer's here), whose ring it is not about.
    builtin = foreign / "builtin"
    async with AsyncExitStack() as stack:
        await assemble(Settings(pin_dir=builtin, bpf_object=bpf_object_path), stack)
    settings = Settings(
        pin_dir=builtin,
        ring_pin=foreign / "maps" / "ring_a",
        nats=["nats://127.0.0.1:9"],
        nats_stream="FLEET",
        nats_subject=["fleet.all"],
    )
    with pytest.raises(PinError, match="keeps only ringbridge's own state"):
        async with AsyncExitStack() as stack:
            await assemble(settings, stack)
    assert CURSOR_PIN not in {p.name for p in builtin.iterdir()}
