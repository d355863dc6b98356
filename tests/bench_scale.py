"""Figure 11: scale to the cap (#21), every figure of the issue's table beside its baseline, in one run.

``python -m tests.benchmark scale [--deployments 5000] [--stream-clients 1000]``. One real watcher
process (``python -m watcher``, its Docker endpoint a socket that is not there, so only what this
run sends reaches it) is filled through the CI/CD API, step by step: 50, 500, 1,000 then
``--deployments`` deployments, each with three versions (its commit times given, so lead times
are counted; every tenth one fails once and recovers, so recoveries are too). At each step:

- **CPU per report**: once the watcher is idle after the fill, a steady STEADY_RATE reports per
  second for STEADY_SECONDS (each a new version of a deployment already there), the watcher's CPU
  seconds (``/proc/<pid>/stat``) over the reports sent; against the same load at 50 and at 500 deployments;
- **RSS** at 1,000 and at the last step (after SETTLE_SECONDS), and again after serving REQUESTS
  requests per endpoint; against a bare Python with the same libraries imported.

At the last step, from the same process:

- **series per deployment**: the plain-text ``/metrics`` read back, the series with a
  ``deployment`` label over the deployments (the per-environment DORA histograms counted apart);
  against kube-state-metrics' 10-15 per Deployment (the issue's figure; nothing to run here);
- **scrapes**: ``/metrics`` as Prometheus text 0.0.4 plain and gzipped, and OpenMetrics gzipped,
  p50 and p99 of REQUESTS keep-alive GETs each (the whole body read), against ``/health`` the same way,
  and the plain text also against a static aiohttp response of the same size from a server of its own
  (what those bytes cost to cross loopback into this client at the least);
- **SSE fan-out**: ``--stream-clients`` clients on ``/api/v1/events``; a report changes a deployment,
  FANOUT_CHANGES times; p50/p99 over every client and change of the time until it has the event;
  against one client alone.

The load average is printed beside the figures: the development machine's two CPUs are shared.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import random
import resource
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.conftest import OPENMETRICS, WatcherProcess, free_port, start_watcher
from tests.procstats import cpu_seconds, rss_bytes
from tests.streamclients import caps_for

TOKEN = "bench-scale-" + uuid.uuid4().hex
VERSIONS = 3
STEPS = (50, 500, 1000)
STEADY_RATE = 40.0  # reports per second
STEADY_SECONDS = 15.0
SETTLE_SECONDS = 10.0
IDLE_CPU = 0.05  # CPU seconds a second: the watcher idle (a rendering of its own metrics, a tick)
REQUESTS = 200
FANOUT_CHANGES = 20
TEXT = "text/plain;version=0.0.4"
BASE_TIME = 1_700_000_000
MB = 1024 * 1024
# Linux's SO_TIMESTAMPNS (asm-generic/socket.h; Python's socket module does not name it): each read's data
# comes with the time the kernel received it, as a struct timespec (SCM_TIMESTAMPNS, the same number).
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@ll")

Row = tuple[str, str, str, str]


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def report_body(d: int, v: int, *, status: str = "success", patch: int = 0) -> dict[str, object]:
    started = BASE_TIME + v * 600 + patch * 300
    return {
        "deployment": f"service-{d:04d}",
        "environment": ("production", "staging")[d % 2],
        "version": f"1.{v}.{patch}",
        "commit": f"{(d * 7919 + v):040x}",
        "status": status,
        "started_at": started,
        "finished_at": started + 42,
        "commit_time": started - 3600 * (1 + d % 48),
    }


async def fill(port: int, *, first: int, last: int) -> None:
    """Deployments ``first`` … ``last - 1``, each through VERSIONS versions; every tenth fails once and recovers."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as session:
        limit = asyncio.Semaphore(8)

        async def report(d: int, v: int, status: str = "success", patch: int = 0) -> None:
            body = report_body(d, v, status=status, patch=patch)
            async with limit, session.post("/api/v1/deployments", json=body) as response:
                assert response.status in (200, 201), await response.text()

        for v in range(VERSIONS):
            await asyncio.gather(*(report(d, v, "failed" if v == 1 and d % 10 == 0 else "success")
                                   for d in range(first, last)))  # fmt: skip
            if v == 1:
                await asyncio.gather(*(report(d, v, patch=1) for d in range(first, last, 10)))  # the recovery


