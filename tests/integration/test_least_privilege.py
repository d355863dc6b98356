"""The watcher only reads from Docker: a whole scenario through a proxy that refuses anything but GET."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Containers, docker, start_watcher
from tests.dockerproxy import ReadOnlyProxy, Seen

pytestmark = pytest.mark.docker

# What the watcher may ask for, after the optional /v1.xx prefix: the endpoints a socket
# proxy must allow (docs/security.md, "Least privilege").
ALLOWED_PATHS = {
    "ping": r"/_ping",
    "version": r"/version",
    "info": r"/info",
    "events": r"/events",
    "list": r"/containers/json",
    "inspect": r"/containers/[0-9a-f]{64}/json",
    "stats": r"/containers/[0-9a-f]{64}/stats",
}


def kind(seen: Seen) -> str | None:
    """Which allowed endpoint a request was for, or None."""
    for name, pattern in ALLOWED_PATHS.items():
        if re.fullmatch(rf"(/v[0-9.]+)?{pattern}", seen.path):
            return name
    return None


@pytest.fixture
def proxy(tmp_path: Path, docker_engine: None) -> Iterator[ReadOnlyProxy]:
    made = ReadOnlyProxy(tmp_path / "ro.sock")
    made.start()
    try:
        yield made
    finally:
        made.close()


def test_the_proxy_refuses_writes(proxy: ReadOnlyProxy, containers: Containers) -> None:
    """The proxy itself: a docker CLI `create` through it is refused with 403 and creates nothing."""
    name = f"dw-test-refused-{uuid.uuid4().hex[:8]}"
    containers.names.append(name)  # removed afterwards should the proxy let it through
    result = docker("-H", f"unix://{proxy.path}", "create", "--name", name, containers.image, check=False)
    assert result == ""
    assert [s.method for s in proxy.requests() if s.status == 403] == ["POST"]
    assert docker("ps", "-aq", "--filter", f"name=^{name}$") == ""


@pytest.mark.parametrize("stats_source", ["api", "cgroup"])
def test_the_watcher_only_reads(
    tmp_path: Path, proxy: ReadOnlyProxy, containers: Containers, stats_source: str
) -> None:
    """Rollout, failure, rollback, stats polls (either source) and periodic resyncs through a
    GET-only proxy: nothing refused, only GET/HEAD, only containers, events, info, version, ping."""
    name = f"ro-{uuid.uuid4().hex[:8]}"
    watcher = start_watcher(
        tmp_path,
        f"--docker.host=unix://{proxy.path}",
        # Longer than v2's second of life: its exit must come before a tick can judge it stable.
        "--rollout.stable-seconds=3",
        "--stats.interval-seconds=1",
        f"--stats.source={stats_source}",
        "--docker.silence-seconds=1",
        "--docker.resync-seconds=3",
        "--exposition.max-staleness-seconds=0.5",
    )
    try:
        watcher.wait_ready("ready")
        v1 = containers.run(labels={"deployment.name": name, "deployment.version": "1.0"})
        watcher.wait_for("v1 success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        containers.run(labels={"deployment.name": name, "deployment.version": "2.0"}, command="sleep 1; exit 1")
        watcher.wait_for("v2 failed", lambda: watcher.value("deployment_status", deployment=name) == 0)
        containers.remove(v1)
        containers.run(labels={"deployment.name": name, "deployment.version": "1.0"})
        watcher.wait_for("rollback", lambda: watcher.value("deployment_rollback_count_total", deployment=name) == 1)
        watcher.wait_for("rollback success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        watcher.wait_for(
            "stats", lambda: (watcher.value("deployment_cpu_usage_seconds_total", deployment=name) or 0) > 0
        )
        watcher.wait_for("a periodic resync", lambda: (watcher.value("deployment_watcher_resyncs_total") or 0) >= 2)
    finally:
        assert watcher.stop() == 0

    seen = proxy.requests()
    assert [s for s in seen if s.status == 403] == []
    assert {s.method for s in seen} <= ReadOnlyProxy.ALLOWED
    assert [s for s in seen if kind(s) is None] == []
    # Every kind of request the watcher makes went through the proxy.
    expected = {"version", "info", "events", "list", "inspect"} | ({"stats"} if stats_source == "api" else set())
    assert {kind(s) for s in seen} >= expected
