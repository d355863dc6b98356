"""The automatic Swarm rollback of #20 on real parts: Docker Engine 26.1 (Debian 13's) as a
single-node swarm in namespaces of its own, a real Prometheus (Debian's) on the host's loopback
scraping an application of the test's own whose error rate the test sets, and the watcher with
rollout analysis on. A good v1 passes its analysis; v2 with ten times the errors fails it, and the
watcher asks Swarm to roll the service back to v1 (``allow_rollback: true``), or only fails v2
(``false``); behind a read-only socket proxy the rollback is refused, said, and counted."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.analysis_app import AppServer, scrape_config
from tests.conftest import BUSYBOX_IMAGE, Prometheus, WatcherProcess, busybox_tarball, run_prometheus, start_watcher
from tests.dockerproxy import ReadOnlyProxy
from tests.engines import TRIXIE_ROOT, TrixieDockerd
from tests.integration.test_swarm import FAST, TAGS, settled, v

pytestmark = [pytest.mark.docker, pytest.mark.prometheus]

ENVIRONMENT = "test"
# The check over a short rate window: a change of error rate shows within seconds.
ERROR_RATE = {
    "name": "error_rate",
    "query": 'sum(rate(http_requests_total{job="{{deployment}}",code=~"5.."}[3s])) '
    '/ sum(rate(http_requests_total{job="{{deployment}}"}[3s]))',
    "max": 0.02,
}
GOOD, BAD = {"ok": 99.0, "errors": 1.0}, {"ok": 90.0, "errors": 10.0}  # 1 %, then ten times the errors


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrixieDockerd]:
    if os.geteuid() != 0:
        pytest.fail("a private dockerd needs root")
    tmp = tmp_path_factory.mktemp("docker26")
    started = TrixieDockerd(root=TRIXIE_ROOT, log=tmp / "dockerd-26.log", image=BUSYBOX_IMAGE,
                            image_tarball=busybox_tarball(), address="10.99.0.2")  # fmt: skip
    try:
        started.start()
        docker(started, "swarm", "init", "--advertise-addr", "10.99.0.2")
        for tag in TAGS:
            docker(started, "tag", BUSYBOX_IMAGE, tag)
        yield started
    finally:
        subprocess.run(["docker", "-H", started.host, "swarm", "leave", "--force"], capture_output=True, timeout=60)
        started.cleanup()


def docker(daemon: TrixieDockerd, *args: str) -> str:
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=120)
    return str(run(["docker", "-H", daemon.host, *args]).stdout)


class Analysed:
    """A service of its own on ``daemon``, its application scraped by a Prometheus of its own, and a
    watcher analysing its rollouts: everything ended by ``close``."""

    def __init__(self, tmp: Path, daemon: TrixieDockerd, *, allow_rollback: bool, docker_host: str = "") -> None:
        self.daemon = daemon
        self.name = f"svc-{uuid.uuid4().hex[:6]}"
        self._server = AppServer()
        self.app = self._server.app(ok=GOOD["ok"], errors=GOOD["errors"])
        self._prometheus: Prometheus | None = None
        self.watcher: WatcherProcess | None = None
        self._created = False
        try:
            self._prometheus = run_prometheus(
                tmp, scrape_config(tmp / "prometheus", self._server.port, {self.name: "/metrics"})
            )
            config = tmp / "watcher.yml"
            config.write_text(yaml.safe_dump({"analysis": {
                "prometheus_url": f"http://127.0.0.1:{self._prometheus.port}", "interval_seconds": 1,
                "window_seconds": 6, "failure_limit": 2, "allow_rollback": allow_rollback, "checks": [ERROR_RATE],
            }}))  # fmt: skip
            self.watcher = start_watcher(
                tmp, f"--config.file={config}", f"--docker.host={docker_host or daemon.host}",
                "--swarm.poll-seconds=0.5", "--exposition.min-interval-seconds=0.1",
            )  # fmt: skip
        except BaseException:
            self.close()
            raise

    @property
    def running(self) -> WatcherProcess:
        assert self.watcher is not None
        return self.watcher

    def create(self) -> None:
        self._created = True
        docker(
            self.daemon, "service", "create", "-d", "--name", self.name, "--replicas", "1",
            "--label", f"deployment.name={self.name}", "--label", "deployment.version=1",
            "--label", "deployment.analysis=error_rate", "--label", "deployment.analysis.on_failure=rollback",
            "--container-label", f"deployment.environment={ENVIRONMENT}", *FAST, TAGS[0], "sleep", "600",
        )  # fmt: skip

    def update_to_v2(self) -> None:
        docker(self.daemon, "service", "update", "-d", *FAST, "--label-add", "deployment.version=2",
               "--image", TAGS[1], self.name)  # fmt: skip

    def service(self) -> Any:
        return json.loads(docker(self.daemon, "service", "inspect", self.name))[0]

    def detail(self) -> dict[str, Any]:
        _, _, body = self.running.get(f"/api/v1/deployments/{ENVIRONMENT}/{self.name}")
        found: dict[str, Any] = json.loads(body)
        return found

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self._created:
            subprocess.run(["docker", "-H", self.daemon.host, "service", "rm", self.name], capture_output=True,
                           timeout=60)  # fmt: skip
        if self._prometheus is not None:
            self._prometheus.stop()
        self._server.stop()


def v1_passes_v2_fails(analysed: Analysed) -> None:
    """v1 passes its analysis after the window; v2, with ten times the errors, fails it."""
    watcher = analysed.running
    analysed.create()
    settled(watcher, analysed.name, status=1, revision=1)
    assert analysed.detail()["reason"] == ""
    analysed.app.set(**BAD)
    analysed.update_to_v2()

    def failed() -> bool:  # or rolled back already: the watcher asks within a second
        detail = analysed.detail()
        return bool((detail["revision"] == 2 and detail["status"] == "failed") or detail["revision"] > 2)

    watcher.wait_for("v2 failed by its analysis", failed, timeout=90)
    analysed.app.set(**GOOD)  # the errors were v2's: v1, rolled back to, serves well again


@pytest.mark.parametrize("proxied", [False, True], ids=["allowed", "read-only proxy"])
def test_a_failed_analysis_rolls_the_service_back(tmp_path: Path, daemon: TrixieDockerd, proxied: bool) -> None:
    proxy = ReadOnlyProxy(tmp_path / "proxy.sock", upstream=daemon.host.removeprefix("unix://")) if proxied else None
    analysed: Analysed | None = None
    try:
        if proxy is not None:
            proxy.start()
        analysed = Analysed(tmp_path, daemon, allow_rollback=True,
                            docker_host=f"unix://{proxy.path}" if proxy else "")  # fmt: skip
        watcher = analysed.running
        v1_passes_v2_fails(analysed)
        if proxy is not None:
            # Refused: v2 stays, failed; the log says what to grant; counted; asked once.
            watcher.expect("deployment_watcher_swarm_rollbacks_total", 1, timeout=30, result="error")
            assert analysed.detail()["status"] == "failed" and analysed.detail()["revision"] == 2
            assert "analysis.allow_rollback needs POST on /services" in watcher.log.read_text()
            assert [r.method for r in proxy.requests() if r.method != "GET"] == ["POST"]
            assert analysed.service()["Spec"]["Labels"]["deployment.version"] == "2"
            return
        seen: list[dict[str, Any]] = []

        def rolling_back() -> bool:  # its reason read at once: an analysis that fails later gives its own
            seen.append(analysed.detail())
            return bool(seen[-1]["revision"] == 3)

        watcher.wait_for("the rollback begun", rolling_back, timeout=60)
        detail = seen[-1]
        assert detail["rollback"] and detail["version"] == "1"
        assert detail["reason"].startswith("rolled back: the analysis of revision 2 asked for it (analysis error_rate:")
        settled(watcher, analysed.name, status=1, revision=3)
        assert analysed.detail()["reason"] == detail["reason"]
        service = analysed.service()
        assert service["Spec"]["Labels"]["deployment.version"] == "1"
        assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(TAGS[0])
        assert service["UpdateStatus"]["State"].startswith("rollback_")
        assert v(watcher, analysed.name, "deployment_rollback_count_total") == 1
        assert v(watcher, analysed.name, "deployment_change_failures_total") == 1
        watcher.expect("deployment_watcher_swarm_rollbacks_total", 1, result="ok")
        assert "rolling back service " + analysed.name + " from version 2 to 1" in watcher.log.read_text()
    finally:
        if analysed is not None:
            analysed.close()
        if proxy is not None:
            proxy.close()


def test_without_allow_rollback_only_failed(tmp_path: Path, daemon: TrixieDockerd) -> None:
    analysed = Analysed(tmp_path, daemon, allow_rollback=False)
    try:
        v1_passes_v2_fails(analysed)
        watcher = analysed.running
        time.sleep(3)  # where an allowed rollback would have begun
        detail = analysed.detail()
        assert (detail["status"], detail["revision"], detail["rollback"]) == ("failed", 2, False)
        assert detail["reason"].startswith("analysis error_rate:")
        assert v(watcher, analysed.name, "deployment_rollback_count_total") == 0
        assert watcher.value("deployment_watcher_swarm_rollbacks_total", result="ok") == 0
        assert analysed.service()["Spec"]["Labels"]["deployment.version"] == "2"
    finally:
        analysed.close()
