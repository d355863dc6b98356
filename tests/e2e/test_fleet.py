"""A fleet end to end, all real: three private Docker daemons (each in a network namespace of its
own), one watcher per daemon, one Prometheus with the project's rules scraping the three with a
`host` label each, the project's Alertmanager configuration, and a webhook receiver run here.

The scenario: `api` rolled host by host (in progress at fleet level until the last host is done),
then a new version left off one host (DeploymentVersionSkew); `web` failing on one host (one
notification for the group, the per-host alert inhibited). Then every dashboard panel answers and
none counts a deployment once per host.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests import dashboard
from tests.analysis_exporter import PASSED, AnalysisExporter
from tests.conftest import (
    BUSYBOX_IMAGE,
    Prometheus,
    WatcherProcess,
    busybox_tarball,
    free_port,
    require_binary,
    run_prometheus,
    start_watcher,
)
from tests.polling import poll
from tests.private_dockerd import PrivateDockerd

pytestmark = pytest.mark.docker

DEPLOY = Path(__file__).parents[2] / "deploy"
HOSTS = ("h1", "h2", "h3")
ENVIRONMENT = "production"
SKEW_FOR = "10s"  # DeploymentVersionSkew's `for:` here, instead of the shipped 30m
GROUP_WAIT = 3  # seconds Alertmanager gathers a new group's alerts (both alerts of a failure arrive within it)
GROUP_INTERVAL = 2  # seconds between two notifications of a group that changed
QUIET = 15  # seconds without a second notification that make "once per group"
TIMEOUT = 60  # seconds for Prometheus and Alertmanager to show what the watchers show


class Webhook:
    """An HTTP server on its own event loop and thread that keeps every notification POSTed to /alerts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.notifications: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _receive(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        return web.Response()

    def of_group(self, deployment: str) -> list[dict[str, Any]]:
        """The notifications of the group of this deployment (in ENVIRONMENT), in order of arrival."""
        group = {"deployment": deployment, "environment": ENVIRONMENT}
        return [n for n in list(self.notifications) if n["groupLabels"] == group]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class Alertmanager:
    """prometheus-alertmanager started by the test, and its API."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """Alerts it holds (active, silenced and inhibited ones), matching these labels."""
        query = urllib.parse.urlencode([("filter", f'{name}="{value}"') for name, value in filters.items()])
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/alerts?{query}", timeout=10) as response:
            alerts: list[dict[str, Any]] = json.load(response)
        return alerts

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class Host:
    """One Docker host of the fleet: its daemon and its watcher."""

    name: str
    daemon: PrivateDockerd
    watcher: WatcherProcess | None = None
    containers: dict[str, str] = field(default_factory=dict)  # deployment → its container's name

    def deploy(self, deployment: str, version: str, *, command: str = "exec sleep 600") -> None:
        """Replace the deployment's container with one of this version, as `docker compose up` does."""
        if deployment in self.containers:
            self.daemon.docker("rm", "-f", self.containers.pop(deployment))
        labels = {
            "deployment.name": deployment,
            "deployment.environment": ENVIRONMENT,
            "deployment.version": version,
            "deployment.stable_seconds": "1",
        }
        self.containers[deployment] = self.daemon.run(
            f"{deployment}-{version.replace('.', '-')}", labels=labels, command=command
        )

    def shows(self, deployment: str, version: str, status: str) -> bool:
        """Whether its watcher's /metrics show the deployment at this version and status."""
        assert self.watcher is not None
        info = [
            s.labels
            for s in self.watcher.samples()
            if s.name == "deployment_info" and s.labels.get("deployment") == deployment
        ]
        return [(i["version"], i["status"]) for i in info] == [(version, status)]

    def wait(self, deployment: str, version: str, status: str) -> None:
        assert self.watcher is not None
        self.watcher.wait_for(
            f"{self.name}: {deployment} {version} {status}", lambda: self.shows(deployment, version, status)
        )


@dataclass
class Fleet:
    hosts: list[Host]
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: Webhook
    rolling: dict[str, float] = field(default_factory=dict)  # fleet status once Prometheus sees each host done
    rolling_values: set[float] = field(default_factory=set)  # every fleet status recorded during the roll
    rolled: float | None = None  # fleet status once the last host is done
    durations: dict[str, float] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def value(self, expr: str) -> float | None:
        """The one value of an instant query, or None when it returns nothing."""
        result = self.prometheus.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def fleet_status(self, deployment: str) -> float | None:
        return self.value(f'deployment:fleet_status{{deployment="{deployment}"}}')

    def prometheus_sees(self, deployment: str, host: str, version: str, status: str) -> None:
        selector = f'deployment="{deployment}",host="{host}",version="{version}",status="{status}"'
        poll(
            f"Prometheus to see {deployment} {version} {status} on {host}",
            lambda: self.prometheus.query(f"deployment_info{{{selector}}}"),
            timeout=TIMEOUT,
        )

    def rules_evaluated(self) -> None:
        """Wait until the fleet rules have been evaluated twice more: once at least wholly after this call."""
        before = {group: n for group, n in self.prometheus.rule_iterations().items() if "/fleet.yml;" in group}
        assert before, "Prometheus evaluates no group of fleet.yml"
        poll(
            "the fleet rules evaluated twice more",
            self.prometheus.rule_iterations,
            timeout=TIMEOUT,
            until=lambda now: all(now[group] >= count + 2 for group, count in before.items()),
        )

    def alert_fires(self, name: str, deployment: str) -> dict[str, Any]:
        """Wait until Prometheus says the alert fires for the deployment; the alert."""

        def firing() -> list[dict[str, Any]]:
            return [
                a
                for a in self.prometheus.api("alerts")["alerts"]
                if a["labels"]["alertname"] == name and a["labels"].get("deployment") == deployment
                and a["state"] == "firing"
            ]  # fmt: skip

        return poll(f"{name} for {deployment} to fire", firing, timeout=TIMEOUT)[0]


def prometheus_config(tmp: Path, *, watchers: dict[str, int], alertmanager_port: int, analysis_port: int) -> Path:
    """deploy/prometheus with the watchers as targets (each with its `host` label), the analysis exporter
    as a target on the first host, intervals of a second, the test's Alertmanager, and
    DeploymentVersionSkew's `for:` set to SKEW_FOR."""
    config_dir = tmp / "prometheus"
    shutil.copytree(DEPLOY / "prometheus", config_dir)
    fleet_rules = config_dir / "rules" / "fleet.yml"
    text = fleet_rules.read_text()
    skew = re.compile(r"(- alert: DeploymentVersionSkew\n(?:.*\n)*?\s+for: )30m\n")
    assert len(skew.findall(text)) == 1, "DeploymentVersionSkew's for: is not the documented 30m"
    fleet_rules.write_text(skew.sub(rf"\g<1>{SKEW_FOR}\n", text))
    config_file = config_dir / "prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    [job] = config["scrape_configs"]
    job["static_configs"] = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"host": host}} for host, port in watchers.items()
    ]
    job["static_configs"].append({"targets": [f"127.0.0.1:{analysis_port}"], "labels": {"host": HOSTS[0]}})
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def start_alertmanager(tmp: Path, *, webhook: Webhook) -> Alertmanager:
    """deploy/alertmanager with the webhook receiver's URL and short group waits; routes, grouping and
    inhibition as shipped."""
    config_dir = tmp / "alertmanager"
    shutil.copytree(DEPLOY / "alertmanager", config_dir)
    config_file = config_dir / "alertmanager.yml"
    config = yaml.safe_load(config_file.read_text())
    config["route"].update(group_wait=f"{GROUP_WAIT}s", group_interval=f"{GROUP_INTERVAL}s", repeat_interval="1h")
    [receiver] = config["receivers"]
    [hook] = receiver["webhook_configs"]
    hook["url"] = webhook.url
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "alertmanager.log"
    process = subprocess.Popen(
        [require_binary("prometheus-alertmanager"), f"--config.file={config_file}",
         f"--storage.path={tmp / 'alertmanager-data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    alertmanager = Alertmanager(port, process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"alertmanager exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    poll("alertmanager /-/ready", ready, timeout=30, interval=0.3, retry_on=(OSError,))
    return alertmanager


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The fleet, after the scenario has run."""
    require_binary("docker")
    require_binary("dockerd")
    tmp = tmp_path_factory.mktemp("fleet")
    tarball = busybox_tarball()
    hosts = [Host(name, PrivateDockerd(log=tmp / f"dockerd-{name}.log", image=BUSYBOX_IMAGE, image_tarball=tarball))
             for name in HOSTS]  # fmt: skip
    webhook = Webhook()
    prometheus: Prometheus | None = None
    alertmanager: Alertmanager | None = None
    # The analysis panels' series (these watchers run no analysis), passed: no alert to disturb the groups.
    analysis = AnalysisExporter({("api", ENVIRONMENT): PASSED, ("web", ENVIRONMENT): PASSED})
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(lambda h: h.daemon.start(live_restore=False), hosts))
        for host in hosts:
            host.watcher = start_watcher(tmp, f"--docker.host={host.daemon.host}", "--stats.interval-seconds=1")
        webhook.start()
        alertmanager = start_alertmanager(tmp, webhook=webhook)
        watchers = {h.name: h.watcher.port for h in hosts if h.watcher}
        config = prometheus_config(tmp, watchers=watchers, alertmanager_port=alertmanager.port,
                                   analysis_port=analysis.port)  # fmt: skip
        prometheus = run_prometheus(tmp, config)
        result = Fleet(hosts, prometheus, alertmanager, webhook)
        result.durations["start"] = time.monotonic() - started
        run_scenario(result)
        result.durations["scenario"] = time.monotonic() - started - result.durations["start"]
        yield result
    finally:
        for stop in [*(h.watcher.stop for h in hosts if h.watcher), webhook.stop, analysis.stop]:
            stop()
        for server in (prometheus, alertmanager):
            if server is not None:
                server.stop()
        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(lambda h: h.daemon.cleanup(), hosts))


def run_scenario(fleet: Fleet) -> None:
    """api 1.0.0 everywhere, rolled to 2.0.0 host by host, then 3.0.0 on h1 and h2 only; web 1.0.0
    everywhere, then 2.0.0 failing on h1."""
    for host in fleet.hosts:
        host.deploy("api", "1.0.0")
        host.deploy("web", "1.0.0")
    for host in fleet.hosts:
        host.wait("api", "1.0.0", "success")
        host.wait("web", "1.0.0", "success")
    poll("api's fleet status to be success", lambda: fleet.fleet_status("api"), timeout=TIMEOUT, until=lambda v: v == 1)

    # Host by host: each host done before the next starts, as a deploy script would.
    *first, last = fleet.hosts
    for host in first:
        host.deploy("api", "2.0.0")
        host.wait("api", "2.0.0", "success")
        fleet.prometheus_sees("api", host.name, "2.0.0", "success")
        fleet.rules_evaluated()  # since that scrape
        status = fleet.fleet_status("api")
        assert status is not None
        fleet.rolling[host.name] = status
    rolling_from = time.time()  # from here until the last host is done, every recorded value counts
    last.deploy("api", "2.0.0")
    assert last.watcher is not None
    not_done = rolling_from  # the last moment the last host was not done yet, as its watcher said

    def last_done() -> bool:
        nonlocal not_done
        before = time.time()
        if last.shows("api", "2.0.0", "success"):
            return True
        not_done = before
        return False

    poll("the last host to be done", last_done, timeout=TIMEOUT, interval=0.1)
    series = fleet.prometheus.api(
        "query_range", query='deployment:fleet_status{deployment="api"}', start=str(rolling_from),
        end=str(not_done), step="0.5",
    )["result"]  # fmt: skip
    fleet.rolling_values = {float(v) for s in series for _, v in s["values"]}
    fleet.rolled = poll("api's fleet status after the roll", lambda: fleet.fleet_status("api"), timeout=TIMEOUT,
                        until=lambda v: v == 1)  # fmt: skip

    # 3.0.0 on two hosts of three; web fails on h1 meanwhile.
    for host in first:
        host.deploy("api", "3.0.0")
    fleet.host("h1").deploy("web", "2.0.0", command="exit 1")
    for host in first:
        host.wait("api", "3.0.0", "success")
    fleet.host("h1").wait("web", "2.0.0", "failed")


def test_fleet_starts_and_runs_in_reasonable_time(fleet: Fleet) -> None:
    """Three daemons, watchers, Prometheus and Alertmanager start, and the scenario runs, within limits."""
    assert fleet.durations["start"] < 60, fleet.durations
    assert fleet.durations["scenario"] < 90, fleet.durations


def test_rolling_deploy_is_in_progress_until_the_last_host(fleet: Fleet) -> None:
    """While hosts are done one by one, the fleet reads in progress (2), even with every host's own
    status success; it reads success (1) once the last host is done."""
    assert fleet.rolling == {"h1": 2, "h2": 2}
    assert fleet.rolling_values == {2.0}
    assert fleet.rolled == 1


def test_fleet_series(fleet: Fleet) -> None:
    """Hosts, versions, the newest version and the host behind it, as recorded for api after 3.0.0
    reached two hosts of three."""

    def series() -> dict[str, Any]:
        return {
            "hosts": fleet.value('deployment:fleet_hosts{deployment="api"}'),
            "versions": fleet.value('deployment:fleet_versions{deployment="api"}'),
            "behind": fleet.value('deployment:fleet_hosts_behind{deployment="api"}'),
            "newest": [s["metric"]["version"] for s in fleet.prometheus.query(
                'deployment:fleet_newest_version{deployment="api"}')],
            "behind_hosts": sorted((s["metric"]["host"], s["metric"]["version"]) for s in fleet.prometheus.query(
                'deployment:fleet_host_behind{deployment="api"} == 1')),
            "status": fleet.fleet_status("api"),
        }  # fmt: skip

    expected = {"hosts": 3, "versions": 2, "behind": 1, "newest": ["3.0.0"], "behind_hosts": [("h3", "2.0.0")],
                "status": 2}  # fmt: skip
    poll("api's fleet series", series, timeout=TIMEOUT, until=lambda s: s == expected)


def test_version_skew_alert_reaches_the_webhook(fleet: Fleet) -> None:
    """One host left on the old version raises DeploymentVersionSkew, and the webhook gets it with
    the newest version and the host behind it."""
    alert = fleet.alert_fires("DeploymentVersionSkew", "api")
    assert alert["annotations"]["hosts"] == "h3"
    assert alert["annotations"]["version"] == "3.0.0"

    def skew_notified() -> list[dict[str, Any]]:
        return [
            a
            for n in fleet.webhook.of_group("api")
            for a in n["alerts"]
            if a["labels"]["alertname"] == "DeploymentVersionSkew" and a["status"] == "firing"
            and a["annotations"]["hosts"] == "h3" and a["annotations"]["version"] == "3.0.0"
        ]  # fmt: skip

    # A roll that takes longer than SKEW_FOR raised it before, for 2.0.0: this is the one for 3.0.0.
    [notified, *_] = poll("the skew at the webhook", skew_notified, timeout=TIMEOUT)
    assert notified["labels"] == {"alertname": "DeploymentVersionSkew", "deployment": "api",
                                  "environment": ENVIRONMENT, "severity": "warning"}  # fmt: skip
    assert "h3 (2.0.0) behind the newest version, 3.0.0" in notified["annotations"]["description"]


def test_failure_on_one_host_fails_the_fleet_and_notifies_once(fleet: Fleet, tmp_path: Path) -> None:
    """web failing on h1 fails the fleet rollout; the webhook gets one notification for the group,
    with the fleet alert only (the per-host DeploymentFailed is inhibited), saying deployment,
    environment, version, host, reason and the dashboard link; the templates' message says them too."""
    poll("web's fleet status", lambda: fleet.fleet_status("web"), timeout=TIMEOUT, until=lambda v: v == 0)
    fleet.alert_fires("DeploymentFailed", "web")
    first = poll("web's notification", lambda: fleet.webhook.of_group("web"), timeout=TIMEOUT)
    time.sleep(QUIET)  # long enough for DeploymentVersionSkew of web to fire too (inhibited as well)
    notifications = fleet.webhook.of_group("web")
    assert notifications == first, "more than one notification for the group"
    [notification] = notifications
    assert notification["status"] == "firing"
    [alert] = notification["alerts"]
    assert alert["labels"] == {"alertname": "DeploymentFleetFailed", "deployment": "web",
                               "environment": ENVIRONMENT, "severity": "critical"}  # fmt: skip
    annotations = alert["annotations"]
    assert annotations["version"] == "2.0.0"
    assert annotations["hosts"] == "h1"
    assert annotations["summary"] == f"Deployment web failed in {ENVIRONMENT}"
    assert annotations["description"] == (
        f"The rollout of web in {ENVIRONMENT} failed on h1 (2.0.0) (deployment_status is 0 there)."
    )
    assert annotations["dashboard"] == (
        f"/d/deployments/deployments-dashboard?var-deployment=web&var-environment={ENVIRONMENT}"
    )

    # The per-host alert reached Alertmanager, which holds it back.
    [held] = fleet.alertmanager.alerts(alertname="DeploymentFailed", deployment="web")
    assert held["labels"]["host"] == "h1"
    assert held["status"]["state"] == "suppressed" and held["status"]["inhibitedBy"], held["status"]
    assert held["annotations"]["version"] == "2.0.0"
    assert held["annotations"]["dashboard"].endswith("&var-host=h1")

    # The message the Slack and e-mail receivers would send for this very notification.
    data = tmp_path / "notification.json"
    data.write_text(json.dumps(notification))
    message = subprocess.run(
        [require_binary("amtool"), "template", "render", f"--template.glob={DEPLOY}/alertmanager/templates/*.tmpl",
         f"--template.data={data}", '--template.text={{ template "deployments.text" . }}'],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    for line in ["Deployment: web", f"Environment: {ENVIRONMENT}", "Version: 2.0.0", "Host: h1",
                 f"Reason: {annotations['description']}",
                 f"Dashboard: http://localhost:3000{annotations['dashboard']}"]:  # fmt: skip
        assert line in message, (line, message)


def test_every_panel_returns_data(fleet: Fleet) -> None:
    """With every deployment, environment and host selected, every expression of every panel returns a series."""

    def empty() -> list[tuple[str, str]]:
        return [(t, e) for t, e in dashboard.expressions() if not fleet.prometheus.query(dashboard.substitute(e))]

    poll("every panel to have data", empty, timeout=TIMEOUT, interval=1, until=lambda missing: not missing)


def test_host_variable_lists_the_hosts(fleet: Fleet) -> None:
    """The host variable's label_values query finds the three hosts."""
    query = dashboard.variable_queries()["host"]
    match = re.fullmatch(r"label_values\((.*),\s*host\)", query.strip())
    assert match, query
    hosts = {s["metric"].get("host") for s in fleet.prometheus.query(dashboard.substitute(match.group(1)))}
    assert hosts == set(HOSTS)


def legend(template: str, labels: dict[str, str]) -> str:
    """A Grafana legend with the series' labels filled in."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def test_no_panel_double_counts(fleet: Fleet) -> None:
    """No panel shows a deployment once per host without saying which host: no two series of a
    target read the same, a series with a target's labels shows them, and the counts add up to the
    two deployments and three hosts there are."""
    for panel in dashboard.panels():
        for target in panel["targets"]:
            where = f"{panel['title']} {target['refId']}"
            result = fleet.prometheus.query(dashboard.substitute(target["expr"]))
            shown: list[object]
            if target["format"] == "table":
                shown = [tuple(sorted(s["metric"].items())) for s in result]  # every label is a column
            else:
                template = target.get("legendFormat", "")
                shown = [legend(template, s["metric"]) for s in result]
                for s in result:
                    if "instance" in s["metric"]:
                        assert "{{host}}" in template, f"{where}: a series per host, and no host in {template!r}"
            assert len(shown) == len(set(shown)), f"{where}: {shown}"

    def panel_values(title: str) -> dict[str, list[float]]:
        [panel] = [p for p in dashboard.panels() if p["title"] == title]
        return {
            t["refId"]: [float(s["value"][1]) for s in fleet.prometheus.query(dashboard.substitute(t["expr"]))]
            for t in panel["targets"]
        }

    by_status = panel_values("Deployments by status")
    assert sorted(v for values in by_status.values() for v in values) == [0, 1, 1]  # api in progress, web failed
    assert panel_values("Version skew")["A"] == [3, 3]  # hosts per deployment
    fleet_cells = fleet.prometheus.query(dashboard.substitute(next(
        p for p in dashboard.panels() if p["title"] == "Fleet")["targets"][0]["expr"]))  # fmt: skip
    cells = sorted((s["metric"]["rollout"], s["metric"]["host"]) for s in fleet_cells)
    assert cells == sorted((f"{d} / {ENVIRONMENT}", h) for d in ("api", "web") for h in HOSTS)
    assert len(panel_values("Status")["A"]) == 2
    assert panel_values("Watcher: Docker connection")["A"] == [1, 1, 1]
