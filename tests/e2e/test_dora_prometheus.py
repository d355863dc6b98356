"""The DORA rules and dashboard in a real Prometheus holding 30 days of history.

The history of tests/dora_history.py, as the watcher would have exported it and Prometheus
scraped it every STEP seconds, is written as OpenMetrics and backfilled with ``promtool tsdb
create-blocks-from openmetrics``; Prometheus then starts on that data with deploy/prometheus's
rules. Recording rules evaluate only from the moment Prometheus starts, so the ``dora:*`` series
are checked at "now" (their windows reach back over the backfilled raw series); the dashboard's
trends query the raw series with range functions and need no recorded past. Every value is
compared with the figures computed by hand from the history. ``increase()`` extrapolates to the
window's edges, which moves a count by up to a step's share of the window (1 % for one day): the
figures are compared within TOLERANCE, the levels exactly (none of the history's figures lies
near a threshold).
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard
from tests import dora_history as history
from tests.conftest import Prometheus, require_binary, run_prometheus
from tests.polling import poll

pytestmark = pytest.mark.prometheus

DEPLOY = Path(__file__).parents[2] / "deploy" / "prometheus"
STEP = 900  # a scrape every 15 minutes: 2,881 samples per series over 30 days
TOLERANCE = 0.03
COUNTERS = ("deployment_rollouts", "deployment_change_failures", "deployment_rework")
HISTOGRAMS = ("deployment_lead_time_seconds", "deployment_recovery_seconds")
# What each figure is in history.Figures, and in the names of the rules.
ATTRIBUTES = dict(zip(dashboard.DORA_FIGURES, ("deployments_per_day", "lead_time_p50", "change_failure_rate", "recovery_p50",
                                      "rework_rate"), strict=True))  # fmt: skip
RULE_FIGURES = {"deployments_per_day": "deployments_per_day", "lead_time_p50_seconds": "lead_time_p50",
                "change_failure_rate": "change_failure_rate", "recovery_p50_seconds": "recovery_p50",
                "rework_rate": "rework_rate"}  # fmt: skip
RULE_LEVELS = {"deployment_frequency_level": "deployment_frequency", "lead_time_level": "lead_time",
               "change_failure_rate_level": "change_failure_rate", "recovery_level": "recovery"}  # fmt: skip
LEVEL_OF_TITLE = dict(zip(dashboard.DORA_FIGURES[:4], RULE_LEVELS.values(), strict=True))


Key = tuple[str, tuple[tuple[str, str], ...]]  # a series: its name and sorted labels


def openmetrics(events: list[history.Event], *, start: int, times: range, per_environment: bool = False) -> str:
    """The history at offsets ``times`` as OpenMetrics with timestamps, the history's offset 0 at unix ``start``."""
    points: dict[Key, list[tuple[int, float]]] = {}
    for t in times:
        for name, labels, value in history.scraped_at(t, events, per_environment=per_environment):
            points.setdefault((name, tuple(sorted(labels.items()))), []).append((start + t, value))
    lines = []

    def series(key: Key) -> str:
        return key[0] + "{" + ",".join(f'{k}="{v}"' for k, v in key[1]) + "}"

    def without_le(key: Key) -> tuple[tuple[str, str], ...]:
        return tuple(p for p in key[1] if p[0] != "le")

    for family in COUNTERS:
        lines.append(f"# TYPE {family} counter")
        for key, values in points.items():
            if key[0] == f"{family}_total":
                lines += [f"{series(key)} {value!r} {ts}" for ts, value in values]
    for family in HISTOGRAMS:
        lines.append(f"# TYPE {family} histogram")
        mine = {key: values for key, values in points.items() if key[0].startswith(family)}
        for pairs in sorted({without_le(key) for key in mine}):
            buckets = sorted((k for k in mine if k[0].endswith("_bucket") and without_le(k) == pairs),
                             key=lambda k: float(dict(k[1])["le"]))  # fmt: skip
            ordered: list[Key] = [*buckets, (f"{family}_count", pairs), (f"{family}_sum", pairs)]
            for n in range(len(mine[ordered[0]])):  # one point of the histogram at a time
                for key in ordered:
                    ts, value = mine[key][n]
                    lines.append(f"{series(key)} {value!r} {ts}")
    return "\n".join(lines) + "\n# EOF\n"


Served = tuple[Prometheus, list[history.Event], bool]  # the server, the history, lead times per environment


