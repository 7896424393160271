"""Fleet nodes as real ``ringbridge serve`` processes, and what a test reads of them.

A :class:`FleetNode` is one ``serve --nats ...`` process (tests/support/launch.py's
:class:`ServeProcess`) on its own pin dir; a test kills it with SIGKILL and
starts it again on the same pins. Its state is read the way an operator
reads it: ``/v1/stats`` (``fleet`` and ``kernel``) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.js.errors
from nats.js.client import JetStreamContext

from ..service.conftest import Tally
from ..support.launch import THIS_PYTHON, ServeProcess

JSON = "application/json"


def fleet_args(
    url: str, name: str, subjects: Sequence[str], *, mode: str = "durable", **more: Any
) -> list[str]:
    """The ``--nats*`` flags of a node named ``name`` on stream FLEET."""
    args = ["--nats", url, "--nats-stream", "FLEET", "--nats-durable", name]
    args += ["--nats-cursor", mode, "--nats-ack-wait", "3"]
    for s in subjects:
        args += ["--nats-subject", s]
    for key, value in more.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@dataclass
class FleetNode:
    name: str
    pin_dir: Path
    proc: ServeProcess
    subjects: tuple[str, ...]
    #: What this node must end up with in its kernel (built-in consumer).
    tally: Tally = field(default_factory=Tally)
    #: Stream seqs of the messages meant for it.
    seqs: list[int] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        name: str,
        pin_dir: Path,
        log_dir: Path,
        url: str,
        subjects: Sequence[str],
        *serve_args: str,
        mode: str = "durable",
        command: Sequence[str] = THIS_PYTHON,
        **fleet: Any,
    ) -> FleetNode:
        args = [
            "--pin-dir",
            str(pin_dir),
            "--shutdown-grace",
            "2",
            *serve_args,
            *fleet_args(url, name, subjects, mode=mode, **fleet),
        ]
        proc = ServeProcess(args, log_dir / f"{name}.log", command=command)
        return cls(name, pin_dir, proc, tuple(subjects))

    def stats(self) -> dict[str, Any]:
        r = httpx.get(f"{self.proc.url}/v1/stats", timeout=10)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def fleet(self) -> dict[str, Any]:
        st: dict[str, Any] = self.stats()["fleet"]
        return st

    def metrics(self) -> str:
        return httpx.get(f"{self.proc.url}/metrics", timeout=10).text

    def expected_kinds(self) -> dict[str, dict[str, int]]:
        return {
            str(k): {"samples": c, "value": self.tally.value[k]}
            for k, c in self.tally.count.items()
            if c
        }

    def explain(self) -> str:
        """Where the node is, for a failure message."""
        try:
            st = self.stats()
            now = {"fleet": st["fleet"], "kinds": st["kernel"].get("kinds")}
        except Exception as exc:
            now = {"error": repr(exc)}
        return (
            f"{self.name}: expected up to seq {max(self.seqs, default=0)}, kinds "
            f"{self.expected_kinds()}\nnow {now}\nlog:\n{self.proc.log()[-3000:]}"
        )

    def done(self) -> bool:
        """Every message meant for it resolved, and the kernel holds exactly its tally."""
        st = self.stats()
        last = max(self.seqs, default=0)
        return bool(
            st["fleet"]["last_resolved_seq"] >= last
            and st["kernel"]["kinds"] == self.expected_kinds()
        )


async def until(
    cond: Callable[[], bool],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> None:
    """Polls ``cond`` (in a thread: it may do HTTP) until it holds."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(cond):
        if time.monotonic() > deadline:
            why = await asyncio.to_thread(explain) if explain is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{why}")
        await asyncio.sleep(0.1)


def typed(samples: Iterable[tuple[int, int]]) -> bytes:
    return json.dumps({"samples": [{"kind": k, "value": v} for k, v in samples]}).encode()


async def publish(
    js: JetStreamContext, subject: str, body: bytes, headers: dict[str, str] | None = None
) -> int:
    """One message, stored once however many retries a server restart costs."""
    hdrs = {"Content-Type": JSON} if headers is None else dict(headers)
    hdrs["Nats-Msg-Id"] = uuid.uuid4().hex
    for attempt in range(40):
        try:
            ack = await js.publish(subject, body, headers=hdrs, timeout=2)
            return int(ack.seq)
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.NoStreamResponseError,  # the stream's leader away: no one answers
        ):
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def send(
    js: JetStreamContext,
    subject: str,
    samples: list[tuple[int, int]],
    nodes: Iterable[FleetNode],
) -> int:
    """A typed batch to ``subject``; every node in ``nodes`` must get it once."""
    seq = await publish(js, subject, typed(samples))
    for n in nodes:
        n.tally.add_all(samples)
        n.seqs.append(seq)
    return seq
