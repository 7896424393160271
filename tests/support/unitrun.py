"""Install and start a systemd unit without systemd: as far as a machine without PID 1 allows.

Test support for ``tests/deploy/test_systemd.py``; run as root inside a
private mount namespace (``unshare --mount --propagation private``), so that
nothing here touches the host's files:

``python -m tests.support.unitrun install SANDBOX SCRIPT``
    binds ``SANDBOX/etc``, ``SANDBOX/opt`` and ``SANDBOX/sysusers.d`` over
    ``/etc``, ``/opt`` and ``/usr/lib/sysusers.d`` and runs ``SCRIPT`` (the
    README's install steps, as written) with bash. ``systemctl`` is a shim
    that records its arguments: without systemd as PID 1 it can do nothing.

``python -m tests.support.unitrun start SANDBOX UNIT [--drop-cap CAP]``
    binds the same sandbox, then does what systemd does between fork and
    exec for the unit's directives it can reproduce -- the environment
    (``Environment=``, ``EnvironmentFile=``, the ``%d`` specifier),
    ``LoadCredential=``, ``RuntimeDirectory=`` (and its mode), the mount
    sandbox (``ProtectSystem=strict``, ``ReadWritePaths=``, ``ProtectHome=``,
    ``PrivateTmp=``,
    ``PrivateDevices=``, ``ProtectKernelTunables=``,
    ``ProtectControlGroups=``, ``ProtectProc=``), ``UMask=``,
    ``LimitNOFILE=``, ``NoNewPrivileges=`` and ``CapabilityBoundingSet=``
    (through ``setpriv``) -- and execs ``ExecStart=``: the process that
    serves is the one this module was started as.

What it cannot reproduce is listed in :data:`NOT_EMULATED`: the seccomp
filters, the namespaces and capability drops of ``Protect{Clock,Hostname,
KernelLogs,KernelModules}=``, restarts, and the cgroup. A directive in
neither list stops it: a unit change must be placed in one or the other.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

#: Directives whose effect start() reproduces.
EMULATED = frozenset(
    {
        "Type",
        "ExecStart",
        "EnvironmentFile",
        "Environment",
        "LoadCredential",
        "UMask",
        "LimitNOFILE",
        "CapabilityBoundingSet",
        "NoNewPrivileges",
        "ProtectSystem",
        "ReadWritePaths",
        "RuntimeDirectory",
        "RuntimeDirectoryMode",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ProtectProc",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "AssertPathIsMountPoint",
    }
)
#: Directives it cannot reproduce without systemd (each named in the README).
NOT_EMULATED = frozenset(
    {
        # [Unit] / [Install]: ordering and enablement belong to PID 1.
        "Description",
        "After",
        "Wants",
        "WantedBy",
        # Restart policy and stop handling: PID 1 supervises.
        "RuntimeDirectoryPreserve",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "TimeoutStopSec",
        # seccomp filters and the namespaces/capability drops systemd sets up.
        "SystemCallFilter",
        "SystemCallErrorNumber",
        "SystemCallArchitectures",
        "RestrictAddressFamilies",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "ProtectClock",
        "ProtectHostname",
        "ProtectKernelLogs",
        "ProtectKernelModules",
    }
)
#: What systemd runs a system service with before Environment= (no User=).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_API_FS = ("/dev", "/proc", "/sys")


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` in order; repeated keys stay repeated."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not a directive: {raw!r}")
        out.append((section, key.strip(), value.strip()))
    return out


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile= reads them (quotes, comments)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"EnvironmentFile line without '=': {raw!r}")
        words = shlex.split(value) if value else [""]
        env[key.strip()] = " ".join(words)
    return env


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def _bind_sandbox(sandbox: Path) -> None:
    _run("mount", "--bind", str(sandbox / "etc"), "/etc")
    _run("mount", "--bind", str(sandbox / "opt"), "/opt")
    _run("mount", "--bind", str(sandbox / "sysusers.d"), "/usr/lib/sysusers.d")


def install(sandbox: Path, script: Path) -> int:
    _bind_sandbox(sandbox)
    shim = sandbox / "shim"
    shim.mkdir(exist_ok=True)
    systemctl = shim / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {sandbox / "systemctl.log"}\n')
    systemctl.chmod(0o755)
    # A root shell's PATH on Debian: `python3` is the system's, as on the
    # hosts the README addresses (a Python under /root, e.g. pyenv's, would
    # be hidden from the service by ProtectHome=).
    env = dict(os.environ, PATH=f"{shim}:{BASE_ENV['PATH']}")
    return subprocess.run(["bash", "-euo", "pipefail", str(script)], env=env).returncode


def _mounts() -> list[str]:
    """Visible mount points, outermost first (remounting a parent never hides a child).

    A mount made on or above an earlier one hides it (the host's /run/...
    under our own /run): there is nothing to remount there. nsfs entries are
    namespace handles, not file systems.
    """
    entries = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        entries.append((fields[4].replace("\\040", " "), fields[fields.index("-") + 1]))
    visible = set()
    for i, (point, fstype) in enumerate(entries):
        later = [p for p, _t in entries[i + 1 :]]
        if fstype != "nsfs" and not any(_under(point, [p]) and p != point for p in later):
            visible.add(point)
    return sorted(visible, key=lambda p: p.count("/"))


def _under(path: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _remount_ro(point: str) -> None:
    _run("mount", "-o", "remount,bind,ro", point)


def _private_dev() -> None:
    # A fresh /dev with the pseudo devices only, like PrivateDevices=yes.
    stage = Path("/run/.unitrun-dev")
    stage.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", str(stage))
    for dev in ("null", "zero", "full", "random", "urandom", "tty"):
        (stage / dev).touch()
        _run("mount", "--bind", f"/dev/{dev}", str(stage / dev))
    (stage / "shm").mkdir()
    _run("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(stage / "shm"))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        (stage / name).symlink_to(target)
    (stage / "stdout").symlink_to("/proc/self/fd/1")
    (stage / "stderr").symlink_to("/proc/self/fd/2")
    _run("mount", "--move", str(stage), "/dev")


def start(sandbox: Path, unit_path: Path, drop_caps: list[str]) -> None:
    _bind_sandbox(sandbox)
    directives = parse_unit(unit_path.read_text())
    keys = {k for _s, k, _v in directives}
    unknown = keys - EMULATED - NOT_EMULATED
    if unknown:
        raise SystemExit(f"unitrun: directives neither emulated nor listed: {sorted(unknown)}")
    one = {k: v for _s, k, v in directives}
    many: dict[str, list[str]] = {}
    for _s, k, v in directives:
        many.setdefault(k, []).append(v)
    unit_name = unit_path.name

    for point in many.get("AssertPathIsMountPoint", []):
        if not os.path.ismount(point):
            raise SystemExit(f"unitrun: Assertion failed: {point} is not a mount point")

    # /run: a private tmpfs holding the credentials (systemd's /run/credentials/UNIT).
    _run("mount", "-t", "tmpfs", "-o", "mode=755,nosuid,nodev", "tmpfs", "/run")
    creds = Path("/run/credentials") / unit_name
    creds.mkdir(parents=True, mode=0o700)
    for spec in many.get("LoadCredential", []):
        ident, _, source = spec.partition(":")
        target = creds / ident
        shutil.copyfile(source, target)
        target.chmod(0o400)

    def expand(value: str) -> str:
        out = value.replace("%%", "\0").replace("%d", str(creds))
        if "%" in out:
            raise SystemExit(f"unitrun: specifier not emulated in {value!r}")
        return out.replace("\0", "%")

    env = dict(BASE_ENV, CREDENTIALS_DIRECTORY=str(creds))
    for line in many.get("Environment", []):
        for word in shlex.split(expand(line)):
            k, _, v = word.partition("=")
            env[k] = v
    for path in many.get("EnvironmentFile", []):
        optional = path.startswith("-")
        p = Path(path.lstrip("-"))
        if p.exists() or not optional:
            env.update(parse_env_file(p.read_text()))

    writable = [expand(p).lstrip("-") for v in many.get("ReadWritePaths", []) for p in v.split()]
    # RuntimeDirectory=: /run/NAME, owned by the unit's user (root: no User=),
    # writable whatever ProtectSystem= makes of /run (a mount of its own).
    mode = int(one.get("RuntimeDirectoryMode", "0755"), 8)
    for name in (n for v in many.get("RuntimeDirectory", []) for n in v.split()):
        rundir = Path("/run") / name
        rundir.mkdir(parents=True, exist_ok=True)
        rundir.chmod(mode)
        _run("mount", "--bind", str(rundir), str(rundir))
        writable.append(str(rundir))
    if one.get("PrivateTmp") == "yes":
        for tmp in ("/tmp", "/var/tmp"):
            _run("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", tmp)
    if one.get("PrivateDevices") == "yes":
        _private_dev()
    if one.get("ProtectHome") == "yes":
        for home in ("/home", "/root"):
            if Path(home).is_dir():
                _run("mount", "-t", "tmpfs", "-o", "ro,mode=755", "tmpfs", home)
    if one.get("ProtectProc") in ("invisible", "noaccess", "ptraceable"):
        _run("mount", "-t", "proc", "-o", f"hidepid={one['ProtectProc']}", "proc", "/proc")
    if one.get("ProtectKernelTunables") == "yes":
        _run("mount", "--bind", "/proc/sys", "/proc/sys")
        _remount_ro("/proc/sys")
    if one.get("ProtectSystem") == "strict":
        private_tmp = ["/tmp", "/var/tmp"] if one.get("PrivateTmp") == "yes" else []
        for point in _mounts():
            if _under(point, _API_FS) or _under(point, private_tmp) or _under(point, writable):
                continue
            _remount_ro(point)
    sys_ro = one.get("ProtectKernelTunables") == "yes" or one.get("ProtectControlGroups") == "yes"
    if sys_ro:
        for point in _mounts():
            if _under(point, ["/sys"]) and not _under(point, writable):
                if one.get("ProtectKernelTunables") != "yes" and not _under(
                    point, ["/sys/fs/cgroup"]
                ):
                    continue
                _remount_ro(point)
    if "UMask" in one:
        os.umask(int(one["UMask"], 8))
    if "LimitNOFILE" in one:
        n = int(one["LimitNOFILE"])
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        except ValueError:
            # Raising the hard limit needs CAP_SYS_RESOURCE, which PID 1 has
            # and this VM does not give even to root: the nearest it allows.
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            print(f"unitrun: LimitNOFILE={n} capped at the hard limit {hard}", file=sys.stderr)

    argv = shlex.split(expand(one["ExecStart"]))
    if one.get("Type", "simple") not in ("simple", "exec"):
        raise SystemExit(f"unitrun: Type={one['Type']} not emulated")
    caps = one.get("CapabilityBoundingSet", "").split()
    caps = [c for c in caps if c not in drop_caps]
    setpriv = ["setpriv", "--inh-caps=-all"]
    if "CapabilityBoundingSet" in one:
        bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
        setpriv.append(f"--bounding-set={bounding}")
    if one.get("NoNewPrivileges") == "yes":
        setpriv.append("--no-new-privs")
    os.chdir("/")  # systemd's default WorkingDirectory=
    os.execvpe(setpriv[0], [*setpriv, "--", *argv], env)


def main() -> int:
    ap = argparse.ArgumentParser(prog="unitrun")
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install")
    i.add_argument("sandbox", type=Path)
    i.add_argument("script", type=Path)
    s = sub.add_parser("start")
    s.add_argument("sandbox", type=Path)
    s.add_argument("unit", type=Path)
    s.add_argument("--drop-cap", action="append", default=[])
    args = ap.parse_args()
    if args.cmd == "install":
        return install(args.sandbox, args.script)
    start(args.sandbox, args.unit, args.drop_cap)
    return 1  # not reached: start() execs


if __name__ == "__main__":
    sys.exit(main())
