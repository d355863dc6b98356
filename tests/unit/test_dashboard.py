"""The Grafana dashboard queries the families docs/reference/metrics.md documents and the fleet rules of
deploy/prometheus/rules/fleet.yml, filtered by its variables."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import pytest
import yaml

from tests import dashboard

DASHBOARD = dashboard.load()
PANELS = list(dashboard.panels(DASHBOARD))
EXPRESSIONS = dashboard.expressions(DASHBOARD)
ANNOTATIONS = [a for a in DASHBOARD["annotations"]["list"] if a.get("expr")]
FILTERS = ('deployment=~"$deployment"', 'environment=~"$environment"', 'host=~"$host"')
# A per-deployment family: deployment_… but not the watcher's own deployment_watcher_….
DEPLOYMENT_FAMILY = re.compile(r"\bdeployment_(?!watcher_)[a-z_]+")
# A fleet series recorded by rules/fleet.yml: one per deployment/environment over all hosts.
FLEET_SERIES = re.compile(r"\bdeployment:fleet_[a-z_]+(\{[^}]*\})?")
FLEET_RULES = dashboard.PATH.parents[2] / "prometheus" / "rules" / "fleet.yml"


def _variable(name: str) -> dict[str, Any]:
    """Return the template variable called name."""
    found = [v for v in DASHBOARD["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, name
    variable: dict[str, Any] = found[0]
    return variable


def _panel(title: str) -> dict[str, Any]:
    """Return the panel with that title."""
    found = [p for p in PANELS if p["title"] == title]
    assert len(found) == 1, title
    return found[0]


def test_identity() -> None:
    """The dashboard has the uid and title the provisioning and links rely on."""
    assert DASHBOARD["uid"] == "deployments"
    assert DASHBOARD["title"] == "Deployments Dashboard"
    assert DASHBOARD["schemaVersion"] == 38


def test_enough_panels() -> None:
    """At least 13 panels, with unique titles."""
    assert len(PANELS) >= 13
    titles = [p["title"] for p in PANELS]
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: str(p.get("title")))
def test_panel_complete(panel: dict[str, Any]) -> None:
    """Each panel has a title, a description, the datasource variable and a query."""
    assert panel.get("title")
    assert panel.get("description")
    assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}
    targets = panel.get("targets", [])
    assert targets
    for target in targets:
        assert target.get("expr", "").strip()
        assert target.get("refId")
    assert len({t["refId"] for t in targets}) == len(targets)


@pytest.mark.parametrize(("title", "expr"), EXPRESSIONS, ids=[t for t, _ in EXPRESSIONS])
def test_deployment_expressions_filtered(title: str, expr: str) -> None:
    """Every selector of a per-deployment family filters by both variables."""
    selectors = DEPLOYMENT_FAMILY.findall(expr)
    if not selectors:
        return
    for match in re.finditer(r"\bdeployment_(?!watcher_)[a-z_]+(\{[^}]*\})?", expr):
        assert match.group(1), f"{title}: {match.group(0)} has no label filter"
        for label_filter in FILTERS:
            assert label_filter in match.group(1), f"{title}: {match.group(0)} lacks {label_filter}"


def test_annotation_filtered() -> None:
    """The deploy-marker annotation follows the variables and names the deployment."""
    assert ANNOTATIONS
    for annotation in ANNOTATIONS:
        assert "changes(deployment_version{" in annotation["expr"]
        assert all(f in annotation["expr"] for f in FILTERS)
        for label in ("{{deployment}}", "{{environment}}", "{{host}}"):
            assert label in annotation["titleFormat"], label


@pytest.mark.parametrize(("title", "expr"), EXPRESSIONS, ids=[t for t, _ in EXPRESSIONS])
def test_fleet_series_filtered(title: str, expr: str) -> None:
    """Every fleet series the dashboard reads is recorded by fleet.yml and filtered by deployment and environment."""
    recorded = {
        rule["record"] for group in yaml.safe_load(FLEET_RULES.read_text())["groups"] for rule in group["rules"]
        if "record" in rule
    }  # fmt: skip
    for match in FLEET_SERIES.finditer(expr):
        name = match.group(0).split("{")[0]
        assert name in recorded, f"{title}: {name} is not recorded by {FLEET_RULES.name}"
        assert match.group(1), f"{title}: {match.group(0)} has no label filter"
        for label_filter in FILTERS[:2]:
            assert label_filter in match.group(1), f"{title}: {match.group(0)} lacks {label_filter}"


@pytest.mark.parametrize(("title", "expr"), EXPRESSIONS, ids=[t for t, _ in EXPRESSIONS])
def test_watcher_families_filtered_by_host(title: str, expr: str) -> None:
    """The watcher's own families are filtered by the host variable."""
    for match in re.finditer(r"\bdeployment_watcher_[a-z_]+(\{[^}]*\})?", expr):
        assert match.group(1) and 'host=~"$host"' in match.group(1), f"{title}: {match.group(0)}"


