"""Prometheus and Grafana from packages, set up as docs/getting-started.md ("Without Compose") says.

The documented commands run as written, from the repository root, with /etc and /var/lib moved
under a temporary directory (the package installs, apt sources and systemctl are not run: the
packaged binaries are already here, Grafana's repository is not reachable, and there is no
systemd). Debian's prometheus then runs with the configuration and the ARGS the commands made,
scraping a real watcher; Grafana is not installed here, so its provisioning files are checked
as a package install would read them.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard
from tests.conftest import ROOT, Containers, Prometheus, WatcherProcess, labels, require_binary, run_prometheus, unique
from tests.polling import poll

pytestmark = [pytest.mark.prometheus, pytest.mark.docker]

GETTING_STARTED = ROOT / "docs" / "getting-started.md"
DEPLOY = ROOT / "deploy"
# Debian's prometheus package ships this file; its systemd unit passes $ARGS from it to prometheus.
DEBIAN_DEFAULTS = Path("/etc/default/prometheus")
PROMETHEUS_SETUP = (
    "install -d /etc/prometheus/rules",
    "cp deploy/prometheus/rules/deployments.yml deploy/prometheus/rules/fleet.yml deploy/prometheus/rules/dora.yml"
    " /etc/prometheus/rules/",
    "sed -e 's/deployment-watcher:9102/localhost:9102/' -e 's/alertmanager:9093/localhost:9093/'"
    " deploy/prometheus/prometheus.yml >/etc/prometheus/prometheus.yml",
    """sed -i 's/^ARGS=.*/ARGS="--storage.tsdb.retention.time=100d"/' /etc/default/prometheus""",
    "promtool check config /etc/prometheus/prometheus.yml",
)
ALERTMANAGER_SETUP = (
    "cp deploy/alertmanager/alertmanager.yml /etc/prometheus/alertmanager.yml"
    " && cp -r deploy/alertmanager/templates /etc/prometheus/",
    "amtool check-config /etc/prometheus/alertmanager.yml",
)
GRAFANA_SETUP = (
    "install -d /etc/grafana/provisioning/datasources /etc/grafana/provisioning/dashboards /var/lib/grafana/dashboards",
    "sed 's|http://prometheus:9090|http://localhost:9090|' deploy/grafana/provisioning/datasources/prometheus.yml"
    " >/etc/grafana/provisioning/datasources/deployment-watcher.yml",
    "cp deploy/grafana/provisioning/dashboards/deployments.yml"
    " /etc/grafana/provisioning/dashboards/deployment-watcher.yml",
    "cp deploy/grafana/dashboards/deployments.json deploy/grafana/dashboards/dora.json /var/lib/grafana/dashboards/",
    r"printf 'GF_AUTH_ANONYMOUS_ENABLED=true\nGF_AUTH_ANONYMOUS_ORG_ROLE=Viewer\n' >>/etc/default/grafana-server",
)
# The host label deploy/prometheus/prometheus.yml gives its one target.
SHIPPED_HOST = "docker-host"
SCRAPE_TIMEOUT = 120  # seconds: the shipped scrape and evaluation intervals are 15 s, the DORA rules' 1 to 15 min
# Rule groups evaluated at least this often (in seconds) must have run within SCRAPE_TIMEOUT.
EVALUATED_WITHIN = 60


def run_documented(command: str, root: Path) -> str:
    """Run a documented command from the repository root, its /etc and /var/lib paths under ``root``."""
    moved = re.sub(r"(?<=[\s>])/(etc|var/lib)/", f"{root}/\\1/", command)
    result = subprocess.run(["sh", "-c", moved], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{moved} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def debian_prometheus_port() -> int:
    """The port Debian's prometheus listens on when its ARGS do not say (its --web.listen-address default)."""
    result = subprocess.run([require_binary("prometheus"), "--help"], capture_output=True, text=True, timeout=30)
    match = re.search(r'--web\.listen-address="[^"]*:(\d+)"', result.stdout + result.stderr)
    assert match, "no --web.listen-address default in prometheus --help"
    return int(match.group(1))


