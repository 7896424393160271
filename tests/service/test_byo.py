"""Bring your own BPF object: `ringbridge serve` flags only, real kernel, a child server.

Objects: the example (bpf/examples/ops.bpf.c: add/multiply/set-slot protocol,
a raw-tracepoint drain and a syscall drain program) and a selftest-style
object (bpf/selftests/user_ringbuf_msg.bpf.c: the upstream message protocol,
maps left at max_entries 0). Kernel state is read from the pinned maps.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringbridge.core.ring import encode_batch
from ringbridge.errors import ConfigError, UnavailableError
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.objplan import plan_object
from ringbridge.kernel.pins import legacy_lock_path
from tests.support.byo import (
    EXAMPLE_OBJ,
    INC32,
    INC64,
    MUL32,
    MUL64,
    OPS_ADD,
    OPS_MUL,
    SELFTEST_OBJ,
    SELFTEST_VARIANT_OBJ,
    TWO_RINGS_OBJ,
    ensure_built,
    ops_msg,
    ops_set,
    read_globals,
    read_hash,
    selftest_msg,
    trigger_syscall,
    wrap64,
)
from tests.support.launch import served

pytestmark = pytest.mark.kernel

OCTET = {"content-type": "application/octet-stream"}
SELFTEST_ARGS = ["--ring-size", "64K", "--map-size", "kernel_ringbuf=4K"]
EXAMPLE_ARGS = ["--ring-size", "64K", "--map-size", "slots=64"]


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


@pytest.fixture
def log_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "serve.log"


def _refused(args: list[str], log_path: Path) -> str:
    """Starts `ringbridge serve ARGS`, expects it to refuse; returns its log."""
    with pytest.raises(UnavailableError), served(args, log_path):
        pass
    return log_path.read_text()


def _post_binary(addr: str, payloads: list[bytes]) -> httpx.Response:
    return httpx.post(
        f"http://{addr}/v1/samples", content=encode_batch(payloads), headers=OCTET, timeout=10
    )


# --------------------------------------------------------------------------
# Planning: refusals that name the map, program and flag (no load needed)
# --------------------------------------------------------------------------


def test_several_rings_need_ring_map() -> None:
    with pytest.raises(
        ConfigError, match=r"several user ring buffer maps \(ring_a, ring_b\).*--ring-map"
    ):
        plan_object(TWO_RINGS_OBJ, ring_size=65536)
    plan = plan_object(TWO_RINGS_OBJ, ring_size=65536, ring_map="ring_b")
    assert plan.ring_map == "ring_b"
    assert plan.sizes == {"ring_b": 65536}


def test_ring_map_must_be_a_user_ring() -> None:
    with pytest.raises(
        ConfigError, match=r"--ring-map kernel_ringbuf: .* not a BPF_MAP_TYPE_USER_RINGBUF"
    ):
        plan_object(SELFTEST_OBJ, ring_size=65536, ring_map="kernel_ringbuf")
    with pytest.raises(ConfigError, match=r"--ring-map nope: .*no such map.*user_ringbuf"):
        plan_object(SELFTEST_OBJ, ring_size=65536, ring_map="nope")


def test_zero_sized_map_without_size_is_refused_naming_it() -> None:
    with pytest.raises(
        ConfigError, match=r"map 'kernel_ringbuf' .* max_entries 0 .*--map-size kernel_ringbuf=SIZE"
    ):
        plan_object(SELFTEST_OBJ, ring_size=65536)
    with pytest.raises(ConfigError, match=r"--map-size kernel_ringbuf=5000: .*"):
        plan_object(SELFTEST_OBJ, ring_size=65536, map_sizes={"kernel_ringbuf": 5000})
    with pytest.raises(ConfigError, match=r"no map 'nosuch'"):
        plan_object(SELFTEST_OBJ, ring_size=65536, map_sizes={"kernel_ringbuf": 4096, "nosuch": 1})
    plan = plan_object(SELFTEST_OBJ, ring_size=65536, map_sizes={"kernel_ringbuf": 4096})
    assert plan.sizes == {"user_ringbuf": 65536, "kernel_ringbuf": 4096}


def test_drain_program_must_be_a_syscall_program() -> None:
    with pytest.raises(ConfigError, match=r"--drain-program not_a_drain: .*not SEC\(\"syscall\"\)"):
        plan_object(TWO_RINGS_OBJ, ring_size=65536, ring_map="ring_a", drain_program="not_a_drain")
    with pytest.raises(ConfigError, match=r"--drain-program nope: .*no such program.*drain_a"):
        plan_object(TWO_RINGS_OBJ, ring_size=65536, ring_map="ring_a", drain_program="nope")


def test_serve_refuses_a_bad_object_config_with_one_line(pin_dir: Path, log_path: Path) -> None:
    log = _refused(["--bpf-object", str(SELFTEST_OBJ), "--pin-dir", str(pin_dir)], log_path)
    assert "--map-size kernel_ringbuf=SIZE" in log
    assert not pin_dir.exists()
    args = ["--bpf-object", str(EXAMPLE_OBJ), "--pin-dir", str(pin_dir), *EXAMPLE_ARGS]
    log = _refused([*args, "--drain", "kick"], log_path)
    assert "--drain kick with your own BPF object needs --drain-program" in log
    # Refused after the load (an --export-map the object lacks): the pins it made go again.
    log = _refused([*args, "--export-map", "nosuch"], log_path)
    assert "--export-map nosuch: the object has no such map" in log
    assert not pin_dir.exists()


# --------------------------------------------------------------------------
# The selftest-style object: maps at max_entries 0, a drain attached on its own
# --------------------------------------------------------------------------


def test_selftest_object_binary_protocol(pin_dir: Path, log_path: Path) -> None:
    ops = [(INC64, 5), (MUL64, 3), (INC32, -1), (MUL32, 7), (INC64, 1 << 40), (MUL32, -2)]
    expected = 0
    for op, v in ops:
        expected = wrap64(expected + v if op in (INC64, INC32) else expected * v)
    args = ["--bpf-object", str(SELFTEST_OBJ), "--pin-dir", str(pin_dir), *SELFTEST_ARGS]
    with served(args, log_path) as addr:
        r = _post_binary(addr, [selftest_msg(op, v) for op, v in ops])
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == len(ops)
        stats = httpx.get(f"http://{addr}/v1/stats").json()
        assert stats["kernel"]["attached"] == ["test_user_ringbuf_protocol"]
        assert stats["config"]["drain"] == "external"
        # The program the object attached drains on prctl(2) -- ours, or any
        # other process's, so only the state after our call is checked.
        trigger_syscall("prctl")
        g = read_globals(SELFTEST_OBJ, pin_dir)
        assert g["msgs_read"] == len(ops)
        assert g["kern_mutated"] == expected
        assert g["bad_msgs"] == 0
        # Any process's prctl(2) may have drained first; the last drain then found none.
        assert g["last_drain_ret"] in (0, len(ops))
    # The pins keep the state: a restart with the same object re-uses them.
    with served(args, log_path) as addr:
        assert _post_binary(addr, [selftest_msg(INC64, 10)]).status_code == 200
        trigger_syscall("prctl")
        g = read_globals(SELFTEST_OBJ, pin_dir)
        assert g["kern_mutated"] == wrap64(expected + 10)
        assert g["msgs_read"] == len(ops) + 1


def test_no_attach_leaves_programs_loaded_only(pin_dir: Path, log_path: Path) -> None:
    args = [
        "--bpf-object",
        str(SELFTEST_OBJ),
        "--pin-dir",
        str(pin_dir),
        *SELFTEST_ARGS,
        "--no-attach",
    ]
    with served(args, log_path) as addr:
        assert _post_binary(addr, [selftest_msg(INC64, 5)]).status_code == 200
        trigger_syscall("prctl")
        stats = httpx.get(f"http://{addr}/v1/stats").json()
        assert stats["kernel"]["attached"] == []
        assert stats["ring"]["producer_pos"] - stats["ring"]["consumer_pos"] == 24
        assert read_globals(SELFTEST_OBJ, pin_dir)["msgs_read"] == 0


def test_changed_object_against_old_pins_refuses_start(pin_dir: Path, log_path: Path) -> None:
    args = ["--pin-dir", str(pin_dir), *SELFTEST_ARGS]
    with served(["--bpf-object", str(SELFTEST_OBJ), *args], log_path) as addr:
        assert _post_binary(addr, [selftest_msg(INC64, 5)]).status_code == 200
        trigger_syscall("prctl")
    # Same maps, same sizes, same names: only the program differs.
    log = _refused(["--bpf-object", str(SELFTEST_VARIANT_OBJ), *args], log_path)
    assert "made from another BPF object" in log
    assert f"ringbridge unpin --pin-dir {pin_dir}" in log
    # The old state is untouched, and the original object still starts on it.
    assert read_globals(SELFTEST_OBJ, pin_dir)["kern_mutated"] == 5
    with served(["--bpf-object", str(SELFTEST_OBJ), *args], log_path):
        pass
    # The hint works as written: unpin removes the whole set, then the
    # changed object starts afresh.
    out = subprocess.run(
        [sys.executable, "-m", "ringbridge", "unpin", "--pin-dir", str(pin_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert f"removed {pin_dir / 'ringbridge_meta'}" in out.stdout
    assert not pin_dir.exists()
    assert not legacy_lock_path(pin_dir).exists()
    with served(["--bpf-object", str(SELFTEST_VARIANT_OBJ), *args], log_path) as addr:
        assert _post_binary(addr, [selftest_msg(INC64, 5)]).status_code == 200
        trigger_syscall("prctl")
        assert read_globals(SELFTEST_VARIANT_OBJ, pin_dir)["kern_mutated"] == 10


# --------------------------------------------------------------------------
# The example object: kick mode through its syscall drain program
# --------------------------------------------------------------------------


def test_example_object_kick_drain(pin_dir: Path, log_path: Path) -> None:
    args = [
        "--bpf-object",
        str(EXAMPLE_OBJ),
        "--pin-dir",
        str(pin_dir),
        *EXAMPLE_ARGS,
        "--drain-program",
        "ops_drain",
    ]
    payloads = [
        ops_msg(OPS_ADD, 41, tag=1),
        ops_msg(OPS_MUL, -3, tag=2),
        ops_set("alpha", 7, tag=3),
        ops_set("beta", 1 << 63, tag=4),
        ops_msg(OPS_ADD, 2, tag=5),
    ]
    with served(args, log_path) as addr:
        r = httpx.post(
            f"http://{addr}/v1/samples?wait=consumed",
            content=encode_batch(payloads),
            headers=OCTET,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "consumed"
        assert httpx.get(f"http://{addr}/v1/stats").json()["config"]["drain"] == "kick"
        g = read_globals(EXAMPLE_OBJ, pin_dir)
        assert g["acc"] == (1 + 41) * -3 + 2
        assert g["ops_applied"] == 5
        assert g["ops_rejected"] == 0
        assert g["last_tag"] == 5
        assert g["ops_abi_version"] == 1
        slots = read_hash(pin_dir / "slots", 16, 8)
        assert {k.rstrip(b"\0"): struct.unpack("<Q", v)[0] for k, v in slots.items()} == {
            b"alpha": 7,
            b"beta": 1 << 63,
        }


# --------------------------------------------------------------------------
# --ring-pin: a ring another loader (bpftool here) loaded and pinned
# --------------------------------------------------------------------------


@pytest.fixture
def foreign_pins(pin_dir: Path) -> Iterator[Path]:
    """two_rings.bpf.o loaded by bpftool: maps under pin_dir/maps, programs under progs."""
    pin_dir.mkdir(parents=True)
    subprocess.run(
        [
            "bpftool",
            "prog",
            "loadall",
            str(TWO_RINGS_OBJ),
            str(pin_dir / "progs"),
            "pinmaps",
            str(pin_dir / "maps"),
        ],
        check=True,
        capture_output=True,
    )
    yield pin_dir


def test_ring_pin_feeds_a_ring_another_loader_pinned(foreign_pins: Path, log_path: Path) -> None:
    ring = foreign_pins / "maps" / "ring_a"
    payloads = [bytes([i]) * (i + 1) for i in range(10)]
    # No --ring-size: the service takes the pinned ring's size (64 KiB) and its limits follow.
    with served(
        ["--ring-pin", str(ring), "--pin-dir", str(foreign_pins / "unused")], log_path
    ) as addr:
        stats = httpx.get(f"http://{addr}/v1/stats").json()
        assert stats["config"]["ring_size"] == 65536
        assert stats["config"]["max_batch_bytes"] <= 65536
        assert stats["config"]["drain"] == "external"
        assert stats["kernel"]["ring_pin"] == str(ring)
        r = _post_binary(addr, payloads)
        assert r.status_code == 200, r.text
        # The other loader's program drains it: every record reaches the kernel.
        with lb.obj_get(foreign_pins / "progs" / "drain_a") as prog:
            assert lb.prog_test_run(prog) == len(payloads)
        stats = httpx.get(f"http://{addr}/v1/stats").json()
        assert stats["ring"]["consumer_pos"] == stats["ring"]["producer_pos"] > 0
        # One producer per ring: a second service is refused.
        log2 = _refused(["--ring-pin", str(ring)], log_path.with_name("second.log"))
        assert "another ringbridge producer holds this ring" in log2
    assert not (foreign_pins / "unused").exists()  # nothing of ours pinned


def test_ring_pin_refusals(foreign_pins: Path, log_path: Path) -> None:
    ring = foreign_pins / "maps" / "ring_a"
    log = _refused(["--ring-pin", str(ring), "--ring-size", "128K"], log_path)
    assert "the pinned ring has 65536 bytes but --ring-size 131072 was given" in log
    log = _refused(["--ring-pin", str(foreign_pins / "progs" / "drain_a")], log_path)
    assert "the pin is not a BPF map" in log
    out = subprocess.run(
        [sys.executable, "-m", "ringbridge", "serve", "--ring-pin", str(ring), "--drain", "kick"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "--drain kick: not with --ring-pin" in out.stderr


def test_ring_pin_sample_type_from_the_loaders_btf(foreign_pins: Path, log_path: Path) -> None:
    """The ring map has no BTF (libbpf makes ring maps without): the program's BTF serves."""
    ring = foreign_pins / "maps" / "ring_a"
    args = ["--ring-pin", str(ring), "--sample-type", "pinned_sample"]
    with served(args, log_path) as addr:
        r = httpx.post(
            f"http://{addr}/v1/samples",
            json={"samples": [{"id": 7, "delta": -2, "name": "abc"}, {"id": 1}]},
        )
        assert r.status_code == 200, r.text
        r = httpx.post(f"http://{addr}/v1/samples", json={"samples": [{"id": 1, "delta": 40000}]})
        assert r.status_code == 422
        assert r.json()["error"]["message"].startswith("samples[0].delta")
        with lb.obj_get(foreign_pins / "progs" / "drain_a") as prog:
            assert lb.prog_test_run(prog) == 2
        stats = httpx.get(f"http://{addr}/v1/stats").json()
        # Two records of the 12-byte struct (16 bytes with the header): 2 * 24.
        assert stats["ring"]["producer_pos"] == 2 * 24


