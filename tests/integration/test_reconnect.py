"""Losing the Docker Engine: the watcher keeps serving, reconnects with backoff, and resyncs.

The daemon is reached through a proxy the test controls (``tests/dockerproxy.py``): cut off
(socket gone), missing from the start, hung (connections open, nothing forwarded), or only
its event stream stalled while it answers everything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HEALTHY_WHEN_FILE, Containers, WatcherProcess, docker, start_watcher, unique
from tests.dockerproxy import ReadOnlyProxy, SocketProxy

pytestmark = pytest.mark.docker

QUICK_RECONNECT = ("--docker.backoff-initial-seconds=0.2", "--docker.backoff-max-seconds=1")
FRESH_SELF_METRICS = "--exposition.max-staleness-seconds=0.5"  # docker_up and counters, re-read quickly


@pytest.fixture
def proxy(tmp_path: Path, docker_engine: None) -> Iterator[SocketProxy]:
    made = SocketProxy(tmp_path / "docker.sock")
    made.start()
    try:
        yield made
    finally:
        made.close()


def watch_through(tmp_path: Path, socket: Path, *flags: str) -> WatcherProcess:
    return start_watcher(
        tmp_path,
        "--rollout.stable-seconds=1",
        "--stats.enabled=false",
        *QUICK_RECONNECT,
        FRESH_SELF_METRICS,
        *flags,
        env={"DOCKER_HOST": f"unix://{socket}"},
    )


def reconnects(watcher: WatcherProcess) -> float:
    return watcher.value("deployment_watcher_docker_reconnects_total") or 0


def test_reconnects_and_resyncs_after_losing_the_daemon(
    tmp_path: Path, proxy: SocketProxy, containers: Containers
) -> None:
    """While cut off: /metrics still served, /ready 503, docker_up 0; afterwards what changed is
    found: a new version from the container list, a failing health check from inspect data."""
    before = containers.run(labels={"deployment.name": "reconnect-a", "deployment.version": "1"})
    checked = unique("reconnect-h")
    sick = containers.run(
        labels={"deployment.name": checked, "deployment.version": "1"},
        command="touch /tmp/ok; exec sleep 600",
        options=HEALTHY_WHEN_FILE,
    )
    watcher = watch_through(tmp_path, proxy.path)
    try:
        watcher.wait_for("synced", lambda: watcher.value("deployment_status", deployment="reconnect-a") == 1)
        watcher.wait_for("healthy", lambda: watcher.value("deployment_health_status", deployment=checked) == 1)
        proxy.cut()
        assert not proxy.path.exists()
        watcher.wait_for("not ready", lambda: watcher.get("/ready")[0] == 503)
        # The watcher's own metrics are re-read within exposition.max_staleness_seconds.
        watcher.wait_for("docker_up 0", lambda: watcher.value("deployment_watcher_docker_up") == 0)
        assert watcher.value("deployment_status", deployment="reconnect-a") == 1  # stale values still served
        # Changes while disconnected: one container replaced by a new version.
        containers.remove(before)
        containers.run(labels={"deployment.name": "reconnect-a", "deployment.version": "2"})
        docker("exec", sick, "rm", "/tmp/ok")
        watcher.wait_for("unhealthy", lambda: docker("inspect", "-f", "{{.State.Health.Status}}", sick) == "unhealthy")
        watcher.wait_for("retrying", lambda: reconnects(watcher) >= 2)
        assert watcher.value("deployment_health_status", deployment=checked) == 1  # not seen yet
        proxy.restore()
        watcher.wait_ready("ready again")
        watcher.wait_for("resynced", lambda: watcher.value("deployment_version", deployment="reconnect-a") == 2)
        watcher.wait_for("success", lambda: watcher.value("deployment_status", deployment="reconnect-a") == 1)
        assert watcher.value("deployment_info", deployment="reconnect-a", version="2") == 1
        watcher.wait_for("resyncs", lambda: (watcher.value("deployment_watcher_resyncs_total") or 0) >= 2)
        watcher.wait_for(
            "health from inspect", lambda: watcher.value("deployment_health_status", deployment=checked) == 0
        )
        assert watcher.value("deployment_health_check", deployment=checked, check_type="docker_healthcheck") == 0
        assert watcher.value("deployment_status", deployment=checked) == 1  # a finished rollout stays
    finally:
        assert watcher.stop() == 0


def test_waits_for_a_socket_that_is_not_there_yet(tmp_path: Path, containers: Containers) -> None:
    """Started before the daemon's socket exists: serves /metrics, not ready, retries; ready once it appears."""
    name = unique("late")
    containers.run(labels={"deployment.name": name, "deployment.version": "1"})
    proxy = SocketProxy(tmp_path / "later.sock")
    watcher = watch_through(tmp_path, proxy.path)
    try:
        watcher.wait_for("retrying", lambda: reconnects(watcher) >= 2)
        assert watcher.get("/ready")[0] == 503
        watcher.wait_for("docker_up 0", lambda: watcher.value("deployment_watcher_docker_up") == 0)
        assert "No such file" in watcher.log.read_text(errors="replace")
        proxy.start()
        watcher.wait_ready("ready")
        watcher.wait_for("found", lambda: watcher.value("deployment_status", deployment=name) == 1)
    finally:
        assert watcher.stop() == 0
        proxy.close()


