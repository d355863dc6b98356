"""The events the state machine emits: which, in what order, with what message; and that every
status change of a rollout is told by exactly one of them."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.builders import ANALYSED, API, SETTINGS, Run, measured, replay, reported, started
from watcher.config import RetentionSettings
from watcher.domain.analysis import Mode, Outcome, Request
from watcher.domain.events import (
    EVENT_TYPES,
    DeploymentDropped,
    DeploymentRejected,
    HealthChanged,
    RolloutFinished,
    RolloutRevised,
    RolloutStarted,
    RolloutSuperseded,
    StaleObservation,
)
from watcher.domain.model import DeploymentKey, Health, Judge, Origin, Status
from watcher.domain.observations import (
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceStarted,
    Observation,
    Resync,
    Tick,
)
from watcher.domain.reports import REPORTED_REASON


def test_a_rollout_starts_then_succeeds() -> None:
    """First sight starts revision 1; the stable time finishes it, timed from its start."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    assert run.events == [
        RolloutStarted(
            key=API, at=100, revision=1, version="1.0.0", commit="c-1.0.0", rollback=False, judge=Judge.CONTAINERS
        ),
        RolloutFinished(
            key=API, at=110, revision=1, version="1.0.0", status=Status.SUCCESS, reason="", by=Judge.CONTAINERS,
            duration=10.0,
        ),
    ]  # fmt: skip
    assert [e.message for e in run.events] == [
        "rollout to 1.0.0 started (revision 1)",
        "revision 1 (1.0.0) success after 10.0 s",
    ]


def test_a_rollout_fails() -> None:
    """A crash finishes the rollout failed, with the container and the exit code as its reason."""
    run = Run()(started("a", "1.0.0", 100), InstanceExited(104.5, "a", 3))
    assert run.types == [RolloutStarted, RolloutFinished]
    finished = run.events[-1]
    assert isinstance(finished, RolloutFinished)
    assert (finished.status, finished.reason, finished.duration, finished.at) == (
        Status.FAILED, "container a exited with code 3", 4.5, 104.5,
    )  # fmt: skip
    assert finished.message == "revision 1 (1.0.0) failed: container a exited with code 3 after 4.5 s"