# --------------------------------------------------------------------------
# Typed JSON from the object's BTF, and the metrics export, on the example
# --------------------------------------------------------------------------


def _metrics(addr: str) -> dict[str, float]:
    """``name{labels}`` -> value of every exported map and global sample."""
    out = {}
    for line in httpx.get(f"http://{addr}/metrics").text.splitlines():
        if line.startswith(("ringbridge_map_", "ringbridge_global_")):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_example_typed_json_binary_and_exports(pin_dir: Path, log_path: Path) -> None:
    args = [
        "--bpf-object", str(EXAMPLE_OBJ), "--pin-dir", str(pin_dir), *EXAMPLE_ARGS,
        "--drain-program", "ops_drain", "--sample-type", "ops_msg",
        "--export-map", "slots", "--export-map", "op_stats",
    ]  # fmt: skip
    with served(args, log_path) as addr:
        url = f"http://{addr}/v1/samples?wait=consumed"
        typed = [
            {"op": "OPS_ADD", "add": 41, "tag": 1},
            {"op": "OPS_MUL", "mul": -3, "tag": 2},
            {"op": "OPS_SET", "set": {"name": "alpha", "value": 7}, "tag": 3},
            {"op": 0, "add": 5, "tag": 4},  # an enum by value
        ]
        r = httpx.post(url, json={"samples": typed}, timeout=10)
        assert r.status_code == 200, r.text
        # Binary samples in the same layout, after the JSON ones.
        binary = [
            ops_msg(OPS_MUL, 2, tag=5),
            ops_set("beta", 1 << 40, tag=6),
            ops_set("gamma", (1 << 63) + 1, tag=7),
        ]
        r = httpx.post(url, content=encode_batch(binary), headers=OCTET, timeout=10)
        assert r.status_code == 200, r.text

        acc = ((1 + 41) * -3 + 5) * 2
        g = read_globals(EXAMPLE_OBJ, pin_dir)
        assert (g["acc"], g["ops_applied"], g["ops_rejected"], g["last_tag"]) == (acc, 7, 0, 7)
        slots = read_hash(pin_dir / "slots", 16, 8)
        assert {k.rstrip(b"\0"): struct.unpack("<Q", v)[0] for k, v in slots.items()} == {
            b"alpha": 7,
            b"beta": 1 << 40,
            b"gamma": (1 << 63) + 1,
        }

        # Hostile typed input: 422 with the path, nothing of the batch committed.
        before = httpx.get(f"http://{addr}/v1/stats").json()["ring"]["producer_pos"]
        bad = [
            ({"op": "OPS_DIVIDE"}, "samples[1].op"),
            ({"op": "OPS_ADD", "add": 1, "mul": 2}, "samples[1]"),
            ({"op": "OPS_SET", "set": {"name": "x" * 17}}, "samples[1].set.name"),
            ({"op": "OPS_SET", "set": {"name": "ok", "value": -1}}, "samples[1].set.value"),
            ({"op": "OPS_ADD", "tag": 1 << 32}, "samples[1].tag"),
        ]
        for sample, path in bad:
            r = httpx.post(url, json={"samples": [typed[0], sample]})
            assert r.status_code == 422, (sample, r.text)
            err = r.json()["error"]
            assert err["index"] == 1
            assert err["message"].startswith(path), (path, err["message"])
        assert httpx.get(f"http://{addr}/v1/stats").json()["ring"]["producer_pos"] == before

        # The JSON Schema of one sample follows the object's BTF.
        schema = httpx.get(f"http://{addr}/v1/schema").json()
        struct_schema = next(o for o in schema["oneOf"] if o["title"] == "struct ops_msg")
        assert set(struct_schema["properties"]) == {"op", "tag", "add", "mul", "set"}
        assert "OPS_SET" in json.dumps(struct_schema["properties"]["op"])

        m = _metrics(addr)
        assert m['ringbridge_global_acc{section=".data"}'] == acc
        assert m['ringbridge_global_ops_applied{section=".bss"}'] == 7
        assert m['ringbridge_global_last_tag{section=".bss"}'] == 7
        assert m['ringbridge_global_ops_abi_version{section=".rodata"}'] == 1
        assert m['ringbridge_map_slots{name="alpha"}'] == 7
        assert m['ringbridge_map_slots{name="beta"}'] == 1 << 40
        # Per-CPU values summed; the key (the op) is the label.
        assert m['ringbridge_map_op_stats_count{key="0"}'] == 2  # two adds
        assert m['ringbridge_map_op_stats_count{key="1"}'] == 2  # two multiplies
        assert m['ringbridge_map_op_stats_count{key="2"}'] == 3  # three sets
        assert m['ringbridge_map_op_stats_operand_sum{key="0"}'] == 41 + 5
        assert m['ringbridge_map_op_stats_operand_sum{key="1"}'] == -3 + 2
        # operand_sum is an s64: 7 + 2**40 + 2**63 + 1 wraps negative.
        set_sum = wrap64(7 + (1 << 40) + (1 << 63) + 1, signed=True)
        assert m['ringbridge_map_op_stats_operand_sum{key="2"}'] == float(set_sum)
        # /v1/stats has the exact integers a float cannot hold.
        exported = httpx.get(f"http://{addr}/v1/stats").json()["exported"]
        exact = {(e["name"], tuple(sorted(e["labels"].items()))): e["value"] for e in exported}
        assert exact[("ringbridge_map_slots", (("name", "gamma"),))] == (1 << 63) + 1
        assert exact[("ringbridge_map_op_stats_operand_sum", (("key", "2"),))] == set_sum
        assert exact[("ringbridge_global_acc", (("section", ".data"),))] == acc
        # Globals that are not integers (the BTF anchor struct) are not exported.
        assert not [k for k in m if "btf_anchor" in k]


