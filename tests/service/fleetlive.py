"""A server with ``--nats`` that has consumed from a real JetStream: its ``/metrics`` text.

For the checks that hold ``/metrics`` to the README table and to the ops kit:
the ``ringbridge_nats_*`` series exist only on such a server, and labelled
ones have samples only after traffic -- here one good batch, one invalid
message (``invalid`` by code) and a consumer info poll (``pending`` by
consumer).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import nats
from nats.js.api import StreamConfig

from tests.support.natsserver import NatsServer

from .conftest import Server, ServerFactory

JSON = {"Content-Type": "application/json"}


async def _publish(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="FLEET", subjects=["fleet.>"]))
        await js.publish("fleet.all", b'{"samples": [{"kind": 2, "value": 5}]}', headers=JSON)
        await js.publish("fleet.all", b'{"samples": [{"kind": "x"}]}', headers=JSON)
    finally:
        await nc.close()


def fleet_server(make_server: ServerFactory, nats_server: NatsServer, **settings: object) -> Server:
    """A server fed from stream FLEET (subject ``fleet.all``) with two messages resolved."""
    asyncio.run(_publish(nats_server.url))
    srv = make_server(
        nats=[nats_server.url],
        nats_stream="FLEET",
        nats_subject=["fleet.all"],
        nats_durable="n1",
        **settings,
    )
    deadline = time.monotonic() + 20
    while True:
        st = srv.runtime.fleet.statistics() if srv.runtime.fleet is not None else None
        if st is not None and st.last_resolved_seq == 2 and st.pending is not None:
            return srv
        if time.monotonic() > deadline:
            raise AssertionError(f"the fleet front door did not consume: {st}")
        time.sleep(0.05)


def fleet_metrics(make_server: ServerFactory, nats_server: NatsServer, **settings: object) -> str:
    srv = fleet_server(make_server, nats_server, **settings)
    return httpx.get(f"{srv.url}/metrics", timeout=10).text
