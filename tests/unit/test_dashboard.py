"""The Grafana dashboard queries the families docs/reference/metrics.md documents, filtered by its variables."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import pytest

from tests import dashboard

DASHBOARD = dashboard.load()
PANELS = list(dashboard.panels(DASHBOARD))
EXPRESSIONS = dashboard.expressions(DASHBOARD)
ANNOTATIONS = [a for a in DASHBOARD["annotations"]["list"] if a.get("expr")]
FILTERS = ('deployment=~"$deployment"', 'environment=~"$environment"')
# A per-deployment family: deployment_… but not the watcher's own deployment_watcher_….
DEPLOYMENT_FAMILY = re.compile(r"\bdeployment_(?!watcher_)[a-z_]+")


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
        assert "{{deployment}}" in annotation["titleFormat"] and "{{environment}}" in annotation["titleFormat"]


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


def test_count_by_status_uses_info() -> None:
    """A count by status counts a family that has a status label: deployment_info."""
    counted = [(t, e) for t, e in EXPRESSIONS if re.search(r"count\s+by\s*\(\s*status\s*\)", e)]
    assert counted
    for title, expr in counted:
        assert re.search(r"count\s+by\s*\(\s*status\s*\)\s*\(\s*deployment_info\{", expr), title


@pytest.mark.parametrize("name", ["deployment", "environment"])
def test_filter_variables(name: str) -> None:
    """The deployment and environment variables are multi-value with All matching everything."""
    variable = _variable(name)
    assert variable["type"] == "query"
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"
    assert variable["refresh"] in (1, 2)


def test_variable_queries() -> None:
    """The variables list label values of deployment_status, environment within the chosen deployments."""
    queries = dashboard.variable_queries(DASHBOARD)
    assert set(queries) == {"deployment", "environment"}
    assert _variable("datasource")["type"] == "datasource"
    assert _variable("datasource")["query"] == "prometheus"
    assert queries["deployment"] == "label_values(deployment_status, deployment)"
    assert queries["environment"] == 'label_values(deployment_status{deployment=~"$deployment"}, environment)'


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
    """The status panel maps 0, 1 and 2 to Failed, Success and In progress."""
    panel = _panel("Status")
    assert panel["targets"][0]["expr"].startswith("deployment_status{")
    texts: dict[str, str] = {}
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        if mapping["type"] == "value":
            texts.update({value: option["text"] for value, option in mapping["options"].items()})
    assert texts == {"0": "Failed", "1": "Success", "2": "In progress"}
