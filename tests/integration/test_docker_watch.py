"""The watcher process against the real Docker Engine: rollouts, failures, rollbacks, usage."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import (
    BURN,
    HEALTHY_WHEN_FILE,
    OPENMETRICS,
    SERVE,
    Containers,
    WatcherProcess,
    WatcherSetup,
    docker,
    labels,
    require_binary,
    start_watcher,
    unique,
)
from tests.dockerproxy import ReadOnlyProxy

STABLE = 3  # seconds: short, so tests are quick

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def watcher_setup() -> WatcherSetup:
    return WatcherSetup(
        (f"--rollout.stable-seconds={STABLE}", "--stats.interval-seconds=1", "--labels.track-compose=true")
    )


def status(watcher: WatcherProcess, name: str) -> float | None:
    return watcher.value("deployment_status", deployment=name)


def test_rollout_lifecycle_with_two_replicas(watcher: WatcherProcess, containers: Containers) -> None:
    """v1 ×2 → success; v2 → in progress → success (revision 2); v3 exits 1 → failed; v2 again → rollback."""
    name = unique("shop")
    v1 = [containers.run(labels=labels(name, "1.0.0"), command=SERVE, options=HEALTHY_WHEN_FILE) for _ in range(2)]
    watcher.wait_for("v1 success", lambda: status(watcher, name) == 1)
    assert watcher.value("deployment_version", deployment=name) == 1
    assert watcher.value("deployment_health_check", deployment=name, check_type="docker_healthcheck") == 1

    # v2 becomes healthy only after 3 s (failed checks in the start period do not count).
    slow = (*HEALTHY_WHEN_FILE, "--health-start-period", "30s")
    v2 = [containers.run(labels=labels(name, "1.1.0"), command=f"sleep 3; {SERVE}", options=slow) for _ in range(2)]
    watcher.wait_for("v2 in progress", lambda: watcher.value("deployment_version", deployment=name) == 2)
    assert status(watcher, name) == 2
    for old in v1:
        containers.remove(old)
    watcher.wait_for("v2 success", lambda: status(watcher, name) == 1)
    assert watcher.value("deployment_info", deployment=name, version="1.1.0", commit="sha-1.1.0") == 1

    containers.run(labels=labels(name, "1.2.0"), command="exit 1")
    watcher.wait_for("v3 failed", lambda: status(watcher, name) == 0)
    assert watcher.value("deployment_version", deployment=name) == 3
    assert watcher.value("deployment_rollback_count_total", deployment=name) == 0

    for old in v2:
        containers.remove(old)
    for _ in range(2):
        containers.run(labels=labels(name, "1.1.0"), command=SERVE, options=HEALTHY_WHEN_FILE)
    watcher.wait_for("rollback", lambda: watcher.value("deployment_rollback_count_total", deployment=name) == 1)
    watcher.wait_for("rollback success", lambda: status(watcher, name) == 1)
    assert watcher.value("deployment_version", deployment=name) == 4
    assert watcher.value("deployment_duration_seconds_count", deployment=name) == 4
    versions = {s.labels["version"] for s in watcher.samples() if s.name == "deployment_version_info"
                and s.labels["deployment"] == name}  # fmt: skip
    assert versions == {"1.1.0", "1.2.0"}  # the newest exposition.version_info_versions (2): 1.0.0 left out


def test_success_after_stable_time_without_healthcheck(watcher: WatcherProcess, containers: Containers) -> None:
    """A container without HEALTHCHECK succeeds once it ran for the stable time."""
    name = unique("plain")
    containers.run(labels=labels(name, "7"))
    watcher.wait_for("in progress", lambda: status(watcher, name) == 2, timeout=10)
    watcher.wait_for("success", lambda: status(watcher, name) == 1, timeout=STABLE + 10)
    assert watcher.value("deployment_health_status", deployment=name) == 1


def test_unhealthy_container_turns_health_to_zero(watcher: WatcherProcess, containers: Containers) -> None:
    """After success, a container turning unhealthy sets health 0 and keeps status success."""
    name = unique("flaky")
    container = containers.run(labels=labels(name, "1.0.0"), command=SERVE, options=HEALTHY_WHEN_FILE)
    watcher.wait_for("success", lambda: status(watcher, name) == 1)
    assert watcher.value("deployment_health_status", deployment=name) == 1
    docker("exec", container, "rm", "/tmp/ok")
    watcher.wait_for("unhealthy", lambda: watcher.value("deployment_health_status", deployment=name) == 0)
    assert watcher.value("deployment_health_check", deployment=name, check_type="docker_healthcheck") == 0
    assert status(watcher, name) == 1


def test_cpu_rises_and_memory_is_positive(watcher: WatcherProcess, containers: Containers) -> None:
    """CPU seconds of a busy container rise between polls; its working set is positive."""
    name = unique("burn")
    containers.run(labels=labels(name, "1"), command=BURN)
    watcher.wait_for(
        "cpu sampled", lambda: (watcher.value("deployment_cpu_usage_seconds_total", deployment=name) or 0) > 0
    )
    first = watcher.value("deployment_cpu_usage_seconds_total", deployment=name) or 0
    watcher.wait_for(
        "cpu rising",
        lambda: (watcher.value("deployment_cpu_usage_seconds_total", deployment=name) or 0) > first + 0.5,
    )
    assert (watcher.value("deployment_memory_usage_bytes", deployment=name) or 0) > 0


def test_compose_labels_without_deployment_name(watcher: WatcherProcess, containers: Containers) -> None:
    """With compose tracking on, a compose service is a deployment named project/service."""
    project = unique("proj")
    containers.run(
        labels={"com.docker.compose.project": project, "com.docker.compose.service": "web",
                "org.opencontainers.image.version": "4.2.0", "org.opencontainers.image.revision": "abc1234"},
    )  # fmt: skip
    watcher.wait_for("compose deployment", lambda: status(watcher, f"{project}/web") is not None)
    assert watcher.value("deployment_info", deployment=f"{project}/web", version="4.2.0", commit="abc1234") == 1
    assert watcher.value("deployment_status", deployment=f"{project}/web", environment="production") is not None


def test_bad_labels_are_counted_and_do_not_disturb(watcher: WatcherProcess, containers: Containers) -> None:
    """Malformed labels: warned once, counted, tracked with fallbacks or ignored; others carry on."""
    errors_before = sum(s.value for s in watcher.samples() if s.name == "deployment_watcher_label_errors_total")
    good = unique("good")
    odd = unique("odd")
    containers.run(labels={"deployment.name": "   "})
    containers.run(
        labels={
            "deployment.name": odd,
            "deployment.version": 'v"1\\n' + "x" * 3000 + "ü",
            "deployment.timestamp": "yesterday",
            "deployment.status": "done",
            "deployment.environment": "prod\nuction",
        }
    )
    containers.run(labels=labels(good, "1.0"))
    watcher.wait_for("good success", lambda: status(watcher, good) == 1)
    assert watcher.value("deployment_status", deployment=odd, environment="prod uction") is not None
    errors_after = sum(s.value for s in watcher.samples() if s.name == "deployment_watcher_label_errors_total")
    assert errors_after - errors_before >= 5
    assert (watcher.value("deployment_watcher_label_errors_total", label="deployment.timestamp") or 0) >= 1
    assert_exposition_valid(watcher)
    assert "yesterday" in watcher.log.read_text(errors="replace")


def test_metrics_valid_in_both_formats(watcher: WatcherProcess, containers: Containers) -> None:
    """/metrics parses as Prometheus text and as OpenMetrics, and promtool finds nothing to say."""
    containers.run(labels=labels(unique("fmt"), "2.0"))
    assert_exposition_valid(watcher)


def assert_exposition_valid(watcher: WatcherProcess) -> None:
    status_code, content_type, text = watcher.get("/metrics")
    assert status_code == 200 and content_type.startswith("text/plain")
    families = {f.name for f in parse_text(text)}
    assert {"deployment_status", "deployment_info", "deployment_duration_seconds"} <= families
    status_code, content_type, om = watcher.get("/metrics", accept=OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert om.endswith("# EOF\n")
    om_families = {f.name: f.type for f in parse_openmetrics(om)}
    assert om_families["deployment"] == "info"
    assert om_families["deployment_rollback_count"] == "counter"
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked


def test_endpoints(watcher: WatcherProcess) -> None:
    """/ links to /metrics; /health and /ready answer 200 while connected."""
    code, _, body = watcher.get("/")
    assert code == 200 and 'href="metrics"' in body
    assert watcher.get("/health")[0] == 200
    assert watcher.get("/ready")[0] == 200
    # The watcher's own metrics are re-read within exposition.max_staleness_seconds.
    watcher.wait_for("docker_up 1", lambda: watcher.value("deployment_watcher_docker_up") == 1)


def test_existing_containers_are_found_at_start(tmp_path: Path, containers: Containers, docker_engine: None) -> None:
    """A watcher started after the containers rebuilds their state from the container list."""
    name = unique("before")
    containers.run(labels=labels(name, "3.1.0"))
    late = start_watcher(tmp_path, "--rollout.stable-seconds=1", "--stats.enabled=false")
    try:
        late.wait_for("found", lambda: status(late, name) is not None)
        late.wait_for("success", lambda: status(late, name) == 1)
        assert late.value("deployment_version", deployment=name) == 1
    finally:
        assert late.stop() == 0


def test_a_start_shows_before_its_inspect_answers(tmp_path: Path, containers: Containers, docker_engine: None) -> None:
    """With inspects held by a slow daemon, the start event alone shows the container running;
    the rollout passes its stable time but succeeds only once the inspect answers."""
    proxy = ReadOnlyProxy(tmp_path / "slow.sock")
    proxy.start()
    watcher = start_watcher(
        tmp_path, f"--docker.host=unix://{proxy.path}", "--rollout.stable-seconds=1", "--stats.enabled=false"
    )
    try:
        watcher.wait_ready()
        proxy.hold_inspects()
        name = unique("early")
        containers.run(labels=labels(name, "1.0.0"))
        watcher.expect("deployment_health_check", 1, deployment=name, check_type="containers_running")
        time.sleep(2)  # past the stable time, on the start event's facts alone
        watcher.fresh()
        assert status(watcher, name) == 2
        proxy.release_inspects()
        watcher.wait_for("success once inspected", lambda: status(watcher, name) == 1)
    finally:
        proxy.release_inspects()
        watcher.stop_cleanly()
        proxy.close()


def test_a_failed_start_fails_the_rollout_at_once(watcher: WatcherProcess, containers: Containers) -> None:
    """`docker run` of a command the image lacks: Docker 20.10 sends no container event for the failed
    start (only its network's connect and disconnect); the rollout fails within seconds, not at the deadline,
    and the log says why. Before, it stayed in progress for the whole deadline."""
    name = unique("nostart")
    container = f"dw-test-{uuid.uuid4().hex[:10]}"
    containers.names.append(container)
    label_args = [arg for key, value in labels(name, "1.0.0").items() for arg in ("--label", f"{key}={value}")]
    result = subprocess.run(["docker", "run", "-d", "--name", container, *label_args, containers.image, "/nonexistent"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 127, result.stderr
    watcher.wait_for("failed", lambda: status(watcher, name) == 0, timeout=15)
    assert "could not be started: exit code 127: " in watcher.log.read_text()
    assert watcher.value("deployment_health_check", deployment=name, check_type="containers_running") == 0


def test_a_container_created_and_never_started_stays_in_progress(
    watcher: WatcherProcess, containers: Containers
) -> None:
    """`docker create` and nothing (a staged deploy) is in progress until it starts, then judged as usual."""
    name = unique("staged")
    container = f"dw-test-{uuid.uuid4().hex[:10]}"
    containers.names.append(container)
    label_args = [arg for key, value in labels(name, "1.0.0").items() for arg in ("--label", f"{key}={value}")]
    docker("create", "--name", container, *label_args, containers.image, "sh", "-c", "exec sleep 600")
    watcher.wait_for("in progress", lambda: status(watcher, name) == 2)
    time.sleep(STABLE + 1)  # the point: past the stable time, a container never started is still in progress
    assert status(watcher, name) == 2
    docker("start", container)
    watcher.wait_for("success", lambda: status(watcher, name) == 1)


def test_a_rollout_whose_containers_are_all_removed_fails_at_its_deadline(
    watcher: WatcherProcess, containers: Containers
) -> None:
    """`docker run`, then `docker rm -f` before the verdict: failed at the (short, by label) progress
    deadline, saying its containers were removed. Before, it stayed in progress until retention
    dropped it an hour later."""
    name = unique("removed")
    tuning = {"deployment.stable_seconds": "60", "deployment.progress_deadline_seconds": "3"}
    container = containers.run(labels=labels(name, "1.0.0", **tuning))
    watcher.wait_for("in progress", lambda: status(watcher, name) == 2, timeout=10)
    containers.remove(container)
    watcher.wait_for("failed", lambda: status(watcher, name) == 0, timeout=15)
    _, _, body = watcher.get("/api/v1/deployments?environment=test")
    row = next(d for d in json.loads(body)["deployments"] if d["name"] == name)
    assert row["reason"] == "not healthy within the progress deadline: every container of it was removed"
    assert watcher.value("deployment_rollouts_total", deployment=name, outcome="failed") == 1
