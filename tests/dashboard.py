"""The Grafana dashboards in deploy/grafana/dashboards, loaded and taken apart for tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PATH = Path(__file__).parents[1] / "deploy" / "grafana" / "dashboards" / "deployments.json"
DORA_PATH = PATH.with_name("dora.json")
# Grafana's interval variables, given values that fit a scrape interval of 15 s or less.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m"}
# The titles of the DORA dashboard's five figures.
DORA_FIGURES = (
    "Deployment frequency", "Lead time for changes", "Change failure rate", "Failed deployment recovery time",
    "Rework rate",
)  # fmt: skip


def load(path: Path = PATH) -> dict[str, Any]:
    """Return the dashboard JSON (the deployments one unless ``path`` says) as a dict."""
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Yield every panel that is not a row, including those nested in collapsed rows."""
    for panel in (dashboard if dashboard is not None else load()).get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """Return (panel title, expr) for every target of every panel."""
    return [
        (str(panel.get("title", "")), str(target.get("expr", "")))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_queries(dashboard: dict[str, Any] | None = None) -> dict[str, str]:
    """Return the PromQL query of every query-type template variable by name (object queries unwrapped)."""
    result: dict[str, str] = {}
    for variable in (dashboard if dashboard is not None else load())["templating"]["list"]:
        if variable.get("type") != "query":
            continue
        query = variable.get("query", "")
        result[variable["name"]] = str(query.get("query", "") if isinstance(query, dict) else query)
    return result


def substitute(expr: str, *, deployment: str = ".*", environment: str = ".*", host: str = ".*") -> str:
    """The expression as Grafana sends it with these values of the template variables (regexes)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr.replace("$deployment", deployment).replace("$environment", environment).replace("$host", host)
