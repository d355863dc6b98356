"""Rollout analysis in the state machine: a gate holds its rollout in progress, measurements pass or
fail it, the window's end concludes it; observe mode, supersession, failures of its own, stale
measurements, a restart mid-analysis, and the pure judgement of any sequence of measurements."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.unit.builders import (
    ANALYSED,
    API,
    ERROR_RATE,
    SHOP,
    Run,
    measured,
    service,
    started,
)
from watcher.domain.analysis import Analysis, Measured, Mode, Outcome, Request, Result, failed, outcome_at_end, record
from watcher.domain.events import AnalysisFinished, AnalysisMeasured, RolloutFinished
from watcher.domain.model import Initiator, Status, UpdateState
from watcher.domain.observations import InstanceExited, RollbackAsked
from watcher.domain.rollouts import rollback_wanted
from watcher.persistence.codec import decode, encode
from watcher.runtime import subscribers
from watcher.selfmetrics import SelfMetrics

GATE = Request(checks=("error_rate",))
OBSERVE = Request(checks=("error_rate",), mode=Mode.OBSERVE)


def analysed(request: Request = GATE) -> Run:
    """v1 started at 100 asking for error_rate, its baseline 0.004 taken, its containers' verdict at 110."""
    run = Run(ANALYSED)(started("a", "1.0.0", 100, analysis=request), measured(101, 0.004, baseline=True))
    return run.tick(110)


def analysis_of(run: Run) -> Analysis:
    analysis = run.d().rollout.analysis
    assert analysis is not None
    return analysis


def test_a_rollout_asking_for_checks_gets_them_with_their_queries_filled() -> None:
    run = Run(ANALYSED)(started("a", "1.0.0", 100, analysis=Request(checks=("error_rate", "nope", "p99"))))
    analysis = analysis_of(run)
    assert [m.check.query for m in analysis.checks] == [
        'sum(rate(errors{job="api"}[1m]))', 'p99{version="1.0.0"}'
    ]  # fmt: skip
    assert analysis.outcome is Outcome.RUNNING and analysis.measuring_since is None


def test_no_analysis_while_it_is_off() -> None:
    off = dataclasses.replace(ANALYSED, analysis=dataclasses.replace(ANALYSED.analysis, prometheus_url=""))
    run = Run(off)(started("a", "1.0.0", 100, analysis=GATE)).tick(110)
    assert run.d().rollout.analysis is None and run.status is Status.SUCCESS


def test_a_gate_holds_the_rollout_in_progress_and_passes_at_the_windows_end() -> None:
    run = analysed()
    analysis = analysis_of(run)
    assert run.status is Status.IN_PROGRESS
    assert (analysis.measuring_since, analysis.ends_at) == (110, 410)
    assert run.d().rollout.deadline_at >= 410  # the progress deadline (700) cannot fail it meanwhile
    assert analysis.checks[0].baseline == 0.004 and analysis.checks[0].baseline_taken
    run(measured(140, 0.005), measured(170, None))
    run.tick(409)
    assert run.status is Status.IN_PROGRESS
    run.tick(410)
    assert run.status is Status.SUCCESS and run.d().rollout.reason == ""
    assert analysis_of(run).outcome is Outcome.PASSED
    finished = [e for e in run.events if isinstance(e, AnalysisFinished)]
    assert [(e.outcome, e.mode, e.rollback) for e in finished] == [(Outcome.PASSED, Mode.GATE, False)]
    verdict = next(e for e in run.events if isinstance(e, RolloutFinished))
    assert verdict.duration == 310  # the analysis is part of the rollout


def test_a_gate_fails_the_rollout_at_the_failure_limit_with_the_figures() -> None:
    run = analysed()(measured(140, 0.041))
    assert run.status is Status.IN_PROGRESS and analysis_of(run).checks[0].failures == 1
    run(measured(170, 0.041))
    reason = "analysis error_rate: 0.041 > max 0.02 (baseline 0.004)"
    assert run.status is Status.FAILED and run.d().rollout.reason == reason
    assert analysis_of(run).outcome is Outcome.FAILED and analysis_of(run).reason == reason
    assert run.d().dora.change_failures == 1 and run.d().dora.failures == 1  # a change failure, as any failed rollout
    said = [e for e in run.events if isinstance(e, AnalysisMeasured)]
    assert [(e.result, e.of_baseline) for e in said] == [
        (Result.PASS, True),
        (Result.FAIL, False),
        (Result.FAIL, False),
    ]
    assert said[-1].reason == "0.041 > max 0.02 (baseline 0.004)"


