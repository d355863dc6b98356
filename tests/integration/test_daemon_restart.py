"""A real Docker daemon restart in the middle of a scenario, on a private dockerd.

While the daemon is down the watcher keeps serving the last values, says it is not ready,
and retries; once the daemon is back it reconnects, resyncs, and what happened meanwhile is
read from the container list and inspect data. Both daemon behaviours are covered: with
live restore containers outlive the daemon, without it the daemon stops them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import HEALTHY_WHEN_FILE, WatcherProcess, start_watcher
from tests.private_dockerd import PrivateDockerd

pytestmark = pytest.mark.docker

STABLE = 4  # seconds: v2's stable time, which passes while the daemon is down


def labels(name: str, version: str, **extra: str) -> dict[str, str]:
    return {"deployment.name": name, "deployment.version": version, **extra}


def watch(tmp_path: Path, daemon: PrivateDockerd) -> WatcherProcess:
    return start_watcher(
        tmp_path,
        f"--docker.host={daemon.host}",
        "--rollout.stable-seconds=1",
        "--stats.interval-seconds=1",
        "--docker.backoff-initial-seconds=0.2",
        "--docker.backoff-max-seconds=1",
        "--exposition.max-staleness-seconds=0.5",  # docker_up and counters, re-read quickly
    )


def all_succeeded(watcher: WatcherProcess, *names: str) -> bool:
    return all(
        watcher.value("deployment_status", deployment=name) == 1
        and watcher.value("deployment_health_status", deployment=name) == 1
        for name in names
    )


def counter(watcher: WatcherProcess, name: str) -> float:
    return watcher.value(name) or 0


def test_daemon_restart_with_live_restore(tmp_path: Path, private_dockerd: PrivateDockerd) -> None:
    """Containers outlive the daemon: the stable time passing while it is down proves nothing
    (no stale success), after the restart an exit during the downtime fails the rollout in
    progress (the exit code read from inspect), and the others are still healthy."""
    daemon = private_dockerd
    daemon.start(live_restore=True)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    crash, steady = (f"{what}-{uuid.uuid4().hex[:6]}" for what in ("crash", "steady"))
    daemon.run("crash-1", labels=labels(crash, "1"), command="exec sleep 600")
    daemon.run("steady", labels=labels(steady, "1"), command="touch /tmp/ok; exec sleep 600", options=HEALTHY_WHEN_FILE)
    watcher = watch(tmp_path, daemon)
    try:
        watcher.wait_for("all succeeded", lambda: all_succeeded(watcher, crash, steady))
        # v2 of crash: in progress for its stable time, exits with 3 once the daemon is down.
        v2_started = time.monotonic()
        daemon.run(
            "crash-2",
            labels=labels(crash, "2", **{"deployment.stable_seconds": str(STABLE)}),
            command="while [ ! -f /ctl/go ]; do sleep 0.1; done; touch /ctl/crashed; exit 3",
            options=("-v", f"{ctl}:/ctl"),
        )
        watcher.wait_for("v2 in progress", lambda: watcher.value("deployment_status", deployment=crash) == 2)
        reconnects = counter(watcher, "deployment_watcher_docker_reconnects_total")
        resyncs = counter(watcher, "deployment_watcher_resyncs_total")

        daemon.stop()
        watcher.wait_for("not ready", lambda: watcher.get("/ready")[0] == 503)
        watcher.wait_for("docker_up 0", lambda: watcher.value("deployment_watcher_docker_up") == 0)
        # The last known values are still served.
        assert watcher.value("deployment_status", deployment=crash) == 2
        assert watcher.value("deployment_version", deployment=crash) == 2
        assert watcher.value("deployment_health_status", deployment=steady) == 1
        # Its stable time passes while nothing can be known about it: no verdict.
        time.sleep(max(0.0, v2_started + STABLE + 2 - time.monotonic()))
        assert watcher.value("deployment_status", deployment=crash) == 2
        (ctl / "go").touch()
        watcher.wait_for("v2 exiting while the daemon is down", lambda: (ctl / "crashed").exists())
        watcher.wait_for(
            "retrying", lambda: counter(watcher, "deployment_watcher_docker_reconnects_total") >= reconnects + 2
        )
        assert watcher.get("/ready")[0] == 503

        daemon.start(live_restore=True)
        watcher.wait_ready("ready again")
        watcher.wait_for("docker_up 1", lambda: watcher.value("deployment_watcher_docker_up") == 1)
        watcher.wait_for("resynced", lambda: counter(watcher, "deployment_watcher_resyncs_total") > resyncs)
        watcher.wait_for("v2 failed", lambda: watcher.value("deployment_status", deployment=crash) == 0)
        assert watcher.value("deployment_version", deployment=crash) == 2
        assert "exited with code 3" in watcher.log.read_text(errors="replace")
        assert daemon.docker("inspect", "-f", "{{.State.ExitCode}}", "crash-2") == "3"
        # steady's container outlived the daemon: the same rollout, running and healthy (Docker
        # 25 and later probe a restored container afresh: "starting" first, then healthy).
        watcher.wait_for("steady healthy", lambda: all_succeeded(watcher, steady))
        assert watcher.value("deployment_version", deployment=steady) == 1
    finally:
        assert watcher.stop() == 0


def test_daemon_restart_without_live_restore(tmp_path: Path, private_dockerd: PrivateDockerd) -> None:
    """The daemon's shutdown stops every container: afterwards one without a restart policy is
    down (health 0, status kept: a stop is not a crash), and one with `--restart=always` is back
    and healthy again by its health check (the same rollout)."""
    daemon = private_dockerd
    daemon.start(live_restore=False)
    plain, always = (f"{what}-{uuid.uuid4().hex[:6]}" for what in ("plain", "always"))
    daemon.run("plain", labels=labels(plain, "1"), command="exec sleep 600")
    daemon.run(
        "always",
        labels=labels(always, "1"),
        command="touch /tmp/ok; exec sleep 600",
        options=("--restart=always", *HEALTHY_WHEN_FILE),
    )
    watcher = watch(tmp_path, daemon)
    try:
        watcher.wait_for("all succeeded", lambda: all_succeeded(watcher, plain, always))
        reconnects = counter(watcher, "deployment_watcher_docker_reconnects_total")

        daemon.stop()
        watcher.wait_for("not ready", lambda: watcher.get("/ready")[0] == 503)
        watcher.wait_for("docker_up 0", lambda: watcher.value("deployment_watcher_docker_up") == 0)
        watcher.wait_for(
            "retrying", lambda: counter(watcher, "deployment_watcher_docker_reconnects_total") >= reconnects + 2
        )

        daemon.start(live_restore=False)
        watcher.wait_ready("ready again")
        watcher.wait_for("plain down", lambda: watcher.value("deployment_health_status", deployment=plain) == 0)
        assert watcher.value("deployment_health_check", deployment=plain, check_type="containers_running") == 0
        assert watcher.value("deployment_status", deployment=plain) == 1
        watcher.wait_for("always back", lambda: watcher.value("deployment_health_status", deployment=always) == 1)
        assert daemon.docker("inspect", "-f", "{{.State.Running}}", "always") == "true"
        for name in (plain, always):
            assert watcher.value("deployment_version", deployment=name) == 1
    finally:
        assert watcher.stop() == 0
