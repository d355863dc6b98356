"""Time sanity, one rule: a time written down by others (a report's ``started_at`` or ``finished_at``,
the ``deployment.timestamp`` label, a commit time) that lies after the moment the watcher observes
it, or a finish before its rollout's start, or a commit after its deploy began, is clock skew: it is
refused, the documented fallback is used, and a ``TimeRefused`` event says so (logged, counted)."""

from __future__ import annotations

from typing import Any

from tests.unit.builders import API, SETTINGS, Run, reported, started
from watcher.domain import labels
from watcher.domain.events import RolloutFinished, RolloutStarted, StaleObservation, TimeRefused
from watcher.domain.model import Health, Instance, Status
from watcher.domain.observations import InstanceHealth, InstanceSeen, RolloutReported
from watcher.web import views

T = 1_796_068_041.0
HOUR = 3600.0


def refused(run: Run) -> list[tuple[str, float]]:
    """(source, value) of every time refused so far."""
    return [(e.source, e.value) for e in run.events if isinstance(e, TimeRefused)]


def report(version: str, status: str, at: float, **times: Any) -> RolloutReported:
    return RolloutReported(
        at=at, key=API, version=version, commit=f"c-{version}", status=Status[status.upper()], **times
    )


def labelled(cid: str, version: str, at: float, **extra: str) -> InstanceSeen:
    """A container created and started at ``at``, its labels read as the Docker source reads them."""
    parsed = labels.parse(
        {labels.NAME: API.name, labels.ENVIRONMENT: API.environment, labels.VERSION: version, **extra},
        image=f"shop/api:{version}", image_id="", created_at=at, now=at, settings=SETTINGS.labels,
    )  # fmt: skip
    assert parsed.identity is not None and not parsed.problems, parsed.problems
    return InstanceSeen(at, Instance(id=cid, identity=parsed.identity, running=True, running_since=at))


# -- a report's start ahead of the watcher's clock


def test_a_report_started_hours_ahead_does_not_freeze_the_deployment() -> None:
    """started_at 8 h ahead (within the day the API accepts): refused, the rollout starts at the
    report's arrival. Before, the rollout started 8 h ahead: a container of the next version created
    meanwhile was a leftover, and a correct report of the version after was answered "stale"."""
    run = Run()(report("1.0.0", "in_progress", T, started_at=T + 8 * HOUR))
    assert run.d().rollout.started_at == T
    assert refused(run) == [("started_at", T + 8 * HOUR)]
    run(report("1.0.0", "success", T + 30))
    assert run.d().durations.total == 30
    run(started("a", "2.0.0", T + 100))
    assert (run.d().rollout.version, run.d().rollout.revision) == ("2.0.0", 2)
    run.tick(T + 110)
    run(report("3.0.0", "in_progress", T + 200, started_at=T + 190))
    assert StaleObservation not in run.types
    assert (run.d().rollout.version, run.d().rollout.started_at) == ("3.0.0", T + 190)


def test_a_final_report_started_ahead_has_no_duration() -> None:
    """A final report of a version never announced, started "ahead": its start is unknown, so no
    duration is recorded (not 0 s), and the next report is not stale."""
    run = Run()(report("1.0.0", "success", T, started_at=T + 8 * HOUR))
    rollout = run.d().rollout
    assert (rollout.status, rollout.started_at, rollout.finished_at) == (Status.SUCCESS, T, T)
    assert run.d().durations.count == 0
    finished = [e for e in run.events if isinstance(e, RolloutFinished)]
    assert [e.duration for e in finished] == [None]
    run(report("2.0.0", "success", T + 60, started_at=T + 30, finished_at=T + 50))
    assert (run.d().rollout.version, run.d().durations.total) == ("2.0.0", 20)


def test_a_report_finished_ahead_finishes_at_its_arrival() -> None:
    """finished_at ahead of the watcher's clock: the rollout finishes when the report arrived."""
    run = Run()(report("1.0.0", "in_progress", T))
    run(report("1.0.0", "success", T + 40, finished_at=T + 3 * HOUR))
    assert (run.d().rollout.finished_at, run.d().durations.total) == (T + 40, 40)
    assert refused(run) == [("finished_at", T + 3 * HOUR)]
    run(report("2.0.0", "in_progress", T + 100))
    assert run.d().rollout.version == "2.0.0"


def test_a_finish_before_the_start_finishes_at_the_arrival() -> None:
    """A final report whose finished_at lies before the rollout began (two clocks): the rollout does
    not finish before it starts; it finishes at the report's arrival, with a true duration."""
    run = Run()(started("a", "1.0.0", T), reported("1.0.0", "in_progress", T + 1))
    run(reported("1.0.0", "failed", T + 50, finished_at=T - 20))
    rollout = run.d().rollout
    assert (rollout.status, rollout.finished_at, run.d().durations.total) == (Status.FAILED, T + 50, 50)
    assert refused(run) == [("finished_at", T - 20)]


# -- the deployment.timestamp label ahead of the watcher's clock


