"""The ``--nats*`` settings, and credentials and TLS against a real nats-server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from ringbridge import cli
from ringbridge.errors import ConfigError
from ringbridge.fleet.config import FleetConfig
from ringbridge.fleet.connect import Auth, connect, connect_options
from ringbridge.fleet.subjects import consumer_names, subject_matches
from ringbridge.settings import Settings

from ..support.natsserver import running_nats
from .conftest import nats_binary_or_skip

BASE: dict[str, Any] = {
    "nats": ["nats://127.0.0.1:4222"],
    "nats_stream": "FLEET",
    "nats_subject": ["fleet.all"],
}


def test_serve_flags_reach_the_settings() -> None:
    argv = [
        "serve",
        "--nats", "nats://a:4222,nats://b:4222",
        "--nats", "tls://c:4222",
        "--nats-stream", "FLEET",
        "--nats-subject", "fleet.all",
        "--nats-subject", "fleet.node.n7",
        "--nats-durable", "n7",
        "--nats-cursor", "pins",
        "--nats-dead-letter", "dead.fleet",
        "--nats-max-inflight-bytes", "2M",
    ]  # fmt: skip
    s = cli.settings_from_args(cli.build_parser().parse_args(argv))
    assert s.nats == ["nats://a:4222", "nats://b:4222", "tls://c:4222"]
    assert s.nats_subject == ["fleet.all", "fleet.node.n7"]
    assert (s.nats_durable, s.nats_cursor, s.nats_max_inflight_bytes) == ("n7", "pins", 2 << 20)
    cfg = FleetConfig.from_settings(s)
    assert cfg.node == "n7" and cfg.limits.ring_size == s.ring_size
    assert FleetConfig.from_settings(Settings(**BASE)).node  # defaults to the host name


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGBRIDGE_NATS", "nats://x:1, nats://y:2")
    monkeypatch.setenv("RINGBRIDGE_NATS_STREAM", "S")
    monkeypatch.setenv("RINGBRIDGE_NATS_SUBJECT", "a.b,c.*")
    s = Settings()
    assert (s.nats, s.nats_subject) == (["nats://x:1", "nats://y:2"], ["a.b", "c.*"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"nats": []}, "--nats-stream, --nats-subject: fleet delivery needs --nats URL"),
        ({"nats_stream": None}, "needs --nats-stream"),
        ({"nats_subject": []}, "at least one --nats-subject"),
        ({"nats_subject": ["fleet..all"]}, "empty token"),
        ({"nats_subject": ["fleet.>.x"]}, "'>' may only be the last token"),
        ({"nats_subject": ["a.b", "a.b"]}, "given twice"),
        ({"nats_durable": "node*1"}, "--nats-durable"),
        ({"nats_durable": "node 1"}, "--nats-durable"),
        ({"nats_stream": "FLE ET"}, "--nats-stream"),
        ({"nats": ["http://x:1"]}, "scheme"),
        ({"nats_dead_letter": "fleet.*"}, "wildcards are not allowed"),
        ({"nats_subject": ["fleet.>"], "nats_dead_letter": "fleet.dead"}, "would come back"),
        ({"nats_user": "u"}, "--nats-user and --nats-password-file go together"),
        ({"nats_tls_cert": Path("/etc/hostname")}, "--nats-tls-cert and --nats-tls-key"),
        ({"nats_token_file": Path("/nonexistent/token")}, "cannot read"),
    ],
)
def test_inconsistent_settings_are_refused_naming_the_flag(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace(".", r"\.")):
        Settings(**{**BASE, **extra})


def test_a_node_name_with_dots_is_its_durable_name_with_dashes() -> None:
    # A FQDN or a Kubernetes node name (the fleet DaemonSet's spec.nodeName).
    s = Settings(**{**BASE, "nats_durable": "ip-10-0-0-7.eu-west-1.compute.internal"})
    assert s.nats_durable == "ip-10-0-0-7-eu-west-1-compute-internal"


def test_one_way_to_authenticate(tmp_path: Path) -> None:
    token, creds = tmp_path / "token", tmp_path / "creds"
    token.write_text("t0k3n\n")
    creds.write_text("x")
    with pytest.raises(ConfigError, match="--nats-creds and --nats-token-file"):
        Settings(**BASE, nats_creds=creds, nats_token_file=token)
    s = Settings(**BASE, nats_token_file=token)
    assert "t0k3n" not in repr(s)  # read at connect time, never kept in the settings
    opts = connect_options(Auth.from_settings(s), "n")
    assert opts["token"] == "t0k3n" and "tls" not in opts


def test_subject_rules() -> None:
    assert subject_matches("fleet.*", "fleet.all") and not subject_matches("fleet.*", "fleet.a.b")
    assert subject_matches("fleet.>", "fleet.a.b") and not subject_matches("fleet.>", "fleet")
    assert consumer_names("n1", ["fleet.all"]) == ["n1"]
    assert consumer_names("n1", ["fleet.all", "fleet.node.*"]) == [
        "n1-fleet_all",
        "n1-fleet_node_any",
    ]


def _certs(d: Path) -> tuple[Path, Path, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-subj", "/CN=ringbridge test CA", "-days", "2")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.mark.nats
async def test_token_file_and_tls_ca_against_a_real_server(tmp_path: Path) -> None:
    ca, cert, key = _certs(tmp_path)
    args = ("--auth", "s3cret-token", "--tls", "--tlscert", str(cert), "--tlskey", str(key))
    with running_nats(tmp_path / "nats", nats_binary_or_skip(), args) as server:
        token = tmp_path / "token"
        token.write_text("s3cret-token\n")
        url = f"tls://127.0.0.1:{server.port}"
        nc = await connect(Auth((url,), token_file=token, tls_ca=ca), "t", reconnect=False)
        assert nc.is_connected and nc.connected_url is not None
        await nc.close()
        token.write_text("wrong\n")
        with pytest.raises((nats.errors.Error, OSError)):
            await connect(Auth((url,), token_file=token, tls_ca=ca), "t", reconnect=False)
        token.write_text("s3cret-token\n")
        with pytest.raises((nats.errors.Error, OSError)):  # the server's CA is not trusted
            await connect(Auth((url,), token_file=token), "t", reconnect=False)


@pytest.mark.nats
async def test_user_and_password_file_against_a_real_server(tmp_path: Path) -> None:
    args = ("--user", "node7", "--pass", "pa55")
    with running_nats(tmp_path / "nats", nats_binary_or_skip(), args) as server:
        pw = tmp_path / "pw"
        pw.write_text("pa55")
        nc = await connect(
            Auth((server.url,), user="node7", password_file=pw), "t", reconnect=False
        )
        assert nc.is_connected
        await nc.close()
        pw.write_text("nope")
        with pytest.raises((nats.errors.Error, OSError)):
            await connect(Auth((server.url,), user="node7", password_file=pw), "t", reconnect=False)