@pytest.fixture(scope="module", params=list(history.MODES))
def prometheus(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Served]:
    """Prometheus with the DORA rules on 30 days of backfilled history that ends now, as exported with
    each setting of exposition.dora_histograms."""
    tmp = tmp_path_factory.mktemp("dora")
    events = history.events()
    per_environment = history.MODES[request.param]
    end = int(time.time()) // STEP * STEP
    start = end - history.DAYS * history.DAY
    backfill(events, start=start, into=tmp / "data", per_environment=per_environment)
    config_dir = tmp / "prometheus"
    config_dir.mkdir()
    rules = yaml.safe_load((DEPLOY / "rules" / "dora.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "5s"  # evaluated at once, not up to 15 minutes after the start
    (config_dir / "dora.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert "rules/dora.yml" in config["rule_files"]
    config["rule_files"] = ["dora.yml"]
    config["scrape_configs"] = []
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    server = run_prometheus(tmp, config_dir / "prometheus.yml", "--storage.tsdb.retention.time=400d")
    try:
        yield server, events, per_environment
    finally:
        server.stop()


def backfill(events: list[history.Event], *, start: int, into: Path, per_environment: bool) -> None:
    """Blocks of the history in ``into``, one file per UTC day: promtool reads its whole input again for
    each 2-hour block it writes, so one 30-day file takes minutes and 31 one-day files seconds."""
    promtool = require_binary("promtool")
    first_day = start // history.DAY
    for day in range(first_day, (start + history.DAYS * history.DAY) // history.DAY + 1):
        begin = max(0, day * history.DAY - start)
        stop = min(history.DAYS * history.DAY + 1, (day + 1) * history.DAY - start)
        times = range(begin + (-begin % STEP), stop, STEP)
        if not times:
            continue
        source = into.with_name(f"history-{day}.om")
        source.write_text(openmetrics(events, start=start, times=times, per_environment=per_environment))
        created = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(into)],
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
        assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]


def recorded() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "rules" / "dora.yml").read_text())
    return sorted({r["record"] for g in rules["groups"] for r in g["rules"]})


def expected(what: str, events: list[history.Event], *, days: int, keys: tuple[tuple[str, str], ...]) -> float | None:
    figures = history.figures(events, days=days, keys=keys)
    if what in RULE_FIGURES:
        value: float | None = getattr(figures, RULE_FIGURES[what])
        return value
    return figures.levels()[RULE_LEVELS[what]]


def check(got: float, want: float, *, exact: bool, where: str) -> None:
    if exact:
        assert got == want, where
    else:
        assert math.isclose(got, want, rel_tol=TOLERANCE), f"{where}: {got} is not {want}"


@pytest.mark.parametrize("name", recorded())
def test_every_dora_series_is_the_hand_computed_figure(prometheus: Served, name: str) -> None:
    """Each dora:* series, per deployment and overall, is the figure of its window computed from the history.
    Keyed by environment: each of the history's has one deployment, which lead time and recovery lack per environment."""
    server, events, per_environment = prometheus
    _, what, window = name.split(":")
    days = history.WINDOWS[window]
    want = {}
    for scope, keys in [("deployment", (key,)) for key in history.KEYS] + [("overall", history.KEYS)]:
        value = expected(what, events, days=days, keys=keys)
        if value is not None:
            want[(scope, keys[0][1] if scope == "deployment" else None)] = value
    series = poll(name, lambda: server.query(name), timeout=60, interval=1, until=lambda found: len(found) == len(want))
    got = {(s["metric"]["scope"], s["metric"].get("environment")): float(s["value"][1]) for s in series}
    by_environment = per_environment and what.startswith(("lead_time", "recovery"))
    assert all(("deployment" in s["metric"]) == (s["metric"]["scope"] == "deployment" and not by_environment)
               for s in series), series  # fmt: skip
    assert got.keys() == want.keys()
    for (scope, environment), value in want.items():
        mine = history.KEYS if scope == "overall" else tuple(k for k in history.KEYS if k[1] == environment)
        where = f"{name}{(scope, environment)}"
        if what in RULE_LEVELS and on_a_threshold(what, history.figures(events, days=days, keys=mine)):
            assert abs(got[(scope, environment)] - value) <= 1, where
        else:
            check(got[(scope, environment)], value, exact=what in RULE_LEVELS, where=where)


# The medians' level thresholds (dora.yml): the buckets' bounds too (docs/metrics.md, the series budget).
THRESHOLDS = {"lead_time_level": ("lead_time_p50", (86400, 604800, 2592000)),
              "recovery_level": ("recovery_p50", (3600, 86400, 604800))}  # fmt: skip