@pytest.mark.parametrize(
    "wrong",
    [
        "deployment_duration_seconds{",
        "deployment_cpu_usage_seconds{",
        "deployment_rollback_count{",
    ],
)
def test_no_wrong_family_names(wrong: str) -> None:
    """Histograms are queried by _bucket/_sum/_count and counters by their _total name."""
    for title, expr in EXPRESSIONS:
        assert wrong not in expr, title
    for annotation in ANNOTATIONS:
        assert wrong not in annotation["expr"]


def test_count_by_status_counts_each_deployment_once() -> None:
    """Deployments by status counts the fleet's verdicts (one per deployment/environment, not one per
    host), each status with a target of its own that answers 0 when none has it."""
    panel = _panel("Deployments by status")
    legends = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    assert set(legends) == {"failed", "success", "in_progress"}
    values = {"failed": 0, "success": 1, "in_progress": 2}
    for legend, expr in legends.items():
        assert expr == (
            f'count(deployment:fleet_status{{deployment=~"$deployment",environment=~"$environment"}} == {values[legend]})'
            " or vector(0)"
        ), legend


@pytest.mark.parametrize("name", ["deployment", "environment", "host"])
def test_filter_variables(name: str) -> None:
    """The deployment and environment variables are multi-value with All matching everything."""
    variable = _variable(name)
    assert variable["type"] == "query"
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"
    assert variable["refresh"] in (1, 2)


def test_variable_queries() -> None:
    """The variables list label values of deployment_status, environment and host within the chosen ones."""
    queries = dashboard.variable_queries(DASHBOARD)
    assert set(queries) == {"deployment", "environment", "host"}
    assert _variable("datasource")["type"] == "datasource"
    assert _variable("datasource")["query"] == "prometheus"
    assert queries["deployment"] == "label_values(deployment_status, deployment)"
    assert queries["environment"] == 'label_values(deployment_status{deployment=~"$deployment"}, environment)'
    assert queries["host"] == (
        'label_values(deployment_status{deployment=~"$deployment",environment=~"$environment"}, host)'
    )


def test_grid_does_not_overlap() -> None:
    """Panels lie within the 24 columns and no two gridPos rectangles overlap."""
    boxes = []
    for panel in PANELS:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos["x"], pos["y"], pos["x"] + pos["w"], pos["y"] + pos["h"]))
    for (a, ax0, ay0, ax1, ay1), (b, bx0, by0, bx1, by1) in combinations(boxes, 2):
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a} overlaps {b}"


def test_status_mappings() -> None:
    """The status panel shows the fleet's verdict and maps 0, 1 and 2 to Failed, Success and In progress."""
    panel = _panel("Status")
    assert panel["targets"][0]["expr"].startswith("deployment:fleet_status{")
    texts: dict[str, str] = {}
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        if mapping["type"] == "value":
            texts.update({value: option["text"] for value, option in mapping["options"].items()})
    assert texts == {"0": "Failed", "1": "Success", "2": "In progress"}


