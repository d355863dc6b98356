"""What the real daemon sends that once stopped the watcher: event lines beyond aiohttp's
512 KiB line limit (a container's huge labels, a `docker exec` of huge arguments, of any
container), and a socket that is not there. The watcher stays up, /metrics parses, and a
deployment started afterwards still reaches success."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Containers, WatcherProcess, WatcherSetup, docker, start_watcher, unique
from tests.dockerproxy import SocketProxy

pytestmark = pytest.mark.docker

STABLE = 1
# One argument may not exceed 128 KiB (Linux's MAX_ARG_STRLEN): many arguments of 80 KB each.
PIECE = 80_000


@pytest.fixture(scope="module")
def watcher_setup() -> WatcherSetup:
    return WatcherSetup((f"--rollout.stable-seconds={STABLE}", "--stats.interval-seconds=1"))


def tracked(name: str) -> dict[str, str]:
    return {"deployment.name": name, "deployment.environment": "test", "deployment.version": "1"}


def still_following(watcher: WatcherProcess, containers: Containers) -> None:
    """/metrics parses, and a deployment started now reaches success."""
    _, _, body = watcher.get("/metrics")
    assert list(text_string_to_metric_families(body))
    name = unique("after")
    containers.run(labels=tracked(name))
    watcher.wait_for("success", lambda: watcher.value("deployment_status", deployment=name) == 1, timeout=STABLE + 15)
    assert watcher.get("/ready")[0] == 200


def test_a_container_with_a_600_kb_label(watcher: WatcherProcess, containers: Containers) -> None:
    """An untracked container whose labels make a 640 KB event line, and a tracked one."""
    huge = {f"huge.{i}": "x" * PIECE for i in range(8)}
    containers.run(labels=huge)
    name = unique("huge")
    containers.run(labels={**tracked(name), **huge})
    watcher.wait_for("the huge one", lambda: watcher.value("deployment_status", deployment=name) == 1, timeout=20)
    still_following(watcher, containers)


def test_a_docker_exec_of_300_kb_of_arguments(watcher: WatcherProcess, containers: Containers) -> None:
    """exec_create and exec_start events carry the command; any container's."""
    target = containers.run(labels={"purpose": "exec-target"})
    docker("exec", target, "true", *(["y" * PIECE] * 4))
    still_following(watcher, containers)


def test_a_socket_that_is_not_there(tmp_path: Path, containers: Containers, docker_engine: None) -> None:
    """--docker.host names a socket that does not exist: the watcher waits, /ready says why, and
    once the socket appears it connects and resyncs."""
    name = unique("late")
    containers.run(labels=tracked(name))
    path = Path(f"/tmp/nonexistent-{uuid.uuid4().hex[:8]}.sock")
    watcher = start_watcher(
        tmp_path, f"--docker.host=unix://{path}", "--docker.backoff-initial-seconds=0.2",
        "--docker.backoff-max-seconds=1", "--exposition.max-staleness-seconds=0.5",
    )  # fmt: skip
    proxy = SocketProxy(path)
    try:
        watcher.wait_for(
            "no_socket counted",
            lambda: (watcher.value("deployment_watcher_docker_errors_total", kind="no_socket") or 0) >= 2,
        )
        status, _, body = watcher.get("/ready")
        assert status == 503 and f"no Docker socket at {path}" in body, body
        proxy.start()
        watcher.wait_ready("connected")
        watcher.wait_for("resynced", lambda: watcher.value("deployment_status", deployment=name) is not None)
        log = watcher.log.read_text(errors="replace")
        warnings = [line for line in log.splitlines() if " WARNING " in line and "no Docker socket" in line]
        assert len(warnings) == 1, log  # once, not once a retry (those are at debug)
        assert "connected again" in log
    finally:
        watcher.stop_cleanly()
        proxy.close()
