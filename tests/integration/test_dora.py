"""The DORA families of a real watcher: containers with deployment.commit_time labels and reports
through the CI/CD API with commit times and a hotfix, read back from /metrics, and kept over a restart."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import Containers, WatcherProcess, notify, start_watcher

pytestmark = pytest.mark.docker

TOKEN = "integration-token-" + uuid.uuid4().hex
DORA = ("deployment_rollouts_total", "deployment_change_failures_total", "deployment_rework_total",
        "deployment_lead_time_seconds_count", "deployment_lead_time_seconds_sum", "deployment_recovery_seconds_count",
        "deployment_recovery_seconds_sum")  # fmt: skip


def figures(watcher: WatcherProcess, name: str) -> dict[tuple[str, str], float]:
    """Every DORA sample of one deployment: (sample name, outcome) → value."""
    return {
        (s.name, s.labels.get("outcome", "")): s.value
        for s in watcher.samples()
        if s.name in DORA and s.labels.get("deployment") == name
    }


def test_containers_and_reports_with_commit_times(tmp_path: Path, containers: Containers) -> None:
    """A success, a failure and a rollback from containers, a hotfix from reports; a bad commit time
    refused and counted; after a restart every figure is the same."""
    data = tmp_path / "data"
    # Each deployment's own lead-time and recovery histograms (by default they are per environment).
    flags = (
        f"--storage.directory={data}", "--rollout.stable-seconds=1", "--stats.enabled=false",
        "--exposition.dora-histograms=deployment",
    )  # fmt: skip
    env = {"WATCHER_API_TOKEN": TOKEN}
    watcher = start_watcher(tmp_path, *flags, env=env)
    name, reported = f"dora-{uuid.uuid4().hex[:8]}", f"dora-cd-{uuid.uuid4().hex[:8]}"
    committed = time.time() - 3600

    def deploy(version: str, command: str = "exec sleep 600", **extra: str) -> str:
        labels = {"deployment.name": name, "deployment.version": version, "deployment.commit": f"sha-{version}",
                  "deployment.commit_time": str(int(committed)), **extra}  # fmt: skip
        return containers.run(labels=labels, command=command)

    try:
        watcher.wait_ready()
        first = deploy("1.0.0")
        watcher.expect("deployment_rollouts_total", 1, deployment=name, outcome="success")
        lead = watcher.value("deployment_lead_time_seconds_sum", deployment=name)
        assert lead is not None and 3600 <= lead < 3600 + 60
        deploy("2.0.0", command="exit 1")
        watcher.expect("deployment_rollouts_total", 1, deployment=name, outcome="failed")
        watcher.expect("deployment_change_failures_total", 1, deployment=name)
        containers.remove(first)
        deploy("1.0.0")  # a rollback to a commit already counted
        watcher.expect("deployment_rollouts_total", 2, deployment=name, outcome="success")
        watcher.expect("deployment_recovery_seconds_count", 1, deployment=name)
        assert watcher.value("deployment_lead_time_seconds_count", deployment=name) == 1
        assert watcher.value("deployment_change_failures_total", deployment=name) == 1

        # deploy tooling: a success, then a hotfix of it, with commit times in RFC 3339 and unix seconds
        base = ("--deployment", reported, "--environment", "test")
        for version, extra in (("3.1.0", ("--commit-time", "2024-05-01T12:00:00Z")),
                               ("3.1.1", ("--commit-time", str(int(committed)), "--change-type", "hotfix"))):  # fmt: skip
            done = notify(watcher.url, *base, "--version", version, "--status", "success",
                          "--started-at", str(time.time() - 5), *extra, token=TOKEN)  # fmt: skip
            assert done.returncode == 0, done.stderr
        watcher.expect("deployment_rework_total", 1, deployment=reported)
        watcher.expect("deployment_change_failures_total", 1, deployment=reported)
        watcher.expect("deployment_rollouts_total", 2, deployment=reported, outcome="success")
        watcher.expect("deployment_lead_time_seconds_count", 2, deployment=reported)
        refused = notify(watcher.url, *base, "--version", "3.1.2", "--status", "success",
                         "--commit-time", str(time.time() * 1000), token=TOKEN)  # fmt: skip
        assert refused.returncode != 0 and "commit_time" in refused.stdout + refused.stderr

        # a commit time in milliseconds: refused, logged and counted, the container still tracked
        errors = watcher.value("deployment_watcher_label_errors_total", label="deployment.commit_time") or 0
        containers.run(labels={"deployment.name": f"{name}-ms", "deployment.commit_time": str(int(time.time() * 1000))})
        watcher.expect("deployment_watcher_label_errors_total", errors + 1, label="deployment.commit_time")
        watcher.expect("deployment_rollouts_total", 1, deployment=f"{name}-ms", outcome="success")
        assert watcher.value("deployment_lead_time_seconds_count", deployment=f"{name}-ms") == 0
        before = {n: figures(watcher, n) for n in (name, reported)}
    finally:
        watcher.stop_cleanly()

    again = start_watcher(tmp_path, *flags, env=env)
    try:
        again.wait_ready()
        after = {n: figures(again, n) for n in (name, reported)}
        assert after == before
        assert before[name][("deployment_rollouts_total", "success")] == 2
    finally:
        again.stop_cleanly()
