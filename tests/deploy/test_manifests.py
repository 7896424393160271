"""The deployment files agree with each other and with the image.

Schema validity is ``make lint``'s job (kubernetes-validate, yamllint,
compose config); these check what a schema cannot: the two DaemonSet
variants differ only in privilege, the fleet variant only in its NATS
settings and credentials, every image name matches the version
``make image`` builds, the token never travels in argv, ports and probes
line up.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

K8S = REPO / "deploy" / "kubernetes"
_version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
assert _version is not None
VERSION = _version.group(1)
IMAGE = f"ringbridge:{VERSION}"
DAEMONSETS = tuple(
    K8S / f"{name}.yaml" for name in ("daemonset", "daemonset-privileged", "daemonset-fleet")
)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def pod_spec(ds: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def service_container(ds: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in pod_spec(ds)["containers"] if c["name"] == "ringbridge"]
    container: dict[str, Any] = c
    return container


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def test_variants_differ_only_in_the_service_containers_privilege() -> None:
    least = load(K8S / "daemonset.yaml")
    privileged = load(K8S / "daemonset-privileged.yaml")
    caps = service_container(least)["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and "BPF" in caps["add"] and "SYS_ADMIN" not in caps["add"]
    assert service_container(privileged)["securityContext"]["privileged"] is True
    a, b = copy.deepcopy(least), copy.deepcopy(privileged)
    del service_container(a)["securityContext"], service_container(b)["securityContext"]
    assert a == b


def test_the_fleet_variant_adds_only_nats_settings_and_their_credentials() -> None:
    least = load(K8S / "daemonset.yaml")
    fleet = load(K8S / "daemonset-fleet.yaml")
    c = service_container(fleet)
    added = {k: v for k, v in env(c).items() if k not in env(service_container(least))}
    assert set(added) == {
        "NODE_NAME",
        "RINGBRIDGE_NATS",
        "RINGBRIDGE_NATS_STREAM",
        "RINGBRIDGE_NATS_SUBJECT",
        "RINGBRIDGE_NATS_DURABLE",
        "RINGBRIDGE_NATS_CREDS",
        "RINGBRIDGE_NATS_DEAD_LETTER",
    }
    (node,) = [e for e in c["env"] if e["name"] == "NODE_NAME"]
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # Kubernetes expands $(NODE_NAME) only from variables defined before it.
    names = [e["name"] for e in c["env"]]
    assert names.index("NODE_NAME") < names.index("RINGBRIDGE_NATS_DURABLE")
    assert added["RINGBRIDGE_NATS_SUBJECT"] == "fleet.all,fleet.node.$(NODE_NAME)"
    # Credentials from a Secret file readable by the service's own group after
    # the switch to it (it connects again after a lost connection), never argv.
    creds = added["RINGBRIDGE_NATS_CREDS"]
    (mount,) = [m for m in c["volumeMounts"] if creds.startswith(m["mountPath"] + "/")]
    (vol,) = [v for v in pod_spec(fleet)["volumes"] if v["name"] == mount["name"]]
    assert vol["secret"] == {"secretName": "ringbridge-nats", "defaultMode": 0o440}
    assert pod_spec(fleet)["securityContext"] == {"fsGroup": 10470}
    assert "nats" not in " ".join(c.get("command", []) + c.get("args", [])).lower()
    # Everything else is daemonset.yaml's.
    a, b = copy.deepcopy(least), copy.deepcopy(fleet)
    cb = service_container(b)
    cb["env"] = [e for e in cb["env"] if e["name"] not in added]
    cb["volumeMounts"].remove(mount)
    pod_spec(b)["volumes"].remove(vol)
    del pod_spec(b)["securityContext"]
    assert a == b


def test_the_fleet_variants_settings_load_as_kubernetes_expands_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ringbridge.settings import Settings

    node = "ip-10-0-0-7.eu-west-1.compute.internal"
    for key, value in env(service_container(load(K8S / "daemonset-fleet.yaml"))).items():
        # The image's user (RINGBRIDGE_USER) does not exist on this machine.
        if key.startswith("RINGBRIDGE_") and key != "RINGBRIDGE_USER":
            value = value.replace("$(NODE_NAME)", node)
            if key.endswith(("_FILE", "_CREDS")):
                value = str(tmp_path / key)  # the Secret's file, here
                Path(value).write_text("secret\n")
            monkeypatch.setenv(key, value)
    s = Settings()
    assert s.nats == [f"nats://nats-{i}.nats.nats:4222" for i in range(3)]
    assert s.nats_subject == ["fleet.all", f"fleet.node.{node}"]
    assert s.nats_durable == "ip-10-0-0-7-eu-west-1-compute-internal"
    assert s.nats_dead_letter == f"fleet-dead.{node}"


def test_every_image_name_is_the_one_make_image_builds() -> None:
    for path in DAEMONSETS:
        spec = pod_spec(load(path))
        images = {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
        assert images == {IMAGE}, path
    compose = load(REPO / "deploy" / "compose.yaml")
    assert compose["services"]["ringbridge"]["image"] == "ringbridge:latest"
    readme = (REPO / "README.md").read_text()
    assert IMAGE in readme and "make image" in readme
    tags = set(re.findall(r"\bringbridge:([\w.-]+)", readme))
    assert tags <= {VERSION, "latest"}, tags
    assert "docker build" not in readme  # the build goes through make image (the wheelhouse)


def test_token_from_a_file_never_argv() -> None:
    for path in DAEMONSETS:
        spec = pod_spec(load(path))
        c = service_container(load(path))
        argv = " ".join(c.get("command", []) + c.get("args", []))
        assert "token" not in argv.lower()
        assert "RINGBRIDGE_TOKEN" not in env(c)
        token_file = env(c)["RINGBRIDGE_TOKEN_FILE"]
        (mount,) = [m for m in c["volumeMounts"] if token_file.startswith(m["mountPath"] + "/")]
        (vol,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert vol["secret"]["secretName"] == "ringbridge-token"
        assert token_file.rsplit("/", 1)[1] in ("token",)
    svc = load(REPO / "deploy" / "compose.yaml")["services"]["ringbridge"]
    assert svc["environment"]["RINGBRIDGE_TOKEN_FILE"] == "/run/secrets/ringbridge-token"
    assert svc["secrets"] == ["ringbridge-token"]
    assert "command" not in svc


def test_ports_probes_and_bpffs_line_up() -> None:
    for path in DAEMONSETS:
        ds = load(path)
        c = service_container(ds)
        (port,) = c["ports"]
        assert str(port["containerPort"]) == env(c)["RINGBRIDGE_PORT"]
        notes = ds["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/port"] == str(port["containerPort"])
        assert notes["prometheus.io/path"] == "/metrics"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert env(c)["RINGBRIDGE_PIN_DIR"].startswith("/sys/fs/bpf/")
        spec = pod_spec(ds)
        (init,) = spec["initContainers"]
        assert init["securityContext"]["privileged"] is True
        assert init["volumeMounts"][0]["mountPropagation"] == "Bidirectional"
        assert "mount -t bpf" in " ".join(init["command"])
        bpffs = next(m for m in c["volumeMounts"] if m["mountPath"] == "/sys/fs/bpf")
        assert bpffs["mountPropagation"] == "HostToContainer"
    svc = load(K8S / "service.yaml")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    compose = load(REPO / "deploy" / "compose.yaml")["services"]["ringbridge"]
    (published,) = compose["ports"]
    assert published.startswith("${RINGBRIDGE_BIND:-127.0.0.1}:")  # loopback by default
    vol, locks = compose["volumes"]
    assert vol["source"] == vol["target"] == "/sys/fs/bpf"
    assert vol["bind"]["propagation"] == "rshared"
    # The host's producer locks: one producer per ring, host and containers alike.
    assert locks == "/run/ringbridge:/run/ringbridge"
    for path in (K8S / "daemonset.yaml", K8S / "daemonset-privileged.yaml"):
        c, spec = service_container(load(path)), pod_spec(load(path))
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/run/ringbridge"]
        (host,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert host["hostPath"] == {"path": "/run/ringbridge", "type": "DirectoryOrCreate"}


def test_dockerfile_has_no_syntax_line_and_a_port_following_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert "8470/healthz" not in text
    assert 'CMD ["python3", "-m", "ringbridge.healthcheck"]' in text
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"] and "!service/" in ignore


def test_every_setting_named_in_a_manifest_exists() -> None:
    # serve refuses a RINGBRIDGE_* variable that is no setting: a renamed
    # setting would stop every pod.
    from ringbridge.settings import Settings

    named: dict[str, str] = {}
    for path in DAEMONSETS:
        named.update(env(service_container(load(path))))
    named.update(load(REPO / "deploy" / "compose.yaml")["services"]["ringbridge"]["environment"])
    dockerfile = (REPO / "Dockerfile").read_text()
    named.update(dict.fromkeys(re.findall(r"\b(RINGBRIDGE_[A-Z_]+)=", dockerfile), ""))
    fields = {f"RINGBRIDGE_{name.upper()}" for name in Settings.model_fields}
    named.pop("NODE_NAME")  # the downward API's, for the fleet variant's $(NODE_NAME)
    assert set(named) - fields == set()
    assert "RINGBRIDGE_ADMISSION_BYTES" in named and "RINGBRIDGE_USER" in named


def test_pods_get_no_service_link_variables() -> None:
    # Kubernetes would define RINGBRIDGE_PORT=tcp://ip:8470 (and more) for the
    # Service named ringbridge: a setting's name with a value that is no port.
    for path in (K8S / "daemonset.yaml", K8S / "daemonset-privileged.yaml"):
        assert pod_spec(load(path))["enableServiceLinks"] is False, path
