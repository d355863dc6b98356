"""Benchmarks against baselines measured in the same run; run on purpose, not by CI.

    python -m tests.benchmark              # all figures (as root, with a Docker Engine running)
    python -m tests.benchmark metrics lag  # some of them: stats, metrics, lag, memory, state, readapi, fanout, board
    python -m tests.benchmark analysis --minutes 10  # rollout analysis: a real Prometheus (tests/bench_analysis.py)
    python -m tests.benchmark scale --deployments 5000 --stream-clients 1000  # #21's table (tests/bench_scale.py)
    python -m tests.benchmark soak --minutes 10  # the chaos soak (tests/soak.py); no Docker needed, not in "all"

Each figure prints what the watcher did and a baseline measured just before or after on
the same machine, so the ratio holds even where the absolute numbers do not.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from tests import bench_analysis, bench_board, bench_scale, soak
from tests.conftest import BUSYBOX_IMAGE, OPENMETRICS, busybox_tarball, docker, free_port, require_binary, start_watcher
from tests.procstats import cpu_seconds, rss_bytes
from tests.served import serving
from tests.streamclients import caps_for, fan_out
from tests.swarm_cluster import SwarmCluster
from watcher.config import Settings, load
from watcher.domain.machine import apply
from watcher.domain.model import DeploymentKey, Health, Identity, Instance, State, Usage
from watcher.domain.observations import InstanceChange, InstanceSeen, Observation, UsageSampled
from watcher.exposition.families import DeploymentCollector
from watcher.exposition.rendering import Exposition
from watcher.runtime.compose import Watcher
from watcher.selfmetrics import SelfMetrics
from watcher.sources import jsonfields
from watcher.sources.docker import causes as docker_causes
from watcher.sources.docker.watch import DockerWatch
from watcher.sources.engine import Engine
from watcher.sources.stats.sampling import ApiStats, open_source
from watcher.web.app import make_app
from watcher.web.board import Board
from watcher.web.boardparts import PAGE_ROWS
from watcher.web.readapi import ReadApi
from watcher.web.stream import EventStream

LABEL = "deployment-watcher.benchmark"  # on every container made here, for cleanup


# -- helpers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def dockerd_pid() -> int:
    return int(subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0])


@dataclass
class Figure:
    name: str
    rows: list[tuple[str, str, str, str]]  # what, watcher, baseline, ratio

    def print(self) -> None:
        print(f"\n## {self.name}")
        width = max(len(r[0]) for r in self.rows)
        for what, ours, base, ratio in self.rows:
            print(f"  {what:<{width}}  {ours:>14}  baseline {base:>14}  {ratio}")


def run_containers(
    prefix: str, count: int, *, labels: Callable[[int], dict[str, str]], command: str, at_once: int = 16
) -> list[str]:
    """Start ``count`` containers through the API, ``at_once`` at a time; returns their ids."""
    names = [f"{prefix}-{i}" for i in range(count)]

    async def one(client: aiodocker.Docker, name: str, index: int) -> str:
        config: dict[str, Any] = {
            "Image": BUSYBOX_IMAGE,
            "Cmd": ["sh", "-c", command],
            "Labels": {LABEL: "1", **labels(index)},
            "HostConfig": {"NetworkMode": "none"},
        }
        container = await client.containers.run(config=config, name=name)
        return str(container.id)

    async def all_() -> list[str]:
        async with aiodocker.Docker() as client:
            limit = asyncio.Semaphore(at_once)

            async def bounded(name: str, index: int) -> str:
                async with limit:
                    return await one(client, name, index)

            return await asyncio.gather(*(bounded(n, i) for i, n in enumerate(names)))

    return asyncio.run(all_())


def remove_benchmark_containers() -> None:
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}").split()
    if ids:
        docker("rm", "-f", *ids, timeout=300)


@contextmanager
def cleanup() -> Iterator[None]:
    remove_benchmark_containers()
    try:
        yield
    finally:
        remove_benchmark_containers()


# -- figure 3 and 5: event lag in a burst, and the state machine on what it recorded


EventKey = tuple[str, float]  # (container id, the event's time): one event


@dataclass
class Recording:
    observations: list[tuple[float, Observation]]  # (now, observation) as the watcher applied them
    received: dict[EventKey, float]  # bursts only: when the watcher read each event off the stream
    applied: dict[EventKey, float]  # bursts only: when each event was first applied
    baseline: dict[EventKey, float]  # bursts only: when a bare subscriber (`docker events`) received it
    loop_delays: list[float]  # a bare asyncio loop in another process: how late its 1 ms sleeps woke
    burst_seconds: list[float]  # each burst's span, first to last event

    @property
    def lags(self) -> list[float]:
        """Seconds from each event's timeNano to the watcher applying it."""
        return [now - at for (_, at), now in self.applied.items()]

    @property
    def baseline_lags(self) -> list[float]:
        return [now - at for (_, at), now in self.baseline.items()]

    @property
    def handling(self) -> list[float]:
        """Per event, in the watcher: read off the stream → applied."""
        return [now - self.received[key] for key, now in self.applied.items() if key in self.received]

    @property
    def burst_rate(self) -> float:
        """Events per second the daemon produced during the bursts."""
        return len(self.baseline) / max(1e-9, sum(self.burst_seconds))


