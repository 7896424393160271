"""``GET /v1/events``: the query, the refusals, auth, OpenAPI, and the wire pieces both ends use.

The events themselves, out of a real kernel ring buffer, are in
tests/service/test_events.py; here a server without event maps (the
built-in consumer) shows what a subscriber is refused with, over SSE and at
the WebSocket handshake alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ringbridge import wire
from ringbridge.client.events import SSEDecoder
from ringbridge.errors import ClientError, ConfigError, InvalidRequestError
from ringbridge.settings import Settings

from .conftest import ServerFactory

TOKEN = "events-token"


# -- the wire pieces (no server) ---------------------------------------------------


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("map=replies", ("replies", "json")),
        (b"map=replies&format=binary", ("replies", "binary")),
        ("format=json&map=a%20b&other=1", ("a b", "json")),
    ],
)
def test_the_events_query(query: str | bytes, want: tuple[str, str]) -> None:
    assert wire.parse_events_query(query) == want
    # What a client sends for it reads back the same.
    assert wire.parse_events_query(urlencode(wire.events_params(*want))) == want


@pytest.mark.parametrize(
    ("query", "why"),
    [("", "query.map"), ("map=", "query.map"), ("map=a&format=xml", "query.format")],
)
def test_a_bad_events_query_is_invalid_request(query: str, why: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        wire.parse_events_query(query)
    assert info.value.message.startswith(why) and info.value.code == "invalid_request"


def test_binary_event_frames_and_sse_messages() -> None:
    frame = wire.binary_event(2**40 + 3, b"\x01\x02")
    assert frame == (2**40 + 3).to_bytes(8, "little") + b"\x01\x02"
    assert wire.read_binary_event(frame) == (2**40 + 3, b"\x01\x02")
    with pytest.raises(ClientError, match="at least 8 bytes"):
        wire.read_binary_event(b"\x00" * 7)
    event = wire.event_json({"seq": 4, "value": {"a": 1}})
    lost = wire.event_json({"lost": 2, "first_seq": 5, "last_seq": 6})
    stream = (
        wire.sse_message(event, seq=4) + b": keep-alive\n\n" + wire.sse_message(lost, event="lost")
    )
    assert stream == (
        b'id: 4\ndata: {"seq":4,"value":{"a":1}}\n\n: keep-alive\n\n'
        b'event: lost\ndata: {"lost":2,"first_seq":5,"last_seq":6}\n\n'
    )
    # The client's decoder gets exactly the two items back, comments skipped.
    sse = SSEDecoder()
    items = [d for line in stream.decode().split("\n") if (d := sse.line(line)) is not None]
    assert [wire.read_event(d) for d in items] == [
        {"seq": 4, "value": {"a": 1}},
        {"lost": 2, "first_seq": 5, "last_seq": 6},
    ]
    with pytest.raises(ClientError, match="not an event"):
        wire.read_event('{"accepted": 1}')


def test_sse_decoder_joins_data_lines_and_ignores_other_fields() -> None:
    sse = SSEDecoder()
    lines = ["retry: 10", 'data:{"seq":', "data: 1}", "id: 1", ""]
    assert [sse.line(x) for x in lines] == [None, None, None, None, '{"seq":\n1}']
    assert sse.line("") is None  # an empty message dispatches nothing


# -- settings ----------------------------------------------------------------------


def test_event_settings_from_flags_env_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = Settings(event_map=["replies=test_reply", "raw"], event_pin=["/sys/fs/bpf/x/out=t"])
    specs = s.event_specs
    assert [(e.name, e.type_name, e.pin) for e in specs] == [
        ("replies", "test_reply", None),
        ("raw", None, None),
        ("out", "t", Path("/sys/fs/bpf/x/out")),
    ]
    assert (s.event_buffer_events, s.event_buffer_bytes) == (1024, 4 << 20)
    monkeypatch.setenv("RINGBRIDGE_EVENT_MAP", "a=struct x, b")
    monkeypatch.setenv("RINGBRIDGE_EVENT_BUFFER_BYTES", "64K")
    env = Settings()
    assert [(e.name, e.type_name) for e in env.event_specs] == [("a", "struct x"), ("b", None)]
    assert env.event_buffer_bytes == 64 * 1024
    monkeypatch.delenv("RINGBRIDGE_EVENT_MAP")
    conf = tmp_path / "rb.toml"
    conf.write_text('event-pin = ["/sys/fs/bpf/p/ring"]\nevent_buffer_events = 8\n')
    f = Settings.load(config=conf)
    assert [e.pin for e in f.event_specs] == [Path("/sys/fs/bpf/p/ring")]
    assert f.event_buffer_events == 8


def test_event_settings_refused() -> None:
    with pytest.raises(ConfigError, match="--event-map NAME"):
        Settings(event_map=["=t"])
    with pytest.raises(ConfigError, match="named twice"):
        Settings(event_map=["out"], event_pin=["/sys/fs/bpf/x/out"])
    with pytest.raises(ConfigError, match="--event-map: not with --ring-pin"):
        Settings(ring_pin=Path("/sys/fs/bpf/x/ring"), event_map=["m"])
    # A pinned event map works with a pinned ring: neither needs an object.
    s = Settings(ring_pin=Path("/sys/fs/bpf/x/ring"), event_pin=["/sys/fs/bpf/x/m=t"])
    assert s.event_specs[0].name == "m"
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(event_buffer_events=0)


def test_set_global_settings() -> None:
    s = Settings.model_validate({"set_global": ["pid=1234", "mask=0x10", "delta=-3"]})
    assert s.set_global == {"pid": 1234, "mask": 16, "delta": -3}
    assert Settings(set_global={"pid": 7}).set_global == {"pid": 7}
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        Settings.model_validate({"set_global": ["pid"]})
    with pytest.raises(ValueError, match="not an integer"):
        Settings.model_validate({"set_global": ["pid=abc"]})
    with pytest.raises(ValueError, match="given twice"):
        Settings.model_validate({"set_global": ["pid=1", "pid=2"]})
    with pytest.raises(ConfigError, match="--set-global: not with --ring-pin"):
        Settings.model_validate({"ring_pin": "/sys/fs/bpf/x/ring", "set_global": ["pid=1"]})


# -- a server without event maps ----------------------------------------------------


def _error(r: httpx.Response) -> dict[str, object]:
    err: dict[str, object] = r.json()["error"]
    return err


@pytest.mark.kernel
def test_refusals_over_sse_and_at_the_websocket_handshake(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 20, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ws_url = f"ws://127.0.0.1:{srv.port}/v1/events"
    cases = [
        ("?map=replies", auth, 404, "not_found"),
        ("", auth, 422, "invalid_request"),
        ("?map=replies&format=xml", auth, 422, "invalid_request"),
        ("?map=replies", {}, 401, "unauthorized"),
        ("?map=replies", {"Authorization": "Bearer nope"}, 403, "forbidden"),
    ]
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for query, headers, status, code in cases:
            r = c.get(f"/v1/events{query}", headers=headers)
            assert (r.status_code, _error(r)["code"]) == (status, code), query
            with pytest.raises(InvalidStatus) as info:
                connect(ws_url + query, additional_headers=headers, open_timeout=10).close()
            answer = info.value.response
            assert answer.status_code == status, query
            assert json.loads(bytes(answer.body or b""))["error"]["code"] == code
        r = c.get("/v1/events?map=replies", headers=auth)
        message = str(_error(r)["message"])
        assert "no event map 'replies' (event maps: none)" in message
        assert "--event-map NAME[=TYPE]" in message
        # Binary frames are the WebSocket's: SSE carries text.
        r = c.get("/v1/events?map=replies&format=binary", headers=auth)
        assert r.status_code == 422 and "need the WebSocket" in str(_error(r)["message"])
        # No batch was refused: subscribers are not counted as rejected batches.
        assert c.get("/v1/stats", headers=auth).json()["rejected"] == {}
        assert c.get("/v1/stats", headers=auth).json()["events"] == {}
        metrics = c.get("/metrics").text
    # The families are there for dashboards and alerts even without event maps.
    for family in ("events", "events_bytes", "events_lost", "events_decode_errors"):
        assert f"# TYPE ringbridge_{family}_total counter" in metrics or (
            f"# TYPE ringbridge_{family} counter" in metrics
        )
    assert "# TYPE ringbridge_events_subscribers gauge" in metrics


@pytest.mark.kernel
def test_openapi_documents_the_sse_route(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 20)
    spec = httpx.get(f"{srv.url}/openapi.json", timeout=10).json()
    op = spec["paths"]["/v1/events"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["map"]["required"] is True
    assert params["format"]["schema"]["enum"] == ["json"]  # binary: the WebSocket's
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert {"401", "403", "404", "422", "503"} <= set(op["responses"])
    assert "not_found" in op["responses"]["404"]["description"]
