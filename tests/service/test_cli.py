"""``ringbridge`` CLI: flag mapping, input framing, and the operator/client
commands against the real kernel and a real ``ringbridge serve``.

The commands run as subprocesses (``python -m ringbridge``), as an operator
would run them.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import ringbridge
from ringbridge import cli
from ringbridge.cli import common as cli_common
from ringbridge.cli import push as cli_push
from ringbridge.cli.stats import render_stats
from ringbridge.client import ServerURL
from ringbridge.core import ring as core
from ringbridge.errors import ClientError, ConfigError
from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.pins import RingbridgePins
from ringbridge.ring import UserRingBuffer
from ringbridge.settings import Settings
from tests.support.launch import served

REPO = Path(__file__).resolve().parents[2]
SAMPLE = struct.Struct("<IIQ")
RING = 1 << 20


def cli_env(**extra: str) -> dict[str, str]:
    # --token, --url and --pin-dir default to $RINGBRIDGE_*: keep the caller's out of it.
    drop = ("RINGBRIDGE_TOKEN", "RINGBRIDGE_URL", "RINGBRIDGE_PIN_DIR")
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


def run_cli(
    *args: str, timeout: float = 60, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringbridge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        input=input,
        env=env if env is not None else cli_env(),
    )


# -- no kernel needed -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n"),
    [("4096", 4096), ("64K", 65536), ("8M", 8 << 20), ("1g", 1 << 30), ("2KiB", 2048)],
)
def test_parse_size(text: str, n: int) -> None:
    assert cli.parse_size(text) == n


@pytest.mark.parametrize("text", ["", "x", "8Q", "-1", "0"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(Exception, match="invalid size"):
        cli.parse_size(text)


def test_serve_flags_override_only_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGBRIDGE_PORT", "9123")
    monkeypatch.setenv("RINGBRIDGE_DRAIN", "external")
    args = cli.build_parser().parse_args(
        ["serve", "--ring-size", "64K", "--drain", "kick", "--pin-dir", "/sys/fs/bpf/x"]
    )
    s = cli.settings_from_args(args)
    assert s.ring_size == 65536
    assert s.drain == "kick"  # flag beats env
    assert s.port == 9123  # env kept: --port not given
    assert s.pin_dir == Path("/sys/fs/bpf/x")
    assert s.host == "127.0.0.1"  # default kept


def test_serve_every_flag_maps_onto_settings() -> None:
    argv = [
        "serve",
        "--host=127.0.0.2",
        "--port=1234",
        "--ring-size=1M",
        "--drain=timer",
        "--drain-period-us=250",
        "--drain-budget=77",
        "--bpf-object=/tmp/x.bpf.o",
        "--pin-dir=/sys/fs/bpf/y",
        "--max-sample-bytes=1K",
        "--max-batch-bytes=512K",
        "--submit-timeout=2.5",
        "--token=s3cret",
        "--ws-window=5",
        "--log-level=debug",
    ]
    s = cli.settings_from_args(cli.build_parser().parse_args(argv))
    # Every Settings field has its flag (they are generated from the model).
    probe = argparse.ArgumentParser()
    cli.add_settings_flags(probe)
    serve_help = probe.format_help()
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in serve_help, name
    assert (s.host, s.port, s.ring_size, s.drain) == ("127.0.0.2", 1234, 1 << 20, "timer")
    assert (s.drain_period_us, s.drain_budget) == (250, 77)
    assert (s.bpf_object, s.pin_dir) == (Path("/tmp/x.bpf.o"), Path("/sys/fs/bpf/y"))
    assert (s.max_sample_bytes, s.max_batch_bytes) == (1024, 512 << 10)
    assert (s.submit_timeout, s.token, s.ws_window, s.log_level) == (2.5, "s3cret", 5, "debug")


def test_serve_with_invalid_settings_exits_2_naming_the_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["serve", "--ring-size", "3000"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "ring size 3000" in err and "power of two" in err
    with pytest.raises(ConfigError):
        cli.settings_from_args(cli.build_parser().parse_args(["serve", "--ring-size", "3000"]))
    assert cli.main(["serve", "--port", "70000"]) == cli.EXIT_USAGE
    assert "port" in capsys.readouterr().err


def test_jsonl_frames_split_by_samples_and_bytes(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    lines = [json.dumps({"kind": i, "value": i * 10}) for i in range(10)]
    f.write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n")
    frames = cli_push.frames_from_jsonl(f.read_bytes(), "s.jsonl", 4, 1 << 20)
    assert [fr.count for fr in frames] == [4, 4, 2]
    assert [fr.id for fr in frames] == [0, 1, 2]
    decoded = [json.loads(fr.payload) for fr in frames]
    assert decoded[1] == {"id": 1, "samples": [json.loads(x) for x in lines[4:8]]}
    # By bytes: each frame's text stays within the limit.
    small = cli_push.frames_from_jsonl(f.read_bytes(), "s.jsonl", 1000, 120)
    assert sum(fr.count for fr in small) == 10
    assert all(len(fr.payload) <= 120 for fr in small)
    assert len(small) > 1


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"kind": 1}\n[1, 2]\n')
    with pytest.raises(cli_push.InputError, match=r"bad.jsonl:2: a sample must be a JSON object"):
        cli_push.frames_from_jsonl(f.read_bytes(), "bad.jsonl", 10, 1 << 20)
    f.write_text('{"kind": 1}\n\n{"kind": \n')
    with pytest.raises(cli_push.InputError, match=r"bad.jsonl:3: not valid JSON") as e:
        cli_push.frames_from_jsonl(f.read_bytes(), "bad.jsonl", 10, 1 << 20)
    assert "--binary" not in str(e.value)  # a typo deep in a JSON file is not a binary file
    frames = cli_push.frames_from_jsonl(b'\n{"kind": 1}\n\n{"kind": 2}\n', "x", 10, 1 << 20)
    assert frames[0].lines == (2, 4)


def test_binary_frames_cut_at_record_boundaries(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (i % 40) for i in range(200)]
    records = core.encode_batch(payloads)
    f = tmp_path / "r.bin"
    f.write_bytes(records)
    frames = cli_push.frames_from_binary(f.read_bytes(), "r.bin", batch_bytes=512)
    assert b"".join(fr.payload for fr in frames if isinstance(fr.payload, bytes)) == records
    assert sum(fr.count for fr in frames) == 200
    for fr in frames:
        assert isinstance(fr.payload, bytes)
        assert len(fr.payload) <= 512
        core.validate_batch(fr.payload, 1 << 20)  # each frame is a batch on its own
    assert [fr.first_record for fr in frames] == list(
        itertools.accumulate([0] + [fr.count for fr in frames[:-1]])
    )
    f.write_bytes(records + struct.pack("<II", 1 << 31, 0))  # record 200 is BUSY
    with pytest.raises(cli_push.InputError, match=r"not a valid record file: record 200: BUSY"):
        cli_push.frames_from_binary(f.read_bytes(), "r.bin", 512)


def test_push_refuses_unusable_input_with_status_2(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    r = run_cli("push", str(empty), "--url", "http://127.0.0.1:9")
    assert r.returncode == 2
    assert "holds no samples" in r.stderr
    r = run_cli("push", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2
    assert "cannot read" in r.stderr and "missing.jsonl" in r.stderr


def test_render_stats_table() -> None:
    text = render_stats(
        {
            "producer": {"samples_committed": 1234567},
            "kernel": {"samples": 3, "kinds": {"7": {"samples": 2, "value": 10}}},
        }
    )
    assert re.search(r"producer\.samples_committed\s+1,234,567", text)
    assert re.search(r"kernel\.samples\s+3", text)
    assert re.search(r"^\s+7\s+2\s+10$", text, re.M)


# -- drain / unpin against the kernel ------------------------------------------------


@pytest.mark.kernel
def test_drain_prints_what_the_pinned_program_drained(bpf_object_path: Path, pin_dir: Path) -> None:
    with load_default(bpf_object_path, pin_dir, RING) as loaded:
        r = run_cli("drain", "--pin-dir", str(pin_dir))
        assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
        n = 1000
        with UserRingBuffer(loaded.ring_fd) as rb:
            rb.commit_samples([SAMPLE.pack(9, 0, i) for i in range(n)])
            r = run_cli("drain", "--pin-dir", str(pin_dir))
            assert (r.returncode, r.stdout.strip()) == (0, str(n)), r.stderr
            assert rb.consumer_pos() == rb.producer_pos
        kc = loaded.read_counters()
        assert kc.samples == n
        assert kc.kind_value[9] == sum(range(n))
        r = run_cli("drain", "--pin-dir", str(pin_dir))
        assert r.stdout.strip() == "0"


@pytest.mark.kernel
def test_drain_without_pins_fails_naming_the_path(pin_dir: Path) -> None:
    r = run_cli("drain", "--pin-dir", str(pin_dir))
    assert r.returncode == 1
    assert str(RingbridgePins.under(pin_dir).drain) in r.stderr


@pytest.mark.kernel
def test_unpin_removes_our_pins(bpf_object_path: Path, pin_dir: Path) -> None:
    load_default(bpf_object_path, pin_dir, RING).close()
    pins = RingbridgePins.under(pin_dir)
    assert all(p.exists() for p in pins.all())
    r = run_cli("unpin", "--pin-dir", str(pin_dir))
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in pins.all())
    assert not pin_dir.exists()
    assert f"removed {pins.ring}" in r.stdout
    # Absent is the state unpin is asked to reach: not an error.
    again = run_cli("unpin", "--pin-dir", str(pin_dir))
    assert again.returncode == 0, again.stderr
    assert f"nothing to remove: {pin_dir} does not exist" in again.stdout


@pytest.mark.kernel
def test_unpin_refuses_while_a_producer_holds_the_ring(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    load_default(bpf_object_path, pin_dir, RING).close()
    pins = RingbridgePins.under(pin_dir)
    # A producer (the library, as the service would) holds the ring's lock.
    with UserRingBuffer.from_pin(pins.ring):
        r = run_cli("unpin", "--pin-dir", str(pin_dir))
        assert r.returncode == 1
        assert f"unpin: a running ringbridge service holds the ring pinned under {pin_dir}" in (
            r.stderr
        )
        assert "stop the service first" in r.stderr and "--force" in r.stderr
        assert f"pid {os.getpid()}" in r.stderr  # the holder, named
        assert all(p.exists() for p in pins.all())
        forced = run_cli("unpin", "--pin-dir", str(pin_dir), "--force")
        assert forced.returncode == 0, forced.stderr
    assert not any(p.exists() for p in pins.all())


# -- push / stats against a running service -----------------------------------------


TOKEN = "cli-test-token"


@contextmanager
def serving(pin_dir: Path, log_path: Path, *extra: str) -> Iterator[str]:
    """``ringbridge serve --drain kick`` on a free loopback port; yields host:port."""
    args = [f"--pin-dir={pin_dir}", "--ring-size=1M", "--drain=kick", "--max-batch-bytes=256K"]
    with served([*args, *extra], log_path) as addr:
        yield addr


@pytest.fixture
def cli_server(pin_dir: Path, tmp_path: Path) -> Iterator[str]:
    with serving(pin_dir, tmp_path / "serve.log") as addr:
        yield addr


@pytest.fixture
def cli_server_token(pin_dir: Path, tmp_path: Path) -> Iterator[str]:
    with serving(pin_dir, tmp_path / "serve.log", f"--token={TOKEN}") as addr:
        yield addr


def kernel_stats(addr: str, expect_samples: int) -> dict[str, object]:
    """/v1/stats once the kernel has consumed ``expect_samples`` (kick drain)."""
    deadline = time.monotonic() + 10
    while True:
        st = httpx.get(f"http://{addr}/v1/stats", timeout=5).json()
        if st["kernel"]["samples"] >= expect_samples or time.monotonic() > deadline:
            return dict(st)
        time.sleep(0.05)


@pytest.mark.kernel
def test_push_jsonl_lands_in_the_kernel(cli_server: str, tmp_path: Path) -> None:
    n = 3000
    f = tmp_path / "s.jsonl"
    with f.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"kind": i % 4, "value": i}) + "\n")
        out.write(json.dumps({"data": base64.b64encode(b"raw!").decode()}) + "\n")
    r = run_cli(
        "push", str(f), "--url", f"ws://{cli_server}/v1/stream", "--batch-samples", "256",
        "--window", "4", "-q",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"accepted: {n + 1:,} samples (seq 0..{n})" in r.stdout
    st = kernel_stats(cli_server, n + 1)
    kernel = st["kernel"]
    assert isinstance(kernel, dict)
    assert kernel["samples"] == n + 1
    for k in range(4):
        assert kernel["kinds"][str(k)] == {
            "samples": n // 4,
            "value": sum(i for i in range(n) if i % 4 == k),
        }
    # The data sample is shorter than struct ringbridge_sample.
    assert kernel["short_samples"] == 1

    table = run_cli("stats", "--url", f"http://{cli_server}")
    assert table.returncode == 0, table.stderr
    assert re.search(rf"kernel\.samples\s+{n + 1:,}", table.stdout)
    raw = run_cli("stats", "--url", f"http://{cli_server}", "--json")
    assert json.loads(raw.stdout)["kernel"]["samples"] == n + 1


@pytest.mark.kernel
def test_push_reports_rejected_batches_and_exits_1(cli_server: str, tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    lines = (
        [{"kind": 1, "value": 1}] * 5 + [{"kind": 1, "flags": -1}] + [{"kind": 1, "value": 1}] * 4
    )
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = run_cli("push", str(f), "--url", f"http://{cli_server}", "--batch-samples", "3", "-q")
    assert r.returncode == 1
    # Batches of 3: the bad sample (line 6) is sample 2 of batch 1; 7 samples land.
    assert "accepted: 7 samples" in r.stdout
    assert "rejected: 3 samples in 1 batch" in r.stdout
    assert re.search(
        rf"{re.escape(str(f))}:6: invalid_sample: flags: .*\(u32\).*"
        r"\(batch of lines 4-6 rejected\)",
        r.stdout,
    ), r.stdout
    st = kernel_stats(cli_server, 7)
    kernel = st["kernel"]
    assert isinstance(kernel, dict)
    assert kernel["samples"] == 7
    assert kernel["kinds"]["1"] == {"samples": 7, "value": 7}


@pytest.mark.kernel
def test_push_binary_file(cli_server: str, tmp_path: Path) -> None:
    n = 20000
    f = tmp_path / "records.bin"
    f.write_bytes(core.encode_batch([SAMPLE.pack(5, 0, 2) + bytes(8) for _ in range(n)]))
    r = run_cli("push", str(f), "--url", f"ws://{cli_server}", "--batch-bytes", "64K", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"accepted: {n:,} samples" in r.stdout
    st = kernel_stats(cli_server, n)
    kernel = st["kernel"]
    assert isinstance(kernel, dict)
    assert kernel["kinds"]["5"] == {"samples": n, "value": 2 * n}
    assert kernel["bytes"] == 24 * n


@pytest.mark.kernel
def test_push_to_nothing_fails_cleanly(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text('{"kind": 1}\n')
    r = run_cli("push", str(f), "--url", "127.0.0.1:9", "-q")
    assert r.returncode == 1
    assert "cannot connect to http://127.0.0.1:9" in r.stderr, r.stderr
    assert "is `ringbridge serve` running" in r.stderr and "RINGBRIDGE_URL" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.kernel
def test_push_and_stats_with_a_token(cli_server_token: str, tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text('{"kind": 3, "value": 4}\n')
    url = f"ws://{cli_server_token}/v1/stream"
    r = run_cli("push", str(f), "--url", url, "-q")
    assert r.returncode == 1
    # The server's own message, and what to do about it.
    assert "HTTP 401 unauthorized: missing Authorization: Bearer <token> header" in r.stderr
    assert "--token" in r.stderr
    r = run_cli("push", str(f), "--url", url, "--token", "wrong", "-q")
    assert r.returncode == 1
    assert "HTTP 403 forbidden: invalid token" in r.stderr, r.stderr
    r = run_cli("push", str(f), "--url", url, "--token", TOKEN, "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "accepted: 1 sample" in r.stdout
    http = f"http://{cli_server_token}"
    denied = run_cli("stats", "--url", http)
    assert denied.returncode == 1
    assert "HTTP 401 unauthorized: missing Authorization" in denied.stderr
    ok = run_cli("stats", "--url", http, "--token", TOKEN, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["producer"]["samples_committed"] == 1


def test_second_serve_on_a_held_pin_dir_fails_with_one_clear_line(
    cli_server: str, pin_dir: Path
) -> None:
    r = run_cli("serve", "--port=0", f"--pin-dir={pin_dir}", "--ring-size=1M", timeout=30)
    assert r.returncode == 3
    assert 'msg="startup failed"' in r.stderr
    assert "another ringbridge producer holds this ring" in r.stderr
    assert "Traceback" not in r.stderr


# -- one URL convention, stdin, hints, exits ------------------------------------------


@pytest.mark.parametrize(
    ("given", "base", "ws"),
    [
        ("http://127.0.0.1:8470", "http://127.0.0.1:8470", "ws://127.0.0.1:8470/v1/stream"),
        ("127.0.0.1:9000/", "http://127.0.0.1:9000", "ws://127.0.0.1:9000/v1/stream"),
        ("ws://h:1/v1/stream", "http://h:1", "ws://h:1/v1/stream"),
        ("ws://h:1", "http://h:1", "ws://h:1/v1/stream"),
        ("wss://h/gw/v1/stream", "https://h/gw", "wss://h/gw/v1/stream"),
        ("https://h:8443/gw/", "https://h:8443/gw", "wss://h:8443/gw/v1/stream"),
        ("http://[::1]:8470/v1/stats", "http://[::1]:8470", "ws://[::1]:8470/v1/stream"),
    ],
)
def test_every_client_takes_the_base_url(given: str, base: str, ws: str) -> None:
    u = ServerURL.parse(given)
    assert (u.base, u.ws(), u.http("/v1/samples")) == (base, ws, base + "/v1/samples")


@pytest.mark.parametrize("bad", ["ftp://h:1", "http://:80", "http://h:99999", ""])
def test_unusable_urls_are_refused_with_the_reason(bad: str) -> None:
    with pytest.raises(ClientError, match=r"URL|scheme"):
        ServerURL.parse(bad)


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"ringbridge {ringbridge.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", ringbridge.__version__)


def test_push_of_a_binary_file_without_binary_flag_says_so(tmp_path: Path) -> None:
    f = tmp_path / "records.dat"
    f.write_bytes(core.encode_batch([SAMPLE.pack(1, 0, 1)] * 3))
    r = run_cli("push", str(f), "--url", "http://127.0.0.1:9", "-q")
    assert r.returncode == 2
    assert f"{f}:1:" in r.stderr and "pass --binary" in r.stderr, r.stderr


@pytest.mark.kernel
def test_push_reads_stdin_and_takes_the_url_from_the_environment(cli_server: str) -> None:
    text = "".join(json.dumps({"kind": 8, "value": i}) + "\n" for i in range(50))
    r = run_cli(
        "push", "-", "--batch-samples", "7", "-q", input=text,
        env=cli_env(RINGBRIDGE_URL=f"http://{cli_server}"),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "from <stdin>" in r.stdout and "accepted: 50 samples" in r.stdout
    kernel = kernel_stats(cli_server, 50)["kernel"]
    assert isinstance(kernel, dict)
    assert kernel["kinds"]["8"] == {"samples": 50, "value": sum(range(50))}
    bad = run_cli(
        "push", "-", "-q", input='{"kind": 8}\n{"kind": "x"}\n',
        env=cli_env(RINGBRIDGE_URL=f"http://{cli_server}"),
    )  # fmt: skip
    assert bad.returncode == 1
    assert re.search(r"<stdin>:2: invalid_sample: .*kind", bad.stdout), bad.stdout


@pytest.mark.kernel
def test_drain_and_unpin_default_to_the_pin_dir_serve_uses(
    bpf_object_path: Path, pin_dir: Path
) -> None:
    env = cli_env(RINGBRIDGE_PIN_DIR=str(pin_dir))
    load_default(bpf_object_path, pin_dir, RING).close()
    r = run_cli("drain", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
    r = run_cli("unpin", env=env)
    assert r.returncode == 0, r.stderr
    assert f"removed {RingbridgePins.under(pin_dir).ring}" in r.stdout
    assert not pin_dir.exists()
    # Without the variable: serve's own default, named in the help.
    assert "/sys/fs/bpf/ringbridge" in run_cli("unpin", "--help").stdout


@pytest.mark.kernel
def test_stats_into_a_closed_pipe_ends_quietly(cli_server: str) -> None:
    # `true` exits without reading: the first write finds the pipe closed.
    cmd = (
        f"set -o pipefail; {shlex.quote(sys.executable)} -m ringbridge stats "
        f"--url http://{cli_server} | true"
    )
    r = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=REPO, env=cli_env()
    )
    assert r.returncode == 141, r.stderr
    assert r.stderr == ""


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_on_serve_shuts_down_quietly_with_status_0(
    pin_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringbridge", "serve", "--port=0", f"--pin-dir={pin_dir}",
             "--ring-size=1M", "--drain=kick"],
            stdout=out, stderr=out, cwd=REPO, env=cli_env(),
        )  # fmt: skip
    try:
        _wait_for(log, "running on http://", proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "ringbridge stopped" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text


@pytest.mark.kernel
def test_a_start_that_cannot_listen_leaves_no_pins(pin_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("serve", f"--port={port}", f"--pin-dir={pin_dir}", "--ring-size=1M")
    assert r.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "choose another --port" in (
        r.stderr
    )
    assert "Traceback" not in r.stderr
    assert not pin_dir.exists()
    assert not pin_dir.parent.exists() or not any(pin_dir.parent.iterdir())


def test_pin_commands_read_the_pin_dir_from_serves_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "ringbridge.toml"
    conf.write_text('pin-dir = "/sys/fs/bpf/from-config"\n')
    monkeypatch.delenv("RINGBRIDGE_PIN_DIR", raising=False)
    monkeypatch.setenv("RINGBRIDGE_CONFIG", str(conf))
    assert cli_common.default_pin_dir() == Path("/sys/fs/bpf/from-config")
    monkeypatch.setenv("RINGBRIDGE_PIN_DIR", "/sys/fs/bpf/from-env")
    assert cli_common.default_pin_dir() == Path("/sys/fs/bpf/from-env")  # env beats the file
    # Settings serve would refuse for another reason still name their pin dir.
    monkeypatch.setenv("RINGBRIDGE_HOST", "0.0.0.0")
    assert cli_common.default_pin_dir() == Path("/sys/fs/bpf/from-env")
