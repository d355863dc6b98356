"""The watcher's own restarts and a state directory that will not take writes, for real:
`kill -9` mid-rollout with changes while it is down, a clean restart, a full and a read-only disk."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Containers, WatcherProcess, docker, require_binary, start_watcher
from tests.polling import poll
from watcher.domain.model import Deployment, DeploymentKey, Rollout, State
from watcher.persistence import codec as store
from watcher.persistence import statefile

pytestmark = pytest.mark.docker

ENVIRONMENT = "test"
BURN_THEN_SERVE = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 600"  # some CPU to keep
# Starting (never healthy: failures in the start period do not count) until /tmp/die appears, then exit 3.
DIE_ON_SIGNAL = "while [ ! -f /tmp/die ]; do sleep 0.2; done; exit 3"
NEVER_HEALTHY = ("--health-cmd", "false", "--health-interval", "1s", "--health-start-period", "300s")


def labels(name: str, version: str) -> dict[str, str]:
    return {"deployment.name": name, "deployment.environment": ENVIRONMENT, "deployment.version": version,
            "deployment.commit": f"sha-{version}"}  # fmt: skip


def counters(watcher: WatcherProcess, name: str) -> dict[str, float]:
    """What must never go backwards, as Prometheus sees it."""
    return {
        metric: watcher.value(metric, deployment=name) or 0.0
        for metric in (
            "deployment_version",
            "deployment_rollback_count_total",
            "deployment_cpu_usage_seconds_total",
            "deployment_duration_seconds_count",
            "deployment_duration_seconds_sum",
        )
    }


def rollout_is(watcher: WatcherProcess, name: str, *, revision: int, status: int) -> Callable[[], bool]:
    def check() -> bool:
        version = watcher.value("deployment_version", deployment=name)
        return version == revision and watcher.value("deployment_status", deployment=name) == status

    return check


def assert_not_backwards(before: dict[str, float], after: dict[str, float]) -> None:
    backwards = {metric: (before[metric], after[metric]) for metric in before if after[metric] < before[metric]}
    assert not backwards, f"counters went backwards across the restart: {backwards}"


def saved(data: Path, name: str) -> Deployment | None:
    """The deployment as the state file on disk has it."""
    try:
        state = store.decode_document(statefile.saved_document(data))
    except (OSError, store.DecodeError):
        return None
    return state.deployments.get(DeploymentKey(name, ENVIRONMENT))


def kill_9(watcher: WatcherProcess) -> None:
    watcher.process.kill()
    watcher.process.wait(timeout=10)


def test_kill_9_mid_rollout_then_changes_while_down(tmp_path: Path, containers: Containers) -> None:
    """kill -9 with v2 in progress; v2 crashes while down → failed, revision 2; kill -9 again and
    roll back to v1 while down → revision 3, one rollback; counters never go backwards."""
    name = f"restart-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    flags = (f"--storage.directory={data}", "--rollout.stable-seconds=1", "--stats.interval-seconds=1",
             "--storage.debounce-seconds=0.2")  # fmt: skip
    watcher = start_watcher(tmp_path, *flags)
    try:
        v1 = containers.run(labels=labels(name, "1.0.0"), command=BURN_THEN_SERVE)
        watcher.wait_for("v1 success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        watcher.wait_for("CPU sampled", lambda: (watcher.value("deployment_cpu_usage_seconds_total", deployment=name)
                                                  or 0) > 0)  # fmt: skip
        v2 = containers.run(labels=labels(name, "2.0.0"), command=DIE_ON_SIGNAL, options=NEVER_HEALTHY)
        watcher.wait_for("v2 in progress", lambda: watcher.value("deployment_version", deployment=name) == 2)
        before = counters(watcher, name)
        # kill -9 loses what changed since the last save: wait until the file has what was exported.
        poll("v2 saved", lambda: saved(data, name), timeout=30,
             until=lambda d: d is not None and d.rollout.revision == 2
             and d.cpu_seconds >= before["deployment_cpu_usage_seconds_total"])  # fmt: skip
        kill_9(watcher)

        docker("exec", v2, "touch", "/tmp/die")  # v2 crashes while nobody watches
        poll("v2 exited", lambda: docker("inspect", "--format", "{{.State.Status}}", v2), timeout=30,
             until=lambda status: status == "exited")  # fmt: skip
        containers.remove(v1)  # and v1 goes: its CPU must stay counted
        watcher = start_watcher(tmp_path, *flags)
        watcher.wait_for("v2 failed", lambda: watcher.value("deployment_status", deployment=name) == 0)
        after = counters(watcher, name)
        assert_not_backwards(before, after)
        assert after["deployment_version"] == 2 and after["deployment_rollback_count_total"] == 0
        assert after["deployment_duration_seconds_count"] == 1  # v1's; v2's end time is unknown
        assert watcher.value("deployment_version_info", deployment=name, version="1.0.0") == 1
        assert "revision 2 (2.0.0) failed: container" in watcher.log.read_text()
        assert "exited with code 3" in watcher.log.read_text()

        poll("failure saved", lambda: saved(data, name), timeout=30,
             until=lambda d: d is not None and d.rollout.status.value == 0)  # fmt: skip
        before = after
        kill_9(watcher)
        containers.remove(v2)
        containers.run(labels=labels(name, "1.0.0"), command="exec sleep 600")  # a rollback while down
        watcher = start_watcher(tmp_path, *flags)
        watcher.wait_for("v1 again", lambda: watcher.value("deployment_version", deployment=name) == 3)
        watcher.wait_for("v1 success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        after = counters(watcher, name)
        assert_not_backwards(before, after)
        assert after["deployment_rollback_count_total"] == 1
        assert watcher.value("deployment_info", deployment=name, version="1.0.0") == 1
        assert (watcher.value("deployment_watcher_state_load_errors_total") or 0) == 0
    finally:
        watcher.stop()


def test_clean_restart_keeps_counts_and_history(tmp_path: Path, containers: Containers) -> None:
    """SIGTERM saves the last changes (the debounce has not run out); a restart exports the same counters."""
    name = f"sigterm-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    flags = (f"--storage.directory={data}", "--rollout.stable-seconds=1", "--stats.enabled=false",
             "--storage.debounce-seconds=300")  # fmt: skip
    watcher = start_watcher(tmp_path, *flags)
    try:
        for revision, version in enumerate(("1.0.0", "2.0.0", "1.0.0"), start=1):
            containers.run(labels=labels(name, version), command="exec sleep 600")
            watcher.wait_for(f"revision {revision} success", rollout_is(watcher, name, revision=revision, status=1))
        before = counters(watcher, name)
        assert before["deployment_rollback_count_total"] == 1 and before["deployment_duration_seconds_count"] == 3
        assert watcher.value("deployment_watcher_state_saves_total") == 0  # nothing saved yet: the debounce
        assert watcher.stop() == 0
        assert saved(data, name) is not None

        watcher = start_watcher(tmp_path, *flags)
        assert_not_backwards(before, counters(watcher, name))  # at once, from the file
        assert counters(watcher, name) == before
        assert {s.labels["version"] for s in watcher.samples()
                if s.name == "deployment_version_info" and s.labels["deployment"] == name} == {"1.0.0", "2.0.0"}  # fmt: skip
        assert re.search(rf"loaded the state file {re.escape(str(data))}/state.json: \d+ deployments",
                         watcher.log.read_text())  # fmt: skip
    finally:
        watcher.stop()


# -- a state directory that refuses writes


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points made by a test, unmounted afterwards whatever happened."""
    require_binary("mount")
    made: list[Path] = []
    try:
        yield made
    finally:
        for point in reversed(made):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)


