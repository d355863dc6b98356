"""Swarm services on a real single-node swarm (a private 20.10 daemon in a network namespace of
its own, ``swarm init``): create, update, automatic rollback, pause, manual rollback, scale,
remove, and a watcher restarted in the middle of an update. Images with several tags made
locally (``docker tag``; services use ``--no-resolve-image``: there is no registry)."""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BUSYBOX_IMAGE, WatcherProcess, busybox_tarball, require_binary, start_watcher
from tests.engines import TRIXIE_ROOT, TrixieDockerd
from tests.swarm_cluster import SwarmCluster
from watcher.domain.rules import SERVICE_REMOVED

pytestmark = pytest.mark.docker

TAGS = ("app:1.0", "app:1.1", "app:1.2")
# Fast updates: tasks that stop within a second, a short monitor period.
FAST = ("--stop-grace-period", "1s", "--update-monitor", "2s", "--rollback-monitor", "1s", "--no-resolve-image")
GONE_SECONDS = 4


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmCluster]:
    """One single-node swarm for the module; each test makes and removes its own services."""
    require_binary("dockerd")
    if os.geteuid() != 0:
        pytest.fail("a private dockerd needs root")
    cluster = SwarmCluster(tmp_path=tmp_path_factory.mktemp("swarm"), image=BUSYBOX_IMAGE,
                           image_tarball=busybox_tarball())  # fmt: skip
    try:
        cluster.start()
        cluster.tag_image(*TAGS)
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def watcher(tmp_path: Path, swarm: SwarmCluster) -> Iterator[WatcherProcess]:
    process = watch(tmp_path, swarm)
    try:
        yield process
    finally:
        process.stop()


def watch(tmp_path: Path, swarm: SwarmCluster, *extra: str) -> WatcherProcess:
    return start_watcher(
        tmp_path, f"--docker.host={swarm.manager.host}", "--swarm.poll-seconds=0.5", "--stats.interval-seconds=1",
        f"--retention.gone-seconds={GONE_SECONDS}", "--exposition.min-interval-seconds=0.1",
        "--exposition.dora-histograms=deployment", *extra,  # each deployment's own recovery histogram
    )  # fmt: skip


class Service:
    """A service of the test's own, removed at the end."""

    def __init__(self, swarm: SwarmCluster, *, replicas: int = 2, tag: str = "app:1.0", args: tuple[str, ...] = ()):
        self.swarm = swarm
        self.deployment = f"svc-{uuid.uuid4().hex[:6]}"
        self.name = self.deployment
        swarm.manager.docker(
            "service", "create", "-d", "--name", self.name, "--replicas", str(replicas),
            "--label", f"deployment.name={self.deployment}", "--container-label", "deployment.environment=test",
            *FAST, *args, tag, "sleep", "600",
        )  # fmt: skip

    def update(self, *args: str) -> None:
        self.swarm.manager.docker("service", "update", "-d", *FAST, *args, self.name)

    def remove(self) -> None:
        self.swarm.manager.docker("service", "rm", self.name, check=False)


@pytest.fixture
def service(swarm: SwarmCluster) -> Iterator[Service]:
    made = Service(swarm)
    try:
        yield made
    finally:
        made.remove()


def v(watcher: WatcherProcess, deployment: str, name: str, **labels: str) -> float | None:
    return watcher.value(name, deployment=deployment, **labels)


def info(watcher: WatcherProcess, deployment: str) -> dict[str, str]:
    for sample in watcher.samples():
        if sample.name == "deployment_info" and sample.labels.get("deployment") == deployment:
            return dict(sample.labels)
    return {}


def settled(watcher: WatcherProcess, deployment: str, *, status: int, revision: int) -> None:
    """Until one scrape shows ``status`` at ``revision`` (two scrapes could mix two states)."""

    def check() -> bool:
        got = {
            s.name: s.value for s in watcher.samples()
            if s.name in ("deployment_status", "deployment_version") and s.labels.get("deployment") == deployment
        }  # fmt: skip
        return got == {"deployment_status": status, "deployment_version": revision}

    watcher.wait_for(f"status {status} at revision {revision}", check, timeout=90)