def _event_key(event: Mapping[str, Any]) -> EventKey | None:
    container_id, at = docker_causes.event_id(event), jsonfields.event_time(event)
    return (container_id, at) if container_id and at is not None else None


async def _bursts_in_process(*, rollouts: int, bursts: int, at_once: int, prefix: str) -> tuple[Recording, float]:
    """A watcher in this process; ``bursts`` times, a new version of every deployment started by
    another process (``at_once`` containers at a time); per-event times, and the same events
    seen by `docker events`."""
    settings = load(
        environ={},
        flags={"web.listen_address": "127.0.0.1:0", "stats.enabled": "false", "rollout.stable_seconds": "1"},
    )
    service = Watcher(settings)
    docker = next(s for s in service.sources if isinstance(s, DockerWatch))
    recorded: list[tuple[float, Observation]] = []
    received: dict[EventKey, float] = {}
    applied: dict[EventKey, float] = {}
    measuring = False
    submit, handle = service.core.submit, docker._handle

    def recording_submit(observation: Observation) -> None:
        submit(observation)
        now = time.time()
        recorded.append((now, observation))
        if measuring and isinstance(observation, InstanceSeen | InstanceChange):
            # The inspect after a start carries the start's time: the event was applied before.
            instance_id = observation.instance.id if isinstance(observation, InstanceSeen) else observation.instance_id
            applied.setdefault((instance_id, observation.at), now)

    def recording_handle(engine: Engine, event: Mapping[str, Any], work: Any) -> None:
        if measuring and (key := _event_key(event)):
            received[key] = time.time()
        handle(engine, event, work)

    docker.submit = recording_submit
    docker._handle = recording_handle  # type: ignore[method-assign]  # a probe, for this figure only
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop=stop))
    while not docker.fresh():
        await asyncio.sleep(0.05)

    def on_version(version: str) -> int:
        return sum(1 for d in service.core.state.deployments.values() if d.rollout.version == version)

    await asyncio.to_thread(
        run_containers, f"{prefix}-v1", rollouts,
        labels=lambda i: {"deployment.name": f"{prefix}-{i}", "deployment.version": "1.0.0"}, command="sleep 3600",
    )  # fmt: skip
    while on_version("1.0.0") < rollouts:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    cli, loop = CliEvents(), LoopDelays()
    await asyncio.sleep(0.5)
    measuring = True
    started = time.time()
    spans = []
    for burst in range(bursts):
        version = f"{burst + 2}.0.0"
        first = len(cli.received)
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tests.benchmark", "--burst-worker", prefix, str(rollouts), version, str(at_once)],
            check=True,
        )
        while on_version(version) < rollouts:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1)
        times = [at for _, at in list(cli.received)[first:]]
        spans.append(max(times) - min(times))
    seconds = time.time() - started
    baseline, delays = cli.stop(), loop.stop()
    stop.set()
    await task
    return Recording(recorded, received, applied, baseline, delays, spans), seconds


class CliEvents:
    """`docker events` in a child process; when each event's line arrives, in a thread."""

    def __init__(self) -> None:
        self.received: dict[EventKey, float] = {}
        self.process = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--format", "{{.Actor.ID}} {{.TimeNano}}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            now = time.time()
            container_id, nanos = line.split()
            self.received[(container_id, int(nanos) / 1e9)] = now  # the watcher's arithmetic: same float

    def stop(self) -> dict[EventKey, float]:
        self.process.terminate()
        self.thread.join(timeout=10)
        return self.received