def full_disk(tmp: Path, mounts: list[Path]) -> tuple[Path, str, Callable[[], None]]:
    """A tiny tmpfs filled up; freeing it is the fix."""
    directory = tmp / "full"
    directory.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(directory))
    mounts.append(directory)
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh, pytest.raises(OSError, match="No space left"):
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    return directory, "No space left on device", filler.unlink


def read_only(tmp: Path, mounts: list[Path]) -> tuple[Path, str, Callable[[], None]]:
    """A read-only bind mount (root ignores file modes, not this); remounting it writable is the fix."""
    source, directory = tmp / "source", tmp / "read-only"
    source.mkdir()
    directory.mkdir()
    run("mount", "--bind", str(source), str(directory))
    mounts.append(directory)
    run("mount", "-o", "remount,bind,ro", str(directory))
    return directory, "Read-only file system", lambda: run("mount", "-o", "remount,bind,rw", str(directory))


@pytest.mark.parametrize("refusing", [full_disk, read_only], ids=["disk-full", "read-only"])
def test_state_directory_refusing_writes(
    tmp_path: Path,
    containers: Containers,
    mounts: list[Path],
    refusing: Callable[[Path, list[Path]], tuple[Path, str, Callable[[], None]]],
) -> None:
    """Saves fail with a clear error and a counter; /metrics keeps serving and tracking; once fixed, saves resume."""
    directory, reason, fix = refusing(tmp_path, mounts)
    name = f"disk-{uuid.uuid4().hex[:8]}"
    watcher = start_watcher(tmp_path, f"--storage.directory={directory}", "--rollout.stable-seconds=1",
                            "--stats.interval-seconds=1", "--storage.debounce-seconds=0.2")  # fmt: skip
    try:
        containers.run(labels=labels(name, "1.0.0"), command="exec sleep 600")
        watcher.wait_for("save errors", lambda: (watcher.value("deployment_watcher_state_save_errors_total") or 0) > 0)
        assert (
            f"ERROR watcher.persistence.statefile: cannot save the state file {directory / 'state.json'}: {reason}"
            in (watcher.log.read_text())
        )
        # Still serving and still tracking.
        containers.run(labels=labels(name, "2.0.0"), command="exec sleep 600")
        watcher.wait_for("v2 tracked", lambda: watcher.value("deployment_version", deployment=name) == 2)
        watcher.wait_for("v2 success", lambda: watcher.value("deployment_status", deployment=name) == 1)
        assert watcher.value("deployment_watcher_state_saves_total") == 0
        assert watcher.get("/ready")[0] == 200

        fix()
        watcher.wait_for("saves again", lambda: (watcher.value("deployment_watcher_state_saves_total") or 0) > 0)
        assert (d := saved(directory, name)) is not None and d.rollout.revision == 2
        assert "saved the state file" in watcher.log.read_text()
    finally:
        assert watcher.stop() == 0


