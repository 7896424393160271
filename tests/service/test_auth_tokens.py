"""Tokens a client can present, compared without telling a guesser their length.

Measured on main: ``--token 'abc '`` started, and no client could ever match
it (the header's surrounding whitespace is stripped on the way in, the
configured token was not); a non-ASCII token matched only Latin-1 bytes; the
comparison returned at once for a guess of another length.
"""

from __future__ import annotations

import hmac
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from ringbridge.api import auth
from ringbridge.errors import ConfigError, ForbiddenError
from ringbridge.settings import Settings

from .conftest import SMALL_RING, ServerFactory

REPO = Path(__file__).resolve().parents[2]
BODY = {"samples": [{"kind": 1, "value": 1}]}


@pytest.mark.kernel
@pytest.mark.parametrize("configured", ["abc ", " abc", "\tabc\n"])
async def test_a_token_with_surrounding_whitespace_can_be_presented(
    make_server: ServerFactory, configured: str
) -> None:
    srv = make_server(ring_size=SMALL_RING, token=configured)
    auth_header = {"authorization": "Bearer abc"}
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        r = await c.post("/v1/samples", json=BODY, headers=auth_header)  # the fast path
        assert r.status_code == 200, r.text
        assert (await c.get("/v1/stats", headers=auth_header)).status_code == 200  # a route
        r = await c.post("/v1/samples", json=BODY, headers={"authorization": "Bearer abcd"})
        assert r.status_code == 403
    async with connect(srv.ws_url, additional_headers=auth_header, compression=None) as ws:
        await ws.send('{"id": 1, "samples": [{"kind": 1, "value": 1}]}')
        assert '"accepted":1' in str(await ws.recv())


@pytest.mark.parametrize("token", ["pässword", "tab\tinside", "nul\0", "emoji🔑"])
def test_a_token_no_client_can_send_is_refused_at_start(token: str) -> None:
    with pytest.raises(ConfigError, match="printable ASCII"):
        Settings(token=token)


def test_serve_refuses_a_non_ascii_token_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGBRIDGE_")}
    r = subprocess.run(
        [sys.executable, "-m", "ringbridge", "serve", "--port=0", "--token", "pässword",
         "--pin-dir=/nonexistent-ringbridge-test/pins"],
        capture_output=True, text=True, timeout=30, cwd=REPO, env=env,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "printable ASCII" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_tokens_are_compared_as_fixed_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        assert isinstance(a, bytes) and isinstance(b, bytes)
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # auth looks it up at each call
    token = "s3cret-token"
    for guess in ("s", "s3cret-toke", "s3cret-token-longer", "x" * 4096):
        with pytest.raises(ForbiddenError):
            auth.check_authorization(f"Bearer {guess}", token)
    auth.check_authorization(f"Bearer {token}", token)
    auth.check_authorization(f"bearer   {token}  ", token)
    # Whatever the guess's length, the compare sees two 32-byte digests.
    assert seen and set(seen) == {(32, 32)}