def test_example_timer_drain_and_self_attached_drain(pin_dir: Path, log_path: Path) -> None:
    base = ["--bpf-object", str(EXAMPLE_OBJ), "--pin-dir", str(pin_dir), *EXAMPLE_ARGS]
    timer = [*base, "--drain", "timer", "--drain-program", "ops_drain", "--sample-type", "ops_msg"]
    with served(timer, log_path) as addr:
        r = httpx.post(
            f"http://{addr}/v1/samples?wait=consumed&timeout=10",
            json={"samples": [{"op": "OPS_ADD", "add": 9}]},
            timeout=15,
        )
        assert r.status_code == 200, r.text
        assert httpx.get(f"http://{addr}/v1/stats").json()["config"]["drain"] == "timer"
        assert read_globals(EXAMPLE_OBJ, pin_dir)["acc"] == 10
    # External: the raw tracepoint program the object attached drains on getpgid(2).
    with served([*base, "--drain", "external", "--sample-type", "ops_msg"], log_path) as addr:
        r = httpx.post(f"http://{addr}/v1/samples", json={"samples": [{"op": "OPS_MUL", "mul": 4}]})
        assert r.status_code == 200, r.text
        trigger_syscall("getpgid")
        assert read_globals(EXAMPLE_OBJ, pin_dir)["acc"] == 40