class LoopDelays:
    """A bare asyncio loop in a child process sleeping 1 ms at a time: how late it wakes is what
    the host's scheduler alone costs any process (the watcher, dockerd, `docker events`)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmark", "--loop-delay-worker"], stdout=subprocess.PIPE, text=True
        )

    def stop(self) -> list[float]:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return [float(x) for x in json.loads(out)]


def _loop_delay_worker() -> None:
    """Run in a child process until SIGTERM; prints the wake-up delays as JSON."""
    delays: list[float] = []

    async def sleep_until_stopped() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            delays.append(time.perf_counter() - started - 0.001)

    asyncio.run(sleep_until_stopped())
    print(json.dumps(delays))


def _burst_worker(prefix: str, rollouts: int, version: str, at_once: int) -> None:
    """Run in a child process: start ``version`` of every deployment."""
    run_containers(
        f"{prefix}-v{version}",
        rollouts,
        labels=lambda i: {"deployment.name": f"{prefix}-{i}", "deployment.version": version},
        command="sleep 3600",
        at_once=at_once,
    )


def figure_state_machine(recording: Recording, *, repeat: int = 20) -> Figure:
    """Replay what the watcher applied through the pure state machine, fast as it goes."""
    settings = Settings()
    observations = recording.observations
    started = time.perf_counter()
    for _ in range(repeat):
        state = State()
        for now, observation in observations:
            state = apply(state, observation, now=now, settings=settings).state
    elapsed = time.perf_counter() - started
    rate = len(observations) * repeat / elapsed
    peak = recording.burst_rate
    return Figure(
        f"5. State machine throughput, replaying the {len(observations)} observations recorded above "
        "(baseline: the rate the daemon emitted them in the burst)",
        [("observations per second", f"{rate:,.0f}/s", f"{peak:,.0f}/s", f"{rate / peak:,.0f}×")],
    )


# -- figure 1: a stats round


def daemon_pids() -> list[int]:
    """dockerd, containerd and the shims: the daemon side of a stats request."""
    found = subprocess.run(
        ["pidof", "dockerd", "containerd", "containerd-shim-runc-v2"], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in found.split()]


def daemon_cpu() -> float:
    total = 0.0
    for pid in daemon_pids():
        with suppress(OSError):  # a shim that just ended
            total += cpu_seconds(pid)
    return total


@dataclass
class Round:
    wall: float
    cpu: float  # seconds: the sampler and the daemon side together
    samples: int


async def _watcher_rounds(ids: list[str], *, source: str, rounds: int) -> list[Round]:
    """Rounds of the watcher's own stats source, after one round that finds the files."""
    settings = load(environ={}, flags={"stats.source": source})
    async with Engine.open(settings.docker) as engine:
        api = ApiStats(engine, concurrency=settings.stats.concurrency, timeout=30)
        sampler = await open_source(settings=settings, engine=engine, api=api, chosen=lambda _: None)
        assert sampler is not None
        await sampler.sample(ids)
        results = []
        for _ in range(rounds):
            cpu, daemon, started = time.process_time(), daemon_cpu(), time.perf_counter()
            usage, errors = await sampler.sample(ids)
            wall = time.perf_counter() - started
            results.append(Round(wall, time.process_time() - cpu + daemon_cpu() - daemon, len(usage)))
            assert not errors, f"{errors} containers could not be sampled"
    return results


def _cli_round(ids: list[str]) -> Round:
    children, daemon, started = resource.getrusage(resource.RUSAGE_CHILDREN), daemon_cpu(), time.perf_counter()
    output = docker("stats", "--no-stream", "--format", "{{.ID}} {{.CPUPerc}} {{.MemUsage}}", *ids, timeout=300)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return Round(wall, cli + daemon_cpu() - daemon, len(output.splitlines()))


def figure_stats(*, containers: int, rounds: int = 5) -> Figure:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    with cleanup():
        ids = run_containers(prefix, containers, labels=lambda i: {}, command="sleep 3600")
        cgroup = asyncio.run(_watcher_rounds(ids, source="cgroup", rounds=rounds))
        cli = [_cli_round(ids) for _ in range(rounds)]
        api = asyncio.run(_watcher_rounds(ids, source="api", rounds=2))
    assert all(r.samples == containers for r in cgroup + cli), "a round missed containers"

    def median(rows: list[Round], what: str) -> float:
        return float(statistics.median(getattr(r, what) for r in rows))

    return Figure(
        f"1. Stats round over {containers} running containers (median of {rounds}; CPU: sampler + "
        "dockerd, containerd, shims; baseline: `docker stats --no-stream`)",
        [
            ("wall time, cgroup files", ms(median(cgroup, "wall")), ms(median(cli, "wall")),
             f"{median(cli, 'wall') / median(cgroup, 'wall'):.0f}× faster"),
            ("CPU seconds, cgroup files", f"{median(cgroup, 'cpu'):.3f} s", f"{median(cli, 'cpu'):.3f} s",
             f"{median(cli, 'cpu') / max(median(cgroup, 'cpu'), 1e-3):.0f}× less"),
            ("wall time, stats API", ms(median(api, "wall")), ms(median(cli, "wall")), "(the fallback source)"),
            ("CPU seconds, stats API", f"{median(api, 'cpu'):.3f} s", f"{median(cli, 'cpu'):.3f} s", ""),
        ],
    )  # fmt: skip


# -- figure 2: /metrics at 1,000 deployments


def synthetic_state(*, deployments: int, versions: int = 10, settings: Settings) -> State:
    """Deployments with a history of ``versions`` rollouts, a healthcheck each, and usage."""
    state, now = State(), 1_700_000_000.0
    for v in range(versions):
        seen: list[Observation] = []
        for d in range(deployments):
            now += 0.001
            identity = Identity(
                key=DeploymentKey(f"service-{d:04d}", ("production", "staging")[d % 2]),
                version=f"1.{v}.{d % 7}",
                commit=f"{(d * 7919 + v):040x}",
                image=f"registry.example.com/team/service-{d:04d}:1.{v}.{d % 7}",
                created_at=now,
                deployed_at=now,
            )
            instance = Instance(
                id=f"{d:032x}{v:032x}",
                identity=identity,
                running=True,
                running_since=now,
                has_healthcheck=True,
                health=Health.HEALTHY,
            )
            seen.append(InstanceSeen(now, instance))
        for observation in seen:
            state = apply(state, observation, now=now, settings=settings).state
    usage = {i: Usage(cpu_seconds=12.5, memory_bytes=64e6) for i in state.running_instance_ids()}
    return apply(state, UsageSampled(now, usage), now=now, settings=settings).state


