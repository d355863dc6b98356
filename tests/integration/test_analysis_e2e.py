"""Rollout analysis end to end (issue #20): real containers on the real daemon, labelled with
``deployment.analysis``, a real watcher process configured by a YAML file, a real Prometheus (Debian's)
scraping an application of the test's own every second, whose error rate and latency the test sets;
asserted through what users see: the read API's ``analysis``, /metrics' ``deployment_analysis_*``,
the event stream's ``analysis_measured`` and ``analysis_finished``, `rollout status`'s lines and exit
codes, and the dashboard's analysis panels (the module's Prometheus scrapes the watcher too). The
state file is read only where it is the point: what a watcher stopped mid-window leaves.

The scenarios run in parallel, each in a thread of its own (``Lanes``), each test waiting for its
own: on the module's watcher and Prometheus, a gate sequence (good v1 passes after the window, v2
with ten times the errors fails by error_rate, v3 good again recovers; beside it a deployment
without analysis), an observe-mode analysis and a hostile deployment name; on watchers of their
own, a restart of the watcher mid-window and a Prometheus stopped mid-window."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard
from tests.analysis_app import AppServer, scrape_config, wait_for_rates
from tests.conftest import (
    Containers,
    Prometheus,
    WatcherProcess,
    WatcherSetup,
    free_port,
    labels,
    run_prometheus,
    start_watcher,
    unique,
)
from tests.polling import poll
from watcher.clients.reader import Event, Events, Watcher
from watcher.domain.analysis import fill
from watcher.persistence.statefile import saved_document

pytestmark = [pytest.mark.docker, pytest.mark.prometheus]

INTERVAL, WINDOW, FAILURE_LIMIT = 1, 5, 2
RESTART_WINDOW = 10  # room for a watcher's stop and start within the window
ERROR_RATE = (
    'sum(rate(http_requests_total{job="{{deployment}}",code=~"5.."}[5s])) '
    '/ sum(rate(http_requests_total{job="{{deployment}}"}[5s]))'
)
P99 = 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="{{deployment}}"}[5s])))'
CHECKS = ("error_rate", "p99")
HOSTILE = 'a"} or vector(1) #'
ENVIRONMENT = "test"
HOST = "an-e2e"  # the `host` label the module's Prometheus gives the watcher (the dashboard's $host)
GOOD, BAD = {"ok": 99.0, "errors": 1.0}, {"ok": 90.0, "errors": 10.0}  # 1 % of errors, and ten times that
NO_TRAFFIC = {"ok": 0.0, "errors": 0.0}
FLAGS = ("--rollout.stable-seconds=1", "--stats.enabled=false", "--storage.debounce-seconds=0.1")
# deployment_analysis_status
FAILED, PASSED, RUNNING, INCONCLUSIVE = 0, 1, 2, 3
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
    plain = unique("an-plain")  # no analysis
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
def watcher_port() -> int:
    """The module's watcher's port, chosen first: its Prometheus scrapes it."""
    return free_port()


@pytest.fixture(scope="module")
def prometheus(apps: AppServer, watcher_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Scraping the gate, observe and restart deployments' applications (none for the hostile name), and
    the module's watcher (job ``watcher``, ``host`` label HOST) for the dashboard's panels."""
    tmp = tmp_path_factory.mktemp("prometheus")
    jobs = {name: f"/{name}" for name in (Names.gate, Names.observe, Names.restart)}
    path = scrape_config(tmp / "config", apps.port, jobs)
    config = yaml.safe_load(path.read_text())
    target = {"targets": [f"127.0.0.1:{watcher_port}"], "labels": {"host": HOST}}
    config["scrape_configs"].append({"job_name": "watcher", "static_configs": [target]})
    path.write_text(yaml.safe_dump(config))
    server = run_prometheus(tmp, path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def watcher_setup(prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> WatcherSetup:
    config = analysis_config(tmp_path_factory.mktemp("config"), prometheus)
    return WatcherSetup((f"--config.file={config}", *FLAGS))


@pytest.fixture(scope="module")
def watcher(
    watcher_setup: WatcherSetup, watcher_port: int, tmp_path_factory: pytest.TempPathFactory, docker_engine: None
) -> Iterator[WatcherProcess]:
    """conftest's ``watcher``, on the port its Prometheus scrapes."""
    process = start_watcher(tmp_path_factory.mktemp("watcher"), *watcher_setup.flags, port=watcher_port)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop_cleanly()


def saved(path: Path, name: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    """The deployment as the state file and its journal hold it (an empty dict before it is saved)."""
    if not path.exists():
        return {}
    for deployment in saved_document(path.parent)["deployments"]:
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


def analysis_of(shown: dict[str, Any]) -> dict[str, Any]:
    """The ``analysis`` of a deployment as the read API shows it, its checks by name ({} when none)."""
    analysis = shown.get("analysis")
    if not analysis:
        return {}
    return {**analysis, "checks": {c["name"]: c for c in analysis["checks"]}}


def analysis_shown(watcher: WatcherProcess, name: str, environment: str = ENVIRONMENT) -> dict[str, Any]:
    return analysis_of(detail(watcher, name, environment))


def measuring(watcher: WatcherProcess, name: str, environment: str = ENVIRONMENT) -> Callable[[], dict[str, Any]]:
    """A check for poll: the shown analysis once it measures (its rollout's containers succeeded)."""

    def check() -> dict[str, Any]:
        analysis = analysis_shown(watcher, name, environment)
        return analysis if analysis.get("measuring_since") is not None else {}

    return check


def counts(analysis: dict[str, Any], result: str) -> dict[str, int]:
    """Each check's count of measurements with ``result`` (pass, fail, nodata, error), as the API shows them."""
    return {name: check["measurements"][result] for name, check in analysis["checks"].items()}


@dataclass
class Series:
    """A deployment's deployment_analysis_* series on /metrics (parsed by prometheus_client's parser)."""

    status: float | None
    values: dict[tuple[str, str], float]  # (check, sample) → value
    measurements: dict[tuple[str, str], float]  # (check, result) → count

    def of(self, analysis: dict[str, Any]) -> dict[tuple[str, str], float]:
        """The measurement counts the API shows, keyed as ``measurements``."""
        return {(n, r): c for n, check in analysis["checks"].items() for r, c in check["measurements"].items()}


def series(watcher: WatcherProcess, name: str, environment: str = ENVIRONMENT) -> Series:
    own = [
        s for s in watcher.samples() if (s.labels.get("deployment"), s.labels.get("environment")) == (name, environment)
    ]
    status = [s.value for s in own if s.name == "deployment_analysis_status"]
    assert len(status) <= 1, status
    return Series(
        status[0] if status else None,
        {(s.labels["check"], s.labels["sample"]): s.value for s in own if s.name == "deployment_analysis_value"},
        {(s.labels["check"], s.labels["result"]): s.value for s in own
         if s.name == "deployment_analysis_measurements_total"},
    )  # fmt: skip


def expect_status(watcher: WatcherProcess, name: str, status: int, environment: str = ENVIRONMENT) -> Series:
    """Until /metrics shows deployment_analysis_status ``status`` (renderings lag a change by up to a
    second): the deployment's analysis series then."""
    found = Series(None, {}, {})

    def shown() -> bool:
        nonlocal found
        found = series(watcher, name, environment)
        return found.status == status

    watcher.wait_for(f"deployment_analysis_status {status} for {name}", shown, timeout=10)
    return found


def take_until(events: Events, last: Callable[[Event], bool], *, timeout: float = 30) -> list[Event]:
    """The events of the stream up to and including the first for which ``last`` is true."""
    got: list[Event] = []
    events.set_timeout(timeout)
    for event in events:
        got.append(event)
        if last(event):
            return got
    raise AssertionError(f"the stream ended before the awaited event: {[e.name for e in got]}")


def last_line(out: str) -> str:
    return out.splitlines()[-1] if out else ""


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
    error_rate at once (its measurements on the stream before its verdict), `rollout status` exits 1
    with the reason, a change failure. v3 good again: success, and the recovery measured. A deployment
    without analysis beside them has none anywhere. Then the dashboard's analysis panels show the gate."""
    name, app = Names.gate, apps.apps[f"/{Names.gate}"]
    wait_for_rates(prometheus, query_of(name), 0.01)

    containers.run(labels=labels(Names.plain, "v1"), command="exec sleep 600")
    first = deploy(containers, name, "v1")
    seen(watcher, name, "v1")
    gate = lanes.gate(watcher, name, "v1")
    analysis = poll("v1's analysis measuring", measuring(watcher, name), timeout=30)
    # The containers' verdict is success, the gate analysis holds the rollout in progress.
    assert analysis["status"] == "running" and analysis["mode"] == "gate", analysis
    assert (analysis["failures"], analysis["failure_limit"]) == (0, FAILURE_LIMIT), analysis
    error_rate = analysis["checks"]["error_rate"]
    assert error_rate["baseline"] == pytest.approx(0.01, abs=1e-3)
    assert (error_rate["min"], error_rate["max"], error_rate["max_increase"]) == (None, 0.02, 0.5)
    assert error_rate["query"] == query_of(name)
    assert analysis["ends_at"] - analysis["measuring_since"] == pytest.approx(WINDOW)
    assert status_metric(watcher, name) == 2 and detail(watcher, name)["status"] == "in_progress"
    assert series(watcher, name).status == RUNNING
    rollout = finished(watcher, name, "v1")
    assert (rollout["status"], rollout["reason"]) == ("success", ""), rollout
    analysis = analysis_of(rollout)
    assert rollout["finished_at"] >= analysis["ends_at"]  # not before the window ended
    assert analysis["status"] == "passed" and analysis["reason"] == "", analysis
    for check in CHECKS:
        measured = analysis["checks"][check]["measurements"]
        assert measured["pass"] >= 2 and measured["fail"] == measured["error"] == 0, measured
    assert analysis["checks"]["p99"]["current"] == pytest.approx(0.0995, abs=1e-3)  # 80 ms: the 0.05–0.1 bucket
    code, out, err = gate.finish()
    assert code == 0 and last_line(out).endswith("revision 1 (v1) succeeded (analysis passed)"), (out, err)
    shown = expect_status(watcher, name, PASSED)
    assert shown.measurements == shown.of(analysis)
    assert shown.values[("error_rate", "baseline")] == pytest.approx(0.01, abs=1e-3)
    assert shown.values[("p99", "current")] == analysis["checks"]["p99"]["current"]
    watcher.expect("deployment_status", 1, deployment=name)
    assert watcher.value("deployment_change_failures_total", deployment=name) in (None, 0)
    # A deployment without analysis: none in the API, no deployment_analysis_* series.
    plain = finished(watcher, Names.plain, "v1")
    assert plain["status"] == "success" and plain["analysis"] is None, plain
    watcher.wait_for("the plain deployment on /metrics", lambda: status_metric(watcher, Names.plain) == 1)
    assert series(watcher, Names.plain) == Series(None, {}, {})

    events = Watcher(watcher.url).events(query={"name": name}, last_event_id="", timeout=60)
    try:
        second = deploy(containers, name, "v2")
        seen(watcher, name, "v2")
        app.set(**BAD)  # the new version answers ten times the errors
        containers.remove(first)
        gate = lanes.gate(watcher, name, "v2")
        rollout = finished(watcher, name, "v2")
        revision = rollout["revision"]
        stream = take_until(events, lambda e: e.name == "rollout_finished" and e.data["revision"] == revision)
    finally:
        events.close()
    assert rollout["status"] == "failed", rollout
    figures = FAILED_BY_ERROR_RATE.match(rollout["reason"])
    assert figures, rollout["reason"]
    assert float(figures["value"]) > 0.015
    assert float(figures["baseline"] or figures["over"]) == pytest.approx(0.01, abs=2e-3)
    analysis = analysis_of(rollout)
    assert analysis["status"] == "failed" and analysis["reason"] == rollout["reason"], analysis
    assert analysis["failures"] == FAILURE_LIMIT
    assert counts(analysis, "fail") == {"error_rate": FAILURE_LIMIT, "p99": 0}
    error_rate = analysis["checks"]["error_rate"]
    assert error_rate["last"] == "fail" and error_rate["current"] > 0.015, error_rate
    assert error_rate["baseline"] == pytest.approx(0.01, abs=2e-3)
    assert rollout["finished_at"] < analysis["ends_at"]  # at once, before the window ended
    # The stream: the baselines first, the measurements, the analysis's end, then the rollout's verdict.
    mine = [e for e in stream if e.data.get("revision") == revision]
    names = [e.name for e in mine]
    measured = [e.data for e in mine if e.name == "analysis_measured"]
    baselines = [m for m in measured if m["of_baseline"]]
    assert baselines and measured[: len(baselines)] == baselines, measured  # the baseline ones first
    assert {m["check"]: m["result"] for m in baselines} == {"error_rate": "pass", "p99": "pass"}, baselines
    assert [m["value"] for m in baselines if m["check"] == "error_rate"] == [error_rate["baseline"]]
    failed = [m for m in measured if m["result"] == "fail"]
    assert [m["check"] for m in failed] == ["error_rate"] * FAILURE_LIMIT, measured
    assert failed[-1]["value"] == error_rate["current"] and failed[-1]["reason"], failed
    assert names.count("analysis_finished") == 1 and names[-1] == "rollout_finished", names
    assert names.index("analysis_finished") < names.index("rollout_finished")
    assert max(i for i, n in enumerate(names) if n == "analysis_measured") < names.index("analysis_finished")
    ended = mine[names.index("analysis_finished")].data
    assert (ended["outcome"], ended["mode"], ended["reason"]) == ("failed", "gate", rollout["reason"]), ended
    verdict = mine[-1].data
    assert (verdict["status"], verdict["reason"]) == ("failed", rollout["reason"]), verdict
    code, out, err = gate.finish()
    assert code == 1 and last_line(out).endswith(f"revision {revision} (v2) failed: {rollout['reason']}"), (out, err)
    shown = expect_status(watcher, name, FAILED)
    assert shown.values[("error_rate", "baseline")] == pytest.approx(0.01, abs=2e-3)
    assert shown.values[("error_rate", "current")] == error_rate["current"]
    assert shown.measurements[("error_rate", "fail")] == FAILURE_LIMIT
    assert shown.measurements == shown.of(analysis)
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
    assert analysis_of(rollout)["status"] == "passed"
    code, out, err = gate.finish()
    assert code == 0 and last_line(out).endswith("revision 3 (v3) succeeded (analysis passed)"), (out, err)
    expect_status(watcher, name, PASSED)
    # Recovery times are exported per environment by default (the series budget); only this one recovers in it.
    watcher.expect("deployment_recovery_seconds_count", 1, environment=ENVIRONMENT)
    recovery = watcher.value("deployment_recovery_seconds_sum", environment=ENVIRONMENT)
    assert recovery is not None and WINDOW < recovery < 90
    assert watcher.value("deployment_change_failures_total", deployment=name) == 1
    assert watcher.value("deployment_rollouts_total", deployment=name, outcome="success") == 2
    analysis_panels(prometheus, name)


def analysis_panels(prometheus: Prometheus, name: str) -> None:
    """Every expression of the deployments dashboard's analysis panels, as Grafana sends it with this
    deployment selected, returns data from the Prometheus scraping the watcher; the status panel says passed."""
    exprs = [(title, expr) for title, expr in dashboard.expressions() if "analysis" in expr]
    assert {title for title, _ in exprs} >= {"Analysis status", "Analysis: current vs baseline",
                                             "Analysis measurements"}, exprs  # fmt: skip

    def empty() -> list[tuple[str, str]]:
        sent = [(t, dashboard.substitute(e, deployment=name, environment=ENVIRONMENT, host=HOST)) for t, e in exprs]
        return [(title, expr) for title, expr in sent if not prometheus.query(expr)]

    poll("every analysis panel to have data", empty, timeout=20, interval=0.5, until=lambda missing: not missing)
    [status] = [e for _, e in exprs if "deployment_analysis_status" in e]
    status = dashboard.substitute(status, deployment=name, environment=ENVIRONMENT, host=HOST)
    poll("the status panel to say passed", lambda: prometheus.query(status), timeout=10,
         until=lambda result: [float(s["value"][1]) for s in result] == [PASSED])  # fmt: skip
    values = prometheus.query(f'deployment_analysis_value{{deployment="{name}",host="{HOST}"}}')
    assert {(s["metric"]["check"], s["metric"]["sample"]) for s in values} == {
        (check, sample) for check in CHECKS for sample in ("current", "baseline")
    }, values


def observe_mode(watcher: WatcherProcess, prometheus: Prometheus, lanes: Lanes, containers: Containers) -> None:
    """An observe analysis of a version with 10 % errors: the rollout succeeds by its containers, at
    once; the analysis fails alongside; no change failure."""
    name = Names.observe
    wait_for_rates(prometheus, query_of(name), 0.1)
    deploy(containers, name, "v1", mode="observe")
    seen(watcher, name, "v1")
    gate = lanes.gate(watcher, name, "v1")
    rollout = finished(watcher, name, "v1")
    assert (rollout["status"], rollout["reason"]) == ("success", ""), rollout
    code, out, err = gate.finish()
    # Its line says how the analysis stood when the verdict was read (running, or failed already), and
    # that it did not decide.
    said = r"revision 1 \(v1\) succeeded \(analysis (running|failed: analysis error_rate: .*), observe mode\)$"
    assert code == 0 and re.search(said, last_line(out)), (out, err)
    analysis = poll("the observe analysis failed", lambda: analysis_shown(watcher, name), timeout=30,
                    until=lambda a: a.get("status") == "failed")  # fmt: skip
    assert analysis["mode"] == "observe" and FAILED_BY_ERROR_RATE.match(analysis["reason"]), analysis
    assert counts(analysis, "fail")["error_rate"] == FAILURE_LIMIT == analysis["failures"]
    error_rate = analysis["checks"]["error_rate"]
    assert error_rate["baseline"] == pytest.approx(0.1, abs=5e-3)  # the rate all along
    assert error_rate["current"] == pytest.approx(0.1, abs=5e-3)
    assert analysis["measuring_since"] <= rollout["finished_at"] + 0.5  # measured after the rollout succeeded
    assert detail(watcher, name)["status"] == "success"
    watcher.wait_for("the success on /metrics", lambda: status_metric(watcher, name) == 1)  # shown after a rendering
    shown = expect_status(watcher, name, FAILED)
    assert shown.values[("error_rate", "current")] == pytest.approx(0.1, abs=5e-3)
    assert shown.values[("error_rate", "baseline")] == pytest.approx(0.1, abs=5e-3)
    assert shown.measurements == shown.of(analysis)
    assert watcher.value("deployment_change_failures_total", deployment=name) in (None, 0)
    assert watcher.value("deployment_rollouts_total", deployment=name, outcome="success") == 1


def hostile_name(watcher: WatcherProcess, prometheus: Prometheus, lanes: Lanes, containers: Containers) -> None:
    """A deployment named ``a"} or vector(1) #``: its queries keep their meaning (no data, where the
    name unescaped would make the error rate 1), the analysis ends inconclusive, the rollout succeeds;
    the watcher stays up and its /metrics stays valid."""
    environment = Names.hostile_environment
    deploy(containers, HOSTILE, "v1", environment)
    seen(watcher, HOSTILE, "v1", environment)
    gate = lanes.gate(watcher, HOSTILE, "v1", environment)
    rollout = finished(watcher, HOSTILE, "v1", environment)
    assert rollout["status"] == "success", rollout
    assert rollout["reason"].startswith("analysis inconclusive: "), rollout
    analysis = analysis_of(rollout)
    assert analysis["status"] == "inconclusive" and rollout["reason"].endswith(analysis["reason"]), analysis
    for check in CHECKS:
        measured = analysis["checks"][check]
        assert measured["measurements"]["nodata"] >= 1, measured
        assert measured["measurements"]["pass"] == measured["measurements"]["fail"] == 0, measured
        assert measured["measurements"]["error"] == 0, measured
        assert measured["current"] is measured["baseline"] is None, measured
    sent = analysis["checks"]["error_rate"]["query"]
    assert 'job="a\\"} or vector(1) #"' in sent, sent
    assert sent == ERROR_RATE.replace("{{deployment}}", 'a\\"} or vector(1) #')
    assert prometheus.query(sent) == []  # no data, not 1
    code, out, err = gate.finish()
    assert code == 0 and last_line(out).endswith(f"revision 1 (v1) succeeded ({rollout['reason']})"), (out, err)
    # /metrics parses (series does) and holds the name as a label value.
    # /metrics shows a change within exposition.min_interval_seconds and a rendering, the API at once.
    watcher.wait_for("the success on /metrics",
                     lambda: watcher.value("deployment_status", deployment=HOSTILE, environment=environment) == 1)  # fmt: skip
    shown = expect_status(watcher, HOSTILE, INCONCLUSIVE, environment)
    assert shown.values == {}  # nothing measured
    assert shown.measurements == shown.of(analysis)
    assert all(shown.measurements[(check, "nodata")] >= 1 for check in CHECKS), shown
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
        poll("a measurement of each check", measuring(first, name), timeout=30,
             until=lambda a: a and min(counts(a, "pass").values()) >= 1)  # fmt: skip
        first.stop_cleanly()
        # The state file holds the analysis as the watcher left it.
        before = analysis_saved(state, name)
        assert before["outcome"] == "running", before
        assert saved(state, name)["rollout"]["status"] == "in_progress"
        second = start_watcher(tmp, *flags)
        second.wait_ready()
        assert detail(second, name)["status"] == "in_progress"  # the rollout still held by its analysis
        rollout = finished(second, name, "v1")
        assert (rollout["status"], rollout["reason"], rollout["revision"]) == ("success", "", 1), rollout
        after = analysis_of(rollout)
        assert after["status"] == "passed", after
        assert (after["measuring_since"], after["ends_at"]) == (before["measuring_since"], before["ends_at"])
        assert rollout["finished_at"] >= after["ends_at"]
        for check, measured in after["checks"].items():
            kept = before["checks"][check]
            assert kept["baseline_taken"] and measured["baseline"] == kept["baseline"], (check, kept, measured)
            passes = measured["measurements"]["pass"]
            assert passes > kept["passes"], (check, kept, measured)  # measured after the restart
        assert after["checks"]["error_rate"]["baseline"] == pytest.approx(0.01, abs=1e-3)
        shown = expect_status(second, name, PASSED)
        assert shown.measurements == shown.of(after)
    finally:
        first.stop()
        if second is not None:
            second.stop_cleanly()


def prometheus_stopped(apps: AppServer, tmp: Path, lanes: Lanes, containers: Containers) -> None:
    """An application with no traffic yet (no data), and Prometheus stopped while the window runs:
    the measurements are no data, then errors; the analysis is inconclusive, the rollout succeeds,
    never failed."""
    name = Names.stopped
    own = run_prometheus(tmp, scrape_config(tmp / "prometheus", apps.port, {name: f"/{name}"}))
    watcher: WatcherProcess | None = None
    try:
        config = analysis_config(tmp / "config", own)
        watcher = start_watcher(tmp, f"--config.file={config}", *FLAGS)
        watched = watcher
        watcher.wait_ready()
        deploy(containers, name, "v1")
        seen(watcher, name, "v1")
        gate = lanes.gate(watcher, name, "v1")
        poll("a measurement without data", measuring(watcher, name), timeout=30,
             until=lambda a: a and sum(counts(a, "nodata").values()) >= 1)  # fmt: skip
        own.stop()

        def verdict() -> bool:
            rollout = detail(watched, name)
            assert rollout.get("status") != "failed", rollout
            return rollout.get("status") == "success"

        watcher.wait_for("the rollout's success", verdict)
        rollout = detail(watcher, name)
        assert rollout["reason"].startswith("analysis inconclusive: "), rollout
        analysis = analysis_of(rollout)
        assert analysis["status"] == "inconclusive", analysis
        assert sum(counts(analysis, "nodata").values()) >= 1 and sum(counts(analysis, "error").values()) >= 1
        assert sum(counts(analysis, "pass").values()) + sum(counts(analysis, "fail").values()) == 0, analysis
        code, out, err = gate.finish()
        assert code == 0 and last_line(out).endswith(f"revision 1 (v1) succeeded ({rollout['reason']})"), (out, err)
        watcher.expect("deployment_status", 1, deployment=name)
        shown = expect_status(watcher, name, INCONCLUSIVE)
        assert shown.measurements == shown.of(analysis)
        assert sum(shown.measurements[(check, "error")] for check in CHECKS) >= 1, shown
        errors = watcher.value("deployment_watcher_analysis_queries_total", result="error")
        assert errors is not None and errors >= 1
        inconclusive = watcher.value("deployment_watcher_analyses_total", outcome="inconclusive")
        assert inconclusive is not None and inconclusive >= 1
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
        running.start("stopped", lambda: prometheus_stopped(apps, stopped_tmp, running, made))
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
