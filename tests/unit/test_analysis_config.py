"""Rollout analysis asked for and configured: the config file's section and checks (every problem at
once), the labels (unknown checks, a bad mode, a rollback a container cannot have) and the CI/CD API's
``analysis`` field."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.builders import ANALYSIS, problems_on
from tests.unit.builders import parse_labels as parse
from watcher import cli, config
from watcher.config import ConfigError, Settings
from watcher.domain import labels
from watcher.domain.analysis import Check, Mode, Request
from watcher.selfmetrics import SelfMetrics
from watcher.sources.api.reports import Invalid, parse_report
from watcher.sources.labelproblems import LabelProblems

CHECKS = """
analysis:
  prometheus_url: http://prometheus:9090
  window_seconds: 120
  checks:
    - name: error_rate
      query: 'sum(rate(errors{job="{{deployment}}"}[1m]))'
      max: 0.02
      max_increase: 0.5
    - name: p99
      query: 'p99{version="{{version}}"}'
      min: 0
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "watcher.yaml"
    path.write_text(text)
    return str(path)


def test_the_section_and_its_checks_load(tmp_path: Path) -> None:
    settings = config.load(file=write(tmp_path, CHECKS), environ={"WATCHER_ANALYSIS_INTERVAL_SECONDS": "15"})
    analysis = settings.analysis
    assert analysis.prometheus_url == "http://prometheus:9090" and analysis.window_seconds == 120
    assert analysis.interval_seconds == 15
    assert analysis.checks == (
        Check(name="error_rate", query='sum(rate(errors{job="{{deployment}}"}[1m]))', max=0.02, max_increase=0.5),
        Check(name="p99", query='p99{version="{{version}}"}', min=0.0),
    )
    assert analysis.host == socket.gethostname()  # {{host}}: this machine's when not set


def test_flags_set_the_scalars_and_analysis_is_off_by_default() -> None:
    assert not Settings().analysis.enabled
    settings = config.load(environ={}, flags={"analysis.prometheus_url": "https://p:9090", "analysis.host": "n1"})
    assert settings.analysis.enabled and settings.analysis.host == "n1"
    assert "analysis.checks" not in {o.path for o in config.options()}  # the config file only


def test_every_problem_of_the_checks_at_once(tmp_path: Path) -> None:
    text = """
analysis:
  prometheus_url: prometheus:9090
  checks:
    - name: a
      query: up
      max: 1
    - name: a
      query: up
      max: 1
    - name: b
      max: 1
    - name: c
      query: up
    - name: d
      query: up{job={{deployment}}} + x{y="{{nope}}"}
      max: 1
    - name: e
      query: up
      max: "high"
      colour: red
    - just a string
"""
    with pytest.raises(ConfigError) as caught:
        config.load(file=write(tmp_path, text), environ={})
    problems = caught.value.problems
    expected = [
        "'a' is used by another check",
        "'b'.query must be a non-empty PromQL query",
        "'c' needs at least one of min, max and max_increase",
        "placeholder {{deployment}} must stand inside a quoted string",
        "unknown placeholder {{nope}}",
        "'e'.max must be a number",
        "unknown field 'colour'",
        "checks[6] must be a mapping",
        "analysis.prometheus_url must be an http:// or https:// URL",
    ]
    for part in expected:
        assert any(part in problem for problem in problems), (part, problems)


def test_checks_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"analysis\.checks must be a list"):
        config.load(file=write(tmp_path, "analysis:\n  checks: {a: 1}\n"), environ={})


def test_print_config_shows_the_checks(tmp_path: Path) -> None:
    assert "name: error_rate" in config.as_yaml(config.load(file=write(tmp_path, CHECKS), environ={}))


# -- labels


def test_the_labels_ask_for_checks() -> None:
    parsed = parse(
        {labels.NAME: "api", labels.ANALYSIS: " error_rate, p99 ,,error_rate", labels.ANALYSIS_MODE: "Observe"},
        analysis=ANALYSIS,
    )
    assert parsed.identity is not None and not parsed.problems
    assert parsed.identity.analysis == Request(checks=("error_rate", "p99"), mode=Mode.OBSERVE)