class Scraper:
    """Keep-alive GETs of one URL, as Prometheus scrapes (gzip asked for)."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def scrape(self, path: str = "/metrics") -> tuple[float, int]:
        """Seconds until the whole body arrived, and its size on the wire."""
        started = time.perf_counter()
        self.connection.request("GET", path, headers={"Accept": OPENMETRICS, "Accept-Encoding": "gzip"})
        response = self.connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 200, response.status
        return elapsed, len(body)


def measure_scrapes(port: int, *, count: int) -> tuple[list[float], int]:
    scraper = Scraper(port)
    scraper.scrape()  # warm up
    results = [scraper.scrape() for _ in range(count)]
    return [r[0] for r in results], results[-1][1]


def figure_metrics(*, deployments: int, scrapes: int = 200) -> Figure:
    settings = Settings()
    state = synthetic_state(deployments=deployments, settings=settings)
    registry = CollectorRegistry()
    SelfMetrics(registry)
    registry.register(DeploymentCollector(snapshot=lambda: state, settings=settings))
    baseline_app = web.Application()
    baseline_app.router.add_get("/metrics", make_aiohttp_handler(registry))
    with serving(baseline_app) as port:
        base, base_bytes = measure_scrapes(port, count=scrapes)
    own = CollectorRegistry()
    exposition = Exposition(snapshot=lambda: state, registry=own, settings=settings, metrics=SelfMetrics(own))
    with serving(make_app(exposition=exposition, ready=lambda: True)) as port:
        ours, our_bytes = measure_scrapes(port, count=scrapes)
    series = sum(len(f.samples) for f in registry.collect())
    return Figure(
        f"2. /metrics at {deployments:,} deployments ({series:,} series; OpenMetrics, gzip; "
        "baseline: prometheus-client's make_aiohttp_handler on the same registry)",
        [
            ("median", ms(statistics.median(ours)), ms(statistics.median(base)), ratio(base, ours, 50)),
            ("p99", ms(percentile(ours, 99)), ms(percentile(base, 99)), ratio(base, ours, 99)),
            ("bytes", f"{our_bytes:,}", f"{base_bytes:,}", ""),
        ],
    )


def ratio(baseline: list[float], ours: list[float], q: float) -> str:
    return f"{percentile(baseline, q) / percentile(ours, q):.1f}× faster"


# -- figure 4: memory and idle CPU of a real watcher process


IDLE_SECONDS = 30.0
SETTLE_SECONDS = 10.0
SCRAPE_EVERY = 15.0  # Prometheus' default scrape interval
TOKEN = "benchmark-token-" + uuid.uuid4().hex


def _idle(pid: int, port: int) -> tuple[float, int]:
    """CPU share of one core over IDLE_SECONDS with scrapes every SCRAPE_EVERY, then RSS."""
    scraper = Scraper(port) if port else None
    cpu, started = cpu_seconds(pid), time.monotonic()
    while (left := IDLE_SECONDS - (time.monotonic() - started)) > 0:
        if scraper:
            scraper.scrape()
        time.sleep(min(SCRAPE_EVERY, left))
    return (cpu_seconds(pid) - cpu) / (time.monotonic() - started), rss_bytes(pid)


async def _report_deployments(port: int, *, deployments: int, versions: int) -> None:
    """Each deployment rolled through ``versions`` versions, through the CI/CD API."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as session:
        limit = asyncio.Semaphore(8)

        async def report(d: int, v: int) -> None:
            body = {
                "deployment": f"service-{d:04d}",
                "environment": ("production", "staging")[d % 2],
                "version": f"1.{v}.0",
                "commit": f"{(d * 7919 + v):040x}",
                "status": "success",
                "started_at": 1_700_000_000 + v * 600,
                "finished_at": 1_700_000_000 + v * 600 + 42,
            }
            async with limit, session.post("/api/v1/deployments", json=body) as response:
                assert response.status in (200, 201), await response.text()

        for v in range(versions):
            await asyncio.gather(*(report(d, v) for d in range(deployments)))


def figure_memory(*, deployments: int, versions: int = 5) -> Figure:
    port = free_port()
    data = tempfile.mkdtemp(prefix="watcher-benchmark-")  # the state file is part of the cost
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watcher",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warning",
            f"--storage.directory={data}",
        ],
        env={**os.environ, "WATCHER_API_TOKEN": TOKEN},
    )
    # Baseline: a Python with the same libraries imported, doing nothing.
    bare = subprocess.Popen(
        [sys.executable, "-c", "import aiodocker, aiohttp, prometheus_client, yaml, time; time.sleep(3600)"]
    )
    try:
        scraper = None
        for _ in range(100):
            with suppress(OSError):
                scraper = Scraper(port)
                scraper.scrape("/health")
                break
            time.sleep(0.1)
        assert scraper is not None, "the watcher did not start"
        time.sleep(2)
        (idle_cpu, idle_rss), (bare_cpu, bare_rss) = _idle(watcher.pid, port), _idle(bare.pid, 0)
        asyncio.run(_report_deployments(port, deployments=deployments, versions=versions))
        time.sleep(SETTLE_SECONDS)  # the last rendering and state file save after the reports
        busy_cpu, busy_rss = _idle(watcher.pid, port)
    finally:
        for process in (watcher, bare):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
    mb = 1024 * 1024
    return Figure(
        f"4. Memory and idle CPU of `python -m watcher` (scraped every {SCRAPE_EVERY:g} s over {IDLE_SECONDS:g} s; "
        f"{deployments:,} deployments × {versions} versions reported through the API; baseline: a Python "
        "with the same libraries imported)",
        [
            ("RSS idle, no deployments", f"{idle_rss / mb:.1f} MB", f"{bare_rss / mb:.1f} MB",
             f"+{(idle_rss - bare_rss) / mb:.1f} MB"),
            (f"RSS at {deployments:,} deployments", f"{busy_rss / mb:.1f} MB", f"{bare_rss / mb:.1f} MB",
             f"+{(busy_rss - bare_rss) / mb:.1f} MB"),
            ("CPU idle, no deployments", f"{idle_cpu:.2%}", f"{bare_cpu:.2%}", "of one core"),
            (f"CPU idle at {deployments:,} deployments", f"{busy_cpu:.2%}", f"{bare_cpu:.2%}", "of one core"),
        ],
    )  # fmt: skip