def test_selftest_object_typed_json(pin_dir: Path, log_path: Path) -> None:
    args = ["--bpf-object", str(SELFTEST_OBJ), "--pin-dir", str(pin_dir), *SELFTEST_ARGS,
            "--sample-type", "test_msg"]  # fmt: skip
    samples = [
        {"msg_op": "TEST_MSG_OP_INC64", "operand_64": 1 << 33},
        {"msg_op": "TEST_MSG_OP_MUL32", "operand_32": -5},
        {"msg_op": "TEST_MSG_OP_INC32", "operand_32": 7},
    ]
    with served(args, log_path) as addr:
        r = httpx.post(f"http://{addr}/v1/samples", json={"samples": samples})
        assert r.status_code == 200, r.text
        r = httpx.post(
            f"http://{addr}/v1/samples",
            json={"samples": [{"msg_op": "TEST_MSG_OP_INC32", "operand_32": 1 << 31}]},
        )
        assert r.status_code == 422
        assert r.json()["error"]["message"].startswith("samples[0].operand_32")
        trigger_syscall("prctl")
        g = read_globals(SELFTEST_OBJ, pin_dir)
        assert g["kern_mutated"] == wrap64((1 << 33) * -5 + 7)
        assert g["msgs_read"] == 3
        m = _metrics(addr)
        assert m['ringbridge_global_msgs_read{section=".bss"}'] == 3
        assert m['ringbridge_global_kern_mutated{section=".bss"}'] == float(
            wrap64((1 << 33) * -5 + 7)
        )


