"""The README's systemd install, run as written, and the unit's start as far as this VM allows.

This machine does not boot with systemd (PID 1 is the VM's own init), so
``systemctl`` cannot start anything. What is run for real, as root, in a
private mount namespace over copies of ``/etc``, ``/opt`` and
``/usr/lib/sysusers.d`` (nothing of the host changes but the test's pins):

- the README's install block, command by command as written -- venv, pip
  install from this checkout, sysusers, unit, settings file, token --
  with ``systemctl`` a shim that records what it was asked;
- ``systemd-analyze verify`` of the unit as installed (its ExecStart is the
  real venv's entry point, not a stub);
- the unit's start: :mod:`tests.support.unitrun` reproduces its
  environment, credential, mount sandbox, capability bounding set and
  no_new_privs, and execs its ExecStart. The process that then serves is
  checked from outside: token auth, the unprivileged user, no capabilities,
  the read-only file system, /metrics with every series the kit uses,
  SIGTERM, and a second start on the same pins;
- the bounding set is the minimum: without any one of its capabilities the
  start fails.

Not run here (no systemd as PID 1): ``systemctl``, Restart=, the seccomp
filters (SystemCallFilter=, RestrictAddressFamilies=, ...) and the other
directives :data:`tests.support.unitrun.NOT_EMULATED` lists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import promql, unitrun
from tests.support.launch import spawned

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

REPO = promql.REPO
README = REPO / "README.md"
UNIT = REPO / "deploy" / "systemd" / "ringbridge.service"
UNITRUN = [sys.executable, "-m", "tests.support.unitrun"]


def install_block() -> str:
    text = README.read_text()
    block = text[
        text.index("<!-- systemd-install:start -->") : text.index("<!-- systemd-install:end -->")
    ]
    m = re.search(r"```sh\n(.*?)```", block, re.DOTALL)
    assert m is not None, "no sh block between the systemd-install markers"
    return m.group(1)


def _unshare(*args: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", *UNITRUN, *args]


@dataclass
class Installed:
    sandbox: Path
    uid: int
    gid: int
    token: str
    systemctl: list[str]
    verify: str


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    for tool in ("unshare", "setpriv", "mount", "systemd-analyze", "systemd-sysusers"):
        assert shutil.which(tool), f"{tool} is missing (make setup installs it)"
    sandbox = tmp_path_factory.mktemp("systemd-root")
    shutil.copytree("/etc", sandbox / "etc", symlinks=True)
    (sandbox / "opt").mkdir()
    shutil.copytree("/usr/lib/sysusers.d", sandbox / "sysusers.d", symlinks=True)
    script = sandbox / "install.sh"
    # The README's steps as written, then what an operator checks afterwards.
    script.write_text(
        f"cd {REPO}\n{install_block()}\n"
        "systemd-analyze verify /etc/systemd/system/ringbridge.service "
        f"> {sandbox / 'verify.log'} 2>&1\n"
    )
    r = subprocess.run(
        _unshare("install", str(sandbox), str(script)), capture_output=True, text=True
    )
    assert r.returncode == 0, f"install steps failed:\n{r.stdout}\n{r.stderr}"
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (sandbox / "etc/passwd").read_text().splitlines()
    }
    assert "ringbridge" in passwd, "systemd-sysusers did not create the ringbridge user"
    assert "ringbridge" not in Path("/etc/passwd").read_text()  # the host is untouched
    entry = passwd["ringbridge"]
    token_file = sandbox / "etc/ringbridge/token"
    assert (token_file.stat().st_mode & 0o777, (token_file.parent.stat().st_mode & 0o777)) == (
        0o600,
        0o700,
    )
    yield Installed(
        sandbox=sandbox,
        uid=int(entry[2]),
        gid=int(entry[3]),
        token=token_file.read_text().strip(),
        systemctl=(sandbox / "systemctl.log").read_text().splitlines(),
        verify=(sandbox / "verify.log").read_text(),
    )


def _operator_settings(inst: Installed, pin_dir: Path) -> None:
    """The operator's edit of /etc/default/ringbridge: this test's pin dir, any free port."""
    env = inst.sandbox / "etc/default/ringbridge"
    text = env.read_text()
    text = re.sub(r"^RINGBRIDGE_PORT=.*$", "RINGBRIDGE_PORT=0", text, flags=re.M)
    text = re.sub(r"^RINGBRIDGE_PIN_DIR=.*$", f"RINGBRIDGE_PIN_DIR={pin_dir}", text, flags=re.M)
    env.write_text(text)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _mount_options(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        f = line.split()
        out[f[4]] = f[5]
    return out


def test_the_install_steps_enable_the_unit_and_verify_clean(installed: Installed) -> None:
    assert installed.systemctl == ["daemon-reload", "enable --now ringbridge"]
    assert installed.verify == ""  # systemd-analyze verify prints nothing for a clean unit


def test_the_unit_serves_as_the_dedicated_user_with_no_privilege(
    installed: Installed, pin_dir: Path, tmp_path: Path
) -> None:
    _operator_settings(installed, pin_dir)
    start = _unshare("start", str(installed.sandbox), "/etc/systemd/system/ringbridge.service")
    log = tmp_path / "unit.log"
    with spawned(start, log, cwd=REPO, env=os.environ, start_timeout=60) as (addr, pid):
        url = f"http://{addr}"
        auth = {"Authorization": f"Bearer {installed.token}"}
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.post("/v1/samples", json={"samples": [{"kind": 1}]}).status_code == 401
            r = c.post(
                "/v1/samples?wait=consumed",
                json={"samples": [{"kind": 7, "value": 70}]},
                headers=auth,
            )
            assert (r.status_code, r.json()["state"], r.json()["first_seq"]) == (200, "consumed", 0)
            metrics = c.get("/metrics").text
        st = _status(pid)
        assert st["Uid"].split() == [str(installed.uid)] * 4, st["Uid"]
        assert st["Gid"].split() == [str(installed.gid)] * 4, st["Gid"]
        assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == int(st["CapAmb"], 16) == 0
        assert st["NoNewPrivs"] == "1"
        # CAP_BPF 39, CAP_PERFMON 38, CAP_SETUID 7, CAP_SETGID 6: nothing else was bounded in.
        assert int(st["CapBnd"], 16) & ~((1 << 39) | (1 << 38) | (1 << 7) | (1 << 6)) == 0
        mounts = _mount_options(pid)
        assert mounts["/"].startswith("ro") and mounts["/etc"].startswith("ro")
        assert mounts["/sys"].startswith("ro") and mounts["/sys/fs/bpf"].startswith("rw")
        assert mounts["/tmp"].startswith("rw")  # PrivateTmp: its own tmpfs
        assert (pin_dir / "ringbridge_ring").exists()
        # Every series the rules and dashboard use, from the sandboxed, dropped process
        # (the events families are there without samples: no event map is configured),
        # but the fleet front door's, which only a --nats service has
        # (tests/service/test_ops_kit.py checks them on one).
        names = set()
        for fam in text_string_to_metric_families(metrics):
            names |= {s.name for s in fam.samples}
            if not fam.samples:
                names.add(fam.name + "_total" if fam.type == "counter" else fam.name)
        used = {
            s.name
            for q in promql.rule_queries() + promql.dashboard_queries()
            for s in q.selectors
            if s.name is not None
            and s.name not in promql.recorded_names()
            and s.name != "up"
            and not s.name.startswith("ringbridge_nats_")
        }
        assert used - names == set()
    text = log.read_text()
    assert "dropped all capabilities" in text and "ringbridge stopped" in text, text

    # systemd's restart: the same unit again on the same pins goes on where it stopped.
    with spawned(start, log, cwd=REPO, env=os.environ, start_timeout=60) as (addr, _pid):
        r = httpx.post(
            f"http://{addr}/v1/samples",
            json={"samples": [{"kind": 7, "value": 1}]},
            headers={"Authorization": f"Bearer {installed.token}"},
            timeout=10,
        )
        assert (r.status_code, r.json()["first_seq"]) == (200, 1), r.text
    assert "pins_reused=true" in log.read_text()


@pytest.mark.parametrize("cap", ["CAP_BPF", "CAP_PERFMON", "CAP_SETUID", "CAP_SETGID"])
def test_the_bounding_set_is_the_minimum(
    installed: Installed, pin_dir: Path, tmp_path: Path, cap: str
) -> None:
    assert cap in UNIT.read_text()
    _operator_settings(installed, pin_dir)
    start = _unshare(
        "start", str(installed.sandbox), "/etc/systemd/system/ringbridge.service", "--drop-cap", cap
    )
    t0 = time.monotonic()
    r = subprocess.run(start, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, f"started without {cap}:\n{r.stderr}"
    assert "startup failed" in r.stderr and cap in r.stderr, r.stderr  # it names what is missing
    assert time.monotonic() - t0 < 60
    assert not (pin_dir / "ringbridge_ring").exists()  # a failed start leaves no pins


def test_every_directive_is_emulated_or_named_as_not() -> None:
    keys = {k for _s, k, _v in unitrun.parse_unit(UNIT.read_text())}
    assert keys - unitrun.EMULATED - unitrun.NOT_EMULATED == set()
    readme = README.read_text()
    for key in sorted(unitrun.NOT_EMULATED & keys):
        if key in ("Description", "After", "Wants", "WantedBy"):
            continue
        assert f"{key}=" in readme, f"README does not say that {key}= is not tested here"