def figure_lag(*, rollouts: int, bursts: int, at_once: int) -> Recording:
    """Figure 3, printed; the recording feeds figure 5."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    with cleanup():
        recording, seconds = asyncio.run(
            _bursts_in_process(rollouts=rollouts, bursts=bursts, at_once=at_once, prefix=prefix)
        )
    lags, baseline = recording.lags, recording.baseline_lags
    handling, delays = recording.handling, recording.loop_delays
    Figure(
        f"3. Event lag, {bursts} bursts of {rollouts} simultaneous rollouts, their containers started "
        f"{at_once} at a time ({len(lags)} events applied in {seconds:.1f} s; baseline: `docker events` "
        "receiving the same events)",
        [
            *(
                (f"p{q}, timeNano → applied", ms(percentile(lags, q)), ms(percentile(baseline, q)),
                 f"{percentile(lags, q) / percentile(baseline, q):.1f}×")
                for q in (50, 99)
            ),
            *(
                (f"p{q}, in the watcher: read off the stream → applied", ms(percentile(handling, q)), "", "")
                for q in (50, 99)
            ),
            ("host floor: a bare asyncio loop's 1 ms sleeps woke late by, p99 / max",
             f"{ms(percentile(delays, 99))} / {ms(max(delays))}", "", f"{len(delays):,} sleeps"),
        ],
    ).print()  # fmt: skip
    return recording


# -- figures 6-8: the read side (JSON API, event stream, board)


def read_side_app(snapshot: Callable[[], State], settings: Settings) -> web.Application:
    """The watcher's app with the board, the read API and the stream over ``snapshot``."""
    own = CollectorRegistry()
    metrics = SelfMetrics(own)
    exposition = Exposition(snapshot=snapshot, registry=own, settings=settings, metrics=metrics)
    stream = EventStream(snapshot=snapshot, settings=settings, metrics=metrics)
    app = make_app(exposition=exposition, ready=lambda: True,
                   board=Board(snapshot=snapshot, settings=settings, stream=stream, clock=time.time, metrics=metrics))  # fmt: skip
    app.add_routes(ReadApi(snapshot=snapshot, settings=settings, stream=stream, ready=lambda: True).routes())
    return app


def times_of(scraper: Scraper, path: str, count: int) -> tuple[list[float], int]:
    scraper.scrape(path)  # warm up: the first rendering or encoding
    results = [scraper.scrape(path) for _ in range(count)]
    return [r[0] for r in results], results[-1][1]


def of(baseline: list[float], ours: list[float], q: float) -> str:
    return f"{percentile(ours, q) / percentile(baseline, q):.2f}× the baseline"