def on_a_threshold(level: str, figures: history.Figures) -> bool:
    """Whether the median of a level lies on one of its thresholds: where a bucket ends, the estimate is the
    bound itself, and ``increase()``'s extrapolation, different for each series, may put it either side."""
    if level not in THRESHOLDS:
        return False
    attribute, bounds = THRESHOLDS[level]
    value = getattr(figures, attribute)
    return value is not None and any(math.isclose(value, b, rel_tol=TOLERANCE) for b in bounds)


def substitute(expr: str, deployment: str) -> str:
    return expr.replace("$deployment", deployment).replace("$environment", ".*")


def panel_expectations(title: str, events: list[history.Event], keys: tuple[tuple[str, str], ...]) -> Any:
    """What a panel shows for the deployments ``keys``, by hand: one value, or one per deployment."""
    for figure in dashboard.DORA_FIGURES:
        if title == f"{figure} (30 d)":
            return getattr(history.figures(events, days=30, keys=keys), ATTRIBUTES[figure])
        if title == f"{figure} level":
            return history.figures(events, days=30, keys=keys).levels()[LEVEL_OF_TITLE[figure]]
        if title == f"{figure}, 7-day window":
            return {key[1]: getattr(history.figures(events, days=7, keys=(key,)), ATTRIBUTES[figure]) for key in keys}
    if title == "Hotfix rollouts (30 d)":
        return sum(e.kind == "rework" and e.key in keys and e.at > (history.DAYS - 30) * history.DAY for e in events)
    raise AssertionError(f"no expectation for the panel {title!r}")


@pytest.mark.parametrize("selected", [".*", "api"])
def test_every_panel_is_the_hand_computed_figure(prometheus: Served, selected: str) -> None:
    """Every query of every DORA panel returns data, and the figures computed by hand from the history,
    with all deployments selected and with one; but lead time and recovery per environment have no
    deployment to select (docs/metrics.md, the series budget): with one selected, those panels are empty."""
    server, events, per_environment = prometheus
    keys = history.KEYS if selected == ".*" else (history.API,)
    poll("the recording rules", lambda: server.query("dora:deployments_per_day:30d"), timeout=60, interval=1)
    for panel in dashboard.panels(dashboard.load(dashboard.DORA_PATH)):
        title = panel["title"]
        for target in panel["targets"]:
            result = server.query(substitute(target["expr"], selected))
            if per_environment and selected != ".*" and ("lead_time" in target["expr"] or "recovery" in target["expr"]):
                assert not result, f"{title}: a deployment selected, lead times per environment: {result}"
                continue
            assert result, f"{title}: no data for {target['expr']}"
            if panel["type"] == "table":
                check_table_column(target["expr"], result, events, keys)
                continue
            want = panel_expectations(title, events, keys)
            if isinstance(want, dict):
                got = {s["metric"]["environment"]: float(s["value"][1]) for s in result}
                assert got.keys() == {k for k, v in want.items() if v is not None}, title
                for deployment, value in got.items():
                    check(value, want[deployment], exact=False, where=f"{title} {deployment}")
            else:
                (sample,) = result
                check(float(sample["value"][1]), want, exact=title.endswith("level"), where=title)


def check_table_column(expr: str, result: list[dict[str, Any]], events: list[history.Event],
                       keys: tuple[tuple[str, str], ...]) -> None:  # fmt: skip
    """A column of the per-deployment table: the dora:*:30d series of each selected deployment."""
    _, what, _ = expr.split("{")[0].split(":")
    got = {s["metric"]["environment"]: float(s["value"][1]) for s in result}
    want = {key[1]: expected(what, events, days=30, keys=(key,)) for key in keys}
    assert got.keys() == {k for k, v in want.items() if v is not None}, expr
    for deployment, value in got.items():
        wanted = want[deployment]
        assert wanted is not None
        check(value, wanted, exact=what in RULE_LEVELS, where=f"{expr} {deployment}")


def test_trends_have_90_days_of_points(prometheus: Served) -> None:
    """Over the dashboard's 90 days, the trends draw from where the history begins to now."""
    server, _, _ = prometheus
    panel = next(p for p in dashboard.panels(dashboard.load(dashboard.DORA_PATH))
                 if p["title"] == "Deployment frequency, 7-day window")  # fmt: skip
    now = time.time()
    data = server.api("query_range", query=substitute(panel["targets"][0]["expr"], ".*"), start=str(now - 90 * 86400),
                      end=str(now), step="86400")  # fmt: skip
    points = {s["metric"]["deployment"]: len(s["values"]) for s in data["result"]}
    assert points.keys() == {"api", "web"} and all(29 <= n <= 31 for n in points.values()), points