def test_fleet_table_is_deployment_by_host() -> None:
    """Fleet turns deployment_info into rows per deployment/environment and a column per host, each
    cell the version and status, coloured by the status."""
    panel = _panel("Fleet")
    [target] = panel["targets"]
    assert target["instant"] is True and target["format"] == "table"
    assert '"rollout", " / ", "deployment", "environment"' in target["expr"]
    assert '"cell", " · ", "version", "status"' in target["expr"]
    [matrix] = panel["transformations"]
    assert matrix["id"] == "groupingToMatrix"
    assert matrix["options"]["columnField"] == "host"
    assert matrix["options"]["rowField"] == "rollout"
    assert matrix["options"]["valueField"] == "cell"
    # groupingToMatrix names the first column (the rows' names) <row field>\<column field>.
    [first_column] = panel["fieldConfig"]["overrides"]
    assert first_column["matcher"] == {"id": "byName", "options": "rollout\\host"}
    patterns = {m["options"]["pattern"] for m in panel["fieldConfig"]["defaults"]["mappings"]}
    assert patterns == {".* · failed$", ".* · success$", ".* · in_progress$"}


def test_version_skew_panel() -> None:
    """Version skew shows the hosts, versions, hosts behind and newest version of each deployment."""
    exprs = [t["expr"].split("{")[0] for t in _panel("Version skew")["targets"]]
    assert exprs == [
        "deployment:fleet_hosts",
        "deployment:fleet_versions",
        "deployment:fleet_hosts_behind",
        "deployment:fleet_newest_version",
    ]


def test_health_shows_removed_not_unhealthy() -> None:
    """A host where the deployment is removed is left out of Health; removed everywhere reads Removed, not Unhealthy."""
    panel = _panel("Health")
    assert "unless deployment_removed{" in panel["targets"][0]["expr"]
    texts: dict[str, str] = {}
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        texts.update({value: option["text"] for value, option in mapping["options"].items()})
    assert texts == {"0": "Unhealthy", "1": "Healthy", "2": "Removed"}


def test_analysis_status_mappings() -> None:
    """Analysis status is a state timeline of deployment_analysis_status per deployment and host, mapping
    the outcomes 0, 1, 2 and 3 to Failed, Passed, Running and Inconclusive."""
    panel = _panel("Analysis status")
    assert panel["type"] == "state-timeline"
    [target] = panel["targets"]
    assert target["expr"].startswith("deployment_analysis_status{")
    assert all(label in target["legendFormat"] for label in ("{{deployment}}", "{{environment}}", "{{host}}"))
    texts: dict[str, str] = {}
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        texts.update({value: option["text"] for value, option in mapping["options"].items()})
    assert texts == {"0": "Failed", "1": "Passed", "2": "Running", "3": "Inconclusive"}


def test_analysis_values_show_current_against_baseline() -> None:
    """Each check's current value and its baseline are series of their own (by check and sample), the
    baseline dashed."""
    panel = _panel("Analysis: current vs baseline")
    [target] = panel["targets"]
    assert target["expr"].startswith("deployment_analysis_value{")
    assert target["legendFormat"].endswith("{{check}} {{sample}}")
    [baseline] = panel["fieldConfig"]["overrides"]
    assert baseline["matcher"] == {"id": "byRegexp", "options": ".* baseline$"}
    assert baseline["properties"] == [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]


def test_analysis_measurements_by_check_and_result() -> None:
    """Analysis measurements counts each check's measurements by result, over the selected hosts."""
    [target] = _panel("Analysis measurements")["targets"]
    assert target["expr"].startswith(
        "sum by (deployment, environment, check, result) (deployment_analysis_measurements_total{"
    )
