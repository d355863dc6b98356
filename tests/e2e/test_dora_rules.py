"""The DORA recording rules (deploy/prometheus/rules/dora.yml) under ``promtool test rules``, over
the 30-day history of tests/dora_history.py, against the figures computed by hand from it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dora_history as history
from tests.conftest import promtool

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "dora.yml"
ROUNDING = 1e-6
STEP = 3600  # the synthetic scrapes: hourly, so every window starts and ends on a sample (no extrapolation)
FIGURES = {
    "deployments_per_day": "deployments_per_day",
    "lead_time_p50_seconds": "lead_time_p50",
    "change_failure_rate": "change_failure_rate",
    "recovery_p50_seconds": "recovery_p50",
    "rework_rate": "rework_rate",
}
LEVELS = {
    "deployment_frequency_level": "deployment_frequency",
    "lead_time_level": "lead_time",
    "change_failure_rate_level": "change_failure_rate",
    "recovery_level": "recovery",
}


def recorded_names() -> set[str]:
    """Every series name dora.yml records."""
    document = yaml.safe_load(RULES.read_text())
    return {rule["record"] for group in document["groups"] for rule in group["rules"]}


def input_series(events: list[history.Event], *, per_environment: bool = False) -> list[dict[str, str]]:
    """The history as promtool input series: one value per hour from 0 to 30 days, run-length coded."""
    columns: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
    for t in range(0, history.DAYS * history.DAY + 1, STEP):
        for name, labels, value in history.scraped_at(t, events, per_environment=per_environment):
            columns.setdefault((name, tuple(sorted(labels.items()))), []).append(value)
    result = []
    for (name, pairs), values in columns.items():
        runs: list[str] = []
        start = 0
        for i in range(1, len(values) + 1):
            if i == len(values) or values[i] != values[start]:
                runs.append(f"{values[start]!r}x{i - start - 1}" if i - start > 1 else repr(values[start]))
                start = i
        selector = ",".join(f'{k}="{v}"' for k, v in pairs)
        result.append({"series": f"{name}{{{selector}}}", "values": " ".join(runs)})
    return result


def expected_samples(
    record: str, events: list[history.Event], *, per_environment: bool = False
) -> list[dict[str, Any]]:
    """What ``record`` holds at the end of the history, by hand: per deployment, and overall. Per environment
    (``exposition.dora_histograms: environment``), the lead-time and recovery figures have no deployment label:
    each environment of the history has one deployment, so their values are the same."""
    _, what, window = record.split(":")
    days = history.WINDOWS[window]
    samples = []
    for scope, keys in [("deployment", (key,)) for key in history.KEYS] + [("overall", history.KEYS)]:
        figures = history.figures(events, days=days, keys=keys)
        value = getattr(figures, FIGURES[what]) if what in FIGURES else figures.levels()[LEVELS[what]]
        if value is None:
            continue  # no series: nothing to measure in the window
        labels = {"scope": scope}
        if scope == "deployment":
            labels |= {"environment": keys[0][1]}
            if not (per_environment and what.startswith(("lead_time", "recovery"))):
                labels["deployment"] = keys[0][0]
        samples.append({"labels": "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}",
                        "value": rounded(float(value))})  # fmt: skip
    return samples


def rounded(value: float) -> float:
    """``value`` as PromQL's round(value, ROUNDING) gives it: the rules and the hand may differ in the last bit."""
    inverse = 1.0 / ROUNDING
    return math.floor(value * inverse + 0.5) / inverse


def test_the_history_is_what_its_docstring_says() -> None:
    """A few figures worked out on paper from the history's description."""
    events = history.events()
    api_30 = history.figures(events, days=30, keys=(history.API,))
    # 30 daily successes + 5 recoveries (days 3, 10, 17, 24 … and the hotfix) over 30 days.
    assert api_30.deployments_per_day == (30 + 4 + 1) / 30
    assert api_30.change_failure_rate == (4 + 1) / (35 + 4)  # 4 failures and the hotfixed success
    assert api_30.rework_rate == 1 / 39
    web_7 = history.figures(events, days=7, keys=(history.WEB,))
    assert web_7.deployments_per_day == 2 / 7 and web_7.recovery_p50 == 45000.0  # 21 h: halfway in 1 h … 1 d
    # Two lead times, 4 days (day 24) and 4 days 8 h (day 28): the median, rank 1, halfway in the 1 d … 1 week bucket.
    assert web_7.lead_time_p50 == 345600.0


def test_rules_are_valid_and_loaded() -> None:
    """promtool check rules accepts dora.yml, and prometheus.yml loads it."""
    promtool("check", "rules", str(RULES.relative_to(ROOT)))
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert "rules/dora.yml" in config["rule_files"]


def test_the_stack_keeps_90_days() -> None:
    """The compose stack's Prometheus keeps more than the 90 days the dashboard's trends show (the default is 15)."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    flags = [f for f in compose["services"]["prometheus"]["command"] if f.startswith("--storage.tsdb.retention.time=")]
    assert flags == ["--storage.tsdb.retention.time=100d"]


def test_every_figure_has_every_window_and_level() -> None:
    """Five figures and four levels, each over 1d, 7d and 30d."""
    assert recorded_names() == {f"dora:{what}:{w}" for what in (*FIGURES, *LEVELS) for w in history.WINDOWS}


@pytest.mark.parametrize("mode", history.MODES)
def test_recording_rules_over_30_days(tmp_path: Path, mode: str) -> None:
    """promtool evaluates every dora:* rule at the end of the history: each series is the value computed by hand,
    with the lead-time and recovery histograms per environment and per deployment (exposition.dora_histograms)."""
    per_environment = history.MODES[mode]
    events = history.events()
    rules = yaml.safe_load(RULES.read_text())
    end = f"{history.DAYS * 24}h"
    for group in rules["groups"]:
        group["interval"] = end  # evaluated at the start and the end only: 30 days of 30-day windows take long
    (tmp_path / "dora.yml").write_text(yaml.safe_dump(rules))
    tests = [
        {
            "expr": f"round({name}, {ROUNDING})",
            "eval_time": end,
            "exp_samples": expected_samples(name, events, per_environment=per_environment),
        }
        for name in sorted(recorded_names())
    ]
    assert len(tests) == 27
    document = {
        "rule_files": ["dora.yml"],
        "evaluation_interval": end,
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": input_series(events, per_environment=per_environment),
                "promql_expr_test": tests,
            }
        ],
    }
    (tmp_path / "dora_test.yml").write_text(yaml.safe_dump(document, width=math.inf))
    promtool("test", "rules", str(tmp_path / "dora_test.yml"))
