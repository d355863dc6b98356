"""Load: a few hundred containers created, restarted and removed quickly while a scraper reads
/metrics like Prometheus. No rollout is lost, the watcher's memory settles, no task leaks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiodocker.containers import DockerContainer
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import OPENMETRICS, WatcherProcess, docker, start_watcher

pytestmark = pytest.mark.docker

DEPLOYMENTS = 28  # four kinds of history, seven deployments each
REPLICAS = 2
DOCKER_CALLS_AT_ONCE = 12
SERVE = "exec sleep 600"
CRASH = "exit 1"
MIB = 1024 * 1024
RUN_LABEL = "dw-load-test"  # its value is unique per run: every container with it is removed at the end


@dataclass(frozen=True)
class Expected:
    """What one round of churn leaves a deployment with."""

    revisions: int
    version: int
    status: int
    rollbacks: int


# Each round, per deployment: v1 ×2 (one restarted), then by kind:
#   steady:   nothing more                                  → v1, success
#   replaced: v2 ×2, v1 removed                             → v2, success
#   crashed:  replaced, then v3 exits 1                     → v3, failed
#   reverted: crashed, then v2 ×2 again (a rollback)        → v2, success
KINDS = {
    "steady": Expected(revisions=1, version=1, status=1, rollbacks=0),
    "replaced": Expected(revisions=2, version=2, status=1, rollbacks=0),
    "crashed": Expected(revisions=3, version=3, status=0, rollbacks=0),
    "reverted": Expected(revisions=4, version=2, status=1, rollbacks=1),
}


def kind_of(index: int) -> str:
    return list(KINDS)[index % len(KINDS)]


class Churn:
    """Drives the Docker API directly (the CLI costs a process per call) for many deployments at once."""

    def __init__(self, *, image: str, run_id: str, prefix: str) -> None:
        self.image = image
        self.run_id = run_id
        self.prefix = prefix
        self.created = 0

    def name(self, index: int) -> str:
        return f"{self.prefix}-{index:02d}"

    async def round(self, number: int) -> None:
        """One round: every deployment's history of its kind, all deployments concurrently."""
        async with aiodocker.Docker() as client:
            limit = asyncio.Semaphore(DOCKER_CALLS_AT_ONCE)
            await asyncio.gather(*(self._deployment(client, limit, i, number) for i in range(DEPLOYMENTS)))

    async def remove_all(self) -> None:
        async with aiodocker.Docker() as client:
            listed = await client.containers.list(
                all=True, filters=json.dumps({"label": [f"{RUN_LABEL}={self.run_id}"]})
            )
            limit = asyncio.Semaphore(DOCKER_CALLS_AT_ONCE)

            async def remove(container: DockerContainer) -> None:
                async with limit:
                    await container.delete(force=True)

            await asyncio.gather(*(remove(c) for c in listed))

    async def _deployment(self, client: aiodocker.Docker, limit: asyncio.Semaphore, index: int, number: int) -> None:
        kind = kind_of(index)

        async def run(version: int, command: str = SERVE) -> DockerContainer:
            labels = {
                "deployment.name": self.name(index),
                "deployment.environment": "load",
                "deployment.version": f"{number}.{version}.0",
                "deployment.commit": f"sha-{number}-{version}",
                RUN_LABEL: self.run_id,
            }
            config: dict[str, Any] = {
                "Image": self.image,
                "Cmd": ["sh", "-c", command],
                "Labels": labels,
                "HostConfig": {"NetworkMode": "none"},  # no network setup: faster, nothing needed
            }
            async with limit:
                self.created += 1
                return await client.containers.run(config, name=f"dw-load-{uuid.uuid4().hex[:12]}")

        v1 = [await run(1) for _ in range(REPLICAS)]
        async with limit:
            await v1[0].restart(t=0)
        if kind == "steady":
            return
        for _ in range(REPLICAS):
            await run(2)
        for container in v1:
            async with limit:
                await container.delete(force=True)
        if kind == "replaced":
            return
        await run(3, CRASH)
        if kind == "reverted":
            for _ in range(REPLICAS):
                await run(2)


@dataclass
class Scraper:
    """Scrapes /metrics every 150 ms, alternating the two formats; every body must parse and
    no deployment of this test may see its revision, rollbacks or CPU go down."""

    watcher: WatcherProcess
    prefix: str
    interval: float = 0.15
    errors: list[str] = field(default_factory=list)
    scrapes: int = 0
    tasks: list[tuple[float, float]] = field(default_factory=list)  # (time, asyncio tasks)
    rss: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last: dict[tuple[str, str], float] = field(default_factory=dict)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)

    def tasks_since(self, since: float) -> list[float]:
        return [n for t, n in list(self.tasks) if t >= since]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            openmetrics = self.scrapes % 2 == 1
            try:
                status, _, body = self.watcher.get("/metrics", accept=OPENMETRICS if openmetrics else "")
                assert status == 200, f"status {status}"
                families = list(parse_openmetrics(body) if openmetrics else parse_text(body))
                self._check(families)
            except Exception as exc:  # recorded, asserted by the test
                self.errors.append(f"scrape {self.scrapes} ({'OpenMetrics' if openmetrics else 'text'}): {exc!r}")
            self.scrapes += 1

    def _check(self, families: list[Metric]) -> None:
        for family in families:
            for s in family.samples:
                if s.name == "deployment_watcher_asyncio_tasks":
                    self.tasks.append((time.monotonic(), s.value))
                elif s.name == "process_resident_memory_bytes":
                    self.rss = s.value
                elif s.labels.get("deployment", "").startswith(self.prefix):
                    self._check_sample(s.name, s.labels["deployment"], s.value)

    def _check_sample(self, name: str, deployment: str, value: float) -> None:
        if name == "deployment_status":
            assert value in (0, 1, 2), f"{deployment}: status {value}"
        if name in ("deployment_version", "deployment_rollback_count_total", "deployment_cpu_usage_seconds_total"):
            previous = self._last.get((name, deployment), 0.0)
            assert value >= previous, f"{deployment}: {name} went {previous} → {value}"
            self._last[(name, deployment)] = value


