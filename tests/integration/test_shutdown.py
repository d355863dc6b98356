"""Stopping a real watcher process: SIGTERM ends it promptly whatever its HTTP clients do, SIGTERM
again changes nothing, SIGINT while stopping forces the exit, and SIGHUP stops it like SIGTERM,
with the final save. No Docker Engine needed: the watcher looks for one that is not there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.conftest import WatcherProcess, free_port, post_report, start_watcher
from tests.polling import poll
from watcher.domain.model import DeploymentKey
from watcher.persistence import codec, statefile

TOKEN = "shutdown-token-" + uuid.uuid4().hex


def watcher_without_docker(tmp_path: Path, *flags: str) -> WatcherProcess:
    return start_watcher(
        tmp_path, f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false", *flags,
        env={"WATCHER_API_TOKEN": TOKEN},
    )  # fmt: skip


@contextmanager
def stalled_clients(watcher: WatcherProcess) -> Iterator[None]:
    """An idle keep-alive connection, and an API request in flight whose body never ends."""
    with ExitStack() as sockets:
        idle, stalled = (sockets.enter_context(socket.create_connection(("127.0.0.1", watcher.port))) for _ in "12")
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: watcher\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200"), "no answer on the keep-alive connection"
        stalled.sendall(
            f"POST /api/v1/deployments HTTP/1.1\r\nHost: watcher\r\nAuthorization: Bearer {TOKEN}\r\n"
            'Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"name": "api", '.encode()
        )
        watcher.get("/health")  # a round trip later, the request is in its handler, reading the body
        yield


def test_sigterm_ends_the_watcher_promptly_despite_stalled_clients(tmp_path: Path) -> None:
    """An idle keep-alive connection and an API request stalled midway do not hold the stop
    (aiohttp would wait 60 s for the request): exit 0 within seconds, nothing logged as an error."""
    watcher = watcher_without_docker(tmp_path)
    try:
        with stalled_clients(watcher):
            started = time.monotonic()
            watcher.process.send_signal(signal.SIGTERM)
            code = watcher.process.wait(timeout=30)
            took = time.monotonic() - started
    finally:
        watcher.stop()
    assert code == 0, watcher.tail()
    assert took < 5, f"the stop took {took:.1f} s\n{watcher.tail()}"
    assert " ERROR " not in watcher.log.read_text()


def test_a_second_signal_forces_the_exit(tmp_path: Path) -> None:
    """SIGINT right after SIGTERM, while a stalled request holds the stop: exit 1 at once, saying it
    was forced and what was still pending."""
    watcher = watcher_without_docker(tmp_path)
    try:
        with stalled_clients(watcher):
            watcher.process.send_signal(signal.SIGTERM)
            # Both pending at once, Linux delivers the lower number first: SIGINT would come first.
            watcher.wait_for("the stop", lambda: "SIGTERM received" in watcher.log.read_text(), timeout=10)
            watcher.process.send_signal(signal.SIGINT)
            code = watcher.process.wait(timeout=30)
    finally:
        watcher.stop()
    log = watcher.log.read_text()
    assert code == 1, watcher.tail()
    assert "received while stopping: forcing the exit" in log
    assert "the shutdown was forced by a second signal; still pending:" in log and "task 'shutdown':" in log


def test_sigterm_twice_does_not_force_the_exit(tmp_path: Path) -> None:
    """A supervisor repeating SIGTERM while the watcher stops gets the orderly stop: exit 0, nothing forced."""
    watcher = watcher_without_docker(tmp_path)
    try:
        with stalled_clients(watcher):
            watcher.process.send_signal(signal.SIGTERM)
            # Once the first is handled: two signals pending at once are delivered as one.
            poll(
                "the first SIGTERM handled", lambda: " stopping\n" in watcher.log.read_text(), timeout=10, interval=0.01
            )
            watcher.process.send_signal(signal.SIGTERM)
            code = watcher.process.wait(timeout=30)
    finally:
        watcher.stop()
    log = watcher.log.read_text()
    assert code == 0, watcher.tail()
    assert "forcing the exit" not in log and " ERROR " not in log
    assert "SIGTERM received while stopping: the stop goes on" in log


def test_stopped_by_timeout(tmp_path: Path) -> None:
    """Under `timeout`, which signals the watcher and then its whole process group (two SIGTERMs at
    once), the watcher stops in order: exit 0, nothing forced."""
    port = free_port()
    log = tmp_path / "watcher.log"
    timeout = subprocess.Popen(
        ["timeout", "--preserve-status", "120", sys.executable, "-m", "watcher", f"--web.listen-address=127.0.0.1:{port}",
         f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false", "--log.level=debug",
         f"--storage.directory={tmp_path}/data"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    watcher = WatcherProcess(port, timeout, log)
    try:
        poll("the watcher serving", lambda: watcher.get("/health")[0] == 200, timeout=20, retry_on=(OSError,))
        with stalled_clients(watcher):
            timeout.send_signal(signal.SIGTERM)  # timeout passes it on as when its own time is up
            code = timeout.wait(timeout=30)
    finally:
        if timeout.poll() is None:
            os.killpg(timeout.pid, signal.SIGKILL)  # timeout leads a process group of its own
            timeout.wait()
    text = log.read_text()
    assert code == 0, watcher.tail()
    assert "forcing the exit" not in text and " ERROR " not in text


def test_sighup_stops_cleanly_with_the_final_save(tmp_path: Path) -> None:
    """A closed terminal (or a "reload") sends SIGHUP: the watcher stops as on SIGTERM, exit 0, and a
    change made within the save debounce is in the state file (it used to die at once, exit 129)."""
    data = tmp_path / "data"
    watcher = watcher_without_docker(tmp_path, f"--storage.directory={data}", "--storage.debounce-seconds=600")
    key = DeploymentKey(f"hup-{uuid.uuid4().hex[:8]}", "production")
    try:
        body: dict[str, object] = {
            "deployment": key.name, "environment": key.environment, "version": "1.2.3", "status": "in_progress"
        }  # fmt: skip
        assert post_report(watcher, body, token=TOKEN) in (200, 201, 202)
        watcher.process.send_signal(signal.SIGHUP)
        code = watcher.process.wait(timeout=30)
    finally:
        watcher.stop()
    assert code == 0, watcher.tail()
    assert "SIGHUP received" in watcher.log.read_text()
    saved = codec.decode((data / statefile.FILE_NAME).read_bytes())
    assert saved.deployments[key].rollout.version == "1.2.3"
