"""The deploy kit end to end: a real Prometheus with deploy/prometheus, a real watcher, real
containers; every dashboard query answers, filters hold, and alerts fire."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests import dashboard
from tests.analysis_exporter import FAILED, PASSED, AnalysisExporter
from tests.conftest import Containers, Prometheus, WatcherProcess, run_prometheus, start_watcher
from tests.polling import poll

pytestmark = pytest.mark.docker

DEPLOY = Path(__file__).parents[2] / "deploy" / "prometheus"
# The `host` label prometheus.yml gives its one target.
SHIPPED_HOST = "docker-host"
STACK_TIMEOUT = 150  # seconds for Prometheus to scrape, evaluate rules and hold alerts pending


@dataclass
class Scenario:
    api: str  # production: 1.0 → 2.0 (fails) → 1.0 again: a rollback
    web: str  # staging: 1.0 → 2.0 (fails): currently failed


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_engine: None, busybox_image: str) -> Iterator[
    tuple[Prometheus, WatcherProcess, Scenario]
]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("stack")
    watcher = start_watcher(tmp, "--rollout.stable-seconds=2", "--stats.interval-seconds=2")
    containers = Containers(busybox_image)
    prometheus: Prometheus | None = None
    exporter: AnalysisExporter | None = None
    try:
        scenario = run_scenario(watcher, containers)
        # The analysis panels' and alert's series (this watcher runs no analysis): api passed, web failed.
        exporter = AnalysisExporter({(scenario.api, "production"): PASSED, (scenario.web, "staging"): FAILED})
        prometheus = start_prometheus(tmp, watcher_port=watcher.port, analysis_port=exporter.port)
        yield prometheus, watcher, scenario
    finally:
        if prometheus is not None:
            prometheus.stop()
        if exporter is not None:
            exporter.stop()
        containers.cleanup()
        watcher.stop()


def run_scenario(watcher: WatcherProcess, containers: Containers) -> Scenario:
    suffix = uuid.uuid4().hex[:6]
    scenario = Scenario(api=f"e2e-api-{suffix}", web=f"e2e-web-{suffix}")

    def deploy(name: str, environment: str, version: str, command: str = "exec sleep 600") -> str:
        labels = {"deployment.name": name, "deployment.environment": environment, "deployment.version": version,
                  "deployment.commit": f"commit-{version}"}  # fmt: skip
        return containers.run(labels=labels, command=command)

    def status(name: str) -> float | None:
        return watcher.value("deployment_status", deployment=name)

    api_v1 = deploy(scenario.api, "production", "1.0.0")
    deploy(scenario.web, "staging", "1.0.0", command="while :; do :; done")
    watcher.wait_for("v1 success", lambda: status(scenario.api) == 1 and status(scenario.web) == 1)
    deploy(scenario.api, "production", "2.0.0", command="exit 1")
    deploy(scenario.web, "staging", "2.0.0", command="exit 1")
    watcher.wait_for("v2 failed", lambda: status(scenario.api) == 0 and status(scenario.web) == 0)
    containers.remove(api_v1)
    deploy(scenario.api, "production", "1.0.0")
    watcher.wait_for("rollback", lambda: watcher.value("deployment_rollback_count_total", deployment=scenario.api) == 1)
    watcher.wait_for("rollback success", lambda: status(scenario.api) == 1)
    return scenario


def start_prometheus(tmp: Path, *, watcher_port: int, analysis_port: int) -> Prometheus:
    """Prometheus from the project's own files; only the target address is rewritten (its `host` label stays),
    and the analysis exporter added to the watcher's job with the same `host`."""
    config_dir = tmp / "prometheus"
    shutil.copytree(DEPLOY, config_dir)
    config_file = config_dir / "prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            static["targets"] = [f"127.0.0.1:{watcher_port}"]
    [job] = config["scrape_configs"]
    job["static_configs"].append({"targets": [f"127.0.0.1:{analysis_port}"], "labels": {"host": SHIPPED_HOST}})
    config_file.write_text(yaml.safe_dump(config))
    return run_prometheus(tmp, config_file)


def test_every_panel_query_returns_data(stack: tuple[Prometheus, WatcherProcess, Scenario]) -> None:
    """With both deployments selected, every expression of every panel returns a series."""
    prometheus, _, scenario = stack
    both = f"({scenario.api}|{scenario.web})"  # names are [a-z0-9-]: no regex escaping needed

    def empty() -> list[tuple[str, str]]:
        return [
            (title, expr)
            for title, expr in dashboard.expressions()
            if not prometheus.query(dashboard.substitute(expr, deployment=both, environment="(production|staging)"))
        ]

    poll("every panel to have data", empty, timeout=STACK_TIMEOUT, interval=2, until=lambda missing: not missing)


def test_variables_list_both_deployments_and_environments(
    stack: tuple[Prometheus, WatcherProcess, Scenario],
) -> None:
    """The template variables' label_values queries find both deployments, both environments and the host."""
    prometheus, _, scenario = stack
    for variable, query in dashboard.variable_queries().items():
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
        assert match, f"{variable}: {query}"
        selector = dashboard.substitute(match.group(1))
        values = {s["metric"].get(match.group(2)) for s in prometheus.query(selector)}
        expected = {
            "deployment": {scenario.api, scenario.web},
            "environment": {"production", "staging"},
            "host": {SHIPPED_HOST},
        }[match.group(2)]
        assert expected <= values, (variable, values)


def test_filtering_to_one_deployment(stack: tuple[Prometheus, WatcherProcess, Scenario]) -> None:
    """With one deployment selected, no panel shows another deployment's series."""
    prometheus, _, scenario = stack
    poll("data", lambda: prometheus.query(f'deployment_status{{deployment="{scenario.api}"}}'), timeout=STACK_TIMEOUT,
         interval=2)  # fmt: skip
    for title, expr in dashboard.expressions():
        for series in prometheus.query(dashboard.substitute(expr, deployment=scenario.api)):
            shown = series.get("metric", {}).get("deployment")
            assert shown in (None, scenario.api), (title, series)


def test_failed_and_rollback_alerts_fire(stack: tuple[Prometheus, WatcherProcess, Scenario]) -> None:
    """The failed-deployment, rollback and failed-analysis (the exporter's series) alerts are pending or
    firing for the scenario."""
    prometheus, _, scenario = stack

    def alerts() -> set[tuple[str, str | None]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("deployment"))
            for a in prometheus.api("alerts")["alerts"]
            if a["state"] in ("pending", "firing")
        }

    wanted = {
        ("DeploymentFailed", scenario.web), ("DeploymentRolledBack", scenario.api),
        ("DeploymentAnalysisFailed", scenario.web),
    }  # fmt: skip
    poll("alerts", alerts, timeout=STACK_TIMEOUT, interval=2, until=lambda active: wanted <= active)