def test_a_timestamp_label_hours_ahead_does_not_freeze_the_deployment() -> None:
    """deployment.timestamp 3 h ahead: refused, the container's creation starts the rollout. Before,
    every report of another version was "stale" for 3 h, and the rollout finished "before it
    started" with a duration of 0 s."""
    run = Run()(labelled("a", "1.0.0", T, **{labels.TIMESTAMP: str(T + 3 * HOUR)}))
    assert run.d().rollout.started_at == T
    assert refused(run) == [("deployment.timestamp", T + 3 * HOUR)]
    run.tick(T + 10)
    assert (run.status, run.d().durations.total) == (Status.SUCCESS, 10)
    run(report("2.0.0", "in_progress", T + 60, started_at=T + 55))
    assert StaleObservation not in run.types
    assert run.d().rollout.version == "2.0.0"


def test_a_timestamp_label_just_before_its_container_is_used() -> None:
    """A CI job's timestamp before the container's creation is no skew: it starts the rollout, nothing refused."""
    run = Run()(labelled("a", "1.0.0", T, **{labels.TIMESTAMP: str(T - 90)}))
    assert run.d().rollout.started_at == T - 90 and refused(run) == []


# -- commit times: never a lead time from skew


def test_a_commit_after_its_deploy_began_records_no_lead_time() -> None:
    """A commit_time after the rollout's start (a laptop's clock ahead) is refused: no lead time, rather
    than 0 s (which looks elite). Before, the lead time recorded was 0 s."""
    run = Run()(report("1.0.0", "in_progress", T, started_at=T - 10, commit_time=T + 5))
    assert run.d().rollout.commit_time is None
    assert refused(run) == [("commit_time", T + 5)]
    run(report("1.0.0", "success", T + 60, commit_time=T + 5))
    assert run.d().dora.lead_times.count == 0 and run.d().dora.successes == 1


def test_a_commit_time_ahead_of_the_report_is_refused() -> None:
    """A commit time after the report's arrival (within the day the API accepts) is refused."""
    run = Run()(report("1.0.0", "success", T, commit_time=T + 2 * HOUR))
    assert run.d().dora.lead_times.count == 0
    assert refused(run) == [("commit_time", T + 2 * HOUR)]


def test_a_commit_time_label_after_the_container_records_no_lead_time() -> None:
    """deployment.commit_time after the container was created: refused, no lead time."""
    run = Run()(labelled("a", "1.0.0", T, **{labels.COMMIT_TIME: str(T + 600)}))
    assert run.d().rollout.commit_time is None
    run.tick(T + 10)
    assert run.status is Status.SUCCESS and run.d().dora.lead_times.count == 0
    assert refused(run) == [("commit_time", T + 600)]


def test_a_commit_time_learnt_from_a_report_after_the_start_is_refused() -> None:
    """A final report adds the commit time its containers' labels lacked: refused when after the start."""
    run = Run()(started("a", "1.0.0", T), report("1.0.0", "success", T + 30, commit_time=T + 20))
    assert run.d().dora.lead_times.count == 0
    assert refused(run) == [("commit_time", T + 20)]


def test_a_commit_before_the_deploy_counts() -> None:
    """The rule refuses only what cannot be: a commit an hour before its deploy gives its lead time."""
    run = Run()(report("1.0.0", "in_progress", T, commit_time=T - HOUR), report("1.0.0", "success", T + 60))
    assert run.d().dora.lead_times.total == HOUR + 60 and refused(run) == []


def test_refusals_are_told_with_the_skew() -> None:
    """The event names the deployment, the time, how far ahead it was and what was used instead."""
    run = Run()(report("1.0.0", "in_progress", T, started_at=T + 8 * HOUR))
    event = next(e for e in run.events if isinstance(e, TimeRefused))
    assert (event.key, event.at, event.kind) == (API, T, "clock_skew")
    assert (
        event.message
        == "started_at lies 28800 s after the moment the watcher observed it (clock skew?); using the report's arrival"
    )
    assert run.types.index(TimeRefused) < run.types.index(RolloutStarted)


def test_a_finish_before_the_start_by_the_engines_clock_has_no_duration() -> None:
    """The engine's clock ahead of the watcher's: a container created "after" the success that the
    watcher's clock judges. No duration, rather than 0 s; told as a finish before the start."""
    run = Run()(started("a", "1.0.0", T + 100, healthcheck=True), now=T)
    run(InstanceHealth(T + 105, "a", Health.HEALTHY), now=T + 10)
    assert run.status is Status.SUCCESS
    assert run.d().durations.count == 0
    assert [e.duration for e in run.events if isinstance(e, RolloutFinished)] == [None]
    assert refused(run) == [("finished_at", T + 10)]
    assert views.duration(run.d().rollout) is None  # the read API and the board: unknown, not 0 s


def test_a_success_before_its_commit_records_no_lead_time() -> None:
    """The watcher's clock stepped back below a commit time accepted before: no lead time, not 0 s."""
    run = Run()(report("1.0.0", "in_progress", T, commit_time=T - 60))
    run(report("1.0.0", "success", T - 120))
    assert run.status is Status.SUCCESS and run.d().dora.lead_times.count == 0