def test_a_rollback_is_a_rollout_started_to_an_older_version() -> None:
    """Back to 1.0.0 after 2.0.0: one RolloutStarted with rollback=True, worded as a rollback."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    run(started("b", "2.0.0", 200)).tick(210)
    del run.events[:]
    run(started("c", "1.0.0", 300))
    assert run.events == [
        RolloutStarted(
            key=API, at=300, revision=3, version="1.0.0", commit="c-1.0.0", rollback=True, judge=Judge.CONTAINERS
        )
    ]
    assert run.events[0].message == "rollback to 1.0.0 started (revision 3)"


def test_a_rollout_in_progress_is_superseded_before_the_next_starts() -> None:
    """A new version while the previous rollout is in progress: superseded first, then started."""
    run = Run()(started("a", "1.0.0", 100))
    del run.events[:]
    run(started("b", "2.0.0", 105))
    assert run.events == [
        RolloutSuperseded(key=API, at=105, revision=1, version="1.0.0"),
        RolloutStarted(
            key=API, at=105, revision=2, version="2.0.0", commit="c-2.0.0", rollback=False, judge=Judge.CONTAINERS
        ),
    ]
    assert run.events[0].message == "revision 1 superseded before it finished"


def test_a_premature_success_is_revised() -> None:
    """An exit read after the stable-time success, but from before it was up: revised to failed."""
    run = Run()(started("a", "1.0.0", 100)).tick(110.5)
    run(InstanceExited(100.7, "a", 1), now=111)
    reason = "container a exited with code 1 before its stable time was up"
    assert run.types == [RolloutStarted, RolloutFinished, RolloutRevised]
    assert run.events[-1] == RolloutRevised(
        key=API, at=100.7, revision=1, version="1.0.0", before=Status.SUCCESS, after=Status.FAILED, reason=reason,
        by=Judge.CONTAINERS,
    )  # fmt: skip
    assert run.events[-1].message == f"revision 1 (1.0.0) failed after all: {reason}"


def test_deploy_tooling_announces_finishes_and_corrects() -> None:
    """Reports: started (judged by the tooling), finished, then corrected by a later report."""
    run = Run()(reported("1.0.0", "in_progress", 100), reported("1.0.0", "success", 160))
    run(reported("1.0.0", "failed", 200))
    assert run.events == [
        RolloutStarted(
            key=API, at=100, revision=1, version="1.0.0", commit="c-1.0.0", rollback=False, judge=Judge.DEPLOY_TOOLING
        ),
        RolloutFinished(
            key=API, at=160, revision=1, version="1.0.0", status=Status.SUCCESS, reason=REPORTED_REASON,
            by=Judge.DEPLOY_TOOLING, duration=60.0,
        ),
        RolloutRevised(
            key=API, at=200, revision=1, version="1.0.0", before=Status.SUCCESS, after=Status.FAILED,
            reason=REPORTED_REASON, by=Judge.DEPLOY_TOOLING,
        ),
    ]  # fmt: skip
    assert [e.message for e in run.events] == [
        "rollout to 1.0.0 started (revision 1)",
        "revision 1 (1.0.0) success: reported by deploy tooling after 60.0 s",
        "revision 1 (1.0.0) corrected to failed by deploy tooling",
    ]


def test_a_finish_found_by_a_resync_has_no_duration() -> None:
    """After a restart, a rollout found finished has no known duration: none in the event or its text."""
    run = Run()(started("a", "1.0.0", 100))
    crashed = dataclasses.replace(
        run.d().members["a"].instance, running=False, running_since=None, exit_code=1, exited_at=150
    )
    run(Resync(300, Origin.CONTAINER, (crashed,)), now=300)
    finished = run.events[-1]
    assert isinstance(finished, RolloutFinished) and finished.duration is None
    assert finished.message == "revision 1 (1.0.0) failed: container a exited with code 1"


def test_rejected_dropped_and_stale_say_why() -> None:
    """The cap, retention and an out-of-order observation each have their event and text."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(max_deployments=1, gone_seconds=60))
    other = DeploymentKey("web", "staging")
    run = Run(settings)(started("a", "1.0.0", 100), started("w", "1.0.0", 101, key=other))
    assert run.events[-1] == DeploymentRejected(key=other, at=101, cap=1)
    assert run.events[-1].message == "cap of 1 deployments reached"
    run(InstanceHealth(99, "a", Health.HEALTHY), now=102)
    assert run.events[-1] == StaleObservation(key=API, at=102, instance_id="a")
    assert run.events[-1].message == "ignored an observation of a older than the last one"
    run(reported("0.9.0", "success", 103, started_at=50))
    assert run.events[-1] == StaleObservation(key=API, at=103, version="0.9.0")
    assert run.events[-1].message == "ignored a report of 0.9.0 older than the current rollout"
    run.tick(110)(InstanceGone(111, "a")).tick(171)  # its rollout's verdict first: not dropped before
    assert run.events[-1] == DeploymentDropped(key=API, at=171, why="no containers for 60 s")
    assert run.events[-1].message == "no containers for 60 s; no longer exported"


def test_health_changes_of_the_current_rollout_are_told() -> None:
    """Each change of a current container's health is a HealthChanged, before the verdict it brings;
    a start resets the health check's result, and the same health again is no change."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True))
    del run.events[:]
    run(InstanceHealth(105, "a", Health.HEALTHY), InstanceHealth(106, "a", Health.HEALTHY))
    assert run.types == [HealthChanged, RolloutFinished]
    assert run.events[0] == HealthChanged(
        key=API, at=105, revision=1, version="1.0.0", instance_id="a", before=Health.STARTING, after=Health.HEALTHY
    )
    assert run.events[0].message == "container a of revision 1 starting -> healthy"
    del run.events[:]
    run(InstanceExited(110, "a", 1), InstanceStarted(111, "a"))
    assert [(e.before, e.after) for e in run.events if isinstance(e, HealthChanged)] == [
        (Health.HEALTHY, Health.STARTING)
    ]


def test_health_of_a_leftover_is_not_told() -> None:
    """A container of an older rollout changes no rollout's health: no event."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True), started("b", "2.0.0", 200, healthcheck=True))
    del run.events[:]
    run(InstanceHealth(205, "a", Health.UNHEALTHY))
    assert run.events == []


