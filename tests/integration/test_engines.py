"""The watcher against every engine users run: Docker Engine 20.10 (the shared daemon), Docker
Engine 26.1 and Podman 4.3's Docker-compatible API (``tests/engines.py`` starts them).

One watcher process per engine (``--docker.host``); each test runs on each engine. What the
engines send differently is in docs/engines.md.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiodocker
import pytest

from tests.conftest import (
    BURN,
    BUSYBOX_IMAGE,
    HEALTHY_WHEN_FILE,
    SERVE,
    WatcherProcess,
    WatcherSetup,
    start_watcher,
    unique,
)
from tests.dockerproxy import SocketProxy
from tests.engines import SHARED_HOST, ContainerEngine
from tests.polling import poll_async
from watcher.domain.model import Usage
from watcher.sources.engine import Engine
from watcher.sources.stats.sampling import ApiStats

pytestmark = pytest.mark.docker

# Each engine: the version it must report (a prefix) and its API version.
ENGINES = {
    "docker-20.10": ("20.10.", "1.41"),
    "docker-26.1": ("26.1.", "1.45"),
    "podman-4.3": ("4.3.", "1.41"),
}
STABLE = 1  # seconds: short, so tests are quick
QUICK_RECONNECT = ("--docker.backoff-initial-seconds=0.2", "--docker.backoff-max-seconds=1")


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> ContainerEngine:
    """The engine of this round of the module: started once a session, on first use."""
    name: str = request.param
    if name == "docker-20.10":
        request.getfixturevalue("busybox_image")
        return ContainerEngine(name, SHARED_HOST, BUSYBOX_IMAGE)
    if name == "docker-26.1":
        return ContainerEngine(name, request.getfixturevalue("trixie_dockerd").host, BUSYBOX_IMAGE)
    podman = request.getfixturevalue("podman_service")
    return ContainerEngine(name, podman.host, BUSYBOX_IMAGE, podman=podman)


@pytest.fixture(autouse=True)
def _remove_containers(engine: ContainerEngine) -> Iterator[None]:
    try:
        yield
    finally:
        engine.cleanup()


@pytest.fixture(scope="module")
def watcher_setup(engine: ContainerEngine) -> WatcherSetup:
    return WatcherSetup(
        (f"--docker.host={engine.host}", f"--rollout.stable-seconds={STABLE}", "--stats.interval-seconds=1")
    )


def labels(name: str, version: str) -> dict[str, str]:
    return {"deployment.name": name, "deployment.version": version, "deployment.commit": f"sha-{version}"}


def status(watcher: WatcherProcess, name: str) -> float | None:
    return watcher.value("deployment_status", deployment=name)


def reason(watcher: WatcherProcess, name: str) -> str:
    """The reason of the current rollout's verdict, as the read API gives it."""
    _, _, body = watcher.get("/api/v1/deployments")
    return str(next(d["reason"] for d in json.loads(body)["deployments"] if d["name"] == name))


def test_engine_reports_its_version(engine: ContainerEngine) -> None:
    """Each engine is the one the matrix names, at the API version docs/engines.md gives."""
    version, api = engine.version()
    prefix, expected_api = ENGINES[engine.name]
    assert version.startswith(prefix) and api == expected_api, (engine.name, version, api)


