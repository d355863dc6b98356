"""What changed when, on a real watcher and the real daemon: three versions of one deployment deployed as
containers, then seen in ``GET /api/v1/rollouts``, the detail's ``revisions``, ``rollout history`` and a
``status --watch`` that followed it all and ends on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.parse
from typing import Any

import pytest

from tests.conftest import Containers, WatcherProcess, WatcherSetup, labels, unique

STABLE = 1  # seconds without a health check until a rollout succeeds

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def watcher_setup() -> WatcherSetup:
    return WatcherSetup((f"--rollout.stable-seconds={STABLE}", "--stats.enabled=false"))


def rollouts_of(watcher: WatcherProcess, name: str, **query: str) -> list[dict[str, Any]]:
    status, content_type, body = watcher.get("/api/v1/rollouts?" + urllib.parse.urlencode(query))
    assert status == 200 and content_type.startswith("application/json"), body
    return [item for item in json.loads(body)["rollouts"] if item["deployment"] == name]


def deployed(watcher: WatcherProcess, name: str, version: str, status: str) -> None:
    def shown() -> bool:
        found = rollouts_of(watcher, name)
        return bool(found) and (found[0]["version"], found[0]["status"]) == (version, status)

    watcher.wait_for(f"{name} {version} {status}", shown)


def test_three_versions_in_the_rollouts_the_detail_and_rollout_history(
    watcher: WatcherProcess, containers: Containers
) -> None:
    name, began = unique("history"), time.time()
    watching = subprocess.Popen(
        [sys.executable, "-m", "watcher", "status", "--watch", "--environment", "test", "--url", watcher.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = containers.run(labels=labels(name, "1.0.0"))
        deployed(watcher, name, "1.0.0", "success")
        containers.remove(first)
        second = containers.run(labels=labels(name, "2.0.0"), command="exit 3")  # it crashes: a failed rollout
        deployed(watcher, name, "2.0.0", "failed")
        containers.remove(second)
        containers.run(labels=labels(name, "3.0.0"))
        deployed(watcher, name, "3.0.0", "success")
    finally:
        watching.send_signal(signal.SIGTERM)
        out, err = watching.communicate(timeout=30)

    items = rollouts_of(watcher, name, since=str(began - 60))
    assert [(i["revision"], i["version"], i["previous_version"], i["status"]) for i in items] == [
        (3, "3.0.0", "2.0.0", "success"), (2, "2.0.0", "1.0.0", "failed"), (1, "1.0.0", "", "success"),
    ]  # fmt: skip
    assert "exited with code 3" in items[1]["reason"] and all(i["environment"] == "test" for i in items)
    assert all(i["judge"] == "containers" and i["duration_seconds"] is not None for i in [items[0], items[2]])
    assert rollouts_of(watcher, name, since=str(time.time() + 60)) == []
    assert watcher.get("/api/v1/rollouts?limit=lots")[0] == 400

    status, _, body = watcher.get(f"/api/v1/deployments/test/{urllib.parse.quote(name, safe='')}")
    assert status == 200
    assert json.loads(body)["revisions"] == [
        {k: v for k, v in i.items() if k not in ("deployment", "environment")} for i in items
    ]

    done = subprocess.run([sys.executable, "-m", "watcher", "rollout", "history", name, "--url", watcher.url],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{name}/test" and lines[1].split()[0] == "REVISION"
    assert [line.split()[:3] for line in lines[2:]] == [
        ["3", "3.0.0", "success"], ["2", "2.0.0", "failed"], ["1", "1.0.0", "success"],
    ]  # fmt: skip
    assert lines[3].endswith(items[1]["reason"])
    unknown = subprocess.run([sys.executable, "-m", "watcher", "rollout", "history", "nope-" + name, "--url",
                              watcher.url], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert unknown.returncode == 1 and "no deployment" in unknown.stderr

    # The watch drew the table again at each change, from the stream, and ended on SIGTERM with exit 0.
    assert watching.returncode == 0, err
    tables = [t for t in out.split("\n\n") if name in t]
    shown = [next(line for line in t.splitlines() if line.startswith(name)).split()[2:4] for t in tables]
    assert ["success", "3.0.0"] in shown and ["failed", "2.0.0"] in shown, out
