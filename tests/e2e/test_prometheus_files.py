"""The Prometheus configuration and the rules in deploy/prometheus, checked with promtool."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import promtool, require_binary, run_prometheus
from tests.polling import poll

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).parents[2]
CONFIG = Path("deploy/prometheus/prometheus.yml")
RULE_DIR = Path("deploy/prometheus/rules")
# Each rule file and its promtool unit tests, next to it as <name>_test.yml.
RULE_FILES = [RULE_DIR / "deployments.yml", RULE_DIR / "fleet.yml"]
SWARM_RULES = [*RULE_FILES, RULE_DIR / "dora.yml"]  # every rule file deploy/swarm's Prometheus loads


def rule_tests(rules: Path) -> Path:
    """The promtool test file of a rule file."""
    return rules.with_name(f"{rules.stem}_test.yml")


def alert_rules(rules: Path) -> list[dict[str, Any]]:
    """Every alerting rule in a rule file."""
    document = yaml.safe_load((ROOT / rules).read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_config_is_valid() -> None:
    """promtool check config accepts prometheus.yml and the rule files it loads."""
    promtool("check", "config", str(CONFIG))


def test_config_loads_every_rule_file() -> None:
    """prometheus.yml loads each rule file of deploy/prometheus/rules (and no test file)."""
    loaded = yaml.safe_load((ROOT / CONFIG).read_text())["rule_files"]
    for rules in RULE_FILES:
        assert str(rules.relative_to(CONFIG.parent)) in loaded, rules


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_rules_are_valid(rules: Path) -> None:
    """promtool check rules accepts the rule file."""
    promtool("check", "rules", str(rules))


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_rule_unit_tests_pass(rules: Path) -> None:
    """promtool test rules passes the rule file's unit tests."""
    promtool("test", "rules", str(rule_tests(rules)))


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_every_alert_has_annotations_and_severity(rules: Path) -> None:
    """Each alert has summary and description annotations and a severity label."""
    found = alert_rules(rules)
    assert found, f"no alerts in {rules}"
    for rule in found:
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{rule['alert']} has no summary"
        assert annotations.get("description"), f"{rule['alert']} has no description"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, f"{rule['alert']} has no severity"


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_deployment_alerts_say_version_and_link(rules: Path) -> None:
    """Each alert about a deployment has the version and dashboard annotations Alertmanager's messages use."""
    for rule in alert_rules(rules):
        if re.search(r"\bdeployment(_(?!watcher_)|:fleet_)", rule["expr"]):
            annotations = rule["annotations"]
            assert "version" in annotations, rule["alert"]
            assert annotations["dashboard"].startswith("/d/deployments/"), rule["alert"]


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_every_alert_is_unit_tested(rules: Path) -> None:
    """Each alert name appears in an alert_rule_test of the rule file's promtool test file."""
    document = yaml.safe_load((ROOT / rule_tests(rules)).read_text())
    tested = {case["alertname"] for test in document["tests"] for case in test.get("alert_rule_test", [])}
    missing = {rule["alert"] for rule in alert_rules(rules)} - tested
    assert not missing, f"alerts without promtool tests: {sorted(missing)}"


def test_swarm_config_is_valid(tmp_path: Path) -> None:
    """promtool check config accepts deploy/swarm/prometheus.yml laid out as the stack mounts it
    (the rules next to it under rules/)."""
    (tmp_path / "rules").mkdir()
    for rules in SWARM_RULES:
        (tmp_path / "rules" / rules.name).write_text((ROOT / rules).read_text())
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
    mounted = {(ROOT / "deploy/swarm" / config["file"]).resolve() for config in stack["configs"].values()}
    assert {ROOT / rules for rules in SWARM_RULES} <= mounted


def test_swarm_stack_delivers_alerts_through_the_shipped_alertmanager() -> None:
    """The Swarm stack runs Alertmanager with deploy/alertmanager's config and templates, on the
    network Prometheus is on, and the stack's Prometheus sends its alerts there."""
    stack = yaml.safe_load((ROOT / "deploy/swarm/stack.yml").read_text())
    alertmanager = stack["services"]["alertmanager"]
    files = {c["target"]: (ROOT / "deploy/swarm" / stack["configs"][c["source"]]["file"]).resolve()
             for c in alertmanager["configs"]}  # fmt: skip
    assert files == {
        "/etc/alertmanager/alertmanager.yml": ROOT / "deploy/alertmanager/alertmanager.yml",
        "/etc/alertmanager/templates/deployments.tmpl": ROOT / "deploy/alertmanager/templates/deployments.tmpl",
    }
    assert set(alertmanager["networks"]) & set(stack["services"]["prometheus"].get("networks", []))
    config = yaml.safe_load((ROOT / "deploy/swarm/prometheus.yml").read_text())
    [manager] = config["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def test_every_fleet_recording_rule_is_unit_tested() -> None:
    """Each deployment:fleet_ series is checked by a promql_expr_test of fleet_test.yml."""
    rules = RULE_DIR / "fleet.yml"
    document = yaml.safe_load((ROOT / rules).read_text())
    recorded = {rule["record"] for group in document["groups"] for rule in group["rules"] if "record" in rule}
    assert recorded and all(name.startswith("deployment:fleet_") for name in recorded)
    tests = yaml.safe_load((ROOT / rule_tests(rules)).read_text())["tests"]
    tested = {case["expr"] for test in tests for case in test.get("promql_expr_test", [])}
    assert recorded <= tested, f"recording rules without promtool tests: {sorted(recorded - tested)}"


def test_target_without_host_label_is_named_by_its_address(tmp_path: Path) -> None:
    """prometheus.yml's relabelling gives a target without a `host` label its address without the
    port; a target with one keeps it (a real Prometheus, its targets API)."""
    config = yaml.safe_load((ROOT / CONFIG).read_text())
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": ["127.0.0.1:1"]}, {"targets": ["localhost:2"], "labels": {"host": "h2"}}]
    config.pop("rule_files")
    config.pop("alerting")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    prometheus = run_prometheus(tmp_path, config_file)
    try:
        targets = poll("both targets", lambda: prometheus.api("targets")["activeTargets"], timeout=30,
                       until=lambda active: len(active) == 2)  # fmt: skip
        hosts = {t["labels"]["instance"]: t["labels"].get("host") for t in targets}
    finally:
        prometheus.stop()
    assert hosts == {"127.0.0.1:1": "127.0.0.1", "localhost:2": "h2"}


def test_swarm_stack_is_valid_for_docker_stack() -> None:
    """`docker stack config` (the CLI's compose schema and interpolation) accepts deploy/swarm/stack.yml."""
    result = subprocess.run(
        [require_binary("docker"), "stack", "config", "-c", "stack.yml"], cwd=ROOT / "deploy/swarm",
        capture_output=True, text=True, timeout=60, env={**os.environ, "DOCKER_GID": "999"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["services"]["deployment-watcher"]["deploy"]["mode"] == "global"