def figure_read_api(*, deployments: int, requests: int = 200) -> Figure:
    settings = Settings()
    state = synthetic_state(deployments=deployments, settings=settings)
    keys = sorted(state.deployments)
    mode = {"changed": 0}  # deployments changed (new objects) before each GET

    def snapshot() -> State:
        if not mode["changed"]:
            return state
        fresh = dict(state.deployments)
        for key in keys[: mode["changed"]]:
            fresh[key] = dataclasses.replace(fresh[key])  # an equal copy: a changed deployment to the cache
        return State(fresh, state.owners)

    with serving(read_side_app(snapshot, settings)) as port:
        scraper = Scraper(port)
        base, base_bytes = times_of(scraper, "/metrics", requests)
        ours, our_bytes = times_of(scraper, "/api/v1/deployments", requests)
        mode["changed"] = 1
        one, _ = times_of(scraper, "/api/v1/deployments", requests)
        mode["changed"] = deployments
        every, _ = times_of(scraper, "/api/v1/deployments", requests // 4)
    return Figure(
        f"6. GET /api/v1/deployments at {deployments:,} deployments (baseline: GET /metrics of the same "
        "state from the same app, OpenMetrics, gzip)",
        [
            ("median, state unchanged", ms(statistics.median(ours)), ms(statistics.median(base)), of(base, ours, 50)),
            ("p99, state unchanged", ms(percentile(ours, 99)), ms(percentile(base, 99)), of(base, ours, 99)),
            (
                "median, 1 deployment changed before each GET",
                ms(statistics.median(one)),
                ms(statistics.median(base)),
                of(base, one, 50),
            ),
            (
                "p99, 1 deployment changed before each GET",
                ms(percentile(one, 99)),
                ms(percentile(base, 99)),
                of(base, one, 99),
            ),
            (
                "median, every deployment changed before each GET",
                ms(statistics.median(every)),
                ms(statistics.median(base)),
                of(base, every, 50),
            ),
            (
                "p99, every deployment changed before each GET",
                ms(percentile(every, 99)),
                ms(percentile(base, 99)),
                of(base, every, 99),
            ),
            ("bytes (JSON unzipped; metrics gzip)", f"{our_bytes:,}", f"{base_bytes:,}", ""),
        ],
    )


def figure_fanout(*, clients: int, rounds: int = 5) -> Figure:
    """A real watcher process: ``clients`` on its stream, a report changes a deployment, until the last has it."""
    with tempfile.TemporaryDirectory() as tmp:
        watcher = start_watcher(
            Path(tmp), "--stats.enabled=false", *caps_for(clients), env={"WATCHER_API_TOKEN": TOKEN}
        )
        try:
            versions = iter(range(10_000))

            def change() -> None:
                connection = http.client.HTTPConnection("127.0.0.1", watcher.port, timeout=30)
                body = json.dumps({"deployment": "fanout", "version": f"1.{next(versions)}.0", "status": "success"})
                connection.request("POST", "/api/v1/deployments", body=body,
                                   headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
                assert connection.getresponse().status in (200, 201)
                connection.close()

            alone = asyncio.run(fan_out(watcher.url, 1, [change] * rounds))
            many = asyncio.run(fan_out(watcher.url, clients, [change] * rounds))
        finally:
            watcher.stop()
    last = [max(r) for r in many]
    one = [r[0] for r in alone]
    every = [t for r in many for t in r]
    return Figure(
        f"7. Event stream fan-out: a report changes a deployment; time until the last of {clients} stream clients "
        f"has the event, {rounds} changes (real watcher process, clients in one asyncio process on the same "
        "machine; baseline: one client)",
        [
            (
                "last client, median of changes",
                ms(statistics.median(last)),
                ms(statistics.median(one)),
                f"{statistics.median(last) / statistics.median(one):.1f}× one client",
            ),
            ("last client, worst change", ms(max(last)), ms(max(one)), ""),
            ("median client", ms(statistics.median(every)), ms(statistics.median(one)), ""),
        ],
    )


def figure_board(*, deployments: int, loads: int = 5) -> Figure:
    """The board's first render in headless Chromium: until the table is drawn, and until it is live."""
    from playwright.sync_api import expect, sync_playwright

    settings = Settings()
    small = synthetic_state(deployments=10, settings=settings)
    large = synthetic_state(deployments=deployments, settings=settings)

    def load(page: Any, port: int) -> tuple[float, float, float]:
        """Seconds to DOMContentLoaded and to the load event (navigation timing), and until the stream is live."""
        started = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
        expect(page.locator("#live")).to_have_text("live")  # Playwright's own world: the page's CSP allows no eval
        live = time.perf_counter() - started
        timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
        entry = json.loads(timing)
        return entry["domContentLoadedEventEnd"] / 1000, entry["loadEventEnd"] / 1000, live

    results: dict[str, list[tuple[float, float, float]]] = {}
    # The servers' loops start before Playwright's: its sync API runs a loop of its own in this thread.
    with (
        serving(read_side_app(lambda: small, settings)) as small_port,
        serving(read_side_app(lambda: large, settings)) as large_port,
        tempfile.TemporaryDirectory() as profile,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=require_binary("chromium"), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )  # fmt: skip
        try:
            for label, port, state in (("small", small_port, small), ("large", large_port, large)):
                page = browser.new_page()
                load(page, port)  # warm up: the browser's caches, the server's first rendering
                results[label] = [load(page, port) for _ in range(loads)]
                drawn = page.locator("#deployments tbody tr").count()
                assert drawn == min(len(state.deployments), PAGE_ROWS), drawn  # a page of them
                page.close()
        finally:
            browser.close()

    def median(label: str, index: int) -> float:
        return statistics.median(r[index] for r in results[label])

    rows: list[tuple[str, str, str, str]] = []
    for index, what in enumerate(("DOMContentLoaded (table drawn)", "load event", "live (stream connected)")):
        ours, base = median("large", index), median("small", index)
        rows.append((what, ms(ours), ms(base), f"{ours / base:.1f}× 10 deployments"))
    return Figure(
        f"8. The board's first render at {deployments:,} deployments in headless Chromium (Debian's), median of "
        f"{loads} loads (baseline: the board with 10 deployments)",
        rows,
    )


# -- figure 9: Swarm services


def _swarm_metrics(port: int) -> dict[tuple[str, str], float]:
    """deployment_swarm_update_state samples of a watcher: (deployment, state) → value."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    found = {}
    for line in body.splitlines():
        if line.startswith("deployment_swarm_update_state{"):
            labels, value = line[len("deployment_swarm_update_state{") :].rsplit("} ", 1)
            parts = dict(part.split("=", 1) for part in labels.split(","))
            found[(parts["deployment"].strip('"'), parts["state"].strip('"'))] = float(value)
    return found


def figure_swarm(*, services: int, replicas: int, updates: int) -> Figure:
    """A private single-node swarm with ``services`` × ``replicas`` tasks: the watcher's CPU per
    minute against `docker service ls` + `docker service ps` of them all once a minute, and the
    time from an UpdateStatus change (its service event's timeNano) to the series changing."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-swarm-"))
    cluster = SwarmCluster(tmp_path=tmp, image=BUSYBOX_IMAGE, image_tarball=busybox_tarball())
    watcher: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        cluster.tag_image("app:1.0", "app:1.1")
        manager = cluster.manager
        names = [f"bench-{i:03d}" for i in range(services)]
        for name in names:
            manager.docker("service", "create", "-d", "--name", name, "--replicas", str(replicas),
                           "--label", f"deployment.name={name}", "--no-resolve-image", "--stop-grace-period", "1s",
                           "--update-parallelism", str(replicas), "app:1.0", "sleep", "36000")  # fmt: skip

        def all_running() -> bool:
            listed = manager.docker("service", "ls", "--format", "{{.Replicas}}", timeout=120) or ""
            return listed.split() == [f"{replicas}/{replicas}"] * services

        deadline = time.monotonic() + 900
        while not all_running():
            assert time.monotonic() < deadline, "tasks did not all start within 15 minutes"
            time.sleep(5)
        daemon = int((manager.base / "dockerd.pid").read_text())

        def daemon_side() -> float:
            """The private daemon, its containerd and the shims of its tasks."""
            marker = str(manager.base).encode()
            total = cpu_seconds(daemon)
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and entry.name != str(daemon):
                    with suppress(OSError):
                        if marker in (entry / "cmdline").read_bytes():
                            total += cpu_seconds(int(entry.name))
            return total

        idle_before = daemon_side()
        time.sleep(60)
        idle = daemon_side() - idle_before  # the swarm's own minute, without anyone asking

        port = free_port()
        watcher = subprocess.Popen(
            [sys.executable, "-m", "watcher", f"--docker.host={manager.host}", f"--web.listen-address=127.0.0.1:{port}",
             "--storage.directory=none", "--log.level=warning", "--exposition.min-interval-seconds=0.1"],
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while len({deployment for deployment, _ in _safe(lambda: _swarm_metrics(port))}) < services:
            assert time.monotonic() < deadline, "the watcher did not list every service within 2 minutes"
            time.sleep(1)
        time.sleep(15)  # past start-up and the first stats round
        ours, theirs = cpu_seconds(watcher.pid), daemon_side()
        time.sleep(60)
        watcher_cpu = cpu_seconds(watcher.pid) - ours
        watcher_daemon = daemon_side() - theirs - idle

        children, theirs = resource.getrusage(resource.RUSAGE_CHILDREN), daemon_side()
        manager.docker("service", "ls", timeout=120)
        manager.docker("service", "ps", *names, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        cli_daemon = daemon_side() - theirs

        # Lag: UpdateStatus changes (service events with updatestate.new) → the series changing.
        events = subprocess.Popen(
            ["curl", "-sN", "--unix-socket", manager.host.removeprefix("unix://"),
             "http://x/events?filters=" + urllib.parse.quote(json.dumps({"type": ["service"]}))],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        changed: dict[tuple[str, str], float] = {}
        stop = threading.Event()
        seen: dict[tuple[str, str], float] = {}

        def read_events() -> None:
            assert events.stdout is not None
            for line in events.stdout:
                event = json.loads(line)
                attributes = event["Actor"]["Attributes"]
                state = attributes.get("updatestate.new")
                if state:
                    changed.setdefault((attributes["name"], state), event["timeNano"] / 1e9)

        def poll_metrics() -> None:
            previous = _swarm_metrics(port)
            while not stop.is_set():
                now = time.time()
                current = _safe(lambda: _swarm_metrics(port))
                for key, value in current.items():
                    if value == 1 and previous.get(key) != 1:
                        seen.setdefault(key, now)
                previous = current or previous
                time.sleep(0.02)

        threads = [threading.Thread(target=read_events, daemon=True), threading.Thread(target=poll_metrics)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        for name in names[:updates]:
            manager.docker("service", "update", "-d", "--image", "app:1.1", "--no-resolve-image", name)
            time.sleep(0.5)
        deadline = time.monotonic() + 300
        while len([k for k in seen if k[0] in names[:updates] and k[1] == "completed"]) < updates:
            assert time.monotonic() < deadline, "updates did not complete within 5 minutes"
            time.sleep(1)
        stop.set()
        threads[1].join()
        events.terminate()
        lags = [seen[key] - at for key, at in changed.items() if key in seen]
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(timeout=30)
        cluster.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    baseline = cli_cpu + cli_daemon
    total = watcher_cpu + watcher_daemon
    return Figure(
        f"9. Swarm: {services} services × {replicas} replicas on a private single-node swarm "
        "(CPU: the process and its daemon side, per minute; baseline: `docker service ls` + "
        "`docker service ps` of every service, once)",
        [
            ("CPU seconds per minute, the watcher process", f"{watcher_cpu:.3f} s", f"{cli_cpu:.3f} s", "CLI"),
            ("CPU seconds per minute, daemon side", f"{watcher_daemon:.3f} s", f"{cli_daemon:.3f} s",
             f"(the swarm alone: {idle:.3f} s/min, subtracted)"),
            ("CPU seconds per minute, total", f"{total:.3f} s", f"{baseline:.3f} s",
             f"{total / max(baseline, 1e-3):.2f}× the baseline"),
            *((f"p{q}, UpdateStatus change → series changed ({len(lags)} changes)", ms(percentile(lags, q)), "", "")
              for q in (50, 99)),
        ],
    )  # fmt: skip


def _safe(read: Callable[[], dict[tuple[str, str], float]]) -> dict[tuple[str, str], float]:
    try:
        return read()
    except OSError:
        return {}


# -- main


def describe_host() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"


def describe_machine() -> str:
    info = json.loads(docker("info", "--format", "{{json .}}"))
    return (
        f"{describe_host()}, "
        f"Docker {info['ServerVersion']} (cgroup v{info.get('CgroupVersion', '?')}, {info.get('CgroupDriver')})"
    )


FIGURES = ("stats", "metrics", "lag", "memory", "state", "readapi", "fanout", "board", "swarm")
SOAK = "soak"  # a pass/fail run rather than a figure, so not among the defaults
ANALYSIS = "analysis"  # minutes long and needs Prometheus, so not among the defaults
SCALE = "scale"  # minutes long, at 5,000 deployments unless told: not among the defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # [] among the choices: argparse checks the empty default of nargs="*" against them.
    parser.add_argument(
        "figures",
        nargs="*",
        choices=[*FIGURES, SOAK, ANALYSIS, SCALE, []],
        help="figures to run (default: all but soak, analysis and scale)",
    )
    parser.add_argument("--containers", type=int, default=100, help="running containers for the stats round")
    parser.add_argument(
        "--deployments", type=int, default=1000, help="deployments for /metrics and memory (analysis: 100 unless given)"
    )
    parser.add_argument("--rollouts", type=int, default=50, help="simultaneous rollouts for the event lag")
    parser.add_argument("--stream-clients", type=int, default=500, help="event stream clients for the fan-out")
    parser.add_argument("--bursts", type=int, default=3, help="bursts of rollouts for the event lag")
    parser.add_argument("--services", type=int, default=100, help="Swarm services for the swarm figure")
    parser.add_argument("--replicas", type=int, default=3, help="replicas of each Swarm service")
    parser.add_argument("--updates", type=int, default=20, help="service updates timed for the swarm figure")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="duration of the soak's faults, of analysis's measurement"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the soak's faults, changes and clients")
    parser.add_argument(
        "--burst-worker", nargs=4, metavar=("PREFIX", "COUNT", "VERSION", "AT_ONCE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--loop-delay-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.burst_worker:
        prefix, count, version, at_once = args.burst_worker
        _burst_worker(prefix, int(count), version, int(at_once))
        return
    if args.loop_delay_worker:
        _loop_delay_worker()
        return
    if SOAK in args.figures:
        if len(args.figures) > 1:
            parser.error("soak runs alone")
        print(describe_host())
        sys.exit(soak.run(args.minutes, seed=args.seed))
    wanted = args.figures or FIGURES
    if SCALE in wanted:
        print(describe_host())
        deployments = 5000 if args.deployments == parser.get_default("deployments") else args.deployments
        clients = 1000 if args.stream_clients == parser.get_default("stream_clients") else args.stream_clients
        for figure in bench_scale.run(deployments=deployments, clients=clients):
            Figure(*figure).print()
        if len(wanted) == 1:
            return
    print(describe_machine())
    if ANALYSIS in wanted:
        deployments = 100 if args.deployments == parser.get_default("deployments") else args.deployments
        Figure(*bench_analysis.run(minutes=args.minutes, deployments=deployments)).print()
    if not docker("images", "-q", BUSYBOX_IMAGE):  # the image the tests make, made the same way
        subprocess.run(["docker", "import", "-", BUSYBOX_IMAGE], input=busybox_tarball(), check=True)
    if "stats" in wanted:
        figure_stats(containers=args.containers).print()
    if "metrics" in wanted:
        figure_metrics(deployments=args.deployments).print()
    if "memory" in wanted:
        figure_memory(deployments=args.deployments).print()
    if "swarm" in wanted:
        figure_swarm(services=args.services, replicas=args.replicas, updates=args.updates).print()
    if "lag" in wanted or "state" in wanted:
        recording = figure_lag(rollouts=args.rollouts, bursts=args.bursts, at_once=16)
        figure_lag(rollouts=args.rollouts, bursts=args.bursts, at_once=4)
        figure_state_machine(recording).print()
    if "readapi" in wanted:
        figure_read_api(deployments=args.deployments).print()
    if "fanout" in wanted:
        figure_fanout(clients=args.stream_clients).print()
    if "board" in wanted:
        figure_board(deployments=args.deployments).print()
        Figure(*bench_board.figure(deployments=max(args.deployments, 5000))).print()


if __name__ == "__main__":
    main()