def test_rollout_reaches_success_and_shows_in_metrics(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """A labelled container: in progress, then success after the stable time, with its version and commit."""
    name = unique("roll")
    engine.run(labels=labels(name, "1.0.0"))
    watcher.wait_for("in progress or success", lambda: status(watcher, name) in (1, 2), timeout=10)
    watcher.wait_for("success", lambda: status(watcher, name) == 1, timeout=STABLE + 10)
    assert watcher.value("deployment_version", deployment=name) == 1
    assert watcher.value("deployment_info", deployment=name, version="1.0.0", commit="sha-1.0.0") == 1
    assert watcher.value("deployment_health_check", deployment=name, check_type="containers_running") == 1
    assert watcher.value("deployment_watcher_docker_up") == 1


def test_failing_container_fails_the_rollout(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """A container that exits 1 fails its rollout."""
    name = unique("fail")
    engine.run(labels=labels(name, "1.0.0"), command="exit 1")
    watcher.wait_for("failed", lambda: status(watcher, name) == 0)


def test_version_going_back_counts_a_rollback(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """1.0 → 1.1 → 1.0: the third rollout is a rollback, and it succeeds."""
    name = unique("back")

    def succeeded(revision: int) -> bool:
        return watcher.value("deployment_version", deployment=name) == revision and status(watcher, name) == 1

    for revision, version in enumerate(["1.0", "1.1", "1.0"], start=1):
        container = engine.run(labels=labels(name, version))
        watcher.wait_for(f"revision {revision} success", functools.partial(succeeded, revision), timeout=STABLE + 15)
        if revision < 3:
            engine.remove(container)
    assert watcher.value("deployment_rollback_count_total", deployment=name) == 1


def test_health_check_states(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """A passing health check makes the rollout succeed; a failing one later turns health to 0."""
    name = unique("health")
    container = engine.run(labels=labels(name, "1.0.0"), command=SERVE, options=HEALTHY_WHEN_FILE)
    watcher.wait_for("success", lambda: status(watcher, name) == 1)
    assert watcher.value("deployment_health_check", deployment=name, check_type="docker_healthcheck") == 1
    assert watcher.value("deployment_health_status", deployment=name) == 1
    engine.docker("exec", container, "rm", "/tmp/ok")
    watcher.wait_for("unhealthy", lambda: watcher.value("deployment_health_status", deployment=name) == 0)
    assert watcher.value("deployment_health_check", deployment=name, check_type="docker_healthcheck") == 0
    assert status(watcher, name) == 1  # a finished rollout stays


def test_unhealthy_container_fails_the_rollout(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """A health check that never passes fails the rollout."""
    name = unique("sick")
    engine.run(labels=labels(name, "1.0.0"), options=HEALTHY_WHEN_FILE)
    watcher.wait_for("failed", lambda: status(watcher, name) == 0)


def test_removed_replica_leaves_the_deployment(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """Of two replicas one is removed: the one left is all that is checked, and it runs."""
    name = unique("gone")
    kept, removed = (engine.run(labels=labels(name, "1.0.0")) for _ in range(2))
    watcher.wait_for("success", lambda: status(watcher, name) == 1, timeout=STABLE + 10)
    engine.remove(removed)
    watcher.fresh()
    watcher.expect("deployment_health_check", 1, deployment=name, check_type="containers_running")
    engine.docker("stop", kept)
    watcher.expect("deployment_health_check", 0, deployment=name, check_type="containers_running")
    assert status(watcher, name) == 1


def test_replica_stopped_during_the_rollout_does_not_fail_it(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """`docker stop` of one replica while the rollout runs (killed after the stop timeout: exit 137)
    is a requested stop, not a crash: the rollout succeeds on the replica left."""
    name = unique("scale")
    stable = 5  # the stop ends well within it: its exit is judged while the rollout runs
    first, _ = (
        engine.run(labels={**labels(name, "1.0.0"), "deployment.stable_seconds": str(stable)}) for _ in range(2)
    )
    engine.docker("stop", first)
    watcher.wait_for("success", lambda: status(watcher, name) == 1, timeout=stable + 10)
    watcher.fresh()
    assert status(watcher, name) == 1


@pytest.mark.parametrize("engine", ["docker-20.10", "docker-26.1"], indirect=True)
def test_a_start_that_fails_without_any_event_fails_the_rollout(
    watcher: WatcherProcess, engine: ContainerEngine
) -> None:
    """`docker run --network container:X` with X stopped (compose's `network_mode: service:…` of a
    stopped service): the start fails, and the engine sends only the `create` (no network of its own,
    so not even the disconnect Docker 20.10 sends after other failed starts). The watcher polls the
    containers of rollouts in progress that were created and not started, and the rollout fails
    within seconds with the engine's error. Before, it stayed in progress until its deadline."""
    name = unique("netns")
    stopped, joiner = (f"dw-test-{uuid.uuid4().hex[:10]}" for _ in range(2))
    engine.names += [stopped, joiner]
    engine.docker("create", "--name", stopped, "--network=none", engine.image, "sleep", "600")
    label_args = [arg for key, value in labels(name, "1.0.0").items() for arg in ("--label", f"{key}={value}")]
    engine.docker(
        "run", "-d", "--name", joiner, f"--network=container:{stopped}", *label_args, engine.image, "sleep", "600",
        check=False,
    )  # fmt: skip
    watcher.wait_for("failed", lambda: status(watcher, name) == 0, timeout=15)
    assert "cannot join network of a non running container" in reason(watcher, name)


def test_resync_after_reconnect(tmp_path: Path, engine: ContainerEngine) -> None:
    """A container there before the watcher is found at connect; changes while cut off are found after."""
    name = unique("resync")
    before = engine.run(labels=labels(name, "1.0.0"))
    proxy = SocketProxy(tmp_path / "engine.sock", upstream=engine.host.removeprefix("unix://"))
    proxy.start()
    late = start_watcher(
        tmp_path, f"--docker.host=unix://{proxy.path}", "--rollout.stable-seconds=1", "--stats.enabled=false",
        "--exposition.max-staleness-seconds=0.5", *QUICK_RECONNECT,
    )  # fmt: skip
    try:
        late.wait_for("found at connect", lambda: status(late, name) == 1)
        proxy.cut()
        late.wait_for("docker_up 0", lambda: late.value("deployment_watcher_docker_up") == 0)
        engine.remove(before)
        engine.run(labels=labels(name, "2.0.0"))
        proxy.restore()
        late.wait_ready("ready again")
        late.wait_for("2.0.0 success", lambda: late.value("deployment_version", deployment=name) == 2)
        late.wait_for("success", lambda: status(late, name) == 1)
        assert late.value("deployment_info", deployment=name, version="2.0.0") == 1
        assert (late.value("deployment_watcher_resyncs_total") or 0) >= 2
    finally:
        late.stop_cleanly()
        proxy.close()


def test_cpu_and_memory(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """A busy container's CPU seconds rise between polls and its memory is positive."""
    name = unique("burn")
    engine.run(labels=labels(name, "1"), command=BURN)
    cpu = "deployment_cpu_usage_seconds_total"
    watcher.wait_for("cpu sampled", lambda: (watcher.value(cpu, deployment=name) or 0) > 0)
    first = watcher.value(cpu, deployment=name) or 0
    watcher.wait_for("cpu rising", lambda: (watcher.value(cpu, deployment=name) or 0) > first + 0.5)
    assert (watcher.value("deployment_memory_usage_bytes", deployment=name) or 0) > 0
    # Read from the cgroup files: the watcher finds where each engine puts its containers' cgroups.
    sources = {s.labels["source"]: s.value for s in watcher.samples() if s.name == "deployment_watcher_stats_source"}
    assert sources == {"cgroup": 1, "api": 0}, sources


async def test_stats_api(engine: ContainerEngine) -> None:
    """The stats API answers on every engine: CPU seconds and memory of a busy container."""
    container = engine.run(labels={}, command=BURN)
    container_id = engine.docker("inspect", "--format", "{{.Id}}", container)
    async with aiodocker.Docker(url=engine.host) as client:
        api = ApiStats(Engine(client, timeout=30), concurrency=1, timeout=30)

        async def sample() -> Usage | None:
            usage, _ = await api.sample([container_id])
            return usage.get(container_id)

        usage = await poll_async(
            "a stats sample with CPU and memory", sample, timeout=30,
            until=lambda u: u is not None and u.cpu_seconds > 0 and u.memory_bytes > 0,
        )  # fmt: skip
    assert usage is not None


def test_watcher_stayed_connected(watcher: WatcherProcess, engine: ContainerEngine) -> None:
    """After every test above (last in the module on purpose): no reconnect, no error logged; a
    removal racing an inspect is not a lost connection (Podman 4.3 answers it with a 500)."""
    assert watcher.value("deployment_watcher_docker_reconnects_total") == 0, watcher.tail()
    assert " ERROR " not in watcher.log.read_text(errors="replace"), watcher.tail()
