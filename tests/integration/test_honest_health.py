"""Honest health on a real watcher and the real daemon: the stream shows a new rollout's row as the
JSON API does at every moment (its container started, inspected), and a deployment whose
containers were removed is removed everywhere (stream, JSON, /metrics, `status`), not broken."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest

from tests.conftest import Containers, WatcherProcess, WatcherSetup
from watcher.clients.reader import Event, Watcher

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def watcher_setup() -> WatcherSetup:
    return WatcherSetup(("--rollout.stable-seconds=2", "--stats.enabled=false"))


class Following:
    """The events of one deployment, read in a thread as they come (what a board does)."""

    def __init__(self, watcher: WatcherProcess, name: str) -> None:
        self.events = Watcher(watcher.url).events(query={"name": name}, last_event_id="", timeout=60)
        self.got: list[Event] = []
        self._thread = threading.Thread(target=self._read, name=f"following {name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # the connection closed under it at the end
            self.got.extend(self.events)

    def row(self) -> dict[str, Any] | None:
        """The deployment as the newest event carries it (None before any)."""
        return self.got[-1].data["deployment"] if self.got else None

    def close(self) -> None:
        self.events.close()


def shown(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row less CPU and memory, which a board re-reads rather than follows."""
    return None if row is None else {k: v for k, v in row.items() if k not in ("cpu_seconds", "memory_bytes")}


def api_row(watcher: WatcherProcess, name: str) -> dict[str, Any] | None:
    code, _, body = watcher.get("/api/v1/deployments?environment=test")
    assert code == 200, body
    rows: list[dict[str, Any]] = json.loads(body)["deployments"]
    return next((row for row in rows if row["name"] == name), None)


def labels(name: str, version: str, **extra: str) -> dict[str, str]:
    return {"deployment.name": name, "deployment.environment": "test", "deployment.version": version, **extra}


def test_the_stream_shows_a_started_rollout_as_the_api_does(watcher: WatcherProcess, containers: Containers) -> None:
    """A rollout whose verdict is minutes away: once its container runs and is inspected, the JSON
    API says running and healthy, and so does the newest event of the stream, before any verdict."""
    name = f"honest-{uuid.uuid4().hex[:8]}"
    following = Following(watcher, name)
    try:
        containers.run(labels=labels(name, "1.0.0", **{"deployment.stable_seconds": "600"}))
        watcher.wait_for("the API says running and healthy", lambda: (row := api_row(watcher, name)) is not None
                         and row["healthy"] and row["instances"] == {"current": 1, "running": 1})  # fmt: skip
        watcher.wait_for(
            "the stream's row to be the API's",
            lambda: shown(following.row()) == shown(api_row(watcher, name)),
            timeout=10,
        )
        row = following.row()
        assert row is not None and row["status"] == "in_progress" and row["healthy"]
        assert "deployment_changed" in [e.name for e in following.got]
        assert not any(e.name == "rollout_finished" for e in following.got)
    finally:
        following.close()


def test_a_removed_deployment_is_removed_everywhere_and_comes_back(
    watcher: WatcherProcess, containers: Containers
) -> None:
    """Its container removed after success: a deployment_removed event, `removed` in the JSON,
    deployment_removed 1 on /metrics, `status` saying removed; a new container: deployment_returned."""
    name = f"removed-{uuid.uuid4().hex[:8]}"
    following = Following(watcher, name)
    try:
        container = containers.run(labels=labels(name, "1.0.0"))
        watcher.wait_for("1.0.0 success", lambda: (api_row(watcher, name) or {}).get("status") == "success")
        assert watcher.value("deployment_removed", deployment=name) == 0
        containers.remove(container)
        watcher.wait_for("deployment_removed", lambda: "deployment_removed" in [e.name for e in following.got])
        removed = next(e for e in following.got if e.name == "deployment_removed")
        assert removed.data["reason"] == "no container of it is left"
        assert removed.data["deployment"]["removed"] is True
        row = api_row(watcher, name)
        assert row is not None and row["removed"] is True and row["gone_since"] is not None
        watcher.expect("deployment_removed", 1, deployment=name)
        done = subprocess.run(
            [sys.executable, "-m", "watcher", "status", "--url", watcher.url, "--environment", "test"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        line = next(line for line in done.stdout.splitlines() if line.startswith(name))
        assert line.split()[6] == "removed"
        containers.run(labels=labels(name, "1.0.0"))
        watcher.wait_for("deployment_returned", lambda: "deployment_returned" in [e.name for e in following.got])
        back = next(e for e in following.got if e.name == "deployment_returned")
        assert back.data["deployment"]["removed"] is False
        watcher.expect("deployment_removed", 0, deployment=name)
    finally:
        following.close()
