"""The two stats sources on the real Docker Engine: cgroup files and the stats API agree on a busy
container, a container's own --cgroup-parent is found, and a real watcher reports its source."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Containers, docker, start_watcher
from tests.polling import poll_async
from watcher.config import DockerSettings, Settings, StatsSettings
from watcher.domain.model import Usage
from watcher.sources.engine import Engine
from watcher.sources.stats.sampling import ApiStats, StatsSource, open_source

pytestmark = pytest.mark.docker

MIB = 1 << 20
FILL_MIB = 24
CGROUP_ROOT = "/sys/fs/cgroup"
# A busy loop that holds FILL_MIB of tmpfs (shared memory: in the working set, never inactive file cache).
BUSY = f"dd if=/dev/zero of=/tmp/fill bs=1M count={FILL_MIB} 2>/dev/null; while :; do :; done"
OPTIONS = ("--tmpfs", "/tmp", "--network", "none")


async def cgroup_source(engine: Engine) -> StatsSource:
    """The cgroup source as the watcher opens it (driver and version from /info, parents by inspect)."""
    settings = Settings(stats=StatsSettings(source="cgroup", cgroup_root=CGROUP_ROOT))
    chosen: list[str] = []
    source = await open_source(
        settings=settings, engine=engine, api=ApiStats(engine, concurrency=1, timeout=1), chosen=chosen.append
    )
    assert source is not None and chosen == ["cgroup"]
    return source


async def one(source: StatsSource, container_id: str) -> Usage:
    usage, errors = await source.sample([container_id])
    assert errors == 0 and container_id in usage, (usage, errors)
    return usage[container_id]


async def filled(source: StatsSource, container_id: str) -> Usage:
    """The container's usage once dd has written its memory."""
    return await poll_async(
        f"memory of at least {FILL_MIB} MiB", lambda: one(source, container_id), timeout=30,
        until=lambda usage: usage.memory_bytes >= FILL_MIB * MIB,
    )  # fmt: skip


async def test_cgroup_files_and_stats_api_agree(containers: Containers) -> None:
    """On one busy container the API's CPU seconds lie between two cgroup reads around it, and memory matches."""
    name = containers.run(labels={}, command=BUSY, options=OPTIONS)
    container_id = docker("inspect", "--format", "{{.Id}}", name)
    async with Engine.open(DockerSettings()) as engine:
        cgroup = await cgroup_source(engine)
        api = ApiStats(engine, concurrency=1, timeout=30)
        await filled(cgroup, container_id)
        before = await one(cgroup, container_id)
        through_api = await one(api, container_id)
        after = await one(cgroup, container_id)
    slack = 0.01  # seconds: the API reads the same counter within the call; this covers rounding only
    assert before.cpu_seconds - slack <= through_api.cpu_seconds <= after.cpu_seconds + slack, (
        before,
        through_api,
        after,
    )
    assert after.cpu_seconds > before.cpu_seconds  # it is busy: the reads are not all the same stale number
    for read in (before, after):
        assert abs(read.memory_bytes - through_api.memory_bytes) <= max(MIB, 0.02 * read.memory_bytes), (
            before,
            through_api,
            after,
        )


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A --cgroup-parent of this test's own; the parent cgroups Docker leaves behind are removed."""
    driver = docker("info", "--format", "{{.CgroupDriver}}")
    name = f"dwtest{uuid.uuid4().hex[:8]}"
    parent = f"{name}.slice" if driver == "systemd" else f"/{name}"
    try:
        yield parent
    finally:
        leftovers = [*Path(CGROUP_ROOT).glob(f"{name}*"), *Path(CGROUP_ROOT).glob(f"*/{name}*")]
        for directory in sorted(leftovers, key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                directory.rmdir()


async def test_container_cgroup_parent_is_found(containers: Containers, cgroup_parent: str) -> None:
    """A container started with --cgroup-parent is read from there (the parent looked up by inspect)."""
    name = containers.run(labels={}, command=BUSY, options=(*OPTIONS, "--cgroup-parent", cgroup_parent))
    container_id = docker("inspect", "--format", "{{.Id}}", name)
    try:
        async with Engine.open(DockerSettings()) as engine:
            usage = await filled(await cgroup_source(engine), container_id)
        assert usage.cpu_seconds > 0
    finally:
        containers.remove(name)  # before the fixture removes its parent cgroups


@pytest.fixture(scope="module")
def busy_deployment(busybox_image: str) -> Iterator[str]:
    """One labelled busy container for all the watchers below; its deployment name."""
    made = Containers(busybox_image)
    deployment = f"stats-{uuid.uuid4().hex[:8]}"
    try:
        made.run(labels={"deployment.name": deployment, "deployment.version": "1"}, command=BUSY, options=OPTIONS)
        yield deployment
    finally:
        made.cleanup()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--stats.source=cgroup",), "cgroup"),
        (("--stats.source=api",), "api"),
        (("--stats.source=auto",), "cgroup"),
        (("--stats.source=auto", "--stats.cgroup-root={empty}"), "api"),
        (("--stats.source=auto", "--stats.cgroup-root={foreign}"), "api"),
    ],
    ids=["cgroup", "api", "auto-local", "auto-without-tree", "auto-foreign-tree"],
)
def test_watcher_reports_usage_and_source(
    tmp_path: Path, busy_deployment: str, flags: tuple[str, ...], expected: str
) -> None:
    """A real watcher exports CPU and memory of the busy deployment and says which source it read them from."""
    empty = tmp_path / "no-cgroups"
    empty.mkdir()
    # A tree of the right shape without the daemon's containers, as for a remote DOCKER_HOST.
    foreign = tmp_path / "foreign-cgroups"
    for directory in ("memory", "cpuacct"):
        (foreign / directory).mkdir(parents=True)
    (foreign / "cgroup.controllers").write_text("cpu memory\n")
    places = {"empty": empty, "foreign": foreign}
    watcher = start_watcher(tmp_path, "--stats.interval-seconds=1", *(f.format(**places) for f in flags))
    try:

        def sampled() -> bool:
            cpu = watcher.value("deployment_cpu_usage_seconds_total", deployment=busy_deployment) or 0
            memory = watcher.value("deployment_memory_usage_bytes", deployment=busy_deployment) or 0
            return cpu > 0 and memory > 0

        watcher.wait_for("CPU and memory sampled", sampled)
        other = {"cgroup": "api", "api": "cgroup"}[expected]
        assert watcher.value("deployment_watcher_stats_source", source=expected) == 1
        assert watcher.value("deployment_watcher_stats_source", source=other) == 0
    finally:
        watcher.stop_cleanly()