@pytest.fixture(scope="module")
def packaged(
    tmp_path_factory: pytest.TempPathFactory, watcher: WatcherProcess, busybox_image: str
) -> Iterator[tuple[Prometheus, Path, str]]:
    """Debian's prometheus as the documented commands set it up, scraping the watcher, which tracks one
    labelled container; the temporary root and the deployment's name."""
    root = tmp_path_factory.mktemp("root")
    if not DEBIAN_DEFAULTS.is_file():
        pytest.fail(f"{DEBIAN_DEFAULTS} is missing: Debian's prometheus package installs it")
    (root / "etc/default").mkdir(parents=True)
    shutil.copy(DEBIAN_DEFAULTS, root / "etc/default/prometheus")
    for command in PROMETHEUS_SETUP:
        run_documented(command, root)
    config = root / "etc/prometheus/prometheus.yml"
    made = load_yaml(config)
    [alertmanagers] = made["alerting"]["alertmanagers"]
    assert [static["targets"] for static in alertmanagers["static_configs"]] == [["localhost:9093"]]
    [job] = made["scrape_configs"]
    assert [static["targets"] for static in job["static_configs"]] == [["localhost:9102"]]
    # The documented target is the watcher's default port; this test's watcher listens on a free one.
    config.write_text(config.read_text().replace("localhost:9102", f"localhost:{watcher.port}"))
    args = subprocess.run(["sh", "-c", '. "$1" && printf %s "$ARGS"', "sh", str(root / "etc/default/prometheus")],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip

    deployment = unique("packaged")
    containers = Containers(busybox_image)
    prometheus: Prometheus | None = None
    try:
        containers.run(labels=labels(deployment, "1.0.0", environment="production"))
        watcher.wait_for("the deployment exported", lambda: watcher.value("deployment_status", deployment=deployment)
                         is not None)  # fmt: skip
        prometheus = run_prometheus(root, config, *shlex.split(args))
        yield prometheus, root, deployment
    finally:
        if prometheus is not None:
            prometheus.stop()
        containers.cleanup()


def test_the_commands_are_the_documented_ones() -> None:
    """Every command these tests run is in docs/getting-started.md as written."""
    text = GETTING_STARTED.read_text()
    for command in (*PROMETHEUS_SETUP, *ALERTMANAGER_SETUP, *GRAFANA_SETUP):
        assert command in text, command


def test_packaged_prometheus_scrapes_the_watcher(packaged: tuple[Prometheus, Path, str]) -> None:
    """The one target is the watcher, up, with the job and host label the rules and dashboards expect; the
    retention the docs set in ARGS is the one in force."""
    prometheus, _, _ = packaged

    def targets() -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = prometheus.api("targets")["activeTargets"]
        return active

    [target] = poll("the watcher's target up", targets, timeout=SCRAPE_TIMEOUT, interval=1,
                    until=lambda active: [t["health"] for t in active] == ["up"])  # fmt: skip
    assert target["labels"]["job"] == "deployment-watcher"
    assert target["labels"]["host"] == SHIPPED_HOST
    assert prometheus.api("status/flags")["storage.tsdb.retention.time"] == "100d"


def test_every_rule_loads_and_evaluates(packaged: tuple[Prometheus, Path, str]) -> None:
    """The rule groups come from the three copied files; no rule fails, and every group evaluated at least
    each minute has evaluated every rule (the DORA groups of 5 and 15 minutes start later)."""
    prometheus, root, _ = packaged
    groups = prometheus.api("rules")["groups"]
    rules_dir = root / "etc/prometheus/rules"
    assert {group["file"] for group in groups} == {str(rules_dir / name) for name in ("deployments.yml", "fleet.yml",
                                                                                        "dora.yml")}  # fmt: skip

    def unhealthy() -> list[tuple[str, str, str]]:
        return [
            (rule["name"], rule["health"], rule.get("lastError", ""))
            for group in prometheus.api("rules")["groups"]
            for rule in group["rules"]
            if rule["health"] == "err" or (rule["health"] != "ok" and group["interval"] <= EVALUATED_WITHIN)
        ]

    poll("every rule evaluated without error", unhealthy, timeout=SCRAPE_TIMEOUT, interval=1,
         until=lambda bad: not bad)  # fmt: skip


def wait_until_listed(prometheus: Prometheus, query: str, want: str) -> None:
    """Wait until a template variable's label_values query lists ``want``."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
    assert match, query
    selector, label = dashboard.substitute(match.group(1)), match.group(2)

    def values() -> set[str | None]:
        return {series["metric"].get(label) for series in prometheus.query(selector)}

    poll(f"{query} to list {want}", values, timeout=SCRAPE_TIMEOUT, interval=1, until=lambda found: want in found)


@pytest.mark.parametrize("path", [dashboard.PATH, dashboard.DORA_PATH], ids=lambda p: p.name)
def test_dashboards_answer(packaged: tuple[Prometheus, Path, str], path: Path) -> None:
    """Each dashboard's variables find the deployment (and the host), and every panel's query answers."""
    prometheus, _, deployment = packaged
    board = dashboard.load(path)
    expected = {"deployment": deployment, "environment": "production", "host": SHIPPED_HOST}
    for variable, query in dashboard.variable_queries(board).items():
        wait_until_listed(prometheus, query, expected[variable])
    for _, expr in dashboard.expressions(board):
        prometheus.query(dashboard.substitute(expr, deployment=deployment))  # fails unless Prometheus answers


def test_alertmanager_config_checks_where_debian_reads_it(tmp_path: Path) -> None:
    """deploy/alertmanager copied as documented: amtool accepts it at Debian's path, templates included."""
    require_binary("amtool")
    (tmp_path / "etc/prometheus").mkdir(parents=True)  # made by Debian's prometheus packages
    for command in ALERTMANAGER_SETUP:
        run_documented(command, tmp_path)
    assert list((tmp_path / "etc/prometheus/templates").glob("*.tmpl"))


def test_grafana_provisioning_resolves_for_a_package_install(tmp_path: Path) -> None:
    """After the documented copies: the data source points at Debian's Prometheus on its default port (only
    the URL differs from the compose stack's), the dashboard provider's folder holds both dashboards, whose
    data source variable picks that data source's type, and the anonymous access is the compose stack's."""
    (tmp_path / "etc/default").mkdir(parents=True)  # the Grafana package's /etc/default/grafana-server lives here
    for command in GRAFANA_SETUP:
        run_documented(command, tmp_path)
    provisioning = tmp_path / "etc/grafana/provisioning"

    [source] = load_yaml(provisioning / "datasources/deployment-watcher.yml")["datasources"]
    [shipped] = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["url"] == f"http://localhost:{debian_prometheus_port()}"
    assert {**source, "url": shipped["url"]} == shipped

    [provider] = load_yaml(provisioning / "dashboards/deployment-watcher.yml")["providers"]
    folder = tmp_path / provider["options"]["path"].lstrip("/")
    for path in (dashboard.PATH, dashboard.DORA_PATH):
        copied = folder / path.name
        assert copied.read_bytes() == path.read_bytes(), f"{copied} is not the shipped dashboard"
        [variable] = [v for v in dashboard.load(copied)["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == source["type"]

    environment = dict(
        line.split("=", 1) for line in (tmp_path / "etc/default/grafana-server").read_text().splitlines()
    )
    assert environment == load_yaml(DEPLOY / "docker-compose.yml")["services"]["grafana"]["environment"]
