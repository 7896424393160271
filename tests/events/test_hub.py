"""The event hub (ringbridge.events.hub): numbering, fan-out, bounded buffers, lost markers.

No kernel here: records are published by hand (the kernel feeds the same
``publish`` in tests/kernel/test_eventring.py).
"""

from __future__ import annotations

import asyncio
import base64
import struct

import pytest

from ringbridge.errors import ConfigError, RingClosedError
from ringbridge.events import Event, EventHub, Lost
from ringbridge.schema import TypeDecoder, TypeSources
from tests.support.upstream import PROTO_HEADER, clang_or_skip

REPLY = struct.Struct("<QIiq")  # struct test_reply


@pytest.fixture(scope="module")
def reply_decoder() -> TypeDecoder:
    clang_or_skip()
    with TypeSources.open(header=PROTO_HEADER) as sources:
        return sources.decoder("struct test_reply")


def _records(n: int, start: int = 0) -> list[bytes]:
    return [bytes([i % 256]) * 4 for i in range(start, start + n)]


def test_every_subscriber_gets_every_event_in_order() -> None:
    emap = EventHub().add("m")
    a, b = emap.subscribe(), emap.subscribe()
    emap.publish(_records(5))
    emap.publish(_records(3, 5))
    for sub in (a, b):
        got = [sub.get_nowait() for _ in range(8)]
        assert [e.seq for e in got if isinstance(e, Event)] == list(range(8))
        assert [e.data for e in got if isinstance(e, Event)] == _records(8)
        with pytest.raises(asyncio.QueueEmpty):
            sub.get_nowait()
    s = emap.statistics()
    assert (s.events, s.bytes, s.subscribers) == (8, 32, 2)
    assert s.lost == {"slow_subscriber": 0, "no_subscriber": 0}


def test_a_full_buffer_loses_the_newest_and_marks_the_gap_where_it_is() -> None:
    emap = EventHub().add("m")
    slow = emap.subscribe(max_events=3)
    emap.publish(_records(10))  # 0..2 kept, 3..9 lost
    assert slow.get_nowait().seq == 0  # type: ignore[union-attr]
    emap.publish(_records(2, 10))  # one slot free: 10 kept, 11 lost
    items = []
    while True:
        try:
            items.append(slow.get_nowait())
        except asyncio.QueueEmpty:
            break
    shapes = [i.json() if isinstance(i, Lost) else i.seq for i in items]
    assert shapes == [
        1, 2, {"lost": 7, "first_seq": 3, "last_seq": 9}, 10,
        {"lost": 1, "first_seq": 11, "last_seq": 11},
    ]  # fmt: skip
    assert emap.statistics().lost["slow_subscriber"] == 8
    assert slow.statistics().lost == 8 and slow.statistics().delivered == 4


def test_the_byte_bound_holds_but_one_big_event_still_passes() -> None:
    emap = EventHub().add("m")
    sub = emap.subscribe(max_events=100, max_bytes=10)
    emap.publish([b"x" * 4, b"y" * 4, b"z" * 4])  # the third would make 12 bytes
    assert sub.statistics().buffered_bytes == 8 and sub.lost == 1
    while not isinstance(sub.get_nowait(), Lost):
        pass
    emap.publish([b"B" * 50])  # larger than the bound, into an empty buffer
    assert sub.get_nowait().data == b"B" * 50  # type: ignore[union-attr]


def test_no_subscriber_means_counted_and_dropped() -> None:
    emap = EventHub().add("m")
    emap.publish(_records(4))
    assert emap.statistics().lost["no_subscriber"] == 4
    sub = emap.subscribe()  # from now on; nothing replayed
    emap.publish(_records(1, 4))
    assert sub.get_nowait().seq == 4  # type: ignore[union-attr]


async def test_get_waits_for_the_next_event_and_iteration_ends_at_close() -> None:
    emap = EventHub().add("m")
    sub = emap.subscribe()
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    emap.publish([b"one"])
    first = await asyncio.wait_for(waiter, 1)
    assert isinstance(first, Event) and first.data == b"one"
    emap.publish([b"two", b"three"])
    emap.close()  # what was buffered can still be read, then the iteration ends
    assert [e.data async for e in sub] == [b"two", b"three"]  # type: ignore[union-attr]
    with pytest.raises(RingClosedError):
        sub.get_nowait()
    with pytest.raises(RingClosedError):
        emap.subscribe()


async def test_closing_a_subscription_unsubscribes_and_wakes_its_reader() -> None:
    emap = EventHub().add("m")
    sub = emap.subscribe()
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    sub.close()
    with pytest.raises(RingClosedError):
        await asyncio.wait_for(waiter, 1)
    assert emap.subscribers == 0
    emap.publish([b"x"])
    assert emap.statistics().lost["no_subscriber"] == 1
    sub.close()  # idempotent


def test_typed_and_raw_json(reply_decoder: TypeDecoder) -> None:
    hub = EventHub()
    typed = hub.add("replies", decoder=reply_decoder, type_name="struct test_reply")
    raw = hub.add("raw")
    ts, rs = typed.subscribe(), raw.subscribe()
    rec = REPLY.pack(7, 2, -22, -5)
    typed.publish([rec, rec[:10], rec + b"\x01\x02"])
    raw.publish([rec[:5]])
    good, short, long_ = (ts.get_nowait() for _ in range(3))
    assert good.json() == {
        "seq": 0,
        "value": {"seq": 7, "msg_op": "TEST_MSG_OP_MUL64", "status": -22, "kern_mutated": -5},
    }
    s = short.json()
    assert s["seq"] == 1 and base64.b64decode(s["data"]) == rec[:10]
    assert "10 bytes are shorter than struct test_reply (24)" in s["error"]
    assert long_.json()["tail"] == base64.b64encode(b"\x01\x02").decode()
    assert rs.get_nowait().json() == {"seq": 0, "data": base64.b64encode(rec[:5]).decode()}
    assert typed.statistics().decode_errors == 1
    assert typed.statistics().type_name == "struct test_reply"


def test_the_hub_by_name() -> None:
    hub = EventHub()
    hub.add("a")
    with pytest.raises(ConfigError, match="configured twice"):
        hub.add("a")
    with pytest.raises(ConfigError, match=r"no event map 'b' \(event maps: a\)"):
        hub.get("b")
    assert hub.names() == ["a"] and [s.name for s in hub.statistics()] == ["a"]
    with pytest.raises(ConfigError):
        hub.get("a").subscribe(max_events=0)
