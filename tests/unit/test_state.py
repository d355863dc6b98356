"""The state machine over scripted observation sequences; time is passed in, never slept."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tests.unit.builders import API, SETTINGS, Run, created, identity, reported, started
from watcher.config import ApiSettings, RetentionSettings
from watcher.domain import labels
from watcher.domain.events import (
    DeploymentDropped,
    DeploymentRejected,
    RolloutFinished,
    RolloutRevised,
    RolloutStarted,
    RolloutSuperseded,
    StaleObservation,
)
from watcher.domain.model import (
    DURATION_BUCKETS,
    DeploymentKey,
    Health,
    Histogram,
    Instance,
    Judge,
    Origin,
    Status,
    Usage,
    VersionSeen,
)
from watcher.domain.observations import (
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceOOMKilled,
    InstanceSeen,
    InstanceStarted,
    InstanceStopRequested,
    Observation,
    Resync,
    UsageSampled,
)
from watcher.domain.reports import REPORTED_REASON
from watcher.domain.rules import (
    CHECK_HEALTHCHECK,
    CHECK_OOM,
    CHECK_RESTARTS,
    CHECK_RUNNING,
    REMOVED,
    health_checks,
    is_healthy,
    is_rollback,
)
from watcher.persistence import codec as store


def test_first_sight_starts_revision_one_in_progress() -> None:
    """The first container of a deployment starts rollout 1, in progress."""
    run = Run()(created("a", "1.0.0", 100))
    assert run.status is Status.IN_PROGRESS
    assert run.d().rollout.revision == 1
    assert run.types == [RolloutStarted]


def test_success_after_stable_time_without_healthcheck() -> None:
    """Without a HEALTHCHECK, running for the stable time is success."""
    run = Run()(created("a", "1.0.0", 100), started("a", "1.0.0", 101, created_at=100))
    run.tick(110.9)
    assert run.status is Status.IN_PROGRESS
    run.tick(111)
    assert run.status is Status.SUCCESS
    assert run.d().durations.count == 1
    assert run.d().durations.total == pytest.approx(11)


def test_success_waits_for_healthcheck_healthy() -> None:
    """With a HEALTHCHECK, only `healthy` is success, however long it runs."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True))
    run.tick(200)
    assert run.status is Status.IN_PROGRESS
    run(InstanceHealth(205, "a", Health.HEALTHY))
    assert run.status is Status.SUCCESS


def test_start_event_runs_the_instance_at_once() -> None:
    """A start event makes the instance running from its time, before any inspect."""
    run = Run()(created("a", "1.0.0", 100), InstanceStarted(101, "a"))
    instance = run.d().members["a"].instance
    assert (instance.running, instance.running_since, instance.inspected) == (True, 101, False)
    checks = health_checks(run.d(), settings=SETTINGS)
    assert checks[CHECK_RUNNING] is True
    assert checks[CHECK_HEALTHCHECK] is False  # unknown until the inspect: health 0, not a flap to 1
    assert not is_healthy(run.d(), settings=SETTINGS)
    run(started("a", "1.0.0", 101, created_at=100))  # the inspect: no health check after all
    assert CHECK_HEALTHCHECK not in health_checks(run.d(), settings=SETTINGS)


def test_no_success_before_the_inspect() -> None:
    """Running past the stable time on the start event alone is not success: only the inspect
    says whether a health check must pass first."""
    run = Run()(created("a", "1.0.0", 100), InstanceStarted(101, "a"))
    run.tick(200)
    assert run.status is Status.IN_PROGRESS
    run(started("a", "1.0.0", 101, created_at=100), now=200)  # the inspect: no health check
    assert run.status is Status.SUCCESS


def test_inspect_after_start_event_can_add_a_healthcheck() -> None:
    """The inspect that follows a start event says there is a health check: success waits for it."""
    run = Run()(created("a", "1.0.0", 100), InstanceStarted(101, "a"), started("a", "1.0.0", 101, healthcheck=True))
    run.tick(200)
    assert run.status is Status.IN_PROGRESS
    run(InstanceHealth(205, "a", Health.HEALTHY))
    assert run.status is Status.SUCCESS


def test_start_after_a_stop_resets_what_docker_resets() -> None:
    """docker stop, then start: no exit code, a new running time, and the health check starts over."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True), InstanceHealth(105, "a", Health.HEALTHY))
    run(InstanceStopRequested(200, "a"), InstanceExited(201, "a", 143), InstanceStarted(300, "a"))
    instance = run.d().members["a"].instance
    assert (instance.running, instance.running_since, instance.exit_code, instance.exited_at) == (True, 300, None, None)
    assert (instance.exit_requested, instance.health) == (False, Health.STARTING)
    assert run.status is Status.SUCCESS  # the rollout had finished; a restart does not reopen it


def test_a_stop_event_after_an_inspect_that_saw_the_stop_keeps_it_requested() -> None:
    """The inspect after a start answered late, once `docker stop` had ended the container: the
    stop's own events, applied after it, do not turn the requested stop into a crash."""
    seen = started("a", "1.0.0", 100)
    stopped = dataclasses.replace(
        seen.instance, running=False, running_since=None, exit_code=143, exited_at=102, exit_requested=True
    )
    run = Run()(InstanceSeen(100, stopped))
    run(InstanceStopRequested(101, "a"), InstanceExited(102, "a", 143))
    instance = run.d().members["a"].instance
    assert (instance.running, instance.exit_code, instance.exit_requested) == (False, 143, True)


def test_start_event_of_an_unknown_container_is_ignored() -> None:
    """A start of a container the state does not own (untracked, rejected) changes nothing."""
    run = Run()(started("a", "1.0.0", 100))
    before = run.state
    run(InstanceStarted(101, "zzz"))
    assert run.state is before


