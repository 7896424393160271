"""Draw deploy/grafana/ringbridge.json from live data: ``python -m bench.dashboard``.

Not a Grafana screenshot (no Grafana here): every panel's queries, exactly as
the dashboard holds them, evaluated by a real Prometheus (Debian's, see
``make dashboard-png``) that scrapes two real ``ringbridge serve`` while
clients load them, then drawn with matplotlib on the dashboard's own grid:

- the built-in consumer, under mixed clients -- HTTP JSON and binary,
  WebSocket text and binary frames, some ``wait=consumed``, some refused
  batches, a burst that fills the ring, connections that never finish their
  request headers;
- the kernel selftests' protocol object (``tests/fixtures/upstream_style``),
  its replies read out of its kernel ring buffer (``--event-map``): typed
  requests in, the program run by this process's ``prctl(2)``, and two
  subscribers of the replies -- one that reads them all, one that stops
  reading and loses them (``slow_subscriber``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets

from ringbridge.core.ring import encode_batch
from tests.support import promql, upstream
from tests.support.launch import REPO, THIS_PYTHON, served

PROMETHEUS = REPO / "build" / "tools" / "prometheus"
OUT = REPO / "deploy" / "grafana" / "ringbridge.png"
SCRAPE = 1.0
#: What Grafana substitutes for the dashboard's variables here.
VARIABLES = {"$job": "ringbridge", "$instance": ".+", "$__rate_interval": "10s"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def prometheus(targets: list[str], workdir: Path) -> Iterator[str]:
    port = _free_port()
    config = workdir / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        f"global: {{scrape_interval: {SCRAPE:g}s, evaluation_interval: {SCRAPE:g}s}}\n"
        f"scrape_configs:\n  - job_name: ringbridge\n    static_configs:\n"
        f"      - targets: [{listed}]\n"
    )
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                log.flush()
                tail = (workdir / "prometheus.log").read_text()[-2000:]
                raise RuntimeError(f"prometheus did not start:\n{tail}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _sample(kind: int, value: int) -> bytes:
    return kind.to_bytes(4, "little") + bytes(4) + value.to_bytes(8, "little")


async def load(addr: str, seconds: float) -> None:
    """Mixed clients whose rate swells and ebbs, so the panels have shapes."""
    url = f"http://{addr}"
    start = time.monotonic()
    rng = random.Random(16)

    def level() -> float:
        return 0.5 + 0.5 * math.sin((time.monotonic() - start) / seconds * 2 * math.pi)

    async def http_json(c: httpx.AsyncClient) -> None:
        while time.monotonic() - start < seconds:
            n = rng.choice((1, 10, 100))
            samples = [{"kind": rng.randrange(4), "value": rng.randrange(100)} for _ in range(n)]
            wait = "consumed" if rng.random() < 0.3 else "committed"
            await c.post(f"/v1/samples?wait={wait}", json={"samples": samples})
            if rng.random() < 0.05:
                await c.post("/v1/samples", json={"samples": [{"kind": "bad"}]})
            await asyncio.sleep(0.05 * (1.1 - level()))

    async def http_binary(c: httpx.AsyncClient) -> None:
        while time.monotonic() - start < seconds:
            body = encode_batch(_sample(4 + rng.randrange(2), 1) for _ in range(500))
            await c.post(
                "/v1/samples", content=body, headers={"content-type": "application/octet-stream"}
            )
            await asyncio.sleep(0.1 * (1.1 - level()))

    async def ws_frames(wait: str) -> None:
        async with websockets.connect(f"ws://{addr}/v1/stream?wait={wait}", compression=None) as ws:
            i = 0
            while time.monotonic() - start < seconds:
                if i % 3:
                    await ws.send(encode_batch(_sample(6, i) for _ in range(200)))
                else:
                    await ws.send(json.dumps({"id": i, "samples": [{"kind": 7, "value": i}] * 50}))
                await ws.recv()
                i += 1
                await asyncio.sleep(0.02 * (1.1 - level()))

    async def burst() -> None:
        # Halfway through: big frames as fast as acks come, to fill the ring.
        await asyncio.sleep(seconds * 0.6)
        async with websockets.connect(f"ws://{addr}/v1/stream", compression=None) as ws:
            until = time.monotonic() + seconds * 0.1
            while time.monotonic() < until:
                await ws.send(encode_batch(_sample(8, 1) for _ in range(30000)))
                await ws.recv()

    async def unfinished_headers() -> None:
        # Clients that begin a request and never finish its headers: the service
        # cuts each at --header-timeout (10 s), with a 408.
        host, port = addr.rsplit(":", 1)
        held: list[asyncio.StreamWriter] = []
        try:
            while time.monotonic() - start < seconds:
                _reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"POST /v1/samples HTTP/1.1\r\nHost: ringbridge\r\n")
                held.append(writer)
                await asyncio.sleep(2 + 4 * (1 - level()))
        finally:
            for writer in held:
                writer.close()

    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        await asyncio.gather(
            http_json(c), http_json(c), http_binary(c), ws_frames("committed"),
            ws_frames("consumed"), burst(), unfinished_headers(),
        )  # fmt: skip


#: The event map of the protocol object, and its reply type (from its header).
EVENT_MAP = "kernel_ringbuf"


def events_args(pins: Path) -> list[str]:
    """``serve`` flags for the protocol object as its authors left it (no BTF anchor:
    the types come from the header beside it), acting for this process's syscalls."""
    return [
        f"--pin-dir={pins}", f"--bpf-object={upstream.PROTO_OBJ}", "--ring-size=1M",
        f"--map-size={EVENT_MAP}=4M", f"--sample-header={upstream.PROTO_HEADER}",
        "--sample-type=test_msg", f"--event-map={EVENT_MAP}=test_reply",
        f"--set-global=pid={os.getpid()}", "--no-access-log",
    ]  # fmt: skip


