"""The CI/CD API of a real watcher process, driven by the real `notify` subcommand and raw HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    BUSYBOX_IMAGE,
    Containers,
    WatcherProcess,
    WatcherSetup,
    free_port,
    notify,
    start_watcher,
    unique,
)

TOKEN = "integration-token-" + uuid.uuid4().hex
STABLE = 2  # seconds: the container rules would have finished a rollout by then

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def watcher_setup() -> WatcherSetup:
    return WatcherSetup(
        # Each deployment's own lead-time histogram (by default it is per environment).
        (
            f"--rollout.stable-seconds={STABLE}",
            "--stats.enabled=false",
            "--api.max-body-bytes=4096",
            "--exposition.dora-histograms=deployment",
        ),
        env={"WATCHER_API_TOKEN": TOKEN},
    )


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url + "/api/v1/deployments", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_reported_rollouts_show_in_metrics_with_a_rollback(watcher: WatcherProcess) -> None:
    """Reports of a deployment without containers: status, revision, versions, durations, a rollback."""
    name = unique("fn")
    flags = ("--deployment", name, "--environment", "test")
    done = notify(watcher.url, *flags, "--version", "1.0.0", "--commit", "sha-1", "--status", "in_progress",
                  "--started-at", str(time.time() - 30), token=TOKEN)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"outcome": "started"' in done.stdout
    watcher.expect("deployment_status", 2, deployment=name)
    watcher.expect("deployment_version", 1, deployment=name)
    watcher.expect("deployment_version_info", 1, deployment=name, version="1.0.0", commit_sha="sha-1")

    done = notify(watcher.url, *flags, "--version", "1.0.0", "--commit", "sha-1", "--status", "success", token=TOKEN)
    assert done.returncode == 0, done.stderr
    watcher.expect("deployment_status", 1, deployment=name)
    watcher.expect("deployment_duration_seconds_count", 1, deployment=name)
    duration = watcher.value("deployment_duration_seconds_sum", deployment=name)
    assert duration is not None and duration >= 30
    watcher.expect("deployment_info", 1, deployment=name, status="success", version="1.0.0", image="")

    done = notify(watcher.url, *flags, "--version", "2.0.0", "--status", "success", "--started-at",
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 10)), token=TOKEN)  # fmt: skip
    assert done.returncode == 0, done.stderr
    watcher.expect("deployment_version", 2, deployment=name)
    watcher.expect("deployment_duration_seconds_count", 2, deployment=name)

    done = notify(
        watcher.url, *flags, "--version", "1.0.0", "--commit", "sha-1", "--status", "in_progress", token=TOKEN
    )
    assert done.returncode == 0, done.stderr
    watcher.expect("deployment_rollback_count_total", 1, deployment=name)
    watcher.expect("deployment_version", 3, deployment=name)
    watcher.expect("deployment_status", 2, deployment=name)


def test_containers_join_the_announced_rollout(watcher: WatcherProcess, containers: Containers) -> None:
    """CI announces a version; its container joins that revision; CI's success finishes it."""
    name = unique("svc")
    flags = ("--deployment", name, "--environment", "test", "--version", "3.1.0", "--commit", "sha-31")
    done = notify(watcher.url, *flags, "--status", "in_progress", token=TOKEN)
    assert done.returncode == 0, done.stderr
    labels = {"deployment.name": name, "deployment.environment": "test", "deployment.version": "3.1.0"}
    containers.run(labels=labels)
    joined = {"deployment": name, "check_type": "containers_running"}
    watcher.wait_for("the container to join", lambda: watcher.value("deployment_health_check", **joined) == 1)
    time.sleep(STABLE + 1)  # past the stable time: the container rules would have said success
    watcher.expect("deployment_status", 2, deployment=name)
    watcher.expect("deployment_version", 1, deployment=name)

    done = notify(watcher.url, *flags, "--status", "success", token=TOKEN)
    assert done.returncode == 0, done.stderr
    watcher.expect("deployment_status", 1, deployment=name)
    watcher.expect("deployment_version", 1, deployment=name)
    watcher.expect("deployment_info", 1, deployment=name, commit="sha-31", image=BUSYBOX_IMAGE)
    watcher.expect("deployment_duration_seconds_count", 1, deployment=name)


