"""``--drop-privileges`` and ``--user``: the service runs on its fds alone.

A real ``ringbridge serve`` child process (capabilities are per process and
thread, so not the in-process test server): after start-up its capability
sets are empty and no_new_privs is set -- and with ``--user`` every uid and
gid is the unprivileged user's -- yet batches still reach the kernel (kick
drains through BPF_PROG_TEST_RUN on the held fd; the timer drains on its
own), kernel counters are still read for /metrics, and shutdown still
disarms the timer and frees cleanly.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from ringbridge.errors import ConfigError
from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.privileges import Credentials, capability_sets, resolve_user
from tests.support.launch import served

pytestmark = pytest.mark.kernel


def _ids(pid: int) -> tuple[list[int], list[int], str]:
    """Real/effective/saved/fs uids and gids, and supplementary groups, of ``pid``."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (
        [int(x) for x in fields["Uid"].split()],
        [int(x) for x in fields["Gid"].split()],
        fields["Groups"].strip(),
    )


def _wait_kind(c: httpx.Client, kind: int, samples: int) -> dict[str, int]:
    deadline = time.monotonic() + 10
    kinds: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        kinds = c.get("/v1/stats").json()["kernel"]["kinds"]
        if kinds.get(str(kind), {}).get("samples") == samples:
            break
        time.sleep(0.05)
    return kinds.get(str(kind), {})


def _readable_by_others(path: Path) -> bool:
    """Whether a user with no relation to the owner can read ``path`` (a directory)."""
    path = path.resolve()
    dirs = [path, *path.parents]
    return all(d.stat().st_mode & 0o001 for d in dirs) and bool(path.stat().st_mode & 0o004)


def _python_for_other_users() -> tuple[str, ...]:
    """How to run ``ringbridge`` with an interpreter an unprivileged uid can read.

    After ``--user`` the service can import nothing from a Python it may not
    read (a pyenv build under a 0700 /root is common on CI hosts). The image's
    Python is /usr/lib's; here, this interpreter if others can read its
    stdlib, else the system Python of the same version with this venv's
    site-packages (the compiled wheels are for that version).
    """
    if _readable_by_others(Path(os.__file__).parent):
        return (sys.executable, "-m", "ringbridge")
    system = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
    if not system.exists() or not _readable_by_others(system.parent):
        pytest.skip(f"no Python {sys.version_info[:2]} readable by an unprivileged user")
    site_dir = Path(sysconfig.get_paths()["purelib"])
    boot = (
        "import site, sys; site.addsitedir(sys.argv.pop(1)); "
        "from ringbridge.cli import main; sys.exit(main())"
    )
    return (str(system), "-c", boot, str(site_dir))


def _server_pid(log: Path) -> int:
    m = re.search(r"Started server process \[(\d+)\]", log.read_text())
    assert m is not None, log.read_text()
    return int(m.group(1))


def test_service_works_after_dropping_every_capability(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    args = [f"--pin-dir={pin_dir}", "--ring-size=1M", "--drain=kick", "--drop-privileges"]
    with served(args, log) as addr:
        caps = capability_sets(Path(f"/proc/{_server_pid(log)}/status"))
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == caps["CapAmb"] == 0
        assert caps["CapBnd"] == 0  # root here holds CAP_SETPCAP, so it goes too
        assert caps["NoNewPrivs"] == 1
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as c:
            r = c.post("/v1/samples", json={"samples": [{"kind": 6, "value": 66}] * 10})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                kinds = c.get("/v1/stats").json()["kernel"]["kinds"]
                if kinds.get("6", {}).get("samples") == 10:
                    break
                time.sleep(0.05)
            assert kinds["6"] == {"samples": 10, "value": 660}
            assert 'ringbridge_kernel_kind_value_total{kind="6"} 660.0' in c.get("/metrics").text
    text = log.read_text()
    assert "dropped all capabilities" in text and "ringbridge stopped" in text
    # The pins it made with its privileges are intact for the next start.
    with load_default(bpf_object_path, pin_dir, 1 << 20) as lr:
        assert lr.reused and lr.read_counters().kind_value[6] == 660


@pytest.mark.parametrize("drain", ["kick", "timer"])
def test_service_works_as_an_unprivileged_user(
    bpf_object_path: Path, pin_dir: Path, tmp_path: Path, drain: str
) -> None:
    log = tmp_path / "serve.log"
    args = [f"--pin-dir={pin_dir}", "--ring-size=1M", f"--drain={drain}", "--user=65534:65534"]
    with served(args, log, command=_python_for_other_users()) as addr:
        pid = _server_pid(log)
        uids, gids, groups = _ids(pid)
        assert uids == [65534] * 4 and gids == [65534] * 4 and groups == ""
        caps = capability_sets(Path(f"/proc/{pid}/status"))
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == caps["CapAmb"] == 0
        assert caps["NoNewPrivs"] == 1
        with httpx.Client(base_url=f"http://{addr}", timeout=30) as c:
            # Commit (mmap through the held fd) and the drain (kick: the
            # syscall program run through its fd; timer: the kernel's own).
            for first in (0, 10):
                r = c.post("/v1/samples", json={"samples": [{"kind": 7, "value": 3}] * 10})
                assert r.status_code == 200, r.text
                assert r.json()["first_seq"] == first
            assert _wait_kind(c, 7, 20) == {"samples": 20, "value": 60}
            # Counter reads through the held map fds.
            assert 'ringbridge_kernel_kind_value_total{kind="7"} 60.0' in c.get("/metrics").text
            assert c.get("/readyz").status_code == 200
    text = log.read_text()
    assert "dropped all capabilities" in text and "uid=65534" in text, text
    assert "not readable by the service user" not in text, text
    assert "ringbridge stopped" in text and "Traceback" not in text, text
    with load_default(bpf_object_path, pin_dir, 1 << 20) as lr:
        assert lr.reused and lr.load_seq() == 20
        before = lr.read_counters().drain_calls
        time.sleep(0.3)
        # The timer was disarmed at shutdown by the unprivileged process: no
        # drain runs any more (a 100 µs timer would have run thousands).
        assert lr.read_counters().drain_calls == before


def test_user_resolution() -> None:
    assert resolve_user("nobody") == Credentials(65534, 65534, "nobody")
    assert resolve_user("65534") == Credentials(65534, 65534, "nobody")
    assert resolve_user("4242:4343") == Credentials(4242, 4343, None)
    assert resolve_user("4242") == Credentials(4242, 4242, None)
    with pytest.raises(ConfigError, match="no user named 'no-such-user-x'"):
        resolve_user("no-such-user-x")
    with pytest.raises(ConfigError, match="is root"):
        resolve_user("root")
    with pytest.raises(ConfigError, match="is root"):
        resolve_user("1000:0")
    with pytest.raises(ConfigError, match="expected a name"):
        resolve_user("1000:")


def test_unknown_user_stops_the_service_before_it_loads(pin_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ringbridge",
            "serve",
            f"--pin-dir={pin_dir}",
            "--user=no-such-user-x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "no user named 'no-such-user-x'" in r.stderr
    assert not pin_dir.exists()


def test_our_own_capabilities_are_readable() -> None:
    caps = capability_sets()
    assert {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"} <= set(caps)


def test_drop_refuses_while_other_threads_exist() -> None:
    import threading

    from ringbridge.errors import ConfigError
    from ringbridge.kernel.privileges import drop_all_capabilities

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        with pytest.raises(ConfigError, match="capabilities are per thread"):
            drop_all_capabilities()
    finally:
        stop.set()
        t.join()
    assert capability_sets()["CapEff"] != 0  # nothing was dropped here