async def event_load(addr: str, seconds: float) -> None:
    """Requests to the protocol object, run by our prctl(2); its replies read by one
    subscriber that keeps up and one whose client stops reading after a few."""
    start = time.monotonic()
    url = f"ws://{addr}/v1/events?map={EVENT_MAP}"
    # kern_mutated (an exported global) goes +2, -1: it climbs by one a pair.
    inc = {"msg_op": "TEST_MSG_OP_INC64", "operand_64": 2}
    dec = {"msg_op": "TEST_MSG_OP_INC32", "operand_32": -1}

    async def requests(c: httpx.AsyncClient) -> None:
        while time.monotonic() - start < seconds:
            phase = (time.monotonic() - start) / seconds * 2 * math.pi
            n = int(12 + 12 * (1 + math.sin(phase)))  # 2n: 250-750 events/s
            r = await c.post("/v1/samples", json={"samples": [inc, dec] * n})
            r.raise_for_status()
            upstream.prctl()  # the program drains the requests and publishes replies
            await asyncio.sleep(0.1)

    async def reader() -> None:
        # Keeps up, mostly: this process is busy loading both servers, and a
        # subscriber the server gave up on (pings unanswered) subscribes again.
        while time.monotonic() - start < seconds:
            try:
                async with websockets.connect(url, compression=None, ping_interval=None) as ws:
                    while time.monotonic() - start < seconds:
                        try:
                            await asyncio.wait_for(ws.recv(), timeout=1)
                        except TimeoutError:
                            continue
            except websockets.ConnectionClosed:
                continue

    async def stalled() -> None:
        # A small receive buffer and a client queue of 4: once full, TCP pushes
        # back, the server's buffer for it fills and it loses the rest.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = addr.rsplit(":", 1)
        sock.connect((host, int(port)))
        sock.setblocking(False)
        async with websockets.connect(
            url, compression=None, ping_interval=None, sock=sock, max_queue=4
        ):
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - start)))

    async def burst(c: httpx.AsyncClient) -> None:
        # More events at once than the stalled subscriber's socket buffers hold
        # (the server's grows to 4 MiB), before the server's keep-alive ping
        # gives up on it (about 40 s): the rest are lost to it.
        await asyncio.sleep(min(20.0, seconds * 0.15))
        for _ in range(3):
            r = await c.post("/v1/samples", json={"samples": [inc, dec] * 10_000})
            r.raise_for_status()
            upstream.prctl()

    async with httpx.AsyncClient(base_url=f"http://{addr}", timeout=30) as c:
        await asyncio.gather(requests(c), burst(c), reader(), stalled())


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    r = httpx.get(
        f"{url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": "2s"},
        timeout=30,
    )
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def legend(fmt: str, labels: dict[str, str]) -> str:
    return fmt.replace("{{", "{").replace("}}", "}").format_map(_Blank(labels)).strip() or "value"


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def draw(url: str, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = promql.dashboard_panels()
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.42  # inches per grid unit of height
    fig = plt.figure(figsize=(24, rows * unit_h))
    fig.patch.set_facecolor("#111217")
    for p in panels:
        g = p["gridPos"]
        box = [g["x"] / 24 + 0.004, 1 - (g["y"] + g["h"]) / rows + 0.012, g["w"] / 24 - 0.008]
        box.append(g["h"] / rows - 0.024)
        if p["type"] == "row":
            fig.text(0.005, 1 - (g["y"] + 0.7) / rows, p["title"], color="#d8d9da",
                     fontsize=13, weight="bold")  # fmt: skip
            continue
        ax = fig.add_axes(tuple(box))
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#2f3136")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        ax.set_title(p["title"], color="#d8d9da", fontsize=9, loc="left")
        series = [(t, s) for t in p["targets"] for s in query_range(url, t["expr"], start, end)]
        if p["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            text = "no data"
            if series:
                t, s = series[0]
                last = float(s["values"][-1][1])
                defaults = p["fieldConfig"]["defaults"]
                mapped = {
                    k: v["text"]
                    for m in defaults.get("mappings", [])
                    for k, v in m["options"].items()
                }
                if t["legendFormat"]:
                    text = legend(t["legendFormat"], s["metric"])
                elif f"{last:g}" in mapped:
                    text = mapped[f"{last:g}"]
                elif defaults.get("unit") == "s":
                    text = f"{last:.0f} s"
                elif defaults.get("unit") == "percentunit":
                    text = f"{100 * last:.1f}%"
                else:
                    text = f"{last:.4g}"
            ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=20, color="#73bf69",
                    transform=ax.transAxes)  # fmt: skip
            continue
        if p["type"] == "heatmap":
            buckets = sorted(
                ((float(s["metric"]["le"]), s) for _t, s in series), key=lambda b: b[0]
            )
            grid = [[float(v) for _ts, v in s["values"]] for _le, s in buckets]
            if grid:
                ax.imshow(grid, aspect="auto", origin="lower", cmap="Oranges", interpolation="none")
                ax.set_yticks(range(len(buckets)))
                ax.set_yticklabels([f"{le:g}" for le, _s in buckets], fontsize=5)
                ax.set_xticks([])
            continue
        for t, s in series:
            xs = [float(ts) - start for ts, _v in s["values"]]
            ys = [float(v) for _ts, v in s["values"]]
            ax.plot(xs, ys, linewidth=1, label=legend(t["legendFormat"], s["metric"]))
        if series:
            ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", labelcolor="#d8d9da",
                      framealpha=0.6, ncol=2)  # fmt: skip
        else:
            ax.text(0.5, 0.5, "no data", ha="center", color="#9fa7b3", transform=ax.transAxes)
        ax.set_xlabel("s", color="#9fa7b3", fontsize=7)
    fig.savefig(out, dpi=70, facecolor=fig.get_facecolor())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not PROMETHEUS.exists():
        raise SystemExit("no build/tools/prometheus: run `make dashboard-png`")
    upstream.ensure_built()
    workdir = Path(tempfile.mkdtemp(prefix="ringbridge-dashboard-"))
    pins = Path("/sys/fs/bpf") / workdir.name
    event_pins = Path("/sys/fs/bpf") / f"{workdir.name}-events"
    try:
        with (
            served(
                [f"--pin-dir={pins}", "--ring-size=1M", "--no-access-log"], workdir / "serve.log"
            ) as addr,
            served(events_args(event_pins), workdir / "serve-events.log") as events_addr,
            prometheus([addr, events_addr], workdir) as url,
        ):
            time.sleep(3 * SCRAPE)
            start = time.time()
            print(
                f"dashboard: loading {addr} and {events_addr} for {args.seconds:.0f} s, "
                f"Prometheus at {url}"
            )

            async def both() -> None:
                await asyncio.gather(
                    load(addr, args.seconds), event_load(events_addr, args.seconds)
                )

            asyncio.run(both())
            time.sleep(3 * SCRAPE)
            draw(url, start, time.time(), args.out)
        print(f"dashboard: wrote {args.out}")
    finally:
        for p in (pins, event_pins):
            subprocess.run([*THIS_PYTHON, "unpin", f"--pin-dir={p}"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
