"""The Prometheus configuration and alert rules in deploy/prometheus, checked with promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).parents[2]
CONFIG = Path("deploy/prometheus/prometheus.yml")
RULES = Path("deploy/prometheus/rules/deployments.yml")
RULE_TESTS = Path("deploy/prometheus/rules/deployments_test.yml")


def promtool(*args: str) -> None:
    """Run promtool from the repository root; fail on a non-zero exit or any warning."""
    binary = require_binary("promtool")
    result = subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} exited {result.returncode}:\n{output}"
    assert "warning" not in output.lower(), f"promtool {' '.join(args)} warned:\n{output}"


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule in the rules file."""
    document = yaml.safe_load((ROOT / RULES).read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_config_is_valid() -> None:
    """promtool check config accepts prometheus.yml and the rule files it loads."""
    promtool("check", "config", str(CONFIG))


def test_rules_are_valid() -> None:
    """promtool check rules accepts the alert rules."""
    promtool("check", "rules", str(RULES))


def test_rule_unit_tests_pass() -> None:
    """promtool test rules passes the alert unit tests."""
    promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_annotations_and_severity() -> None:
    """Each alert has summary and description annotations and a severity label."""
    rules = alert_rules()
    assert rules, f"no alerts in {RULES}"
    for rule in rules:
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{rule['alert']} has no summary"
        assert annotations.get("description"), f"{rule['alert']} has no description"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, f"{rule['alert']} has no severity"


def test_every_alert_is_unit_tested() -> None:
    """Each alert name appears in an alert_rule_test of the promtool test file."""
    document = yaml.safe_load((ROOT / RULE_TESTS).read_text())
    tested = {case["alertname"] for test in document["tests"] for case in test.get("alert_rule_test", [])}
    missing = {rule["alert"] for rule in alert_rules()} - tested
    assert not missing, f"alerts without promtool tests: {sorted(missing)}"


def test_swarm_config_is_valid(tmp_path: Path) -> None:
    """promtool check config accepts deploy/swarm/prometheus.yml laid out as the stack mounts it
    (the rules next to it under rules/)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "deployments.yml").write_text((ROOT / RULES).read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text((ROOT / "deploy/swarm/prometheus.yml").read_text())
    promtool("check", "config", str(config))


def test_swarm_stack_runs_a_watcher_per_node_where_prometheus_looks() -> None:
    """deploy/swarm/stack.yml: the watcher is a global service publishing, on each node's address,
    the port its scrape label names; Prometheus mounts the config and rules checked above."""
    stack = yaml.safe_load((ROOT / "deploy/swarm/stack.yml").read_text())
    watcher = stack["services"]["deployment-watcher"]
    assert watcher["deploy"]["mode"] == "global"
    port = int(watcher["deploy"]["labels"]["prometheus.scrape.port"])
    assert {"target": port, "published": port, "protocol": "tcp", "mode": "host"} in watcher["ports"]
    assert (ROOT / "deploy/swarm" / stack["configs"]["prometheus-config"]["file"]).resolve() == (
        ROOT / "deploy/swarm/prometheus.yml"
    )
    assert (ROOT / "deploy/swarm" / stack["configs"]["prometheus-rules"]["file"]).resolve() == ROOT / RULES