def test_create_with_labels(watcher: WatcherProcess, service: Service) -> None:
    """Identity from the service label (name) and the container label (environment), version from
    the tag; success once both replicas run; a Swarm service on deployment_info; no second,
    container-based deployment of its task containers."""
    settled(watcher, service.deployment, status=1, revision=1)
    assert {"version": "1.0", "kind": "swarm_service", "image": "app:1.0"}.items() <= info(
        watcher, service.deployment
    ).items()
    assert v(watcher, service.deployment, "deployment_replicas", state="desired") == 2
    assert v(watcher, service.deployment, "deployment_replicas", state="running") == 2
    # One series, the current state: none yet, as no update ran.
    assert v(watcher, service.deployment, "deployment_swarm_update_state", state="none") == 1
    assert v(watcher, service.deployment, "deployment_swarm_update_state", state="completed") is None
    deployments = {s.labels["deployment"] for s in watcher.samples() if s.name == "deployment_status"}
    assert deployments == {service.deployment}  # its containers made none of their own
    # Its task containers name no deployment themselves (the name is on the service): they are
    # the service's, by its id, for their memory and CPU.
    watcher.wait_for(
        "the tasks' memory", lambda: (v(watcher, service.deployment, "deployment_memory_usage_bytes") or 0) > 0
    )


def test_update_to_a_new_tag_succeeds(watcher: WatcherProcess, service: Service) -> None:
    """An update to app:1.1: revision 2, updating, then completed and success."""
    settled(watcher, service.deployment, status=1, revision=1)
    durations = v(watcher, service.deployment, "deployment_duration_seconds_count") or 0
    service.update("--image", "app:1.1")
    watcher.wait_for(
        "updating", lambda: v(watcher, service.deployment, "deployment_swarm_update_state", state="updating") == 1
    )
    settled(watcher, service.deployment, status=1, revision=2)
    assert info(watcher, service.deployment)["version"] == "1.1"
    assert v(watcher, service.deployment, "deployment_swarm_update_state", state="completed") == 1
    assert v(watcher, service.deployment, "deployment_rollback_count_total") == 0
    assert v(watcher, service.deployment, "deployment_duration_seconds_count") == durations + 1  # the update was timed


def dora(watcher: WatcherProcess, deployment: str) -> tuple[float | None, ...]:
    """(successes, failures, change failures, recoveries) as /metrics shows them."""
    return (
        v(watcher, deployment, "deployment_rollouts_total", outcome="success"),
        v(watcher, deployment, "deployment_rollouts_total", outcome="failed"),
        v(watcher, deployment, "deployment_change_failures_total"),
        v(watcher, deployment, "deployment_recovery_seconds_count"),
    )


def test_failed_update_rolled_back(watcher: WatcherProcess, service: Service) -> None:
    """Tasks that exit, --update-failure-action rollback: the update fails, the orchestrator's
    rollback is counted, the version goes back and the rollback succeeds. DORA: one failure, one
    change failure, one recovery (before: failed 2, change failures 2, no recovery)."""
    settled(watcher, service.deployment, status=1, revision=1)
    service.update("--image", "app:1.2", "--args", "sh -c 'exit 3'", "--update-failure-action", "rollback")
    watcher.wait_for(
        "rollback completed",
        lambda: v(watcher, service.deployment, "deployment_swarm_update_state", state="rollback_completed") == 1,
        timeout=90,
    )
    settled(watcher, service.deployment, status=1, revision=3)
    assert v(watcher, service.deployment, "deployment_rollback_count_total") == 1
    assert info(watcher, service.deployment)["version"] == "1.0"
    assert "rolled back" in watcher.tail(200)
    assert dora(watcher, service.deployment) == (2, 1, 1, 1)


def test_failed_update_paused(watcher: WatcherProcess, service: Service) -> None:
    """--update-failure-action pause: failed, the update state paused."""
    settled(watcher, service.deployment, status=1, revision=1)
    service.update("--image", "app:1.2", "--args", "sh -c 'exit 3'", "--update-failure-action", "pause")
    settled(watcher, service.deployment, status=0, revision=2)
    assert v(watcher, service.deployment, "deployment_swarm_update_state", state="paused") == 1
    assert v(watcher, service.deployment, "deployment_rollback_count_total") == 0


