"""The DORA Grafana dashboard: complete panels, filtered by its variables, the five figures with
their levels, 90-day trends and a per-deployment table from the recording rules."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import pytest
import yaml

from tests import dashboard

DASHBOARD = dashboard.load(dashboard.DORA_PATH)
PANELS = list(dashboard.panels(DASHBOARD))
EXPRESSIONS = dashboard.expressions(DASHBOARD)
# DORA figures are per deployment across hosts (a deploy to three hosts counts once): no host filter.
FILTERS = ('deployment=~"$deployment"', 'environment=~"$environment"')
RULES = dashboard.PATH.parents[2] / "prometheus" / "rules" / "dora.yml"
# A per-deployment family or a recorded DORA series: every selector of one filters by both variables.
SELECTOR = re.compile(r"\b(deployment_(?!watcher_)[a-z_]+|dora:[a-z_0-9:]+)(\{[^}]*\})?")


def _panel(title: str) -> dict[str, Any]:
    found = [p for p in PANELS if p["title"] == title]
    assert len(found) == 1, title
    return found[0]


def test_identity_and_time_range() -> None:
    """uid dora, its title, and 90 days shown by default (the trends)."""
    assert (DASHBOARD["uid"], DASHBOARD["title"], DASHBOARD["schemaVersion"]) == ("dora", "DORA metrics", 38)
    assert DASHBOARD["time"] == {"from": "now-90d", "to": "now"}


def test_provisioned_with_the_other() -> None:
    """It lies in the directory the provisioning loads, beside deployments.json, with a uid of its own."""
    provider = yaml.safe_load(
        (dashboard.PATH.parents[1] / "provisioning" / "dashboards" / "deployments.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert dashboard.DORA_PATH.parent == dashboard.PATH.parent
    assert dashboard.load()["uid"] != DASHBOARD["uid"]


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: str(p.get("title")))
def test_panel_complete(panel: dict[str, Any]) -> None:
    """Each panel has a title, a description, the datasource variable and queries with unique refIds."""
    assert panel.get("title") and panel.get("description")
    assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}
    targets = panel.get("targets", [])
    assert targets and all(t.get("expr", "").strip() and t.get("refId") for t in targets)
    assert len({t["refId"] for t in targets}) == len(targets)


@pytest.mark.parametrize(("title", "expr"), EXPRESSIONS, ids=[t for t, _ in EXPRESSIONS])
def test_expressions_filtered(title: str, expr: str) -> None:
    """Every selector of a per-deployment family or recorded series filters by both variables."""
    matches = list(SELECTOR.finditer(expr))
    assert matches, title
    for match in matches:
        assert match.group(2), f"{title}: {match.group(0)} has no label filter"
        for label_filter in FILTERS:
            assert label_filter in match.group(2), f"{title}: {match.group(0)} lacks {label_filter}"


def test_no_bare_family_names() -> None:
    """Histograms are queried by _bucket and counters by their _total name."""
    for title, expr in EXPRESSIONS:
        for family in re.findall(r"(?<![:\w])deployment_[a-z_]+", expr):
            assert family.endswith(("_total", "_bucket")), f"{title}: {family}"


@pytest.mark.parametrize("figure", dashboard.DORA_FIGURES)
def test_each_figure_with_its_level_and_trend(figure: str) -> None:
    """A 30-day stat, a level (or, for rework, the hotfix count: the report gives it no levels) and a 7-day trend."""
    assert _panel(f"{figure} (30 d)")["type"] == "stat"
    assert _panel(f"{figure}, 7-day window")["type"] == "timeseries"
    if figure != "Rework rate":
        level = _panel(f"{figure} level")
        texts = {v: o["text"] for m in level["fieldConfig"]["defaults"]["mappings"] for v, o in m["options"].items()}
        assert texts == {"3": "Elite", "2": "High", "1": "Medium", "0": "Low"}


def test_levels_use_the_rule_thresholds() -> None:
    """The level panels compare with the thresholds the recording rules use."""
    rules = yaml.safe_load(RULES.read_text())
    levels = [r["expr"] for g in rules["groups"] for r in g["rules"] if r["record"].endswith("_level:30d")]
    for title, expr in EXPRESSIONS:
        if title.endswith(" level"):
            thresholds = re.findall(r"bool \(?([0-9./ ]+)\)?", expr)
            assert any(re.findall(r"bool \(?([0-9./ ]+)\)?", rule) == thresholds for rule in levels), title


def test_table_reads_every_30_day_rule() -> None:
    """The per-deployment table shows each dora:*:30d series of scope deployment."""
    rules = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if r["record"].endswith(":30d")}
    table = _panel("Per deployment (30 d)")
    shown = {t["expr"].split("{")[0] for t in table["targets"]}
    assert shown == recorded
    assert all('scope="deployment"' in t["expr"] for t in table["targets"])


def test_variables() -> None:
    """deployment and environment list the label values of deployment_rollouts_total; multi, All matches all."""
    queries = dashboard.variable_queries(DASHBOARD)
    assert queries == {
        "deployment": "label_values(deployment_rollouts_total, deployment)",
        "environment": 'label_values(deployment_rollouts_total{deployment=~"$deployment"}, environment)',
    }
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["multi"] is True and variable["includeAll"] is True and variable["allValue"] == ".*"


def test_grid_does_not_overlap() -> None:
    """Panels lie within the 24 columns and no two overlap."""
    boxes = []
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos["x"], pos["y"], pos["x"] + pos["w"], pos["y"] + pos["h"]))
    for (a, ax0, ay0, ax1, ay1), (b, bx0, by0, bx1, by1) in combinations(boxes, 2):
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a} overlaps {b}"
