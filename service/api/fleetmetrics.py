"""The fleet front door's series (``--nats``), read from its statistics at scrape time.

Only a service started with ``--nats`` exports them. Messages count once by
result when resolved (``committed``, ``duplicate``, ``invalid``) and, across
results, ``redelivered`` (deliveries JetStream made more than once): the
``result`` values do not add up to a total. ``pending`` is what the node's
consumers have not delivered yet (consumer info, read every few seconds):
the series the "NATS consumer lagging" alert watches.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..fleet.stats import RESULTS, STATES, FleetStatistics

__all__ = ["collect"]


def collect(st: FleetStatistics) -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "ringbridge_nats_messages",
        "JetStream messages by result: committed, duplicate (acked, not committed again), "
        "invalid (terminated); redelivered counts deliveries made more than once, "
        "across results.",
        labels=["result"],
    )
    for result in RESULTS:
        messages.add_metric([result], st.messages[result])
    yield messages
    invalid = CounterMetricFamily(
        "ringbridge_nats_invalid_messages",
        "JetStream messages terminated as invalid, by error code.",
        labels=["code"],
    )
    for code, n in sorted(st.invalid.items()):
        invalid.add_metric([code], n)
    yield invalid
    retries = CounterMetricFamily(
        "ringbridge_nats_commit_retries",
        "Commits of a JetStream message tried again (ring full, budget spent), by error code.",
        labels=["code"],
    )
    for code, n in sorted(st.retries.items()):
        retries.add_metric([code], n)
    yield retries
    yield CounterMetricFamily(
        "ringbridge_nats_recovered_messages",
        "Messages taken from the stream directly, their delivery not having come "
        "(after a restart or a lost connection).",
        value=st.recovered,
    )
    yield CounterMetricFamily(
        "ringbridge_nats_dead_letters",
        "Invalid messages republished to the dead-letter subject.",
        value=st.dead_lettered,
    )
    yield CounterMetricFamily(
        "ringbridge_nats_dead_letter_failures",
        "Invalid messages whose dead letter could not be published (terminated anyway).",
        value=st.dead_letter_failures,
    )
    for name, doc, value in (
        (
            "last_committed_seq",
            "Stream sequence of the last message committed into the ring.",
            st.last_committed_seq,
        ),
        (
            "last_resolved_seq",
            "Stream sequence up to which every message of this node is resolved "
            "(committed, duplicate or invalid).",
            st.last_resolved_seq,
        ),
    ):
        g = GaugeMetricFamily(f"ringbridge_nats_{name}", doc, labels=["stream"])
        g.add_metric([st.stream], value)
        yield g
    for name, doc, by_consumer in (
        (
            "consumer_pending_messages",
            "Messages of this node's subjects not yet delivered to it (consumer info).",
            st.pending_by_consumer,
        ),
        (
            "consumer_ack_pending_messages",
            "Messages delivered to this node and not yet acked (durable mode).",
            st.ack_pending_by_consumer,
        ),
    ):
        g = GaugeMetricFamily(f"ringbridge_nats_{name}", doc, labels=["stream", "consumer"])
        for consumer, n in sorted(by_consumer.items()):
            g.add_metric([st.stream, consumer], n)
        yield g
    yield GaugeMetricFamily(
        "ringbridge_nats_held_messages",
        "Messages fetched and waiting for their turn or for ring space (in-flight window).",
        value=st.held_messages,
    )
    yield GaugeMetricFamily(
        "ringbridge_nats_held_bytes", "Bytes of those messages.", value=st.held_bytes
    )
    yield GaugeMetricFamily(
        "ringbridge_nats_connected",
        "1 while connected to NATS and consuming, else 0 (the node is degraded, "
        "HTTP is still served).",
        value=1 if st.state == "connected" and st.connected else 0,
    )
    state = GaugeMetricFamily(
        "ringbridge_nats_state",
        "The front door's state: 1 for the current one, 0 for the others.",
        labels=["state"],
    )
    for s in STATES:
        state.add_metric([s], 1 if s == st.state else 0)
    yield state
    yield CounterMetricFamily(
        "ringbridge_nats_disconnects",
        "Times the NATS connection was lost.",
        value=st.disconnects,
    )
    yield CounterMetricFamily(
        "ringbridge_nats_reconnects",
        "Times the NATS connection was made again.",
        value=st.reconnects,
    )