async def steady(port: int, *, deployments: int, rate: float, seconds: float, seed: int) -> int:
    """Reports at ``rate`` per second for ``seconds``, each a new version of a random deployment; how many."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sent = 0
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as session:
        start = time.monotonic()
        pending: set[asyncio.Task[None]] = set()

        async def report(d: int, n: int) -> None:
            body = report_body(d, VERSIONS) | {"version": f"2.{seed}.{n}", "started_at": BASE_TIME + 86400 + seed * 1000 + n,
                                                "finished_at": BASE_TIME + 86400 + seed * 1000 + n + 42}  # fmt: skip
            async with session.post("/api/v1/deployments", json=body) as response:
                assert response.status in (200, 201), await response.text()

        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                task = asyncio.create_task(report(rng.randrange(deployments), sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*pending)
    return sent


def wait_idle(pid: int, *, deadline: float = 120.0) -> None:
    """Until the process spends under IDLE_CPU of a core over a second: what a fill of thousands of reports
    leaves to do (renderings, the journal's compaction, full collections) takes seconds at 5,000 deployments,
    and counted in the steady load's figure it made the first window after a fill 3× the next ones."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < IDLE_CPU:
            return
    raise AssertionError(f"the watcher was still busy {deadline:g} s after the fill")


def cost_per_report(watcher: WatcherProcess, deployments: int, seed: int) -> float:
    """CPU seconds per report under the steady load."""
    wait_idle(watcher.process.pid)
    before = cpu_seconds(watcher.process.pid)
    sent = asyncio.run(
        steady(watcher.port, deployments=deployments, rate=STEADY_RATE, seconds=STEADY_SECONDS, seed=seed)
    )
    time.sleep(2)  # the last rendering and save of the load
    return (cpu_seconds(watcher.process.pid) - before) / sent


class Client:
    """Keep-alive GETs of one path with given headers, the whole body read."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path, self.headers = path, headers

    def get(self) -> tuple[float, bytes, dict[str, str]]:
        started = time.perf_counter()
        self.connection.request("GET", self.path, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 200, response.status
        return elapsed, body, dict(response.getheaders())

    def times(self, count: int) -> tuple[list[float], int]:
        self.get()  # warm up: a variant nobody asked for is rendered at its first request
        results = [self.get() for _ in range(count)]
        return [r[0] for r in results], len(results[-1][1])


ENDPOINTS: dict[str, tuple[str, dict[str, str]]] = {
    "/health": ("/health", {}),
    "/metrics text": ("/metrics", {"Accept": TEXT}),
    "/metrics text, gzip": ("/metrics", {"Accept": TEXT, "Accept-Encoding": "gzip"}),
    "/metrics OpenMetrics, gzip": ("/metrics", {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}),
    "/api/v1/deployments": ("/api/v1/deployments", {}),
}


def scrapes(port: int) -> dict[str, tuple[list[float], int]]:
    return {name: Client(port, path, headers).times(REQUESTS) for name, (path, headers) in ENDPOINTS.items()}


STATIC = "static aiohttp body, as large as /metrics text"
# The same bytes as a static aiohttp response (one write, no exposition): what crossing loopback into
# this client costs at the least, whatever the watcher does.
STATIC_SERVER = """
import sys
from aiohttp import web
body = b"x" * int(sys.argv[2])
app = web.Application()
app.router.add_get("/static", lambda request: _static())
async def _static():
    return web.Response(body=body)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def static_times(size: int) -> tuple[list[float], int]:
    """REQUESTS keep-alive GETs of a static body of ``size`` bytes from an aiohttp server of its own."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, str(port), str(size)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the static server did not start"
                time.sleep(0.05)
        return Client(port, "/static", {}).times(REQUESTS)
    finally:
        server.terminate()
        server.wait(timeout=30)


def series_per_deployment(port: int, deployments: int) -> tuple[float, int, int]:
    """Series with a deployment label per deployment, series without one (per environment), total deployment series."""
    _, body, headers = Client(port, "/metrics", {"Accept": TEXT}).get()
    text = (gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body).decode()
    labelled = unlabelled = 0
    for line in text.splitlines():
        if line.startswith("deployment_") and not line.startswith("deployment_watcher_"):
            if 'deployment="' in line:
                labelled += 1
            else:
                unlabelled += 1
    return labelled / deployments, unlabelled, labelled


def raw_fan_out(port: int, clients: int, changes: list[Callable[[], object]]) -> list[list[float]]:
    """``clients`` streams read by one selector over plain sockets (a few microseconds a client, where an
    aiohttp client each costs the measuring process more than the watcher spends); per change, the
    seconds until each socket had its ``rollout_started``: when its bytes reached the socket, by the
    kernel's receive timestamp, so that the measuring loop's own pace through a thousand sockets (and
    the GIL it shares with the thread making the change) is not counted as the watcher's."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    selector = selectors.DefaultSelector()
    try:
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: bench\r\n\r\n")
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)

        def until(marker: bytes) -> dict[socket.socket, float]:
            buffers = dict.fromkeys(socks, b"")
            seen: dict[socket.socket, float] = {}
            deadline = time.monotonic() + 60
            while len(seen) < len(socks) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data, ancillary, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(TIMESPEC.size))
                    buffers[sock] += data
                    if sock not in seen and marker in buffers[sock]:
                        seen[sock] = received_at(ancillary)
            assert len(seen) == len(socks), f"{len(socks) - len(seen)} streams without {marker!r}"
            return seen

        until(b"retry:")
        rounds = []
        for change in changes:
            time.sleep(0.5)
            for key, _ in selector.select(timeout=0):  # what came since (the previous change's second event)
                assert isinstance(key.fileobj, socket.socket)
                key.fileobj.recv(1 << 20)
            thread = threading.Thread(target=change)
            start = time.time()  # the kernel's timestamps are CLOCK_REALTIME
            thread.start()
            seen = until(b"event: rollout_started")
            thread.join()
            rounds.append([at - start for at in seen.values()])
        return rounds
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def received_at(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The receive timestamp of the last segment a ``recvmsg`` read (TCP gives the latest one's)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = TIMESPEC.unpack(data[: TIMESPEC.size])
            return float(seconds + nanoseconds / 1e9)
    raise AssertionError("no receive timestamp (SO_TIMESTAMPNS) came with the data")


def fanout(watcher: WatcherProcess, clients: int) -> tuple[list[float], list[float]]:
    """Seconds until each client has each change: with ``clients``, and with one."""
    versions = iter(range(10_000))

    def change() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", watcher.port, timeout=30)
        # A deployment already there: at the cap (retention.max_deployments, 5,000) a new one is refused.
        body = json.dumps({"deployment": "service-0000", "environment": "production",
                           "version": f"3.{next(versions)}.0", "status": "success"})  # fmt: skip
        connection.request("POST", "/api/v1/deployments", body=body, headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        assert response.status in (200, 201), response.read()
        connection.close()

    changes: list[Callable[[], object]] = [change] * FANOUT_CHANGES
    alone = raw_fan_out(watcher.port, 1, changes)
    many = raw_fan_out(watcher.port, clients, changes)
    return [t for r in many for t in r], [t for r in alone for t in r]


def fanout_fresh(tmp: Path, clients: int) -> list[Row]:
    """The fan-out on a watcher of its own, one deployment (as the issue's table measured it: nothing
    else on the loop), beside the same at the cap."""
    watcher = start_watcher(
        tmp, "--log.level=warning", "--stats.enabled=false", f"--docker.host=unix://{tmp}/no-docker-fresh.sock",
        *caps_for(clients), env={"WATCHER_API_TOKEN": TOKEN}, open_files=clients * 2 + 256,
    )  # fmt: skip
    try:
        asyncio.run(fill(watcher.port, first=0, last=1))
        many, one = fanout(watcher, clients)
    finally:
        watcher.stop()
    return [fanout_row(f"{clients:,} clients, one deployment: p50 / p99 / max", many, one)]


def fanout_row(what: str, many: list[float], one: list[float]) -> Row:
    return (what, f"{ms(statistics.median(many))} / {ms(percentile(many, 99))} / {ms(max(many))}",
            f"{ms(statistics.median(one))} / {ms(percentile(one, 99))}",
            f"p99 {percentile(many, 99) / percentile(one, 99):.1f}× one client")  # fmt: skip


def run(*, deployments: int, clients: int) -> list[tuple[str, list[Row]]]:
    """The figures' titles and rows (what, watcher, baseline, ratio)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, clients * 2 + 256)), hard))
    steps = [n for n in STEPS if n < deployments] + [deployments]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    bare = subprocess.Popen(
        [sys.executable, "-c", "import aiodocker, aiohttp, prometheus_client, yaml, time; time.sleep(3600)"]
    )
    watcher = start_watcher(
        tmp, "--log.level=warning", "--stats.enabled=false", f"--docker.host=unix://{tmp}/no-docker.sock",
        *caps_for(clients), env={"WATCHER_API_TOKEN": TOKEN}, open_files=clients * 2 + 256,
    )  # fmt: skip
    costs: dict[int, float] = {}
    rss: dict[str, int] = {}
    loads: list[str] = [load_average()]
    try:
        filled = 0
        for n in steps:
            asyncio.run(fill(watcher.port, first=filled, last=n))
            filled = n
            costs[n] = cost_per_report(watcher, n, seed=n)
            loads.append(load_average())
            if n >= 1000 or n == deployments:
                rss[f"{n:,}"] = rss_bytes(watcher.process.pid)
        per_deployment, per_environment, labelled = series_per_deployment(watcher.port, deployments)
        served = scrapes(watcher.port)
        served[STATIC] = static_times(served["/metrics text"][1])
        loads.append(load_average())
        time.sleep(SETTLE_SECONDS)
        rss["served"] = rss_bytes(watcher.process.pid)
        many, one = fanout(watcher, clients)
        loads.append(load_average())
        bare_rss = rss_bytes(bare.pid)
    finally:
        watcher.stop()
        bare.terminate()
        bare.wait(timeout=30)
    last = f"{deployments:,}"
    health = served["/health"][0]
    rows_rss: list[Row] = [
        (f"RSS at {key} deployments", f"{value / MB:.0f} MB", f"{bare_rss / MB:.0f} MB", f"+{(value - bare_rss) / MB:.0f} MB")
        for key, value in rss.items() if key != "served"
    ]  # fmt: skip
    rows_rss.append((f"RSS at {last} after {REQUESTS} requests per endpoint ({len(ENDPOINTS)})",
                     f"{rss['served'] / MB:.0f} MB", f"{bare_rss / MB:.0f} MB",
                     f"{(rss['served'] - rss[last]) / MB:+.0f} MB from serving"))  # fmt: skip
    first = steps[0]
    at_500 = costs.get(500)
    rows_cpu: list[Row] = [
        (f"CPU per report at {n:,} deployments ({STEADY_RATE:g}/s for {STEADY_SECONDS:g} s)", ms(cost),
         ms(costs[first]), f"{cost / costs[first]:.2f}× {first}" + (f", {cost / at_500:.2f}× 500" if at_500 else ""))
        for n, cost in costs.items()
    ]  # fmt: skip
    rows_series: list[Row] = [
        ("series per deployment (deployment label)", f"{per_deployment:.1f}", "10-15 (kube-state-metrics)", ""),
        (
            f"series per environment (DORA histograms), all of {last}",
            str(per_environment),
            "",
            f"{labelled:,} labelled",
        ),
    ]
    rows_scrape: list[Row] = []
    static = statistics.median(served[STATIC][0])
    for name, (times, size) in served.items():
        p50 = statistics.median(times)
        ratio = f"{p50 / statistics.median(health):.1f}× /health"
        if name == "/metrics text":  # its bytes alone cost more than 10× /health: beside the same bytes served static
            ratio += f", {p50 / static:.2f}× static"
        rows_scrape.append((f"{name}: p50 / p99 ({size:,} bytes)", f"{ms(p50)} / {ms(percentile(times, 99))}",
                            ms(statistics.median(health)), ratio))  # fmt: skip
    rows_fanout = [*fanout_fresh(tmp, clients), fanout_row(f"{clients:,} clients, {last} deployments", many, one)]
    where = (
        f"real watcher, {VERSIONS} versions each, reports through the CI/CD API; load average (1/5/15 min) "
        + " → ".join(loads)
    )
    return [
        (f"11a. Memory ({where})", rows_rss),
        ("11b. CPU per report, steady load (baseline: the same load at 50 deployments)", rows_cpu),
        (f"11c. Series at {last} deployments (default settings)", rows_series),
        (f"11d. Scrapes at {last} deployments, {REQUESTS} keep-alive GETs each (baseline: /health)", rows_scrape),
        (
            f"11e. Event stream fan-out, {FANOUT_CHANGES} changes: from the report until the event reaches each client socket "
            "(baseline: one client)",
            rows_fanout,
        ),
    ]