@pytest.fixture
def run_id() -> Iterator[str]:
    """This run's value of RUN_LABEL; every container carrying it is removed at the end, whatever happened."""
    run_id = uuid.uuid4().hex[:10]
    try:
        yield run_id
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}", check=False).split()
        if ids:
            docker("rm", "-f", *ids, check=False, timeout=180)


def settled(watcher: WatcherProcess, churn: Churn, *, rounds: int) -> list[str]:
    """The deployments whose exported state is not (yet) what the churn implies."""
    exported: dict[str, dict[str, str | float]] = {}
    for s in watcher.samples():
        name = s.labels.get("deployment", "")
        if name.startswith(churn.prefix) and s.name in ("deployment_version", "deployment_status",
                                                        "deployment_rollback_count_total"):  # fmt: skip
            exported.setdefault(name, {})[s.name] = s.value
        elif name.startswith(churn.prefix) and s.name == "deployment_info":
            exported.setdefault(name, {})["version"] = s.labels["version"]
    wrong = []
    for index in range(DEPLOYMENTS):
        name, kind = churn.name(index), KINDS[kind_of(index)]
        expected = {
            "deployment_version": kind.revisions * rounds,
            "version": f"{rounds}.{kind.version}.0",
            "deployment_status": kind.status,
            "deployment_rollback_count_total": kind.rollbacks * rounds,
        }
        if exported.get(name) != expected:
            wrong.append(f"{name} ({kind_of(index)}): expected {expected}, got {exported.get(name)}")
    return wrong


def test_churn_loses_nothing_and_settles(
    tmp_path: Path, busybox_image: str, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two rounds of ~125 containers: every rollout counted, every scrape valid, memory and tasks settle."""
    started = time.monotonic()
    watcher = start_watcher(tmp_path, "--rollout.stable-seconds=1", "--stats.interval-seconds=2")
    churn = Churn(image=busybox_image, run_id=run_id, prefix=f"load-{uuid.uuid4().hex[:6]}")
    scraper = Scraper(watcher, churn.prefix)
    try:
        watcher.wait_ready()
        scraper.start()
        # The gauge is zero until the first tick counts.
        watcher.wait_for("the first task count", lambda: any(scraper.tasks_since(0)))
        idle_from = time.monotonic()
        watcher.wait_for("a few idle scrapes", lambda: len(scraper.tasks_since(idle_from)) >= 10)
        baseline = min(scraper.tasks_since(idle_from))

        def churn_round(number: int) -> float:
            """Churn, wait for the implied state, remove everything; the RSS once settled."""
            churn_from = time.monotonic()
            asyncio.run(churn.round(number))
            wrong: list[str] = []

            def as_implied() -> bool:
                wrong[:] = settled(watcher, churn, rounds=number)
                return not wrong

            try:
                watcher.wait_for(f"round {number}: every deployment as the churn implies", as_implied, timeout=60)
            except AssertionError as exc:
                raise AssertionError("\n".join(wrong)) from exc
            asyncio.run(churn.remove_all())
            peak = max(scraper.tasks_since(churn_from))
            assert peak > baseline, "the task gauge never moved during churn: is it counting?"
            back_from = time.monotonic()

            def tasks_back() -> bool:
                # Other tests' running containers are tracked too: a stats poll holds a task for each.
                allowed = baseline + len(docker("ps", "-q", "--filter", "label=deployment.name").split())
                return bool(scraper.tasks) and scraper.tasks[-1][1] <= allowed

            try:
                watcher.wait_for(f"round {number}: asyncio tasks back to {baseline:g}", tasks_back)
            except AssertionError as exc:
                since = [f"{n:g}" for n in scraper.tasks_since(back_from)]
                raise AssertionError(f"tasks stayed above {baseline:g} (peak {peak:g}): {' '.join(since)}") from exc
            wrong[:] = settled(watcher, churn, rounds=number)
            assert not wrong, "removing the containers changed finished rollouts:\n" + "\n".join(wrong)
            return scraper.rss

        rss = [churn_round(1), churn_round(2)]
        assert not scraper.errors, "\n".join(scraper.errors[:10])
        assert scraper.scrapes >= 100
        # Round two churns as much as round one; only allocator noise may remain.
        assert rss[1] <= rss[0] * 1.10 + 4 * MIB, f"RSS grew from {rss[0] / MIB:.1f} to {rss[1] / MIB:.1f} MiB"
        with capsys.disabled():
            print(
                f"\nload: {churn.created} containers in {time.monotonic() - started:.0f} s, "
                f"{scraper.scrapes} scrapes, tasks baseline {baseline:g}, "
                f"RSS {rss[0] / MIB:.1f} → {rss[1] / MIB:.1f} MiB"
            )
    finally:
        scraper.stop()
        watcher.stop_cleanly()
