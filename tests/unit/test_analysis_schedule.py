"""What the analysis source asks Prometheus, and when: one query per check per interval, a
baseline until it is taken, nothing twice at once, only the running analyses of current rollouts;
and the source itself against a fake Prometheus."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from tests.polling import poll_async
from watcher.config import Settings
from watcher.domain.analysis import Analysis, Check, Measured, Mode, Outcome
from watcher.domain.model import Deployment, DeploymentKey, Rollout, State
from watcher.domain.observations import AnalysisMeasured
from watcher.domain.settings import AnalysisSettings
from watcher.selfmetrics import SelfMetrics
from watcher.sources.analysis.schedule import Query, Schedule
from watcher.sources.analysis.source import AnalysisSource

A, B = DeploymentKey("a", "production"), DeploymentKey("b", "production")
ERRORS = Check(name="errors", query='errors{job="a"}', max=0.1)
LATENCY = Check(name="latency", query='latency{job="a"}', max=0.5)
T0 = 1_700_000_000.0


def analysis(**changes: Any) -> Analysis:
    """An analysis of two checks; one measuring has its baselines taken (asking them is another test's)."""
    taken = changes.get("measuring_since") is not None
    checks = (Measured(check=ERRORS, baseline_taken=taken), Measured(check=LATENCY, baseline_taken=taken))
    return dataclasses.replace(Analysis(mode=Mode.GATE, checks=checks), **changes)


def state(*rollouts: tuple[DeploymentKey, Analysis | None]) -> State:
    def rollout(each: Analysis | None) -> Rollout:
        return Rollout(revision=3, version="v2", commit="", image="app:2", started_at=T0, analysis=each)

    return State(deployments={key: Deployment(key=key, rollout=rollout(each)) for key, each in rollouts})


def measured(each: Analysis, **changes: Any) -> Analysis:
    """Every check of ``each`` changed so."""
    return dataclasses.replace(each, checks=tuple(dataclasses.replace(m, **changes) for m in each.checks))


def names(queries: list[Query]) -> list[tuple[str, str, bool, float | None]]:
    return sorted((q.key.name, q.check, q.baseline, q.at) for q in queries)


def test_baselines_first_at_the_rollouts_start_then_once_an_interval_until_taken() -> None:
    schedule = Schedule(interval=30)
    waiting = analysis()
    due = schedule.due(state((A, waiting)), T0 + 1)
    assert names(due) == [("a", "errors", True, T0), ("a", "latency", True, T0)]
    assert due[0].promql == 'errors{job="a"}' and due[0].revision == 3
    for query in due:
        schedule.started(query)
    assert schedule.due(state((A, waiting)), T0 + 2) == []  # in flight
    for query in due:
        schedule.finished(query, sent_at=T0 + 1)
    # An error leaves the baseline not taken: asked again, but an interval later.
    assert schedule.due(state((A, waiting)), T0 + 30) == []
    assert len(schedule.due(state((A, waiting)), T0 + 31)) == 2
    taken = measured(waiting, baseline_taken=True, baseline=0.01)
    assert schedule.due(state((A, taken)), T0 + 100) == []


def test_a_baseline_not_taken_is_still_asked_once_measuring_began() -> None:
    """A success reported at once measures at once: the baseline, a query at the start's time, is
    asked beside the measurements until it is taken, and not after the window."""
    schedule = Schedule(interval=30)
    measuring = measured(analysis(measuring_since=T0 + 60, ends_at=T0 + 360), baseline_taken=False)
    assert names(schedule.due(state((A, measuring)), T0 + 60)) == [
        ("a", "errors", False, None), ("a", "errors", True, T0), ("a", "latency", False, None),
        ("a", "latency", True, T0),
    ]  # fmt: skip
    taken = measured(measuring, baseline_taken=True, baseline=0.01)
    assert all(not q.baseline for q in Schedule(interval=30).due(state((A, taken)), T0 + 60))
    assert Schedule(interval=30).due(state((A, measuring)), T0 + 360) == []  # the window is over


def test_exactly_one_measurement_per_check_per_interval_over_a_window() -> None:
    """100 deployments, 2 checks, a 30 s interval, scanned every second for 5 minutes: 2 × 100 × 2 a minute."""
    schedule = Schedule(interval=30)
    keys = [DeploymentKey(f"d{i}", "production") for i in range(100)]
    analyses = {key: analysis(measuring_since=T0, ends_at=T0 + 300) for key in keys}
    sent: list[Query] = []
    for second in range(300):
        now = T0 + second
        due = schedule.due(state(*analyses.items()), now)
        for query in due:  # answered at once; the core records the measurement at its send time
            schedule.started(query)
            schedule.finished(query, sent_at=now)
            analyses[query.key] = dataclasses.replace(analyses[query.key], checks=tuple(
                dataclasses.replace(m, measured_at=now) if m.check.name == query.check else m
                for m in analyses[query.key].checks
            ))  # fmt: skip
        sent += due
    assert len(sent) == 2 * 100 * 2 * 5
    per_check: dict[tuple[DeploymentKey, str], int] = {}
    for query in sent:
        per_check[query.key, query.check] = per_check.get((query.key, query.check), 0) + 1
    assert set(per_check.values()) == {10}


def test_an_answer_the_state_ignores_is_not_asked_again_before_an_interval() -> None:
    """The core drops a stale or errored measurement without recording it: the schedule still waits."""
    schedule = Schedule(interval=30)
    measuring = state((A, analysis(measuring_since=T0, ends_at=T0 + 300)))
    first = schedule.due(measuring, T0)
    for query in first:
        schedule.started(query)
        schedule.finished(query, sent_at=T0)
    assert [schedule.due(measuring, T0 + s) for s in range(1, 30)] == [[]] * 29
    assert len(schedule.due(measuring, T0 + 30)) == 2


def test_a_slow_answer_is_never_asked_twice() -> None:
    schedule = Schedule(interval=1)
    measuring = state((A, analysis(measuring_since=T0, ends_at=T0 + 300)))
    for query in schedule.due(measuring, T0):
        schedule.started(query)
    assert [schedule.due(measuring, T0 + s) for s in range(1, 60)] == [[]] * 59


def test_only_running_analyses_of_current_rollouts_within_their_window() -> None:
    schedule = Schedule(interval=30)
    now = T0 + 100
    states = [
        state((A, None)),
        *(state((A, analysis(outcome=outcome))) for outcome in Outcome if outcome is not Outcome.RUNNING),
        state((A, analysis(measuring_since=T0, ends_at=now))),  # the window ended: the core ends it
        state((A, measured(analysis(measuring_since=T0, ends_at=T0 + 300), measured_at=now - 29))),
    ]
    assert [schedule.due(each, now) for each in states] == [[]] * len(states)
    both = state((A, analysis()), (B, analysis(measuring_since=T0, ends_at=T0 + 300)))
    assert names(schedule.due(both, now)) == [
        ("a", "errors", True, T0), ("a", "latency", True, T0), ("b", "errors", False, None), ("b", "latency", False, None),
    ]  # fmt: skip


def test_what_is_no_longer_asked_is_forgotten() -> None:
    schedule = Schedule(interval=30)
    for query in schedule.due(state((A, analysis())), T0):
        schedule.started(query)
        schedule.finished(query, sent_at=T0)
    assert len(schedule.sent) == 2
    schedule.due(state(), T0 + 1)  # superseded, or dropped
    assert schedule.sent == {} and schedule.in_flight == set()


Server = Callable[..., Awaitable[TestServer]]


async def test_the_source_measures_and_counts(aiohttp_server: Server) -> None:
    """Against a fake Prometheus: baselines at the rollout's start, values, no data and errors as
    observations; the counter by result; Prometheus failing is no crash."""
    answers = {'errors{job="a"}': {"status": "success", "data": {"resultType": "vector", "result": []}}}
    queries: list[dict[str, str]] = []
    concurrent, most = 0, 0

    async def query(request: web.Request) -> web.StreamResponse:
        nonlocal concurrent, most
        queries.append(dict(request.query))
        concurrent += 1
        most = max(most, concurrent)
        await asyncio.sleep(0.05)
        concurrent -= 1
        if request.query["query"] in answers:
            return web.json_response(answers[request.query["query"]])
        return web.json_response({"status": "error", "errorType": "bad_data", "error": "nope"}, status=400)

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    server = await aiohttp_server(app)
    keys = [DeploymentKey(f"d{i}", "production") for i in range(20)]
    snapshot = state(*((key, analysis()) for key in keys))
    seen: list[AnalysisMeasured] = []
    registry = CollectorRegistry()
    settings = Settings(analysis=AnalysisSettings(prometheus_url=f"http://127.0.0.1:{server.port}"))
    source = AnalysisSource(
        settings=settings, snapshot=lambda: snapshot, submit=seen.append, metrics=SelfMetrics(registry),
        clock=lambda: T0 + 5, scan_seconds=0.01,
    )  # fmt: skip
    task = asyncio.create_task(source.run_forever())
    try:
        await poll_async("40 baselines", lambda: _true(len(seen) == 40), timeout=10, interval=0.01)
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(seen) == 40 and len(queries) == 40  # an interval (30 s) has not passed
    assert {q["time"] for q in queries} == {f"{T0:.3f}"}
    assert 1 < most <= 8
    errors = [m for m in seen if m.check == "errors"]
    assert {(m.value, m.error, m.baseline, m.revision, m.at) for m in errors} == {(None, "", True, 3, T0 + 5)}
    assert {m.error for m in seen if m.check == "latency"} == {"bad_data: nope"}
    assert {key for key in keys} == {m.key for m in seen}
    results = {r: registry.get_sample_value("deployment_watcher_analysis_queries_total", {"result": r})
               for r in ("ok", "nodata", "error")}  # fmt: skip
    assert results == {"ok": 0, "nodata": 20, "error": 20}
    assert source.fresh() and source.problem() == "analysis latency: bad_data: nope"


async def test_the_source_does_nothing_when_analysis_is_off() -> None:
    def snapshot() -> State:
        raise AssertionError("read the state")

    source = AnalysisSource(
        settings=Settings(), snapshot=snapshot, submit=lambda _: None, metrics=SelfMetrics(CollectorRegistry()),
        scan_seconds=0.001,
    )  # fmt: skip
    task = asyncio.create_task(source.run_forever())
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _true(value: bool) -> bool:
    return value