def test_example_with_dropped_privileges(pin_dir: Path, log_path: Path) -> None:
    """Loaded, attached and mapped first; then no capability is left, and it still serves."""
    args = ["--bpf-object", str(EXAMPLE_OBJ), "--pin-dir", str(pin_dir), *EXAMPLE_ARGS,
            "--drain-program", "ops_drain", "--sample-type", "ops_msg",
            "--export-map", "slots", "--drop-privileges"]  # fmt: skip
    with served(args, log_path) as addr:
        r = httpx.post(
            f"http://{addr}/v1/samples?wait=consumed",
            json={
                "samples": [
                    {"op": "OPS_ADD", "add": 2},
                    {"op": "OPS_SET", "set": {"name": "z", "value": 3}},
                ]
            },
            timeout=10,
        )
        assert r.status_code == 200, r.text
        m = _metrics(addr)
        assert m['ringbridge_global_acc{section=".data"}'] == 3
        assert m['ringbridge_map_slots{name="z"}'] == 3
    assert "dropped all capabilities" in log_path.read_text()


def test_pinned_sizes_must_match(pin_dir: Path, log_path: Path) -> None:
    args = ["--bpf-object", str(SELFTEST_OBJ), "--pin-dir", str(pin_dir)]
    with served([*args, *SELFTEST_ARGS], log_path):
        pass
    log = _refused([*args, "--ring-size", "128K", "--map-size", "kernel_ringbuf=4K"], log_path)
    assert "map 'user_ringbuf' pinned under" in log
    assert "set --ring-size to 65536" in log
    log = _refused([*args, "--ring-size", "64K", "--map-size", "kernel_ringbuf=8K"], log_path)
    assert "set --map-size kernel_ringbuf=SIZE to 4096" in log