def test_all_replicas_must_be_healthy() -> None:
    """Scale > 1: success only when every replica of the new version is healthy."""
    run = Run()(
        created("a", "1.0.0", 100), created("b", "1.0.0", 100.1),
        started("a", "1.0.0", 101, created_at=100, healthcheck=True),
        started("b", "1.0.0", 101, created_at=100.1, healthcheck=True),
        InstanceHealth(103, "a", Health.HEALTHY),
    )  # fmt: skip
    assert run.status is Status.IN_PROGRESS
    assert run.d().rollout.members == {"a", "b"}
    run(InstanceHealth(104, "b", Health.HEALTHY))
    assert run.status is Status.SUCCESS


def test_replica_created_but_not_started_blocks_success() -> None:
    """A replica that exists but has not started yet is not ready."""
    run = Run()(started("a", "1.0.0", 100), created("b", "1.0.0", 100.5))
    run.tick(120)
    assert run.status is Status.IN_PROGRESS


def test_a_failed_start_fails_the_rollout_at_once() -> None:
    """A container whose start failed (Docker kept its error) fails the rollout when seen, not at the deadline."""
    run = Run()(created("a", "1.0.0", 100))
    failed = dataclasses.replace(run.d().members["a"].instance, inspected=True, start_error="exit code 127: exec: nope")
    run(InstanceSeen(100.2, failed))
    assert (run.status, run.d().rollout.reason) == (
        Status.FAILED, "container a could not be started: exit code 127: exec: nope"
    )  # fmt: skip
    assert run.d().durations.count == 1 and run.d().durations.total == pytest.approx(0.2)
    # Started after all (the command fixed by a `docker start` of another try): the error is gone.
    run(InstanceStarted(150, "a"))
    assert run.d().members["a"].instance.start_error == ""


def test_a_container_created_and_never_started_waits_for_the_deadline() -> None:
    """`docker create` and nothing (a staged deploy): in progress, then failed at the deadline saying why."""
    run = Run()(created("a", "1.0.0", 100))
    run.tick(699)
    assert run.status is Status.IN_PROGRESS
    run.tick(700)
    assert (run.status, run.d().rollout.reason) == (
        Status.FAILED, "not healthy within the progress deadline: container a is not running (never started, or paused)"
    )  # fmt: skip


def test_a_rollout_whose_containers_are_all_removed_fails_at_its_deadline() -> None:
    """Every container of the rollout removed before its verdict (`docker rm -f`): in progress until the
    deadline, then failed saying so. Before, it stayed in progress until retention dropped it."""
    run = Run()(started("a", "1.0.0", 100), InstanceGone(105, "a"))
    run.tick(699)
    assert run.status is Status.IN_PROGRESS
    run.tick(700)
    assert (run.status, run.d().rollout.reason) == (
        Status.FAILED,
        f"not healthy within the progress deadline: {REMOVED}",
    )
    finished = [e for e in run.events if isinstance(e, RolloutFinished)]
    assert [(e.revision, e.status, e.duration) for e in finished] == [(1, Status.FAILED, 600)]
    assert run.d().dora.failures == 1


def test_a_removed_rollout_continues_with_a_new_container_of_its_version() -> None:
    """Removed and created again before the deadline (`docker rm -f` then `docker run` of the same
    version, a redeploy script): the new container joins the rollout, judged as usual."""
    run = Run()(started("a", "1.0.0", 100), InstanceGone(102, "a"), started("b", "1.0.0", 103)).tick(113)
    assert (run.status, run.d().rollout.revision, run.d().rollout.members) == (Status.SUCCESS, 1, {"a", "b"})


def test_a_removed_rollout_is_kept_until_its_verdict() -> None:
    """A retention shorter than the deadline does not drop a rollout before its verdict: every rollout ends."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(gone_seconds=60))
    run = Run(settings)(started("a", "1.0.0", 100), InstanceGone(105, "a")).tick(300)
    assert run.status is Status.IN_PROGRESS
    run.tick(700)
    assert run.status is Status.FAILED
    run.tick(701)
    assert API not in run.state.deployments
    assert run.types[-2:] == [RolloutFinished, DeploymentDropped]


def test_removed_replicas_of_a_rollout_with_older_containers_left_say_so() -> None:
    """The rollout's containers removed while the previous version's remain: failed at the deadline, saying why."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    run(started("b", "2.0.0", 200), InstanceGone(205, "b")).tick(800)
    assert (run.status, run.d().rollout.reason) == (
        Status.FAILED,
        f"not healthy within the progress deadline: {REMOVED}",
    )