def report(watcher: WatcherProcess, **fields: object) -> tuple[int, dict[str, Any]]:
    """POST one report, as deploy tooling does; the status and the answer."""
    status, _, text = post(
        watcher.url, json.dumps(fields).encode(),
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    return status, json.loads(text)


def test_skewed_reports_neither_freeze_nor_flatter(watcher: WatcherProcess, containers: Containers) -> None:
    """A CI runner's clock 8 h ahead: its started_at is refused (the arrival used, a warning, counted),
    so a container of the next version starts a rollout and a correct report of the one after is
    201, not 202 "stale". A commit time after the deploy began gives no lead time rather than 0 s."""
    name = unique("skew")
    skewed = watcher.value("deployment_watcher_clock_skew_total", source="started_at") or 0
    now = time.time()
    status, answer = report(watcher, deployment=name, environment="test", version="1.0.0", status="in_progress",
                            started_at=now + 8 * 3600, commit_time=now + 60)  # fmt: skip
    assert (status, answer["outcome"]) == (201, "started"), answer
    assert "started_at lies 28" in answer["message"] and "clock skew" in answer["message"]
    assert abs(answer["rollout"]["started_at"] - now) < 60
    status, answer = report(watcher, deployment=name, environment="test", version="1.0.0", status="success")
    assert (status, answer["rollout"]["status"]) == (200, "success"), answer
    watcher.expect("deployment_watcher_clock_skew_total", skewed + 1, source="started_at")
    watcher.expect("deployment_rollouts_total", 1, deployment=name, outcome="success")
    assert watcher.value("deployment_lead_time_seconds_count", deployment=name) == 0
    assert "started_at lies 28" in watcher.tail(100)

    labels = {"deployment.name": name, "deployment.environment": "test", "deployment.version": "2.0.0"}
    containers.run(labels=labels)
    watcher.expect("deployment_version", 2, deployment=name)
    watcher.expect("deployment_status", 1, deployment=name, timeout=30)
    status, answer = report(watcher, deployment=name, environment="test", version="3.0.0", status="in_progress",
                            started_at=time.time())  # fmt: skip
    assert (status, answer["outcome"], answer["rollout"]["revision"]) == (201, "started", 3), answer


def test_a_timestamp_label_ahead_neither_freezes_nor_zeroes(watcher: WatcherProcess, containers: Containers) -> None:
    """deployment.timestamp 3 h ahead: the container's creation starts the rollout (a warning,
    counted), its duration is true (not 0 s), and a report of the next version is not stale."""
    name = unique("stamp")
    skewed = watcher.value("deployment_watcher_clock_skew_total", source="deployment.timestamp") or 0
    labels = {"deployment.name": name, "deployment.environment": "test", "deployment.version": "1.0.0",
              "deployment.timestamp": str(int(time.time() + 3 * 3600))}  # fmt: skip
    containers.run(labels=labels)
    watcher.expect("deployment_status", 1, deployment=name, timeout=30)
    duration = watcher.value("deployment_duration_seconds_sum", deployment=name)
    assert duration is not None and duration >= STABLE, duration
    watcher.expect("deployment_watcher_clock_skew_total", skewed + 1, source="deployment.timestamp")
    status, answer = report(watcher, deployment=name, environment="test", version="2.0.0", status="in_progress",
                            started_at=time.time())  # fmt: skip
    assert (status, answer["outcome"], answer["rollout"]["revision"]) == (201, "started", 2), answer


def test_wrong_or_missing_token_is_refused_and_nothing_recorded(watcher: WatcherProcess) -> None:
    """401 (exit code 3) for a wrong token, 401 with a Bearer challenge without one; no deployment appears."""
    name = unique("nope")
    flags = ("--deployment", name, "--version", "1.0.0", "--status", "success")
    done = notify(watcher.url, *flags, token="wrong-token-0123456789")
    assert done.returncode == 3, done.stderr
    assert "401" in done.stderr
    status, headers, _ = post(watcher.url, b'{"deployment": "%s"}' % name.encode(), {})
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="deployment-watcher"')
    watcher.fresh()
    assert watcher.value("deployment_status", deployment=name) is None
    refused = watcher.value("deployment_watcher_api_requests_total", outcome="unauthorized")
    assert refused is not None and refused >= 2


def test_body_above_the_limit_is_413(watcher: WatcherProcess) -> None:
    """A body above api.max_body_bytes is refused with 413 and records nothing."""
    name = unique("big")
    body = b'{"deployment": "%s", "version": "1", "status": "success", "commit": "%s"}' % (
        name.encode(),
        b"x" * 100_000,
    )
    status, _, text = post(watcher.url, body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 413, text
    assert "4096 bytes" in text
    assert watcher.value("deployment_status", deployment=name) is None


def test_notify_exit_code_when_nothing_listens() -> None:
    """A watcher that cannot be reached is exit code 1."""
    done = notify(
        f"http://127.0.0.1:{free_port()}", "--deployment", "x", "--version", "1", "--status", "success", token=TOKEN
    )
    assert done.returncode == 1
    assert "cannot reach the watcher" in done.stderr


def test_api_is_off_without_a_token(tmp_path: Path, docker_engine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No token configured: the API answers 403 disabled (exit code 3) and records nothing."""
    monkeypatch.delenv("WATCHER_API_TOKEN", raising=False)
    process = start_watcher(tmp_path, "--stats.enabled=false")
    try:
        name = unique("off")
        done = notify(process.url, "--deployment", name, "--version", "1.0.0", "--status", "success", token=TOKEN)
        assert done.returncode == 3, done.stderr
        assert "disabled" in done.stderr
        assert process.value("deployment_status", deployment=name) is None
        assert "CI/CD API off" in process.log.read_text()
    finally:
        assert process.stop() == 0


def test_unreadable_token_file_stops_the_start(tmp_path: Path) -> None:
    """A token file that cannot be read is a configuration error: exit code 2, said clearly."""
    missing = tmp_path / "no-such-token"
    done = subprocess.run(
        [sys.executable, "-m", "watcher", f"--api.token-file={missing}"],
        env={k: v for k, v in os.environ.items() if k != "WATCHER_API_TOKEN"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"api.token_file {missing}: cannot read it" in done.stderr