def test_unknown_checks_are_dropped_with_a_problem() -> None:
    parsed = parse({labels.NAME: "api", labels.ANALYSIS: "error_rate,latency"}, analysis=ANALYSIS)
    assert parsed.identity is not None and parsed.identity.analysis == Request(checks=("error_rate",))
    assert problems_on(parsed, labels.ANALYSIS) == [
        "names the unknown check 'latency' (analysis.checks: error_rate, p99); dropped"
    ]
    only_unknown = parse({labels.NAME: "api", labels.ANALYSIS: "latency"}, analysis=ANALYSIS)
    assert only_unknown.identity is not None and only_unknown.identity.analysis is None


def test_a_bad_mode_is_a_problem_and_gate_is_used() -> None:
    parsed = parse({labels.NAME: "api", labels.ANALYSIS: "p99", labels.ANALYSIS_MODE: "strict"}, analysis=ANALYSIS)
    assert parsed.identity is not None and parsed.identity.analysis == Request(checks=("p99",))
    assert problems_on(parsed, labels.ANALYSIS_MODE) == ["'strict' is not gate or observe; using gate"]


def test_a_rollback_on_a_container_is_refused_the_analysis_kept() -> None:
    asked = {labels.NAME: "api", labels.ANALYSIS: "p99", labels.ANALYSIS_ON_FAILURE: "rollback"}
    parsed = parse(asked, analysis=ANALYSIS)
    assert parsed.identity is not None and parsed.identity.analysis == Request(checks=("p99",))
    assert problems_on(parsed, labels.ANALYSIS_ON_FAILURE) == [f"rollback refused: {labels.NOT_A_SERVICE}"]
    assert "only a Swarm service can be rolled back by the watcher" in labels.NOT_A_SERVICE
    service = parse(asked, analysis=ANALYSIS, orchestrated=True)
    assert service.identity is not None and not service.problems
    assert service.identity.analysis == Request(checks=("p99",), rollback=True)


def test_a_bad_on_failure_is_a_problem() -> None:
    parsed = parse({labels.NAME: "api", labels.ANALYSIS: "p99", labels.ANALYSIS_ON_FAILURE: "panic"}, analysis=ANALYSIS)
    assert problems_on(parsed, labels.ANALYSIS_ON_FAILURE) == ["'panic' is not fail or rollback; ignored"]


# -- the CI/CD API


def report(**extra: object) -> dict[str, object]:
    return {"deployment": "api", "version": "1", "status": "in_progress", **extra}


ON = Settings(analysis=ANALYSIS)


@pytest.mark.parametrize("asked", [["error_rate", "p99"], "error_rate, p99"])
def test_a_report_asks_for_checks(asked: object) -> None:
    parsed = parse_report(report(analysis=asked, analysis_mode="observe"), at=1_700_000_000, settings=ON)
    assert parsed.analysis == Request(checks=("error_rate", "p99"), mode=Mode.OBSERVE)
    assert parse_report(report(), at=1_700_000_000, settings=ON).analysis is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"analysis": "latency"}, "analysis"),
        ({"analysis": [1]}, "analysis"),
        ({"analysis": {"a": 1}}, "analysis"),
        ({"analysis": "p99", "analysis_mode": "strict"}, "analysis_mode"),
    ],
)
def test_a_bad_analysis_field_is_refused(extra: dict[str, object], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_report(report(**extra), at=1_700_000_000, settings=ON)
    assert caught.value.field == field


def test_check_config_reports_every_problem_of_the_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("WATCHER_")]:
        monkeypatch.delenv(name)
    text = CHECKS.replace("  window_seconds: 120\n", "  ca_file: /nonexistent/ca.pem\n")
    path = write(tmp_path, text + "    - name: p99\n      query: up\n      max: 1\n")
    assert cli.main(["--check-config", "--config.file", path]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "'p99' is used by another check" in err and "analysis.ca_file: cannot read /nonexistent/ca.pem" in err


def test_requests_while_analysis_is_off_are_said_once(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.labels")
    problems = LabelProblems("container", log, SelfMetrics(CollectorRegistry()), analysis_off=True)
    asked = parse({labels.NAME: "api", labels.ANALYSIS: "error_rate"})
    with caplog.at_level(logging.INFO, logger="test.labels"):
        problems.report("c1", "api-1", asked)
        problems.report("c2", "api-2", asked)
    assert [r.getMessage() for r in caplog.records] == [
        "container api-1 asks for rollout analysis (deployment.analysis), which is off "
        "(analysis.prometheus_url is empty): ignored"
    ]