def test_an_increase_beyond_the_baseline_fails() -> None:
    run = analysed()(measured(140, 0.019), measured(170, 0.019))
    assert run.d().rollout.reason == "analysis error_rate: 0.019 > 0.006, more than 50% above baseline 0.004"


def test_nothing_but_no_data_and_errors_is_inconclusive_and_the_rollout_succeeds() -> None:
    run = analysed()(measured(140, None), measured(170, None, error="timeout"), measured(200, math.nan)).tick(410)
    assert run.status is Status.SUCCESS
    assert run.d().rollout.reason.startswith("analysis inconclusive: ")
    assert analysis_of(run).outcome is Outcome.INCONCLUSIVE
    counts = analysis_of(run).checks[0]
    assert (counts.nodata, counts.errors, counts.passes, counts.failures) == (2, 1, 0, 0)


def test_observe_mode_records_beside_the_containers_verdict() -> None:
    run = analysed(OBSERVE)
    assert run.status is Status.SUCCESS and analysis_of(run).measuring_since == 110
    run(measured(140, 0.041), measured(170, 0.041))
    assert run.status is Status.SUCCESS and analysis_of(run).outcome is Outcome.FAILED
    assert run.d().dora.change_failures == 0


def test_observe_mode_ends_at_the_window_after_its_rollout_succeeded() -> None:
    run = analysed(OBSERVE)(measured(140, 0.01)).tick(410)
    assert analysis_of(run).outcome is Outcome.PASSED and run.status is Status.SUCCESS


def test_containers_failing_during_the_analysis_fail_the_rollout_and_end_the_analysis() -> None:
    run = analysed()(measured(140, 0.041), InstanceExited(150, "a", 1))
    assert run.status is Status.FAILED and run.d().rollout.reason == "container a exited with code 1"
    assert analysis_of(run).outcome is Outcome.INCONCLUSIVE
    assert "failed before" in analysis_of(run).reason
    run(measured(170, 0.041))  # the analysis ended: ignored
    assert analysis_of(run).checks[0].failures == 1


def test_a_failure_before_measuring_begins_ends_the_analysis() -> None:
    run = Run(ANALYSED)(started("a", "1.0.0", 100, analysis=GATE), InstanceExited(103, "a", 1))
    assert run.status is Status.FAILED and analysis_of(run).outcome is Outcome.INCONCLUSIVE


def test_a_newer_rollout_supersedes_the_analysis_and_stale_measurements_are_ignored() -> None:
    run = analysed()(measured(140, 0.041), started("b", "2.0.0", 200, analysis=GATE))
    assert run.d().rollout.revision == 2
    fresh = analysis_of(run)
    assert fresh.checks[0].failures == 0 and fresh.measuring_since is None
    before = run.state
    run(measured(201, 0.041, revision=1), measured(202, 0.041, revision=2))  # revision 1's; not measuring yet
    run(measured(203, 0.041, check="unknown"), measured(204, 0.041, key=SHOP))
    assert run.state is before


def test_a_baseline_that_failed_is_asked_again_and_counts_once_known() -> None:
    """A baseline is the value at the rollout's start, the same whenever it is asked: one that failed
    and answers after measuring began judges the measurements from then on; before it, absolute limits."""
    run = Run(ANALYSED)(started("a", "1.0.0", 100, analysis=GATE), measured(101, None, baseline=True, error="down"))
    assert not analysis_of(run).checks[0].baseline_taken
    run.tick(110)(measured(140, 0.019))  # no baseline yet: under max, a pass
    assert analysis_of(run).checks[0].passes == 1
    run(measured(141, 0.004, baseline=True), measured(142, 0.001, baseline=True))
    assert analysis_of(run).checks[0].baseline == 0.004  # taken once, the second answer ignored
    run(measured(170, 0.019), measured(200, 0.019))  # now more than 50% above the baseline
    assert run.status is Status.FAILED
    assert run.d().rollout.reason == "analysis error_rate: 0.019 > 0.006, more than 50% above baseline 0.004"


def test_an_analysis_under_way_survives_a_restart() -> None:
    run = analysed()(measured(140, 0.041))
    restored = decode(encode(run.state))
    assert restored == run.state
    again = Run(ANALYSED)
    again.state = restored
    again(measured(170, 0.041))
    assert again.status is Status.FAILED and analysis_of(again).outcome is Outcome.FAILED


def test_infinite_values_are_kept_across_a_restart() -> None:
    run = analysed()(measured(140, math.inf))
    assert decode(encode(run.state)) == run.state


def test_an_old_schema_file_loads_with_no_analysis() -> None:
    from pathlib import Path

    state = decode((Path(__file__).parent / "data" / "state-schema-2.json").read_bytes())
    assert all(d.rollout.analysis is None for d in state.deployments.values())
    assert all(m.instance.identity.analysis is None for d in state.deployments.values() for m in d.members.values())


