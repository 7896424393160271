"""Fleet delivery through NATS JetStream: every node's ringbridge a consumer of one stream.

A control plane publishes sample batches to a JetStream stream (broadcast
subjects, per-node subjects); each node's front door pulls the messages of
its subjects, validates each as one batch exactly like ``POST /v1/samples``,
commits it through the same admission and producer path as HTTP and
WebSocket, and acknowledges it only after the commit -- exactly once into
the node's ring (:mod:`.cursor`).

Modules, each with one job:

- :mod:`.options` -- the ``--nats*`` settings (no nats-py import);
- :mod:`.subjects` -- subject and consumer-name rules;
- :mod:`.cursor` -- the node's stream position kept with the pins, and the
  exactly-once rule;
- :mod:`.sequencer` -- stream order across subjects and redeliveries (no I/O);
- :mod:`.decode` -- a message -> a validated batch (the schema layer);
- :mod:`.connect` -- the NATS connection (credentials from files, TLS);
- :mod:`.source` -- one pull consumer and its pull requests;
- :mod:`.intake` -- the pullers of a session, inside the in-flight window;
- :mod:`.frontdoor` -- the loop: order, decode, commit, ack;
- :mod:`.upkeep` -- progress acks, pending counts, receipts;
- :mod:`.outbox` -- dead letters and rollout receipts;
- :mod:`.config` -- the front door's configuration and what it needs of the producer;
- :mod:`.stats` -- counters for the metrics layer;
- :mod:`.status` -- what ``ringbridge fleet status`` reads.

This ``__init__`` imports nothing, so that Settings (which mixes in
:mod:`.options`) loads without nats-py.
"""