def test_manual_rollback(watcher: WatcherProcess, service: Service) -> None:
    """`docker service rollback` after a good update: a rollback to 1.0, counted."""
    settled(watcher, service.deployment, status=1, revision=1)
    service.update("--image", "app:1.1")
    settled(watcher, service.deployment, status=1, revision=2)
    service.swarm.manager.docker("service", "rollback", "-d", service.name)
    settled(watcher, service.deployment, status=1, revision=3)
    assert v(watcher, service.deployment, "deployment_rollback_count_total") == 1
    assert info(watcher, service.deployment)["version"] == "1.0"


def test_manual_rollback_of_a_manual_rollback(watcher: WatcherProcess, service: Service) -> None:
    """`docker service rollback` twice: the second swaps back to 1.1, a step forward, no rollback:
    one rollback counted, one change failure (the update rolled back), no failure."""
    settled(watcher, service.deployment, status=1, revision=1)
    service.update("--image", "app:1.1")
    settled(watcher, service.deployment, status=1, revision=2)
    for revision, version in ((3, "1.0"), (4, "1.1")):
        service.swarm.manager.docker("service", "rollback", "-d", service.name)
        settled(watcher, service.deployment, status=1, revision=revision)
        assert info(watcher, service.deployment)["version"] == version
    assert v(watcher, service.deployment, "deployment_rollback_count_total") == 1
    assert dora(watcher, service.deployment) == (4, 0, 1, 1)


def test_scale_is_no_new_revision(watcher: WatcherProcess, service: Service) -> None:
    """Scale up and down: replicas follow, the revision stays."""
    settled(watcher, service.deployment, status=1, revision=1)
    service.swarm.manager.docker("service", "scale", "-d", f"{service.name}=3")
    watcher.wait_for("3 running", lambda: v(watcher, service.deployment, "deployment_replicas", state="running") == 3)
    service.swarm.manager.docker("service", "scale", "-d", f"{service.name}=1")
    watcher.wait_for("1 running", lambda: v(watcher, service.deployment, "deployment_replicas", state="running") == 1)
    assert v(watcher, service.deployment, "deployment_version") == 1
    assert v(watcher, service.deployment, "deployment_status") == 1


def test_remove_leaves_after_retention(watcher: WatcherProcess, service: Service) -> None:
    """A removed service's series stay for retention.gone_seconds, removed (not broken), then leave."""
    settled(watcher, service.deployment, status=1, revision=1)
    assert v(watcher, service.deployment, "deployment_removed") == 0
    service.remove()
    watcher.wait_for("gone", lambda: v(watcher, service.deployment, "deployment_status") is None, timeout=60)
    told = [line for line in watcher.log.read_text().splitlines() if f"deployment {service.deployment}/" in line]
    assert any(line.endswith("removed: its Swarm service was removed") for line in told), "\n".join(told)


def test_removed_during_an_update_fails_at_its_deadline(watcher: WatcherProcess, swarm: SwarmCluster) -> None:
    """`docker service rm` while an update runs: its update state and replica series leave at once
    (no stale `updating`), and the update fails at its (short, by label) deadline, saying why.
    Before, it stayed in progress and `updating` until retention dropped it."""
    deadline = 12
    service = Service(swarm, args=("--label", f"deployment.progress_deadline_seconds={deadline}"))
    try:
        settled(watcher, service.deployment, status=1, revision=1)
        service.update("--image", "app:1.1", "--update-delay", "60s")  # the second task waits: updating for long
        watcher.wait_for(
            "updating", lambda: v(watcher, service.deployment, "deployment_swarm_update_state", state="updating") == 1
        )
    finally:
        service.remove()

    def removed_in_progress() -> bool:
        """One scrape: still in progress (until the deadline), with no Swarm series left."""
        names = {s.name: s.value for s in watcher.samples() if s.labels.get("deployment") == service.deployment}
        swarm_series = {"deployment_swarm_update_state", "deployment_replicas"}
        return names.get("deployment_status") == 2 and not swarm_series & names.keys()

    watcher.wait_for("in progress, without update state or replicas", removed_in_progress)
    failed = f"revision 2 (1.1) failed: {SERVICE_REMOVED}"
    watcher.wait_for("failed at the deadline", lambda: failed in watcher.log.read_text(), timeout=deadline + 20)