def test_reconnects_when_the_daemon_hangs(tmp_path: Path, proxy: SocketProxy, containers: Containers) -> None:
    """A daemon that keeps connections open but says nothing: the silence check times out, the
    watcher reconnects, and an OOM kill that happened meanwhile is read from inspect data."""
    name = unique("hang")
    containers.run(labels={"deployment.name": name, "deployment.version": "1"})
    watcher = watch_through(tmp_path, proxy.path, "--docker.silence-seconds=1", "--docker.request-timeout-seconds=2")
    try:
        watcher.wait_for("v1 success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        before = reconnects(watcher)
        proxy.freeze()
        watcher.wait_for("not ready", lambda: watcher.get("/ready")[0] == 503)
        watcher.wait_for("docker_up 0", lambda: watcher.value("deployment_watcher_docker_up") == 0)
        assert watcher.value("deployment_status", deployment=name) == 1  # stale values still served
        # While it hangs, v2 starts and is OOM-killed: its events never reach the watcher.
        oom = containers.run(
            labels={"deployment.name": name, "deployment.version": "2"},
            command="tail /dev/zero",
            options=("--memory=16m", "--memory-swap=16m"),
        )
        watcher.wait_for("OOM kill", lambda: docker("inspect", "-f", "{{.State.OOMKilled}}", oom) == "true")
        watcher.wait_for("retrying", lambda: reconnects(watcher) >= before + 2)
        assert watcher.get("/ready")[0] == 503
        proxy.thaw()
        watcher.wait_ready("ready again")
        watcher.wait_for("v2 failed", lambda: watcher.value("deployment_status", deployment=name) == 0)
        assert watcher.value("deployment_version", deployment=name) == 2
        assert watcher.value("deployment_health_check", deployment=name, check_type="no_oom_kill") == 0
        assert "was OOM-killed" in watcher.log.read_text(errors="replace")
    finally:
        assert watcher.stop() == 0


def test_reconnects_when_the_event_stream_stalls(tmp_path: Path, containers: Containers, docker_engine: None) -> None:
    """The event stream stops delivering while the daemon answers every other request: the
    silence check finds events the stream did not deliver, and the watcher reconnects and resyncs."""
    name = unique("stall")
    containers.run(labels={"deployment.name": name, "deployment.version": "1"})
    proxy = ReadOnlyProxy(tmp_path / "ro.sock")
    proxy.start()
    watcher = watch_through(tmp_path, proxy.path, "--docker.silence-seconds=1")
    try:
        watcher.wait_for("v1 success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        before = reconnects(watcher)
        proxy.stall_responses_in_flight()  # the event stream: it stays open and delivers nothing
        containers.run(labels={"deployment.name": name, "deployment.version": "2"})
        watcher.wait_for("reconnected", lambda: reconnects(watcher) > before)
        watcher.wait_for("v2 found", lambda: watcher.value("deployment_version", deployment=name) == 2)
        watcher.wait_for("v2 success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        assert watcher.get("/ready")[0] == 200
        assert "did not deliver" in watcher.log.read_text(errors="replace")
    finally:
        assert watcher.stop() == 0
        proxy.close()
