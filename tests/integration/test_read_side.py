"""The read side of a real watcher process on the real daemon: rollouts in JSON and on the event
stream in order, Last-Event-ID, 500 stream clients, a client that stops reading, and the
`rollout status` gate's exit codes (a restart of the watcher included)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.conftest import Containers, WatcherProcess, WatcherSetup, free_port, labels, start_watcher, unique
from tests.dockerproxy import SocketProxy
from tests.streamclients import caps_for, fan_out
from watcher.clients.reader import Event, Events, Watcher

TOKEN = "read-side-token-" + uuid.uuid4().hex
STABLE = 2  # seconds without a health check until a rollout succeeds
QUICK_RECONNECT = ("--docker.backoff-initial-seconds=0.2", "--docker.backoff-max-seconds=1")
FAN_OUT = 500  # stream clients at once, all from 127.0.0.1

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def watcher_setup() -> WatcherSetup:
    return WatcherSetup(
        (f"--rollout.stable-seconds={STABLE}", "--stats.enabled=false", *caps_for(FAN_OUT)),
        env={"WATCHER_API_TOKEN": TOKEN},
    )


def stream(watcher: WatcherProcess, *, name: str | None = None, last_event_id: str = "") -> Events:
    query = {"name": name} if name else {}
    return Watcher(watcher.url).events(query=query, last_event_id=last_event_id, timeout=30)


def take(events: Events, count: int, *, timeout: float = 30, skip: tuple[str, ...] = ()) -> list[Event]:
    """The next ``count`` events, leaving out those named in ``skip``."""
    got: list[Event] = []
    events.set_timeout(timeout)
    for event in events:
        if event.name in skip:
            continue
        got.append(event)
        if len(got) == count:
            break
    return got


def detail(watcher: WatcherProcess, name: str, environment: str = "test") -> dict[str, Any]:
    code, _, body = watcher.get(f"/api/v1/deployments/{environment}/{name}")
    assert code == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def report(watcher: WatcherProcess, connection: http.client.HTTPConnection | None = None, **fields: Any) -> None:
    """POST one report to the CI/CD API (on ``connection`` when given: keep-alive)."""
    own = connection or http.client.HTTPConnection("127.0.0.1", watcher.port, timeout=10)
    own.request("POST", "/api/v1/deployments", body=json.dumps(fields),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})  # fmt: skip
    response = own.getresponse()
    response.read()
    assert response.status in (200, 201), response.status
    if connection is None:
        own.close()


def test_a_rollout_a_failure_and_a_rollback_in_json_and_on_the_stream(
    watcher: WatcherProcess, containers: Containers
) -> None:
    """Success, failure, rollback: each in the JSON detail, and on the stream in the order they happened."""
    name = unique("flow")
    events = stream(watcher, name=name)
    try:
        containers.run(labels=labels(name, "1.0.0"))
        watcher.wait_for("1.0.0 success", lambda: detail(watcher, name)["status"] == "success")
        containers.run(labels=labels(name, "2.0.0"), command="sleep 1; exit 3")
        watcher.wait_for("2.0.0 failed", lambda: detail(watcher, name)["status"] == "failed")
        failed = detail(watcher, name)
        assert (failed["revision"], failed["version"]) == (2, "2.0.0")
        assert failed["reason"].endswith("exited with code 3")
        containers.run(labels=labels(name, "1.0.0"))
        watcher.wait_for("the rollback succeeded", lambda: detail(watcher, name)["revision"] == 3
                         and detail(watcher, name)["status"] == "success")  # fmt: skip
        back = detail(watcher, name)
        assert back["rollback"] is True and back["rollbacks"] == 1
        assert [h["version"] for h in back["history"]] == ["1.0.0", "2.0.0"]
        got = take(events, 6, skip=("deployment_changed",))  # containers starting, inspected: told, not verdicts
    finally:
        events.close()
    assert [(e.name, e.data["revision"]) for e in got] == [
        ("rollout_started", 1), ("rollout_finished", 1), ("rollout_started", 2), ("rollout_finished", 2),
        ("rollback_started", 3), ("rollout_finished", 3),
    ]  # fmt: skip
    assert [e.data["status"] for e in got if e.name == "rollout_finished"] == ["success", "failed", "success"]
    sequences = [int(e.id.split(".")[1]) for e in got]
    assert sequences == sorted(sequences) and len(set(sequences)) == 6


def test_reconnecting_with_last_event_id_resumes(watcher: WatcherProcess) -> None:
    """A client that went away gets exactly the events it missed when it comes back with Last-Event-ID."""
    name = unique("resume")
    events = stream(watcher, name=name)
    report(watcher, deployment=name, environment="test", version="1.0.0", status="in_progress")
    [first] = take(events, 1)
    events.close()
    report(watcher, deployment=name, environment="test", version="1.0.0", status="success")
    report(watcher, deployment=name, environment="test", version="2.0.0", status="in_progress")
    resumed = stream(watcher, name=name, last_event_id=first.id)
    try:
        got = take(resumed, 2)
        report(watcher, deployment=name, environment="test", version="2.0.0", status="failed")
        got += take(resumed, 1)
    finally:
        resumed.close()
    assert [(e.name, e.data["version"]) for e in got] == [
        ("rollout_finished", "1.0.0"), ("rollout_started", "2.0.0"), ("rollout_finished", "2.0.0"),
    ]  # fmt: skip
    foreign = stream(watcher, name=name, last_event_id="0badc0de.5")
    try:
        assert [e.name for e in take(foreign, 1)] == ["resync"]
    finally:
        foreign.close()


def test_500_stream_clients_all_get_a_change(watcher: WatcherProcess) -> None:
    """500 clients on the stream at once (the caps raised for them): every one gets the change."""
    name = unique("fan")
    [arrivals] = asyncio.run(
        fan_out(watcher.url, FAN_OUT, [lambda: report(watcher, deployment=name, version="1", status="in_progress")])
    )
    seconds = max(arrivals)
    assert len(arrivals) == FAN_OUT
    assert seconds < 10, f"the last of 500 clients got the change after {seconds:.2f} s"
    # The clients closed their connections: the next event (or keepalive) finds them gone, and they are let go.
    report(watcher, deployment=name, version="2", status="in_progress")
    watcher.wait_for("the clients gone", lambda: watcher.value("deployment_watcher_stream_clients") == 0)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_is_dropped_without_memory_growth(watcher: WatcherProcess) -> None:
    """A stream client that never reads: dropped once its socket and queue are full; the watcher's memory
    stays flat meanwhile, and a client that reads along gets every event."""
    name = unique("stall")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", watcher.port))
    stalled.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: watcher\r\n\r\n")
    reading = stream(watcher, name=name)
    got: list[Event] = []

    def read_along() -> None:
        with contextlib.suppress(AttributeError, OSError):  # http.client, its connection closed under it at the end
            got.extend(reading)

    reader = threading.Thread(target=read_along, name="reading client", daemon=True)
    reader.start()
    dropped_before = watcher.value("deployment_watcher_stream_dropped_clients_total") or 0
    connection = http.client.HTTPConnection("127.0.0.1", watcher.port, timeout=10)
    try:
        for i in range(200):  # the state grows to its size (history capped) before memory is measured
            report(watcher, connection, deployment=name, version=f"1.{i}.0", status="in_progress")
        baseline = rss(watcher.process.pid)
        sent = 0
        while watcher.value("deployment_watcher_stream_dropped_clients_total") == dropped_before:
            assert sent < 30000, "the stalled client was never dropped"
            for _ in range(250):
                report(watcher, connection, deployment=name, version=f"2.{sent}.0", status="in_progress")
                sent += 1
        for i in range(2000):  # more events with nobody stalled: memory stays where it was
            report(watcher, connection, deployment=name, version=f"3.{i}.0", status="in_progress")
        growth = rss(watcher.process.pid) - baseline
        assert growth < 16 * 2**20, f"the watcher grew by {growth / 2**20:.1f} MiB"
        # The one that reads kept up with all of it: 2 events per report (superseded, started) but the first.
        expected = 2 * (200 + sent + 2000) - 1
        watcher.wait_for(f"{expected} events read", lambda: len(got) >= expected)
        assert got[-1].data["version"] == "3.1999.0" and len(got) == expected
    finally:
        connection.close()
        reading.close()
        stalled.close()
    assert watcher.value("deployment_watcher_stream_dropped_clients_total") == dropped_before + 1
    assert "dropped an event stream client" in watcher.log.read_text()


# -- rollout status against the real process


def rollout_status(
    url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "watcher", "rollout", "status", *args, "--url", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip


def finish(process: subprocess.Popen[str], *, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # a gate that does not end is the failure; it must not outlive the test
        out, err = process.communicate()
        raise AssertionError(f"rollout status still running after {timeout} s:\n{out}\n{err}") from None
    return process.returncode, out, err


def test_rollout_status_success(watcher: WatcherProcess, containers: Containers) -> None:
    """Deployed, then gated: exit 0 once the rollout succeeded, a line per change."""
    name = unique("gate-ok")
    containers.run(labels=labels(name, "1.0.0"))
    code, out, err = finish(rollout_status(watcher.url, name, "--version", "1.0.0", "--timeout", "60"))
    assert code == 0, err
    assert out.splitlines()[-1] == f"{name}/test: revision 1 (1.0.0) succeeded"


def test_rollout_status_failure(watcher: WatcherProcess, containers: Containers) -> None:
    """A container that crashes: exit 1 with the reason."""
    name = unique("gate-fail")
    containers.run(labels=labels(name, "1.0.0"), command="sleep 1; exit 7")
    code, out, _ = finish(rollout_status(watcher.url, name, "--environment", "test", "--version", "1.0.0"))
    assert code == 1
    assert "failed: container" in out.splitlines()[-1] and "exited with code 7" in out


def test_rollout_status_rollback(watcher: WatcherProcess, containers: Containers) -> None:
    """A rollout rolled back by a later deploy before it succeeded: exit 1."""
    name = unique("gate-back")
    containers.run(labels=labels(name, "1.0.0"))
    watcher.wait_for("1.0.0 success", lambda: detail(watcher, name)["status"] == "success")
    containers.run(labels={**labels(name, "2.0.0"), "deployment.stable_seconds": "300"})
    watcher.wait_for("2.0.0 seen", lambda: detail(watcher, name)["version"] == "2.0.0")
    gate = rollout_status(watcher.url, name, "--version", "2.0.0")
    assert gate.stdout is not None
    # Printed once the gate follows the stream and has read the deployment.
    assert gate.stdout.readline() == f"{name}/test: revision 2 (2.0.0) in progress\n"
    containers.run(labels=labels(name, "1.0.0"))
    code, out, _ = finish(gate)
    assert code == 1
    assert out.splitlines()[-1] == f"{name}/test: rolled back to 1.0.0 (revision 3)"


def test_rollout_status_timeout(watcher: WatcherProcess, containers: Containers) -> None:
    """No verdict within --timeout: exit 3."""
    name = unique("gate-slow")
    containers.run(labels={**labels(name, "1.0.0"), "deployment.stable_seconds": "300"})
    code, _, err = finish(rollout_status(watcher.url, name, "--version", "1.0.0", "--timeout", "3"))
    assert code == 3 and "no verdict within the timeout" in err


def test_rollout_status_unreachable() -> None:
    """Nothing listening: exit 4."""
    code, _, err = finish(rollout_status(f"http://127.0.0.1:{free_port()}", "any"))
    assert code == 4 and "cannot reach the watcher" in err


def test_rollout_status_wrong_credentials(tmp_path: Path, docker_engine: None) -> None:
    """A watcher with basic auth: wrong or no credentials exit 4; the right ones get the verdict."""
    config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    config.write_text(f"basic_auth_users:\n  ci: {hashed}\n")
    guarded = start_watcher(tmp_path, f"--web.config-file={config}", "--stats.enabled=false",
                            env={"WATCHER_API_TOKEN": TOKEN})  # fmt: skip
    try:
        report(guarded, deployment="auth", version="1", status="success")
        password = tmp_path / "password"
        password.write_text("wrong\n")
        code, _, err = finish(rollout_status(guarded.url, "auth", "--user", "ci", "--password-file", str(password)))
        assert code == 4 and "refused the credentials" in err
        assert finish(rollout_status(guarded.url, "auth"))[0] == 4
        password.write_text("right\n")
        code, _, err = finish(rollout_status(guarded.url, "auth", "--user", "ci", "--password-file", str(password)))
        assert code == 0, err
    finally:
        guarded.stop_cleanly()


def test_rollout_status_waits_across_a_watcher_restart(tmp_path: Path, containers: Containers) -> None:
    """The watcher restarts while the gate waits: it reconnects, re-reads, and still gets the verdict."""
    port = free_port()
    flags = (f"--storage.directory={tmp_path}/data", "--rollout.stable-seconds=8", "--stats.enabled=false")
    first = start_watcher(tmp_path, *flags, port=port)
    name = unique("gate-restart")
    try:
        first.wait_ready()
        containers.run(labels=labels(name, "1.0.0"))
        first.wait_for("1.0.0 seen", lambda: first.get(f"/api/v1/deployments/test/{name}")[0] == 200)
        gate = rollout_status(first.url, name, "--version", "1.0.0", "--timeout", "90")
        assert gate.stdout is not None
        assert gate.stdout.readline() == f"{name}/test: revision 1 (1.0.0) in progress\n"
    finally:
        first.stop_cleanly()
    time.sleep(1.5)  # the point: the gate finds nobody there for a while
    second = start_watcher(tmp_path, *flags, port=port)
    try:
        code, out, err = finish(gate, timeout=90)
        assert code == 0, f"{out}\n{err}\n{second.tail()}"
        assert "lost the watcher" in err and "reconnecting" in err
        assert out.splitlines()[-1] == f"{name}/test: revision 1 (1.0.0) succeeded"
    finally:
        second.stop_cleanly()


def test_rollout_status_a_version_that_never_appears_ends_at_the_timeout(watcher: WatcherProcess) -> None:
    """Nothing happens to the deployment: the stream sends only its keepalive comment (every 15 s), and the
    gate still ends at --timeout, exit 3 (each comment restarted the read's timeout: it waited for ever)."""
    name = unique("gate-never")
    report(watcher, deployment=name, environment="test", version="1.0.0", status="success")
    began = time.monotonic()
    code, _, err = finish(rollout_status(watcher.url, name, "--version", "9.9.9", "--timeout", "17"), timeout=60)
    took = time.monotonic() - began
    assert code == 3 and "no verdict within the timeout" in err, err
    # Before the fix it never ended; the slack is the CLI's own start on a loaded machine.
    assert 17 <= took < 28, f"ended after {took:.1f} s"


def test_rollout_status_waits_across_a_restart_that_lost_the_state(tmp_path: Path, containers: Containers) -> None:
    """The watcher restarts without its state (lost, or moved aside) and is not synced with Docker for a while:
    its 404 then is "not known yet", not "gone" (exit 1 before), and once synced the rollout is found again by
    its version though its revision is now 1, not 2 (waited for until the timeout before)."""
    port = free_port()
    flags = ("--rollout.stable-seconds=1", "--stats.enabled=false", *QUICK_RECONNECT)
    first = start_watcher(tmp_path, f"--storage.directory={tmp_path}/first", *flags, port=port)
    name = unique("gate-lost")
    try:
        first.wait_ready()
        old = containers.run(labels=labels(name, "1.0.0"))
        first.wait_for("1.0.0 success", lambda: detail(first, name)["status"] == "success")
        containers.remove(old)
        containers.run(labels={**labels(name, "2.0.0"), "deployment.stable_seconds": "6"})
        first.wait_for("2.0.0 seen", lambda: detail(first, name)["version"] == "2.0.0")
        gate = rollout_status(first.url, name, "--version", "2.0.0", "--timeout", "90")
        assert gate.stdout is not None
        assert gate.stdout.readline() == f"{name}/test: revision 2 (2.0.0) in progress\n"
    finally:
        first.stop_cleanly()
    proxy = SocketProxy(tmp_path / "docker.sock")
    proxy.start()
    proxy.cut()  # the new watcher serves, but cannot reach Docker yet
    second = start_watcher(tmp_path, f"--storage.directory={tmp_path}/second", *flags, port=port,
                           env={"DOCKER_HOST": f"unix://{proxy.path}"})  # fmt: skip
    try:
        assert second.get(f"/api/v1/deployments/test/{name}")[0] == 404
        time.sleep(3)  # the point: the gate reads the 404 of a watcher not synced, and keeps waiting
        assert gate.poll() is None, finish(gate)
        proxy.restore()
        code, out, err = finish(gate, timeout=90)
        assert code == 0, f"{out}\n{err}\n{second.tail()}"
        assert out.splitlines()[-1] == f"{name}/test: revision 1 (2.0.0) succeeded"
    finally:
        second.stop_cleanly()
        proxy.close()


def test_rollout_status_finds_a_name_longer_than_the_limit(watcher: WatcherProcess, containers: Containers) -> None:
    """A deployment.name and version longer than labels.max_value_length (128): the watcher cuts them, and the
    gate, given them whole, finds the deployment (it waited for ever before)."""
    name = unique("gate-long") + "-" + "x" * 150
    version = "1.0.0-" + "r" * 150
    containers.run(labels=labels(name, version))
    code, out, err = finish(rollout_status(watcher.url, name, "--version", version, "--timeout", "60"))
    assert code == 0, err
    assert out.splitlines()[-1] == f"{name[:128]}/test: revision 1 ({version[:128]}) succeeded"


def test_status_prints_the_table(watcher: WatcherProcess) -> None:
    """`deployment-watcher status` lists the deployments of the real watcher."""
    name = unique("table")
    report(watcher, deployment=name, environment="test", version="4.2.0", status="success")
    done = subprocess.run([sys.executable, "-m", "watcher", "status", "--url", watcher.url, "--environment", "test"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith(name))
    assert line.split()[1:5] == ["test", "success", "4.2.0", "1"]