def test_restart_in_the_middle_of_an_update(tmp_path: Path, swarm: SwarmCluster, service: Service) -> None:
    """The watcher stopped while an update rolls back and started again: after the resync, the
    state is the orchestrator's (rollback counted, version back, the update failed and the rollback
    a success), from its state file."""
    data = tmp_path / "state"
    first = watch(tmp_path, swarm, f"--storage.directory={data}")
    try:
        settled(first, service.deployment, status=1, revision=1)
        service.update("--image", "app:1.2", "--args", "sh -c 'exit 3'", "--update-failure-action", "rollback")
        first.wait_for(
            "updating", lambda: v(first, service.deployment, "deployment_swarm_update_state", state="updating") == 1
        )
    finally:
        first.stop()
    second = watch(tmp_path, swarm, f"--storage.directory={data}")
    try:
        second.wait_for(
            "rollback completed",
            lambda: v(second, service.deployment, "deployment_swarm_update_state", state="rollback_completed") == 1,
            timeout=90,
        )
        settled(second, service.deployment, status=1, revision=3)
        assert info(second, service.deployment)["version"] == "1.0"
        assert v(second, service.deployment, "deployment_rollback_count_total") == 1
        assert dora(second, service.deployment) == (2, 1, 1, 1)
    finally:
        second.stop()


def test_update_and_rollback_on_docker_26(tmp_path: Path) -> None:
    """Docker Engine 26.1 (Debian 13's, API 1.45) as a single-node swarm: a create, an update that
    succeeds and one the orchestrator rolls back read the same as on 20.10."""
    daemon = TrixieDockerd(root=TRIXIE_ROOT, log=tmp_path / "dockerd-26.log", image=BUSYBOX_IMAGE,
                           image_tarball=busybox_tarball(), address="10.99.0.1")  # fmt: skip
    watcher: WatcherProcess | None = None
    try:
        daemon.start()
        docker = ["docker", "-H", daemon.host]
        run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=120)
        run([*docker, "swarm", "init", "--advertise-addr", "10.99.0.1"])
        for tag in TAGS:
            run([*docker, "tag", BUSYBOX_IMAGE, tag])
        assert run([*docker, "version", "--format", "{{.Server.Version}}"]).stdout.startswith("26.")
        watcher = start_watcher(tmp_path, f"--docker.host={daemon.host}", "--swarm.poll-seconds=0.5",
                                "--exposition.min-interval-seconds=0.1",
                                "--exposition.dora-histograms=deployment")  # fmt: skip
        name = f"svc-{uuid.uuid4().hex[:6]}"
        run([*docker, "service", "create", "-d", "--name", name, "--replicas", "2", "--label",
             f"deployment.name={name}", *FAST, "app:1.0", "sleep", "600"])  # fmt: skip
        settled(watcher, name, status=1, revision=1)
        run([*docker, "service", "update", "-d", *FAST, "--image", "app:1.1", name])
        settled(watcher, name, status=1, revision=2)
        run([*docker, "service", "update", "-d", *FAST, "--image", "app:1.2", "--args", "sh -c 'exit 3'",
             "--update-failure-action", "rollback", name])  # fmt: skip
        settled(watcher, name, status=1, revision=4)
        assert v(watcher, name, "deployment_rollback_count_total") == 1
        assert dora(watcher, name) == (3, 1, 1, 1)
        assert v(watcher, name, "deployment_swarm_update_state", state="rollback_completed") == 1
        assert info(watcher, name)["version"] == "1.1"
    finally:
        if watcher is not None:
            watcher.stop()
        subprocess.run(["docker", "-H", daemon.host, "swarm", "leave", "--force"], capture_output=True, timeout=60)
        daemon.cleanup()