def test_kinds_are_the_counter_labels_of_before() -> None:
    """Each event class has its own stable kind: the state_changes label values stay as they were
    (health_changed, changed, removed, returned, clock_skew and the analysis's are new)."""
    assert [e.kind for e in EVENT_TYPES] == [
        "rollout_started", "rollout_finished", "superseded", "revised", "rejected", "dropped", "stale", "health_changed",
        "changed", "removed", "returned", "clock_skew", "analysis_measured", "analysis_finished",
    ]  # fmt: skip


# -- every status change of a rollout is told by exactly one event


VERSIONS = st.sampled_from(("1.0.0", "2.0.0", "3.0.0"))
REPORTED = st.sampled_from(("in_progress", "success", "failed"))
OBSERVED = Request(checks=("error_rate",), mode=Mode.OBSERVE)


@given(st.data())
def test_every_status_change_is_told_by_its_event(data: st.DataObject) -> None:
    """Containers, reports, ticks and resyncs in any order: replaying the events of each step on
    the statuses before it gives the statuses after it, so no status changes untold; analysed rollouts
    and their measurements among them, and no failed rollout left with an analysis running."""
    run = Run(ANALYSED)
    at, born = 100.0, 0
    for _ in range(data.draw(st.integers(1, 30))):
        at += 1
        live = sorted(run.state.owners)
        of_live = ("exit", "restart", "healthy", "gone") if live else ()
        measure = ("measure",) if run.state.deployments else ()
        kind = data.draw(st.sampled_from(("start", "report", "late report", "tick", "resync", *of_live, *measure)))
        observation: Observation
        if kind == "start":
            healthcheck = data.draw(st.booleans())
            asked = data.draw(st.sampled_from((None, Request(checks=("error_rate",)), OBSERVED)))
            observation = started(f"c{born}", data.draw(VERSIONS), at, healthcheck=healthcheck, analysis=asked)
            born += 1
        elif kind == "measure":
            value = data.draw(st.sampled_from((0.001, 0.5, None)))
            observation = measured(at, value, revision=run.d().rollout.revision, baseline=data.draw(st.booleans()))
        elif kind == "report":
            observation = reported(data.draw(VERSIONS), data.draw(REPORTED), at)
        elif kind == "late report":
            observation = reported(data.draw(VERSIONS), "success", at, started_at=at - 300)
        elif kind == "tick":
            at += data.draw(st.sampled_from((1, 5, 20, 700, 4000)))
            observation = Tick(at)
        elif kind == "resync":
            kept = data.draw(st.lists(st.sampled_from(live), unique=True)) if live else []
            observation = Resync(at, Origin.CONTAINER, tuple(run.d().members[i].instance for i in kept))
        else:
            target = data.draw(st.sampled_from(live))
            changes: dict[str, Observation] = {
                "exit": InstanceExited(at, target, data.draw(st.sampled_from((0, 1)))),
                "restart": InstanceStarted(at, target),
                "healthy": InstanceHealth(at, target, Health.HEALTHY),
                "gone": InstanceGone(at, target),
            }
            observation = changes[kind]
        before, done = run.state, len(run.events)
        run(observation)
        after = {key: (d.rollout.revision, d.rollout.status) for key, d in run.state.deployments.items()}
        assert replay(before, run.events[done:]) == after
        for d in run.state.deployments.values():
            analysis = d.rollout.analysis
            assert d.rollout.status is not Status.FAILED or analysis is None or analysis.outcome is not Outcome.RUNNING