def test_new_version_starts_rollout_and_bumps_revision() -> None:
    """A container with another version starts rollout 2; the old one's events do not matter."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    run(started("b", "1.1.0", 200))
    assert (run.d().rollout.revision, run.d().rollout.version, run.status) == (2, "1.1.0", Status.IN_PROGRESS)
    # The old version is stopped and removed during the rollout: not a failure.
    run(InstanceStopRequested(201, "a"), InstanceExited(202, "a", 137), InstanceGone(203, "a"))
    assert run.status is Status.IN_PROGRESS
    run.tick(210)
    assert run.status is Status.SUCCESS
    assert [h.version for h in run.d().history] == ["1.1.0", "1.0.0"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (InstanceExited(105, "b", 1), "exited with code 1"),
        (InstanceExited(105, "b", 0), "exited with code 0"),
        (InstanceOOMKilled(105, "b"), "OOM-killed"),
        (InstanceHealth(105, "b", Health.UNHEALTHY), "turned unhealthy"),
    ],
)
def test_failure_before_success(change: Observation, reason: str) -> None:
    """A new-version container that exits, is OOM-killed or turns unhealthy fails the rollout."""
    run = Run()(started("a", "1.0.0", 10)).tick(21)
    run(started("b", "2.0.0", 100, healthcheck=True), change)
    assert run.status is Status.FAILED
    assert reason in run.d().rollout.reason
    assert run.d().durations.count == 2


def test_restart_loop_fails_rollout() -> None:
    """Restarting repeatedly (Docker's RestartCount at the limit) is a failure."""
    run = Run()(started("a", "1.0.0", 100, restarts=2))
    assert run.status is Status.IN_PROGRESS
    run(started("a", "1.0.0", 102, created_at=100, restarts=3))
    assert run.status is Status.FAILED
    assert "restarted 3 times" in run.d().rollout.reason


def test_progress_deadline() -> None:
    """No success within the progress deadline is a failure, at the deadline."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True))
    run.tick(699)
    assert run.status is Status.IN_PROGRESS
    run.tick(700)
    assert run.status is Status.FAILED
    assert "deadline" in run.d().rollout.reason


def test_deadline_and_stable_time_from_labels() -> None:
    """Per-deployment tuning labels override the configured stable time and deadline."""
    run = Run()(started("a", "1.0.0", 100, stable_seconds=2.0))
    run.tick(102)
    assert run.status is Status.SUCCESS
    run(started("b", "2.0.0", 200, healthcheck=True, progress_deadline_seconds=30.0))
    run.tick(230)
    assert run.status is Status.FAILED


CREATED = 1_796_068_041.0  # the "deadline after 1796068041 s": a timestamp of 0, seen at this time


def labelled(timestamp: str, *, at: float = CREATED) -> InstanceSeen:
    """A container started at ``at`` with a deployment.timestamp label, read as the Docker source reads it."""
    parsed = labels.parse({labels.NAME: API.name, labels.ENVIRONMENT: API.environment, labels.VERSION: "1.0.0",
                           labels.TIMESTAMP: timestamp}, image="shop/api:1.0.0", image_id="", created_at=at, now=at,
                          settings=SETTINGS.labels)  # fmt: skip
    assert parsed.identity is not None
    return InstanceSeen(at, Instance(id="a", identity=parsed.identity, running=True, running_since=at))


@pytest.mark.parametrize(
    ("timestamp", "started_at"),
    [
        ("0", CREATED),  # not a time: a warning (test_labels) and the creation time
        ("1000", CREATED),
        (str(CREATED - 2 * 3600), CREATED),  # more than labels.max_timestamp_age_seconds before the creation
        (str(CREATED - 17 * 60), CREATED - 17 * 60),  # a CI job's start 17 minutes before: the duration counts it
    ],
)
def test_a_past_timestamp_label_neither_fails_the_rollout_nor_skews_its_duration(
    timestamp: str, started_at: float
) -> None:
    """The deadline runs from when the rollout was seen; the label sets the start for the duration only
    when plausible. Before, each of these failed at once ("not healthy within the progress deadline")."""
    run = Run()(labelled(timestamp))
    assert run.d().rollout.started_at == started_at
    assert run.d().rollout.deadline_at == CREATED + 600
    assert run.status is Status.IN_PROGRESS
    run.tick(CREATED + 10)
    assert run.status is Status.SUCCESS
    assert run.d().durations.total == CREATED + 10 - started_at


def test_a_past_timestamp_label_still_fails_at_the_deadline() -> None:
    """A rollout with a timestamp 17 minutes old gets the whole progress deadline from its creation, no more."""
    seen = labelled(str(CREATED - 17 * 60))
    never_healthy = dataclasses.replace(seen.instance, has_healthcheck=True, health=Health.STARTING)
    run = Run()(InstanceSeen(seen.at, never_healthy))
    assert run.d().rollout.started_at == CREATED - 17 * 60
    run.tick(CREATED + 599)
    assert run.status is Status.IN_PROGRESS
    run.tick(CREATED + 600)
    assert (run.status, run.d().rollout.reason) == (Status.FAILED, "not healthy within the progress deadline")


def test_a_report_started_long_before_gets_the_whole_deadline() -> None:
    """A job reporting in_progress with the time it began (its build took an hour) is judged from the report."""
    run = Run()(reported("1.0.0", "in_progress", 5000, started_at=1400))
    assert run.d().rollout.started_at == 1400
    run.tick(5599)
    assert run.status is Status.IN_PROGRESS
    run.tick(5600)
    assert (run.status, run.d().rollout.reason) == (Status.FAILED, "no final report within the progress deadline")


def test_stop_requested_exit_is_not_a_crash() -> None:
    """An exit after a stop request (docker stop) is not a failure of the rollout."""
    run = Run()(started("a", "1.0.0", 100), started("b", "1.0.0", 100.2))
    run(InstanceStopRequested(101, "b"), InstanceExited(101.5, "b", 143))
    assert run.status is Status.IN_PROGRESS
    run.tick(110)
    assert run.status is Status.SUCCESS  # the remaining replica counts


def test_after_success_failures_change_health_not_status() -> None:
    """Once successful, a dying or unhealthy container changes health, not the rollout's status."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True), InstanceHealth(101, "a", Health.HEALTHY))
    assert is_healthy(run.d(), settings=SETTINGS)
    run(InstanceHealth(150, "a", Health.UNHEALTHY))
    assert run.status is Status.SUCCESS
    assert health_checks(run.d(), settings=SETTINGS)[CHECK_HEALTHCHECK] is False
    assert not is_healthy(run.d(), settings=SETTINGS)
    run(InstanceExited(160, "a", 1))
    assert run.status is Status.SUCCESS
    assert health_checks(run.d(), settings=SETTINGS)[CHECK_RUNNING] is False


def test_late_exit_before_stable_time_revises_success_to_failed() -> None:
    """Regression (load test): a tick judged success while the exit, 0.7 s after start, waited to be read."""
    run = Run()(started("a", "1.0.0", 100))
    run.tick(110.5)  # stable time (10 s) seemingly up; the exit below happened at 100.7
    assert run.status is Status.SUCCESS
    run(InstanceExited(100.7, "a", 1), now=111)
    assert run.status is Status.FAILED
    assert "before its stable time was up" in run.d().rollout.reason
    assert run.types[-1] is RolloutRevised
    assert run.d().durations.count == 1  # the rollout finished once


def test_late_inspect_of_an_exit_before_stable_time_revises_success() -> None:
    """Regression (load test): the success was judged, then an inspect (for a later event) showed the exit."""
    run = Run()(started("a", "1.0.0", 100)).tick(110.5)
    exited = dataclasses.replace(
        run.d().members["a"].instance, running=False, running_since=None, exit_code=1, exited_at=100.7
    )
    run(InstanceSeen(100.1, exited), now=111)
    assert run.status is Status.FAILED
    run(InstanceExited(100.7, "a", 1), now=111.2)  # the die event, read last
    assert run.status is Status.FAILED
    assert run.types.count(RolloutRevised) == 1


def test_exit_after_stable_time_keeps_success() -> None:
    """A container that crashes after its stable time was up does not revise the success."""
    run = Run()(started("a", "1.0.0", 100)).tick(110.5)
    run(InstanceExited(110.2, "a", 1), now=111)
    assert run.status is Status.SUCCESS


def test_requested_stop_before_stable_time_keeps_success() -> None:
    """A stop that was asked for is no failure, however late it is read."""
    run = Run()(started("a", "1.0.0", 100)).tick(110.5)
    run(InstanceStopRequested(104, "a"), InstanceExited(105, "a", 143), now=111)
    assert run.status is Status.SUCCESS


def test_late_exit_with_healthcheck_keeps_success() -> None:
    """A success from a `healthy` event is in stream order: an exit read after it is after it."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True), InstanceHealth(100.5, "a", Health.HEALTHY))
    run(InstanceExited(100.7, "a", 1))
    assert run.status is Status.SUCCESS


def test_health_checks_each_series() -> None:
    """Each check of the current rollout is reported on its own."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    assert health_checks(run.d(), settings=SETTINGS) == {CHECK_RUNNING: True, CHECK_OOM: True, CHECK_RESTARTS: True}
    run(InstanceOOMKilled(120, "a"))
    assert health_checks(run.d(), settings=SETTINGS)[CHECK_OOM] is False
    run(started("a", "1.0.0", 130, created_at=100, restarts=5))
    checks = health_checks(run.d(), settings=SETTINGS)
    assert checks[CHECK_RESTARTS] is False and checks[CHECK_OOM] is True


def test_rollback_to_lower_version_counts() -> None:
    """v1 → v2 → v3 (failed) → v2 is a rollback, counted once, and succeeds."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    run(started("b", "2.0.0", 200)).tick(210)
    run(started("c", "3.0.0", 300), InstanceExited(301, "c", 1))
    assert (run.status, run.d().rollout.revision, run.d().rollbacks) == (Status.FAILED, 3, 0)
    run(started("d", "2.0.0", 400))
    assert run.d().rollout.rollback is True
    assert (run.d().rollout.revision, run.d().rollbacks) == (4, 1)
    run.tick(410)
    assert run.status is Status.SUCCESS
    assert [h.version for h in run.d().history] == ["2.0.0", "3.0.0", "1.0.0"]


def test_rollback_for_unordered_versions_uses_history() -> None:
    """For SHAs, going back to a version deployed before the current one is a rollback."""
    run = Run()(started("a", "9f1c2ab", 100)).tick(110)
    run(started("b", "77aa0c1", 200)).tick(210)
    assert run.d().rollbacks == 0
    run(started("c", "9f1c2ab", 300))
    assert run.d().rollbacks == 1


def test_redeploying_a_failed_version_is_a_new_rollout() -> None:
    """A new container of the version that just failed is another try, not a rollback."""
    run = Run()(started("a", "1.0.0", 100), InstanceExited(101, "a", 1))
    assert run.status is Status.FAILED
    run(started("b", "1.0.0", 200))
    assert (run.d().rollout.revision, run.status, run.d().rollbacks) == (2, Status.IN_PROGRESS, 0)
    run.tick(210)
    assert run.status is Status.SUCCESS


def test_scale_up_after_success_joins_without_new_rollout() -> None:
    """Another replica of the deployed version does not start a rollout."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    run(started("b", "1.0.0", 200))
    assert (run.d().rollout.revision, run.status) == (1, Status.SUCCESS)
    assert run.d().rollout.members == {"a", "b"}


def test_superseded_rollout_is_not_observed_as_duration() -> None:
    """A rollout replaced before it finished records no duration."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True), started("b", "2.0.0", 105))
    assert RolloutSuperseded in run.types
    run.tick(115)
    assert run.d().durations.count == 1


@pytest.mark.parametrize(
    ("override", "expected"),
    [("success", Status.SUCCESS), ("failed", Status.FAILED), ("in_progress", Status.IN_PROGRESS)],
)
def test_status_override_label_wins(override: str, expected: Status) -> None:
    """deployment.status from deploy tooling replaces the automatic rules, deadline included."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True, status_override=Status[override.upper()]))
    run(InstanceHealth(101, "a", Health.UNHEALTHY))
    run.tick(10_000)
    assert run.status is expected


def test_out_of_order_observations_are_ignored() -> None:
    """An observation older than the last one applied to a container changes nothing."""
    run = Run()(started("a", "1.0.0", 100))
    before = run.state
    run(InstanceExited(99, "a", 1))
    assert run.state is before
    assert run.types[-1] is StaleObservation
    run.tick(110)
    assert run.status is Status.SUCCESS


def test_late_container_older_than_current_rollout_starts_nothing() -> None:
    """A container created before the current rollout's, arriving late, is a leftover."""
    run = Run()(started("b", "2.0.0", 200)).tick(210)
    run(started("a", "1.0.0", 215, created_at=100))
    assert (run.d().rollout.version, run.d().rollout.revision, run.d().rollbacks) == ("2.0.0", 1, 0)


def test_unknown_instance_changes_are_ignored() -> None:
    """Events of containers the state does not own leave it untouched."""
    run = Run()(started("a", "1.0.0", 100))
    before = run.state
    run(InstanceExited(120, "zzz", 1), InstanceGone(121, "zzz"))
    assert run.state is before


def test_gone_deployment_stays_then_is_dropped() -> None:
    """With all containers gone it is kept (health 0) for the retention time, then dropped."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(gone_seconds=60))
    run = Run(settings)(started("a", "1.0.0", 100)).tick(110)
    run(InstanceGone(200, "a"))
    assert run.d().gone_since == 200
    assert not is_healthy(run.d(), settings=settings)
    run.tick(259)
    assert API in run.state.deployments
    run.tick(260)
    assert API not in run.state.deployments
    assert DeploymentDropped in run.types


def test_cap_on_deployments_rejects_new_ones() -> None:
    """Beyond max_deployments, new deployments are rejected with a note; known ones go on."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(max_deployments=1))
    other = DeploymentKey("web", "production")
    run = Run(settings)(started("a", "1.0.0", 100), started("w", "1.0.0", 101, key=other))
    assert list(run.state.deployments) == [API]
    assert run.types.count(DeploymentRejected) == 1
    run(InstanceExited(102, "w", 1))  # the rejected container's events are ignored
    run(started("b", "2.0.0", 200))
    assert run.d().rollout.revision == 2


def test_history_keeps_last_distinct_versions() -> None:
    """deployment_version_info keeps the last N distinct (version, commit) pairs."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(history_versions=3))
    run = Run(settings)
    for n, version in enumerate(["1", "2", "3", "2", "4"]):
        run(started(f"c{n}", version, 100 + 100 * n)).tick(111 + 100 * n)
    assert [h.version for h in run.d().history] == ["4", "2", "3"]


def test_cpu_counter_survives_container_replacement_and_restart() -> None:
    """CPU seconds stay monotonic when containers are replaced or their counters restart."""
    run = Run()(started("a", "1.0.0", 100))
    run(UsageSampled(110, {"a": Usage(5.0, 1000)}))
    assert run.d().cpu_seconds == 5.0
    run(UsageSampled(120, {"a": Usage(1.0, 1000)}))  # restarted: its cgroup counts from zero
    assert run.d().cpu_seconds == 6.0
    run(started("b", "2.0.0", 130), UsageSampled(140, {"a": Usage(2.0, 1000), "b": Usage(3.0, 500)}))
    assert run.d().cpu_seconds == 10.0
    run(InstanceGone(150, "a"))
    assert run.d().cpu_seconds == 10.0
    assert run.d().memory_bytes == 500


def test_an_unchanged_sample_leaves_the_state_as_it_was() -> None:
    """Idle containers (same CPU and memory as last time) make no new state: nothing to render or save."""
    run = Run()(started("a", "1.0.0", 100), UsageSampled(110, {"a": Usage(5.0, 1000)}))
    before = run.state
    run(UsageSampled(125, {"a": Usage(5.0, 1000)}))
    assert run.state is before
    run(UsageSampled(140, {"a": Usage(5.5, 1000)}))
    assert run.state is not before and run.d().cpu_seconds == 5.5


def test_cpu_counter_exact_when_a_container_goes() -> None:
    """Regression: 0.3 retired + (0.2 + 0.1) live read 0.6000000000000001, then 0.6 once 0.2 retired: a reset."""
    run = Run()(started("a", "1.0.0", 100), started("b", "1.0.0", 100), started("c", "1.0.0", 100))
    run(UsageSampled(110, {"a": Usage(0.3, 0), "b": Usage(0.2, 0), "c": Usage(0.1, 0)}), InstanceGone(111, "a"))
    before = run.d().cpu_seconds
    run(InstanceGone(112, "b"))
    assert run.d().cpu_seconds >= before
    assert run.d().cpu_seconds == 0.6


def test_unusable_usage_sample_is_ignored() -> None:
    """A sample with NaN, infinite, negative or impossibly large numbers changes nothing (and does not raise)."""
    run = Run()(started("a", "1.0.0", 100), UsageSampled(110, {"a": Usage(2.0, 100)}))
    for bad in (Usage(math.nan, 1), Usage(math.inf, 1), Usage(-1.0, 1), Usage(1e300, 1), Usage(3.0, math.nan)):
        run(UsageSampled(120, {"a": bad}))
    assert run.d().cpu_seconds == 2.0
    assert run.d().memory_bytes == 100


def test_memory_counts_only_running_containers() -> None:
    """A stopped container's last memory sample is not part of the working set."""
    run = Run()(started("a", "1.0.0", 100), started("b", "1.0.0", 100))
    run(UsageSampled(110, {"a": Usage(1, 100), "b": Usage(1, 200)}), InstanceExited(111, "b", 0))
    assert run.d().memory_bytes == 100


def test_resync_rebuilds_from_what_exists() -> None:
    """First sync: one rollout to the newest version; older leftovers are members, not rollouts."""
    old = started("a", "1.0.0", 50).instance
    old = dataclasses.replace(old, running=False, running_since=None, exit_code=0, exit_requested=True)
    new = started("b", "2.0.0", 100).instance
    replica = started("c", "2.0.0", 100.5).instance
    run = Run()(Resync(1000, Origin.CONTAINER, (old, new, replica)), now=1000)
    rollout = run.d().rollout
    assert (rollout.revision, rollout.version, rollout.members) == (1, "2.0.0", {"b", "c"})
    assert run.status is Status.SUCCESS
    assert run.d().durations.count == 0  # not witnessed: its duration is unknown
    assert set(run.d().members) == {"a", "b", "c"}


def test_resync_removes_missing_and_detects_changes_while_away() -> None:
    """After a reconnect: containers missing are gone, new ones are a rollout, a crash is a failure."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    crashed = dataclasses.replace(started("b", "2.0.0", 200).instance, running=False, exit_code=1)
    run(Resync(300, Origin.CONTAINER, (crashed,)), now=300)
    assert "a" not in run.d().members
    assert (run.d().rollout.revision, run.status) == (2, Status.FAILED)


def test_resync_deadline_runs_from_discovery() -> None:
    """A rollout found by a resync gets its deadline from when it was found, not from creation."""
    stuck = started("a", "1.0.0", 100, healthcheck=True).instance
    run = Run()(Resync(5000, Origin.CONTAINER, (stuck,)), now=5000)
    assert run.status is Status.IN_PROGRESS
    run.tick(5600)
    assert run.status is Status.FAILED


def test_resync_of_known_container_is_idempotent() -> None:
    """Resyncing the same facts twice changes nothing visible."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    instance = run.d().members["a"].instance
    run(Resync(200, Origin.CONTAINER, (instance,)), now=200)
    run(Resync(300, Origin.CONTAINER, (instance,)), now=300)
    assert (run.d().rollout.revision, run.status, run.d().rollbacks) == (1, Status.SUCCESS, 0)


def test_unchanged_state_is_the_same_object() -> None:
    """A tick that changes nothing returns the very same state (cheap for caches)."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    before = run.state
    run.tick(112)
    assert run.state is before


@pytest.mark.parametrize(
    ("new", "current", "history", "expected"),
    [
        ("1.9.0", "1.10.0", [], True),
        ("1.10.0", "1.9.0", [], False),
        ("v2.0.0", "2.0.0", [], False),
        ("3.0.0-beta", "3.0.0", [], True),
        ("abc1234", "def5678", ["def5678", "abc1234"], True),
        ("abc1234", "def5678", ["def5678"], False),
        ("latest", "1.0.0", ["1.0.0"], False),
    ],
)
def test_is_rollback(new: str, current: str, history: list[str], expected: bool) -> None:
    """Rollback: ordered versions by order, unordered ones by deploy history."""
    seen = [VersionSeen(v, "", n, 0.0) for n, v in enumerate(history)]
    assert is_rollback(new, current, seen) is expected


def test_durations_histogram_buckets() -> None:
    """Durations land in the first bucket that holds them; beyond the last, in +Inf."""
    d = Histogram.empty(DURATION_BUCKETS).observe(3).observe(5).observe(7).observe(10_000)
    assert d.counts[0] == 2 and d.counts[1] == 1 and d.counts[-1] == 1
    assert d.count == 4 and d.total == 10_015


# -- reports from deploy tooling (the CI/CD API)


def test_report_announces_then_finishes_a_rollout() -> None:
    """in_progress starts revision 1 judged by the tooling; success finishes it with its duration."""
    run = Run()(reported("1.0.0", "in_progress", 100))
    rollout = run.d().rollout
    assert (rollout.revision, rollout.status, rollout.judge, rollout.image) == (
        1,
        Status.IN_PROGRESS,
        Judge.DEPLOY_TOOLING,
        "",
    )
    run.tick(500)
    assert run.status is Status.IN_PROGRESS  # no container rules; the deadline is further away
    run(reported("1.0.0", "success", 160))
    assert (run.status, run.d().rollout.reason, run.d().rollout.finished_at) == (Status.SUCCESS, REPORTED_REASON, 160)
    assert (run.d().durations.count, run.d().durations.total) == (1, 60)
    assert run.types == [RolloutStarted, RolloutFinished]


def test_report_only_deployment_has_no_health_checks() -> None:
    """Without containers there is nothing to check: no check series, health passes."""
    run = Run()(reported("1.0.0", "success", 100))
    assert health_checks(run.d(), settings=SETTINGS) == {}
    assert is_healthy(run.d(), settings=SETTINGS)


def test_final_report_of_unannounced_version_starts_and_finishes_it() -> None:
    """A success never announced is one revision started and finished at once; with started_at, timed."""
    run = Run()(reported("1.0.0", "success", 150, started_at=100, finished_at=140))
    rollout = run.d().rollout
    assert (rollout.revision, rollout.status, rollout.started_at, rollout.finished_at) == (1, Status.SUCCESS, 100, 140)
    assert (run.d().durations.count, run.d().durations.total) == (1, 40)
    run(reported("2.0.0", "failed", 300))
    rollout = run.d().rollout
    assert (rollout.revision, rollout.status, rollout.started_at, rollout.finished_at) == (2, Status.FAILED, 300, 300)
    assert run.d().durations.count == 1  # no start given: the duration is unknown


def test_reported_rollback_counts_and_keeps_history() -> None:
    """Reports go through the same rollback rules: back to an older version is a rollback."""
    run = Run()(reported("1.0.0", "success", 100), reported("2.0.0", "success", 200))
    run(reported("1.0.0", "in_progress", 300))
    assert (run.d().rollout.revision, run.d().rollout.rollback, run.d().rollbacks) == (3, True, 1)
    assert [(h.version, h.commit) for h in run.d().history] == [("1.0.0", "c-1.0.0"), ("2.0.0", "c-2.0.0")]


def test_containers_join_the_announced_rollout() -> None:
    """Containers of the announced version join it; its status stays the tooling's to report."""
    run = Run()(reported("2.0.0", "in_progress", 100), started("a", "2.0.0", 105, healthcheck=True))
    rollout = run.d().rollout
    assert (rollout.revision, rollout.members, rollout.image) == (1, {"a"}, "shop/api:2.0.0")
    run(InstanceHealth(110, "a", Health.HEALTHY)).tick(200)
    assert run.status is Status.IN_PROGRESS  # healthy, but the tooling has not said success yet
    run(InstanceExited(210, "a", 1))
    assert run.status is Status.IN_PROGRESS
    assert not is_healthy(run.d(), settings=SETTINGS)  # a crash shows in health
    run(reported("2.0.0", "failed", 220))
    assert (run.status, run.d().durations.total, run.d().rollout.revision) == (Status.FAILED, 120, 1)


def test_report_takes_over_a_rollout_its_containers_started() -> None:
    """in_progress of the version the containers already roll out makes the tooling its judge."""
    run = Run()(started("a", "1.0.0", 100), reported("1.0.0", "in_progress", 102))
    assert (run.d().rollout.revision, run.d().rollout.judge) == (1, Judge.DEPLOY_TOOLING)
    run.tick(150)
    assert run.status is Status.IN_PROGRESS  # the stable time no longer decides


def test_final_report_finishes_a_container_rollout() -> None:
    """A final report about the rollout in progress decides it, timed from the containers' start."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True), reported("1.0.0", "failed", 130))
    assert (run.status, run.d().rollout.reason, run.d().durations.total) == (Status.FAILED, REPORTED_REASON, 30)


def test_final_report_corrects_a_finished_rollout() -> None:
    """After the rules said success, a failed report corrects the status; the duration is not counted again."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    assert run.status is Status.SUCCESS
    run(reported("1.0.0", "failed", 140))
    assert (run.status, run.d().rollout.revision, run.d().rollout.finished_at) == (Status.FAILED, 1, 111)
    assert run.d().durations.count == 1
    assert run.events[-1] == RolloutRevised(
        key=API, at=140, revision=1, version="1.0.0", before=Status.SUCCESS, after=Status.FAILED,
        reason=REPORTED_REASON, by=Judge.DEPLOY_TOOLING,
    )  # fmt: skip
    assert run.events[-1].message == "revision 1 (1.0.0) corrected to failed by deploy tooling"
    assert run.d().rollout.judge is Judge.DEPLOY_TOOLING


def test_repeated_report_changes_nothing_but_its_time() -> None:
    """The same final report twice leaves the rollout as it was; only reported_at moves."""
    run = Run()(reported("1.0.0", "success", 100))
    rollout = run.d().rollout
    run(reported("1.0.0", "success", 110))
    assert run.d().rollout is rollout
    assert run.d().reported_at == 110


def test_report_older_than_current_rollout_is_stale() -> None:
    """A report of another version from before the current rollout began changes nothing."""
    run = Run()(started("b", "2.0.0", 200))
    before = run.state
    run(reported("1.0.0", "success", 300, started_at=150))
    run(reported("1.0.0", "failed", 300, finished_at=190))
    assert run.state is before
    assert run.types[-2:] == [StaleObservation, StaleObservation]


def test_in_progress_again_after_finish_is_another_try() -> None:
    """The finished version announced again is a new revision; late news of the finished one is not."""
    run = Run()(reported("1.0.0", "failed", 100, started_at=50))
    run(reported("1.0.0", "in_progress", 120, started_at=60))  # the same deploy, reported late
    assert (run.d().rollout.revision, run.status) == (1, Status.FAILED)
    run(reported("1.0.0", "in_progress", 200))
    assert (run.d().rollout.revision, run.status, run.d().rollbacks) == (2, Status.IN_PROGRESS, 0)


def test_reported_rollout_fails_at_the_deadline() -> None:
    """Announced but never finished (the job died): failed at the progress deadline, containers or not."""
    run = Run()(reported("1.0.0", "in_progress", 100))
    run.tick(699)
    assert run.status is Status.IN_PROGRESS
    run.tick(700)
    assert (run.status, run.d().rollout.reason) == (Status.FAILED, "no final report within the progress deadline")


def test_new_version_containers_after_a_report() -> None:
    """Containers of another version: older than the report, leftovers; newer, a new rollout."""
    run = Run()(reported("2.0.0", "in_progress", 100))
    run(started("old", "1.0.0", 110, created_at=90))
    assert (run.d().rollout.version, run.d().rollout.revision) == ("2.0.0", 1)
    run(started("new", "1.0.0", 120))
    assert (run.d().rollout.version, run.d().rollout.revision, run.d().rollbacks) == ("1.0.0", 2, 1)
    assert RolloutSuperseded in run.types
    assert run.d().rollout.judge is Judge.CONTAINERS


def test_report_only_deployment_is_dropped_after_the_report_retention() -> None:
    """No containers: kept for api.retention_seconds after the last report, then dropped."""
    settings = dataclasses.replace(SETTINGS, api=ApiSettings(retention_seconds=1000))
    run = Run(settings)(reported("1.0.0", "success", 100), reported("1.0.0", "success", 500))
    run.tick(1499)
    assert API in run.state.deployments
    run.tick(1500)
    assert API not in run.state.deployments
    assert run.types[-1] is DeploymentDropped


def test_reports_extend_retention_of_a_deployment_whose_containers_are_gone() -> None:
    """Containers gone and a report: dropped when both retention times have passed."""
    settings = dataclasses.replace(
        SETTINGS, retention=RetentionSettings(gone_seconds=60), api=ApiSettings(retention_seconds=1000)
    )
    run = Run(settings)(started("a", "1.0.0", 100), reported("1.0.0", "success", 110), InstanceGone(200, "a"))
    run.tick(500)
    assert API in run.state.deployments
    run.tick(1110)
    assert API not in run.state.deployments


def test_report_beyond_the_cap_is_rejected() -> None:
    """The deployment cap applies to reported deployments too."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(max_deployments=1))
    run = Run(settings)(started("a", "1.0.0", 100), reported("1.0.0", "success", 110, key=DeploymentKey("x", "y")))
    assert list(run.state.deployments) == [API]
    assert run.types[-1] is DeploymentRejected


# -- after a restart: the saved state, then a resync of what Docker has now


def restart(run: Run) -> Run:
    """The watcher stopped and started again: its state went through the state file."""
    run.state = store.decode(store.encode(run.state))
    return run


def test_restart_finds_a_rollout_that_finished_meanwhile_without_a_duration() -> None:
    """v2 in progress at the restart and healthy now: success, revision kept, no made-up duration."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    run(started("b", "2.0.0", 200, healthcheck=True), InstanceGone(201, "a"))
    restart(run)
    healthy = dataclasses.replace(run.d().members["b"].instance, health=Health.HEALTHY)
    run(Resync(900, Origin.CONTAINER, (healthy,)), now=900)
    assert (run.d().rollout.revision, run.status) == (2, Status.SUCCESS)
    assert run.d().durations.count == 1  # v1's only: v2 ended at some unknown time while away


def test_restart_a_rollout_finishing_after_the_resync_keeps_its_duration() -> None:
    """A rollout seen beginning before the restart and ending after it is timed from its start."""
    run = Run()(started("b", "2.0.0", 200, healthcheck=True))
    restart(run)
    run(Resync(250, Origin.CONTAINER, (run.d().members["b"].instance,)), now=250)
    run(InstanceHealth(260, "b", Health.HEALTHY))
    assert run.status is Status.SUCCESS
    assert (run.d().durations.count, run.d().durations.total) == (1, 60)


def test_restart_detects_a_crash_while_away() -> None:
    """A container of the rollout in progress that exited while the watcher was down fails it."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    run(started("b", "2.0.0", 200, healthcheck=True))
    restart(run)
    crashed = dataclasses.replace(run.d().members["b"].instance, running=False, running_since=None, exit_code=3)
    run(Resync(900, Origin.CONTAINER, (run.d().members["a"].instance, crashed)), now=900)
    assert (run.d().rollout.revision, run.status, run.d().rollbacks) == (2, Status.FAILED, 0)
    assert "exited with code 3" in run.d().rollout.reason


def test_restart_detects_a_rollback_while_away_and_keeps_counters() -> None:
    """v2 replaced by v1 while down: revision 3, one rollback more, CPU of the gone container kept."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    run(started("b", "2.0.0", 200), UsageSampled(205, {"b": Usage(7.5, 1000)}), InstanceGone(206, "a"))
    restart(run)
    again = started("c", "1.0.0", 500).instance
    run(Resync(600, Origin.CONTAINER, (again,)), now=600)
    d = run.d()
    assert (d.rollout.revision, d.rollout.version, d.rollout.rollback, d.rollbacks) == (3, "1.0.0", True, 1)
    assert set(d.members) == {"c"} and set(run.state.owners) == {"c"}
    assert d.cpu_seconds == 7.5
    assert [h.version for h in d.history] == ["1.0.0", "2.0.0"]


def test_restart_trusts_the_list_over_a_clock_that_went_back() -> None:
    """Saved times ahead of the daemon's clock (reboot, other host) do not make the relist stale."""
    run = Run()(started("a", "1.0.0", 10_000, healthcheck=True))
    restart(run)
    exited = dataclasses.replace(run.d().members["a"].instance, running=False, running_since=None, exit_code=1)
    run(Resync(500, Origin.CONTAINER, (exited,)), now=500)
    assert run.status is Status.FAILED
    assert StaleObservation not in run.types
    run(InstanceGone(501, "a"))  # later events are on the daemon's clock again, not stale either
    assert run.d().members == {}


def test_restart_deployment_gone_meanwhile_is_kept_for_retention() -> None:
    """All containers removed while down: the deployment stays exported (health 0), counters kept."""
    run = Run()(started("a", "1.0.0", 100), UsageSampled(105, {"a": Usage(2.0, 10)})).tick(110)
    restart(run)
    run(Resync(1000, Origin.CONTAINER, ()), now=1000)
    assert (run.d().gone_since, run.d().cpu_seconds, run.d().rollout.revision) == (1000, 2.0, 1)
    run.tick(1000 + SETTINGS.retention.gone_seconds)
    assert API not in run.state.deployments


def test_restart_judges_replicas_on_the_whole_list() -> None:
    """Past the deadline, replicas all healthy now: success, whichever is listed first."""
    run = Run()(started("a", "2.0.0", 100, healthcheck=True), started("b", "2.0.0", 100.5, healthcheck=True))
    restart(run)
    now = [dataclasses.replace(run.d().members[i].instance, health=Health.HEALTHY) for i in ("a", "b")]
    run(Resync(5000, Origin.CONTAINER, tuple(now)), now=5000)
    assert (run.d().rollout.revision, run.status) == (1, Status.SUCCESS)


def test_restart_with_other_label_settings_moves_a_container() -> None:
    """A container read as another deployment after a settings change leaves the old one, CPU kept there."""
    run = Run()(started("a", "1.0.0", 100), UsageSampled(105, {"a": Usage(3.0, 10)})).tick(110)
    restart(run)
    staging = DeploymentKey("api", "staging")
    moved = dataclasses.replace(
        run.d().members["a"].instance, identity=dataclasses.replace(identity("1.0.0", at=100), key=staging)
    )
    run(Resync(200, Origin.CONTAINER, (moved,)), now=200)
    assert run.d().members == {} and run.d().cpu_seconds == 3.0
    assert set(run.d(staging).members) == {"a"} and run.state.owners == {"a": staging}
