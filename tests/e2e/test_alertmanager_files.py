"""The Alertmanager configuration and message templates in deploy/alertmanager, checked with amtool,
and the compose stack that runs Alertmanager next to Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary

pytestmark = pytest.mark.alertmanager

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
TEMPLATES = DEPLOY / "alertmanager" / "templates"
# A commented-out line of YAML (a list item or an indented key), not a comment in prose.
COMMENTED_YAML = re.compile(r"^(\s*)# ([- ].*)$")
MESSAGE = '{{ template "deployments.title" . }}\n{{ template "deployments.text" . }}'


def amtool(*args: str, cwd: Path = ROOT) -> str:
    """Run amtool; fail on a non-zero exit. Returns its standard output."""
    result = subprocess.run([require_binary("amtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"amtool {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def render(tmp_path: Path, data: dict[str, Any]) -> str:
    """The title and text of the message the templates write for a notification (webhook JSON shape)."""
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    return amtool(
        "template", "render", f"--template.glob={TEMPLATES}/*.tmpl", f"--template.data={data_file}",
        f"--template.text={MESSAGE}",
    )  # fmt: skip


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    """A firing notification of the group deployment=web, environment=prod."""
    group = {"deployment": "web", "environment": "prod"}
    return {
        "receiver": "deployments-webhook", "status": "firing", "groupLabels": group, "commonLabels": group,
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [
            {"status": "firing", "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": str(i), **alert}
            for i, alert in enumerate(alerts)
        ],
    }  # fmt: skip


def test_config_is_valid() -> None:
    """amtool check-config accepts alertmanager.yml and its templates."""
    output = amtool("check-config", str(CONFIG))
    assert "SUCCESS" in output and "1 templates" in output, output


def test_commented_receivers_are_valid(tmp_path: Path) -> None:
    """The commented Slack and e-mail receivers (and the route to Slack) are valid once uncommented."""
    lines = [COMMENTED_YAML.sub(r"\1\2", line) for line in CONFIG.read_text().splitlines()]
    config = tmp_path / "alertmanager.yml"
    config.write_text("\n".join(lines) + "\n")
    (tmp_path / "templates").symlink_to(TEMPLATES)
    document = yaml.safe_load(config.read_text())
    assert {r["name"] for r in document["receivers"]} == {
        "deployments-webhook",
        "deployments-slack",
        "deployments-email",
    }
    amtool("check-config", str(config))


def test_routes_group_by_deployment_and_environment() -> None:
    """Deployment alerts are grouped by deployment and environment; the watcher's own by watcher."""
    route = yaml.safe_load(CONFIG.read_text())["route"]
    assert route["group_by"] == ["deployment", "environment"]
    assert route["receiver"] == "deployments-webhook"
    [own] = route["routes"]
    assert own["matchers"] == ['alertname=~"DeploymentWatcher.*"']


def test_fleet_failure_inhibits_per_host_failures() -> None:
    """A fleet failure inhibits the per-host failures of the same deployment and environment."""
    rules = yaml.safe_load(CONFIG.read_text())["inhibit_rules"]
    assert {
        "source_matchers": ['alertname="DeploymentFleetFailed"'],
        "target_matchers": ['alertname="DeploymentFailed"'],
        "equal": ["deployment", "environment"],
    } in rules


def test_fleet_failure_message(tmp_path: Path) -> None:
    """A fleet failure's message says deployment, environment, version, the failed hosts, the reason and a link."""
    alert = {
        "labels": {"alertname": "DeploymentFleetFailed", "deployment": "web", "environment": "prod",
                   "severity": "critical"},
        "annotations": {"summary": "Deployment web failed in prod", "version": "2.0", "hosts": "h2, h3",
                        "description": "The rollout of web in prod failed on h2 (2.0), h3 (2.0).",
                        "dashboard": "/d/deployments/deployments-dashboard?var-deployment=web&var-environment=prod"},
    }  # fmt: skip
    message = render(tmp_path, notification(alert)).splitlines()
    assert message[0] == "[FIRING:1] web in prod"
    for line in [
        "DeploymentFleetFailed: Deployment web failed in prod",
        "Deployment: web",
        "Environment: prod",
        "Version: 2.0",
        "Host: h2, h3",
        "Reason: The rollout of web in prod failed on h2 (2.0), h3 (2.0).",
        "Dashboard: http://localhost:3000/d/deployments/deployments-dashboard?var-deployment=web&var-environment=prod",
    ]:
        assert line in message, (line, message)


def test_per_host_message_names_the_host(tmp_path: Path) -> None:
    """A per-host alert's message names its host label, or its instance when it has none."""
    labels = {"alertname": "DeploymentUnhealthy", "deployment": "web", "environment": "prod", "severity": "warning"}
    annotations = {"summary": "s", "description": "d", "version": "2.0", "dashboard": "/d/deployments/x"}
    with_host = {"labels": {**labels, "host": "h1", "instance": "10.0.0.1:9102"}, "annotations": annotations}
    without = {"labels": {**labels, "instance": "10.0.0.2:9102"}, "annotations": annotations}
    message = render(tmp_path, notification(with_host, without)).splitlines()
    assert message[0] == "[FIRING:2] web in prod"
    assert [line for line in message if line.startswith("Host: ")] == ["Host: h1", "Host: 10.0.0.2:9102"]


def test_compose_runs_alertmanager_with_this_config() -> None:
    """The compose stack runs Alertmanager with deploy/alertmanager, where prometheus.yml sends alerts."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    service = compose["services"]["alertmanager"]
    assert service["image"].startswith("prom/alertmanager:")
    assert "./alertmanager:/etc/alertmanager:ro" in service["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in service["command"]
    assert "alertmanager-data" in compose["volumes"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [target] = [t for am in prometheus["alerting"]["alertmanagers"] for s in am["static_configs"] for t in s["targets"]]
    assert target == "alertmanager:9093"
    assert "9093:9093" in service["ports"]
