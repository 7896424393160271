"""The image's HEALTHCHECK probes the address the service was configured with."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from ringbridge import healthcheck


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RINGBRIDGE_HOST", "RINGBRIDGE_PORT", "RINGBRIDGE_CONFIG"):
        monkeypatch.delenv(var, raising=False)


def test_url_follows_env_and_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert healthcheck.url() == "http://127.0.0.1:8470/healthz"
    config = tmp_path / "ringbridge.toml"
    config.write_text('host = "::"\nport = 9001\nring_size = "8M"\n')
    monkeypatch.setenv("RINGBRIDGE_CONFIG", str(config))
    assert healthcheck.url() == "http://[::1]:9001/healthz"  # wildcard -> loopback
    monkeypatch.setenv("RINGBRIDGE_PORT", "9002")  # env over the file, as in Settings
    monkeypatch.setenv("RINGBRIDGE_HOST", "0.0.0.0")
    assert healthcheck.url() == "http://127.0.0.1:9002/healthz"


class _Healthz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    srv = HTTPServer(("127.0.0.1", 0), _Healthz)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_exit_status(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGBRIDGE_PORT", str(server.server_address[1]))
    assert healthcheck.main() == 0
    _Healthz.status = 503
    try:
        assert healthcheck.main() == 1
    finally:
        _Healthz.status = 200
    server.shutdown()
    server.server_close()
    assert healthcheck.main() == 1  # nothing listens