# -- a Swarm service's rollback


def test_a_failed_gate_analysis_of_a_service_wants_a_rollback_once() -> None:
    allowed = dataclasses.replace(ANALYSED, analysis=dataclasses.replace(ANALYSED.analysis, allow_rollback=True))
    seen = dataclasses.replace(service(100, "1", state=UpdateState.COMPLETED), analysis=dataclasses.replace(
        GATE, rollback=True))  # fmt: skip
    run = Run(allowed)(seen)
    deployment = run.d(SHOP)
    assert deployment.rollout.status is Status.IN_PROGRESS and deployment.rollout.analysis is not None
    run(measured(130, 0.05, key=SHOP), measured(160, 0.05, key=SHOP))
    assert run.d(SHOP).rollout.status is Status.FAILED and rollback_wanted(run.d(SHOP), allowed)
    assert not rollback_wanted(run.d(SHOP), ANALYSED)  # the configuration must allow it too
    assert [e.rollback for e in run.events if isinstance(e, AnalysisFinished)] == [True]
    run(RollbackAsked(at=161, key=SHOP, revision=1))
    assert not rollback_wanted(run.d(SHOP), allowed)
    run(service(170, "0", state=UpdateState.ROLLBACK_COMPLETED, by=Initiator.PERSON))
    assert run.d(SHOP).rollout.rollback and run.d(SHOP).rollout.status is Status.SUCCESS
    assert run.d(SHOP).rollout.reason == (
        "rolled back: the analysis of revision 1 asked for it (analysis error_rate: 0.05 > max 0.02)"
    )
    assert run.d(SHOP).rollbacks == 1


# -- the judgement of any sequence of measurements

RESULTS = {Result.PASS: 0.001, Result.FAIL: 0.5, Result.NODATA: None, Result.ERROR: 0.5}


@given(st.lists(st.sampled_from(Result), max_size=12), st.integers(1, 4))
def test_any_sequence_of_measurements_gives_the_verdict_of_the_rules(results: list[Result], limit: int) -> None:
    """failure_limit failures fail it at the limit-th; else passed if any measurement had data, else inconclusive."""
    analysis = Analysis(mode=Mode.GATE, checks=(Measured(check=ERROR_RATE),), measuring_since=0.0, ends_at=300.0)
    verdict, at = None, None
    for n, result in enumerate(results):
        error = "timeout" if result is Result.ERROR else ""
        analysis, got, _ = record(analysis, "error_rate", RESULTS[result], error=error, baseline=False, at=float(n))
        assert got is result
        if failed(analysis, got, failure_limit=limit):
            verdict, at = Outcome.FAILED, n
            break
    fails = [n for n, r in enumerate(results) if r is Result.FAIL]
    if len(fails) >= limit:
        assert (verdict, at) == (Outcome.FAILED, fails[limit - 1])
        return
    assert verdict is None
    expected = Outcome.PASSED if any(r in (Result.PASS, Result.FAIL) for r in results) else Outcome.INCONCLUSIVE
    assert outcome_at_end(analysis)[0] is expected


def test_an_inconclusive_or_failed_analysis_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.analysis")
    line = subscribers.logging_to(log)
    finished = AnalysisFinished(
        key=API, at=1.0, revision=1, version="1", outcome=Outcome.INCONCLUSIVE, mode=Mode.GATE, reason="no data"
    )
    with caplog.at_level(logging.INFO, logger="test.analysis"):
        line(finished)
        line(dataclasses.replace(finished, outcome=Outcome.PASSED, reason=""))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "deployment api/production: gate analysis of revision 1 (1) inconclusive: no data"),
        (logging.INFO, "deployment api/production: gate analysis of revision 1 (1) passed"),
    ]


def test_an_ended_analysis_is_counted_by_its_outcome() -> None:
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    count = subscribers.counting_each(metrics.analyses, AnalysisFinished, lambda e: e.outcome.text)
    finished = AnalysisFinished(
        key=API, at=1.0, revision=1, version="1", outcome=Outcome.INCONCLUSIVE, mode=Mode.GATE, reason="no data"
    )
    count(finished)
    count(dataclasses.replace(finished, outcome=Outcome.FAILED))
    count(dataclasses.replace(finished, outcome=Outcome.INCONCLUSIVE))

    def total(outcome: str) -> float | None:
        return registry.get_sample_value("deployment_watcher_analyses_total", {"outcome": outcome})

    assert (total("passed"), total("failed"), total("inconclusive")) == (0, 1, 2)  # every outcome pre-created