def test_read_only_state_directory_still_loads(tmp_path: Path, mounts: list[Path]) -> None:
    """A state file on a read-only mount is loaded (its deployments exported), only saving fails."""
    source, directory = tmp_path / "source", tmp_path / "read-only"
    source.mkdir()
    directory.mkdir()
    key = DeploymentKey(f"kept-{uuid.uuid4().hex[:8]}", ENVIRONMENT)
    rollout = Rollout(revision=7, version="4.2.0", commit="", image="", started_at=time.time() - 60)
    kept = Deployment(key=key, rollout=rollout, rollbacks=2, retired_cpu_nanos=12_500_000_000, gone_since=time.time())
    (source / statefile.FILE_NAME).write_bytes(store.encode(State({key: kept}, {})))
    run("mount", "--bind", str(source), str(directory))
    mounts.append(directory)
    run("mount", "-o", "remount,bind,ro", str(directory))
    watcher = start_watcher(tmp_path, f"--storage.directory={directory}", "--stats.enabled=false")
    try:
        watcher.wait_ready("ready")
        assert watcher.value("deployment_version", deployment=key.name) == 7
        assert watcher.value("deployment_rollback_count_total", deployment=key.name) == 2
        assert watcher.value("deployment_cpu_usage_seconds_total", deployment=key.name) == 12.5
        assert (watcher.value("deployment_watcher_state_load_errors_total") or 0) == 0
    finally:
        assert watcher.stop() == 0


def test_a_state_file_with_a_number_out_of_range(tmp_path: Path) -> None:
    """A rollback count of 10**400 once loaded, crashed the first rendering of /metrics ("int too large to
    convert to float") and crash-looped every restart; then the whole file was moved aside, every other
    deployment's revisions and DORA counts lost for one value (2**64 - 1 replicas from a Swarm engine,
    written by the watcher itself). Now that value reads as its nearest bound, with a warning, and the
    rest loads as it was, twice in a row."""
    data = tmp_path / "data"
    data.mkdir()
    key = DeploymentKey(f"huge-{uuid.uuid4().hex[:8]}", ENVIRONMENT)
    other = DeploymentKey(f"fine-{uuid.uuid4().hex[:8]}", ENVIRONMENT)
    rollout = Rollout(revision=3, version="1.0.0", commit="", image="", started_at=time.time() - 60)
    deployments = {  # gone a moment ago: kept for retention.gone_seconds
        key: Deployment(key=key, rollout=rollout, rollbacks=1, gone_since=time.time()),
        other: Deployment(key=other, rollout=dataclasses.replace(rollout, revision=5), rollbacks=2,
                          gone_since=time.time()),
    }  # fmt: skip
    document = store.encode(State(deployments, {}))
    assert document.count(b'"rollbacks":1,') == 1
    (data / statefile.FILE_NAME).write_bytes(document.replace(b'"rollbacks":1,', b'"rollbacks":1' + b"0" * 400 + b","))
    for start in (1, 2):
        watcher = start_watcher(tmp_path, f"--storage.directory={data}", "--stats.enabled=false")
        try:
            watcher.wait_ready(f"ready after start {start}")
            assert watcher.value("deployment_rollback_count_total", deployment=key.name) == float(store.MAX_COUNT)
            assert watcher.value("deployment_version", deployment=key.name) == 3
            assert watcher.value("deployment_rollback_count_total", deployment=other.name) == 2
            assert watcher.value("deployment_version", deployment=other.name) == 5
            assert watcher.value("deployment_watcher_state_load_errors_total") == 0
            if start == 1:  # the next save writes the bound: a later start reads a file in range
                assert "holds 1 numbers out of their ranges" in watcher.log.read_text()
                assert "rollbacks: an integer of 1329 bits → 9223372036854775807" in watcher.log.read_text()
            assert not list(data.glob(f"{statefile.FILE_NAME}.corrupt-*"))
        finally:
            assert watcher.stop() == 0, watcher.tail()
