"""Rollout analysis end to end (issue #20): real containers on the real daemon, labelled with
``deployment.analysis``, a real watcher process configured by a YAML file, a real Prometheus (Debian's)
scraping an application of the test's own every second, whose error rate and latency the test sets;
asserted through the watcher's /metrics, its JSON API, its state file and `rollout status`.

The scenarios run in parallel, each in a thread of its own (``Lanes``), each test waiting for its
own: on the module's watcher and Prometheus, a gate sequence (good v1 passes after the window, v2
with ten times the errors fails by error_rate, v3 good again recovers), an observe-mode analysis and
a hostile deployment name; on watchers of their own, a restart of the watcher mid-window and a
Prometheus stopped mid-window."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.analysis_app import AppServer, scrape_config, wait_for_rates
from tests.conftest import (
    Containers,
    Prometheus,
    WatcherProcess,
    WatcherSetup,
    labels,
    run_prometheus,
    start_watcher,
    unique,
)
from tests.polling import poll
from watcher.domain.analysis import fill

pytestmark = [pytest.mark.docker, pytest.mark.prometheus]

INTERVAL, WINDOW, FAILURE_LIMIT = 1, 5, 2
RESTART_WINDOW = 10  # room for a watcher's stop and start within the window
ERROR_RATE = (
    'sum(rate(http_requests_total{job="{{deployment}}",code=~"5.."}[5s])) '
    '/ sum(rate(http_requests_total{job="{{deployment}}"}[5s]))'
)
P99 = 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="{{deployment}}"}[5s])))'
HOSTILE = 'a"} or vector(1) #'
ENVIRONMENT = "test"
GOOD, BAD = {"ok": 99.0, "errors": 1.0}, {"ok": 90.0, "errors": 10.0}  # 1 % of errors, and ten times that
NO_TRAFFIC = {"ok": 0.0, "errors": 0.0}
FLAGS = ("--rollout.stable-seconds=1", "--stats.enabled=false", "--storage.debounce-seconds=0.1")
# A failure's reason: over the absolute limit, or over the baseline by more than max_increase.
FAILED_BY_ERROR_RATE = re.compile(
    r"analysis error_rate: (?P<value>\S+) > (?:max 0\.02 \(baseline (?P<baseline>\S+)\)"
    r"|\S+, more than 50% above baseline (?P<over>\S+))$"
)


def analysis_config(directory: Path, prometheus: Prometheus, *, window: float = WINDOW) -> Path:
    config = {
        "analysis": {
            "prometheus_url": f"http://127.0.0.1:{prometheus.port}",
            "interval_seconds": INTERVAL,
            "window_seconds": window,
            "failure_limit": FAILURE_LIMIT,
            "timeout_seconds": 2,
            "checks": [
                {"name": "error_rate", "query": ERROR_RATE, "max": 0.02, "max_increase": 0.5},
                {"name": "p99", "query": P99, "max": 0.5},
            ],
        }
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "watcher.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def query_of(name: str) -> str:
    return fill(ERROR_RATE, {"deployment": name})


# -- the parts


class Names:
    """The deployments of the module, random so that runs and other tests never meet."""

    gate = unique("an-gate")
    observe = unique("an-observe")
    restart = unique("an-restart")
    stopped = unique("an-stopped")
    hostile_environment = unique("an-hostile")


@pytest.fixture(scope="module")
def apps() -> Iterator[AppServer]:
    with AppServer() as server:
        server.app(f"/{Names.gate}", **GOOD)
        server.app(f"/{Names.observe}", **BAD)
        server.app(f"/{Names.restart}", **GOOD)
        server.app(f"/{Names.stopped}", **NO_TRAFFIC)
        yield server


@pytest.fixture(scope="module")
def prometheus(apps: AppServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Scraping the gate, observe and restart deployments' applications (none for the hostile name)."""
    tmp = tmp_path_factory.mktemp("prometheus")
    jobs = {name: f"/{name}" for name in (Names.gate, Names.observe, Names.restart)}
    server = run_prometheus(tmp, scrape_config(tmp / "config", apps.port, jobs))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def watcher_setup(prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> WatcherSetup:
    config = analysis_config(tmp_path_factory.mktemp("config"), prometheus)
    return WatcherSetup((f"--config.file={config}", *FLAGS))


def state_file(watcher: WatcherProcess) -> Path:
    """The state file of a watcher started with start_watcher's default storage directory."""
    return watcher.log.parent / f"data-{watcher.port}" / "state.json"


def saved(path: Path, name: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    """The deployment as the state file holds it (an empty dict before it is saved)."""
    if not path.exists():
        return {}
    for deployment in json.loads(path.read_text())["deployments"]:
        if (deployment["name"], deployment["environment"]) == (name, environment):
            found: dict[str, Any] = deployment
            return found
    return {}


def analysis_saved(path: Path, name: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    """The current rollout's analysis in the state file, its checks by name ({} when none yet)."""
    analysis = (saved(path, name, environment).get("rollout") or {}).get("analysis")
    if not analysis:
        return {}
    return {**analysis, "checks": {c["name"]: c for c in analysis["checks"]}}


def measuring(path: Path, name: str, environment: str = ENVIRONMENT) -> Callable[[], dict[str, Any]]:
    """A check for poll: the saved analysis once it measures (its rollout's containers succeeded)."""

    def check() -> dict[str, Any]:
        analysis = analysis_saved(path, name, environment)
        return analysis if analysis.get("measuring_since") is not None else {}

    return check


def ended(path: Path, name: str, version: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    """Until the state file holds the rollout of ``version`` with its verdict and its analysis ended
    (saved a debounce after the API shows it): that analysis."""

    def check() -> dict[str, Any]:
        rollout = saved(path, name, environment).get("rollout") or {}
        if rollout.get("version") != version or rollout.get("status") == "in_progress":
            return {}
        analysis = analysis_saved(path, name, environment)
        return analysis if analysis.get("outcome") != "running" else {}

    return poll(f"{name} {version}'s analysis ended in the state file", check, timeout=10)


def detail(watcher: WatcherProcess, name: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    code, _, body = watcher.get(f"/api/v1/deployments/{environment}/{urllib.parse.quote(name, safe='')}")
    if code == 404:
        return {}
    assert code == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def finished(watcher: WatcherProcess, name: str, version: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    """Until the rollout of ``version`` has a verdict: the deployment's detail."""
    result: dict[str, Any] = {}

    def done() -> bool:
        nonlocal result
        result = detail(watcher, name, environment)
        return result.get("version") == version and result.get("status") != "in_progress"

    watcher.wait_for(f"{name} {version}'s verdict", done)
    return result


def seen(watcher: WatcherProcess, name: str, version: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    """Until the watcher shows the rollout of ``version``."""
    result: dict[str, Any] = {}

    def shown() -> bool:
        nonlocal result
        result = detail(watcher, name, environment)
        return result.get("version") == version

    watcher.wait_for(f"{name} {version} seen", shown)
    return result


def status_metric(watcher: WatcherProcess, name: str, environment: str = ENVIRONMENT) -> float | None:
    return watcher.value("deployment_status", deployment=name, environment=environment)


def rollout_status(watcher: WatcherProcess, name: str, version: str, environment: str = ENVIRONMENT) -> Gate:
    args = ["rollout", "status", name, "--environment", environment, "--version", version, "--timeout", "60"]
    command = [sys.executable, "-m", "watcher", *args, "--url", watcher.url]
    return Gate(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))


class Gate:
    """`deployment-watcher rollout status` running as a CI job runs it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"rollout status still running after {timeout} s") from None
        return self.process.returncode, out, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


class Lanes:
    """The scenarios, each running in a thread from the start of the module; a test waits for its own."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="scenario")
        self.running: dict[str, Future[None]] = {}
        self.gates: list[Gate] = []
        self.lock = threading.Lock()

    def start(self, name: str, scenario: Callable[[], None]) -> None:
        self.running[name] = self.pool.submit(scenario)

    def gate(self, watcher: WatcherProcess, name: str, version: str, environment: str = ENVIRONMENT) -> Gate:
        started = rollout_status(watcher, name, version, environment)
        with self.lock:
            self.gates.append(started)
        return started

    def result(self, name: str) -> None:
        self.running[name].result(timeout=120)

    def close(self) -> None:
        wait(self.running.values(), timeout=150)
        for gate in self.gates:
            gate.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)


def deploy(containers: Containers, name: str, version: str, environment: str = ENVIRONMENT, **extra: str) -> str:
    analysis = {"deployment.analysis": "error_rate,p99", **{f"deployment.analysis.{k}": v for k, v in extra.items()}}
    return containers.run(labels={**labels(name, version, environment), **analysis}, command="exec sleep 600")


# -- the scenarios


def gate_sequence(watcher: WatcherProcess, prometheus: Prometheus, apps: AppServer, lanes: Lanes,
                  containers: Containers) -> None:  # fmt: skip
    """Good v1: in progress through the window, then success. v2 with ten times the errors: failed by
    error_rate at once, `rollout status` exits 1 with the reason, a change failure. v3 good again:
    success, and the recovery measured."""
    name, app, state = Names.gate, apps.apps[f"/{Names.gate}"], state_file(watcher)
    wait_for_rates(prometheus, query_of(name), 0.01)

    first = deploy(containers, name, "v1")
    seen(watcher, name, "v1")
    gate = lanes.gate(watcher, name, "v1")
    analysis = poll("v1's analysis measuring", measuring(state, name), timeout=30)
    # The containers' verdict is success, the gate analysis holds the rollout in progress.
    assert analysis["outcome"] == "running" and analysis["mode"] == "gate"
    assert analysis["checks"]["error_rate"]["baseline"] == pytest.approx(0.01, abs=1e-3)
    assert analysis["ends_at"] - analysis["measuring_since"] == pytest.approx(WINDOW)
    assert status_metric(watcher, name) == 2 and detail(watcher, name)["status"] == "in_progress"
    rollout = finished(watcher, name, "v1")
    assert (rollout["status"], rollout["reason"]) == ("success", ""), rollout
    assert rollout["finished_at"] >= analysis["ends_at"]  # not before the window ended
    analysis = ended(state, name, "v1")
    assert analysis["outcome"] == "passed", analysis
    for check in ("error_rate", "p99"):
        measured = analysis["checks"][check]
        assert measured["passes"] >= 2 and measured["failures"] == measured["errors"] == 0, measured
    assert analysis["checks"]["p99"]["current"] == pytest.approx(0.0995, abs=1e-3)  # 80 ms: the 0.05–0.1 bucket
    code, out, err = gate.finish()
    assert code == 0, (out, err)
    watcher.expect("deployment_status", 1, deployment=name)
    assert watcher.value("deployment_change_failures_total", deployment=name) in (None, 0)

    second = deploy(containers, name, "v2")
    seen(watcher, name, "v2")
    app.set(**BAD)  # the new version answers ten times the errors
    containers.remove(first)
    gate = lanes.gate(watcher, name, "v2")
    rollout = finished(watcher, name, "v2")
    assert rollout["status"] == "failed", rollout
    figures = FAILED_BY_ERROR_RATE.match(rollout["reason"])
    assert figures, rollout["reason"]
    assert float(figures["value"]) > 0.015
    assert float(figures["baseline"] or figures["over"]) == pytest.approx(0.01, abs=2e-3)
    analysis = ended(state, name, "v2")
    assert analysis["outcome"] == "failed" and analysis["reason"] == rollout["reason"], analysis
    assert analysis["checks"]["error_rate"]["failures"] == FAILURE_LIMIT
    assert analysis["checks"]["p99"]["failures"] == 0
    assert rollout["finished_at"] < analysis["ends_at"]  # at once, before the window ended
    code, out, err = gate.finish()
    assert code == 1, (out, err)
    assert rollout["reason"] in out, out
    watcher.expect("deployment_status", 0, deployment=name)
    watcher.expect("deployment_change_failures_total", 1, deployment=name)
    watcher.expect("deployment_rollouts_total", 1, deployment=name, outcome="failed")

    app.set(**GOOD)  # fixed: back to 1 %, before v3 begins (its baseline)
    wait_for_rates(prometheus, query_of(name), 0.01)
    deploy(containers, name, "v3")
    seen(watcher, name, "v3")
    containers.remove(second)
    gate = lanes.gate(watcher, name, "v3")
    rollout = finished(watcher, name, "v3")
    assert (rollout["status"], rollout["reason"]) == ("success", ""), rollout
    assert ended(state, name, "v3")["outcome"] == "passed"
    code, out, err = gate.finish()
    assert code == 0, (out, err)
    watcher.expect("deployment_recovery_seconds_count", 1, deployment=name)
    recovery = watcher.value("deployment_recovery_seconds_sum", deployment=name)
    assert recovery is not None and WINDOW < recovery < 90
    assert watcher.value("deployment_change_failures_total", deployment=name) == 1
    assert watcher.value("deployment_rollouts_total", deployment=name, outcome="success") == 2


def observe_mode(watcher: WatcherProcess, prometheus: Prometheus, lanes: Lanes, containers: Containers) -> None:
    """An observe analysis of a version with 10 % errors: the rollout succeeds by its containers, at
    once; the analysis fails alongside; no change failure."""
    name, state = Names.observe, state_file(watcher)
    wait_for_rates(prometheus, query_of(name), 0.1)
    deploy(containers, name, "v1", mode="observe")
    seen(watcher, name, "v1")
    gate = lanes.gate(watcher, name, "v1")
    rollout = finished(watcher, name, "v1")
    assert (rollout["status"], rollout["reason"]) == ("success", ""), rollout
    code, out, err = gate.finish()
    assert code == 0, (out, err)
    analysis = poll("the observe analysis failed", lambda: analysis_saved(state, name), timeout=30,
                    until=lambda a: a.get("outcome") == "failed")  # fmt: skip
    assert analysis["mode"] == "observe" and FAILED_BY_ERROR_RATE.match(analysis["reason"]), analysis
    assert analysis["checks"]["error_rate"]["failures"] == FAILURE_LIMIT
    assert analysis["measuring_since"] <= rollout["finished_at"] + 0.5  # measured after the rollout succeeded
    assert detail(watcher, name)["status"] == "success" and status_metric(watcher, name) == 1
    assert watcher.value("deployment_change_failures_total", deployment=name) in (None, 0)
    assert watcher.value("deployment_rollouts_total", deployment=name, outcome="success") == 1


def hostile_name(watcher: WatcherProcess, prometheus: Prometheus, lanes: Lanes, containers: Containers) -> None:
    """A deployment named ``a"} or vector(1) #``: its queries keep their meaning (no data, where the
    name unescaped would make the error rate 1), the analysis ends inconclusive, the rollout succeeds;
    the watcher stays up and its /metrics stays valid."""
    environment, state = Names.hostile_environment, state_file(watcher)
    deploy(containers, HOSTILE, "v1", environment)
    seen(watcher, HOSTILE, "v1", environment)
    gate = lanes.gate(watcher, HOSTILE, "v1", environment)
    rollout = finished(watcher, HOSTILE, "v1", environment)
    assert rollout["status"] == "success", rollout
    assert rollout["reason"].startswith("analysis inconclusive: "), rollout
    analysis = ended(state, HOSTILE, "v1", environment)
    assert analysis["outcome"] == "inconclusive", analysis
    for check in ("error_rate", "p99"):
        measured = analysis["checks"][check]
        assert measured["nodata"] >= 1 and measured["passes"] == measured["failures"] == measured["errors"] == 0
    sent = analysis["checks"]["error_rate"]["query"]
    assert 'job="a\\"} or vector(1) #"' in sent, sent
    assert prometheus.query(sent) == []  # no data, not 1
    code, out, err = gate.finish()
    assert code == 0 and out.splitlines()[-1].endswith("succeeded"), (out, err)
    # /metrics parses (WatcherProcess.value does) and holds the name as a label value.
    assert watcher.value("deployment_status", deployment=HOSTILE, environment=environment) == 1
    assert watcher.value("deployment_watcher_analysis_queries_total", result="error") == 0


def restart_mid_window(apps: AppServer, prometheus: Prometheus, tmp: Path, containers: Containers) -> None:
    """A watcher stopped while an analysis measures, a new one on the same state directory: the
    analysis goes on from the state file (baseline, measurements, window kept) and passes."""
    name, data = Names.restart, tmp / "data"
    state = data / "state.json"
    config = analysis_config(tmp / "config", prometheus, window=RESTART_WINDOW)
    flags = (f"--config.file={config}", f"--storage.directory={data}", *FLAGS)
    wait_for_rates(prometheus, query_of(name), 0.01)
    first = start_watcher(tmp, *flags)
    second: WatcherProcess | None = None
    try:
        first.wait_ready()
        deploy(containers, name, "v1")
        before = poll("a measurement of each check", measuring(state, name), timeout=30,
                      until=lambda a: a and all(c["passes"] >= 1 for c in a["checks"].values()))  # fmt: skip
        first.stop_cleanly()
        before = analysis_saved(state, name)  # as the watcher left it
        assert before["outcome"] == "running", before
        assert saved(state, name)["rollout"]["status"] == "in_progress"
        second = start_watcher(tmp, *flags)
        second.wait_ready()
        assert detail(second, name)["status"] == "in_progress"  # the rollout still held by its analysis
        rollout = finished(second, name, "v1")
        assert (rollout["status"], rollout["reason"], rollout["revision"]) == ("success", "", 1), rollout
        after = ended(state, name, "v1")
        assert after["outcome"] == "passed", after
        assert (after["measuring_since"], after["ends_at"]) == (before["measuring_since"], before["ends_at"])
        assert rollout["finished_at"] >= after["ends_at"]
        for check, measured in after["checks"].items():
            kept = before["checks"][check]
            assert (measured["baseline"], measured["baseline_taken"]) == (kept["baseline"], True)
            assert measured["passes"] > kept["passes"], (check, kept, measured)  # measured after the restart
        assert after["checks"]["error_rate"]["baseline"] == pytest.approx(0.01, abs=1e-3)
    finally:
        first.stop()
        if second is not None:
            second.stop_cleanly()


def prometheus_stopped(apps: AppServer, tmp: Path, containers: Containers) -> None:
    """An application with no traffic yet (no data), and Prometheus stopped while the window runs:
    the measurements are no data, then errors; the analysis is inconclusive, the rollout succeeds,
    never failed."""
    name = Names.stopped
    own = run_prometheus(tmp, scrape_config(tmp / "prometheus", apps.port, {name: f"/{name}"}))
    watcher: WatcherProcess | None = None
    try:
        config = analysis_config(tmp / "config", own)
        watcher = start_watcher(tmp, f"--config.file={config}", *FLAGS)
        watched, state = watcher, state_file(watcher)
        watcher.wait_ready()
        deploy(containers, name, "v1")
        poll("a measurement without data", measuring(state, name), timeout=30,
             until=lambda a: a and sum(c["nodata"] for c in a["checks"].values()) >= 1)  # fmt: skip
        own.stop()

        def verdict() -> bool:
            rollout = detail(watched, name)
            assert rollout.get("status") != "failed", rollout
            return rollout.get("status") == "success"

        watcher.wait_for("the rollout's success", verdict)
        rollout = detail(watcher, name)
        assert rollout["reason"].startswith("analysis inconclusive: "), rollout
        analysis = ended(state, name, "v1")
        assert analysis["outcome"] == "inconclusive", analysis
        checks = analysis["checks"].values()
        assert sum(c["nodata"] for c in checks) >= 1 and sum(c["errors"] for c in checks) >= 1
        assert sum(c["passes"] + c["failures"] for c in checks) == 0
        watcher.expect("deployment_status", 1, deployment=name)
        errors = watcher.value("deployment_watcher_analysis_queries_total", result="error")
        assert errors is not None and errors >= 1
        assert watcher.value("deployment_rollouts_total", deployment=name, outcome="failed") in (None, 0)
        assert watcher.value("deployment_change_failures_total", deployment=name) in (None, 0)
    finally:
        own.stop()
        if watcher is not None:
            watcher.stop_cleanly()


# -- the tests


@pytest.fixture(scope="module")
def lanes(
    watcher: WatcherProcess, prometheus: Prometheus, apps: AppServer, busybox_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lanes]:  # fmt: skip
    made = Containers(busybox_image)
    running = Lanes()
    try:
        running.start("gate", lambda: gate_sequence(watcher, prometheus, apps, running, made))
        running.start("observe", lambda: observe_mode(watcher, prometheus, running, made))
        running.start("hostile", lambda: hostile_name(watcher, prometheus, running, made))
        restart_tmp, stopped_tmp = tmp_path_factory.mktemp("restart"), tmp_path_factory.mktemp("stopped")
        running.start("restart", lambda: restart_mid_window(apps, prometheus, restart_tmp, made))
        running.start("stopped", lambda: prometheus_stopped(apps, stopped_tmp, made))
        yield running
    finally:
        running.close()
        made.cleanup()


def test_gate_passes_fails_by_error_rate_and_recovers(lanes: Lanes) -> None:
    lanes.result("gate")


def test_observe_mode_records_a_failure_the_rollout_succeeds(lanes: Lanes) -> None:
    lanes.result("observe")


def test_a_hostile_name_keeps_the_querys_meaning(lanes: Lanes) -> None:
    lanes.result("hostile")


def test_a_restart_mid_window_goes_on_from_the_state_file(lanes: Lanes) -> None:
    lanes.result("restart")


def test_prometheus_stopped_mid_window_is_inconclusive_never_failed(lanes: Lanes) -> None:
    lanes.result("stopped")
