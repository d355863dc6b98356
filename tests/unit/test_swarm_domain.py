"""Swarm services in the state machine: rollouts judged by the update state, rollbacks, scale,
removal, task containers attributed to their service, and the leader's hand-over."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import examples
from tests.unit.builders import SETTINGS, SHOP, Run, identity, service
from tests.unit.readside import NOW, read_side
from watcher.domain.events import RolloutFinished, RolloutStarted
from watcher.domain.index import Index
from watcher.domain.model import (
    DeploymentKey,
    Initiator,
    Instance,
    Judge,
    Origin,
    Status,
    UpdateState,
    Usage,
)
from watcher.domain.observations import (
    InstanceGone,
    InstanceSeen,
    Observation,
    Resync,
    ServiceGone,
    ServiceSeen,
    ServicesListed,
    ServicesReleased,
    Tick,
    UsageSampled,
)
from watcher.domain.rules import SERVICE_REMOVED
from watcher.exposition.families import DeploymentCollector
from watcher.persistence.codec import decode, encode
from watcher.web.readapi import ReadApi

WEB = DeploymentKey("web", "production")  # what the task containers' own labels say
MANUAL = "manually requested rollback"  # what Swarm says of a rollback a person asked for


def task(cid: str, version: str, at: float, *, key: DeploymentKey = WEB) -> InstanceSeen:
    """A task container of `web`, whose own labels give ``key``."""
    return InstanceSeen(
        at, Instance(id=cid, identity=identity(version, at=at, key=key), running=True, running_since=at,
                     service_id="svc1"),
    )  # fmt: skip


def test_created_service_succeeds_when_replicas_run() -> None:
    """No UpdateStatus: in progress until the running tasks reach the desired ones, judged by the orchestrator."""
    run = Run()(service(100, "1.0", running=1))
    d = run.state.deployments[SHOP]
    assert (d.rollout.status, d.rollout.judge, d.rollout.revision) == (Status.IN_PROGRESS, Judge.ORCHESTRATOR, 1)
    run(service(105, "1.0", running=3, changed_at=100))
    assert run.state.deployments[SHOP].rollout.status is Status.SUCCESS
    assert run.state.deployments[SHOP].durations.count == 1


def test_created_service_fails_at_the_progress_deadline() -> None:
    """Replicas that never reach the desired count fail the rollout at the deadline, saying how many ran."""
    run = Run()(service(100, "1.0", running=1)).tick(100 + 601)
    rollout = run.state.deployments[SHOP].rollout
    assert rollout.status is Status.FAILED
    assert rollout.reason == "1 of 3 replicas running within the progress deadline"


def test_update_completed_is_a_success() -> None:
    """updating → in progress as a new revision; completed with all replicas → success."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING, message="update in progress"))
    d = run.state.deployments[SHOP]
    assert (d.rollout.revision, d.rollout.status, d.rollout.version) == (2, Status.IN_PROGRESS, "1.1")
    run(service(230, "1.1", state=UpdateState.COMPLETED, changed_at=200, finished_at=228))
    d = run.state.deployments[SHOP]
    assert (d.rollout.status, d.rollout.finished_at, d.rollbacks) == (Status.SUCCESS, 228, 0)


def test_completed_waits_for_the_replicas() -> None:
    """completed while a replica is still starting: success only once they all run."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.COMPLETED, running=2))
    assert run.state.deployments[SHOP].rollout.status is Status.IN_PROGRESS
    run(service(203, "1.1", state=UpdateState.COMPLETED, running=3, changed_at=200))
    assert run.state.deployments[SHOP].rollout.status is Status.SUCCESS


def test_paused_update_fails_with_the_message() -> None:
    """paused → failed, the orchestrator's message as the reason."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING))
    run(service(210, "1.1", state=UpdateState.PAUSED, message="update paused due to failure", changed_at=200))
    rollout = run.state.deployments[SHOP].rollout
    assert (rollout.status, rollout.reason) == (Status.FAILED, "paused: update paused due to failure")


def test_automatic_rollback_fails_the_update_and_recovers() -> None:
    """The orchestrator rolls a failing update back: the update fails, the rollback is a new rollout
    back to the old version, counted, and a success once completed with its replicas running. DORA
    counts one failure, one change failure and one recovery (docs/dora.md). Before, the completed
    rollback failed too: failed 2, change failures 2, no recovery."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING))
    run(service(210, "1.0", state=UpdateState.ROLLBACK_STARTED, message="update rolled back due to failure"))
    d = run.state.deployments[SHOP]
    assert (d.rollout.revision, d.rollout.version, d.rollout.rollback, d.rollbacks) == (3, "1.0", True, 1)
    assert d.rollout.status is Status.IN_PROGRESS
    finished = [e for e in run.events if isinstance(e, RolloutFinished)]
    assert (finished[-1].revision, finished[-1].status) == (2, Status.FAILED)
    run(service(220, "1.0", state=UpdateState.ROLLBACK_COMPLETED, message="rollback completed", changed_at=210,
                finished_at=218))  # fmt: skip
    d = run.state.deployments[SHOP]
    assert (d.rollout.status, d.rollout.reason, d.rollbacks) == (Status.SUCCESS, "rolled back: rollback completed", 1)
    f = d.dora
    assert (f.successes, f.failures, f.change_failures, f.failing_since) == (2, 1, 1, None)
    assert (f.recoveries.count, f.recoveries.total) == (1, 218 - 210)


def test_a_manual_rollback_of_a_manual_rollback_steps_forward() -> None:
    """`docker service rollback` twice: Swarm swaps back to the spec the first rollback left, a step
    forward again. The second is no rollback: not counted, and no change failure of the first."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.COMPLETED))
    for at, version in ((300, "1.0"), (400, "1.1")):
        run(service(at, version, state=UpdateState.ROLLBACK_STARTED, message=MANUAL, by=Initiator.PERSON))
        run(service(at + 5, version, state=UpdateState.ROLLBACK_COMPLETED, message="rollback completed",
                    changed_at=at))  # fmt: skip
    d = run.state.deployments[SHOP]
    assert (d.rollout.revision, d.rollout.version, d.rollout.status) == (4, "1.1", Status.SUCCESS)
    assert (d.rollout.rollback, d.rollbacks) == (False, 1)
    assert [e.rollback for e in run.events if isinstance(e, RolloutStarted)] == [False, False, True, False]
    assert (d.dora.successes, d.dora.failures, d.dora.change_failures) == (4, 0, 1)  # 1.1, rolled back once


def test_a_manual_rollback_of_unordered_versions_steps_forward_too() -> None:
    """The same with versions that have no order (commit SHAs): Swarm's rollback says which way."""
    run = Run()(service(100, "a1f"), service(200, "9c2", state=UpdateState.COMPLETED))
    for at, version in ((300, "a1f"), (400, "9c2"), (500, "a1f")):
        run(service(at, version, state=UpdateState.ROLLBACK_STARTED, message=MANUAL, by=Initiator.PERSON))
    assert [e.rollback for e in run.events if isinstance(e, RolloutStarted)] == [False, False, True, False, True]
    assert run.state.deployments[SHOP].rollbacks == 2


def test_manual_rollback_counts_and_succeeds() -> None:
    """`docker service rollback` of a finished update: a rollback, counted, success once completed."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.COMPLETED))
    run(service(300, "1.0", state=UpdateState.ROLLBACK_STARTED, message=MANUAL, by=Initiator.PERSON))
    run(service(305, "1.0", state=UpdateState.ROLLBACK_COMPLETED, message="rollback completed", changed_at=300))
    d = run.state.deployments[SHOP]
    assert (d.rollout.version, d.rollout.status, d.rollout.rollback, d.rollbacks) == ("1.0", Status.SUCCESS, True, 1)


def test_update_to_an_older_version_is_a_rollback() -> None:
    """Version order still applies: an update from 2.0 to 1.5 is a rollback."""
    run = Run()(service(100, "2.0"), service(200, "1.5", state=UpdateState.UPDATING))
    assert run.state.deployments[SHOP].rollbacks == 1


def test_scale_is_no_new_revision() -> None:
    """A scale (same template, no update state) keeps the revision; replicas follow."""
    run = Run()(service(100, "1.0"), service(200, "1.0", desired=5, running=4))
    d = run.state.deployments[SHOP]
    assert (d.rollout.revision, d.rollout.status) == (1, Status.SUCCESS)
    assert d.service is not None and (d.service.desired, d.service.running) == (5, 4)
    assert not [e for e in run.events if isinstance(e, RolloutStarted) and e.revision == 2]


def test_removed_service_leaves_after_retention() -> None:
    """A removed service's deployment stays for retention.gone_seconds, then is dropped; a live
    one with no task on this node is kept."""
    run = Run()(service(100, "1.0")).tick(100 + 4000)
    assert SHOP in run.state.deployments
    run(ServiceGone(5000, "svc1")).tick(5000 + SETTINGS.retention.gone_seconds - 1)
    assert SHOP in run.state.deployments
    run.tick(5000 + SETTINGS.retention.gone_seconds)
    assert SHOP not in run.state.deployments


def test_a_service_removed_during_an_update_fails_at_its_deadline() -> None:
    """Removed while updating: the update's verdict comes at its deadline, saying why. Before, it stayed
    in progress (and `updating` on /metrics) until retention dropped it."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING, running=1))
    run(ServiceGone(210, "svc1")).tick(200 + 599)
    assert run.state.deployments[SHOP].rollout.status is Status.IN_PROGRESS
    run.tick(200 + 600)
    rollout = run.state.deployments[SHOP].rollout
    assert (rollout.status, rollout.reason) == (Status.FAILED, SERVICE_REMOVED)
    assert run.state.deployments[SHOP].dora.failures == 1


def test_a_removed_service_exports_no_replicas_nor_update_state() -> None:
    """A removed service has no replicas and no update running: those series leave with it, not stale."""

    def series() -> set[str]:
        registry = CollectorRegistry()
        registry.register(DeploymentCollector(snapshot=lambda: run.state, settings=SETTINGS))
        return {line.split("{")[0] for line in generate_latest(registry).decode().splitlines() if "shop" in line}

    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING, running=1))
    swarm = {"deployment_replicas", "deployment_swarm_update_state"}
    assert swarm <= series()
    run(ServiceGone(210, "svc1"))
    assert not swarm & series() and "deployment_status" in series()


def test_a_service_created_again_before_the_deadline_continues_its_rollout() -> None:
    """`docker stack rm` then `deploy` of the same template: the new service continues the update, judged as usual."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING, running=1))
    again = service(230, "1.1", running=3)
    again = dataclasses.replace(again, service=dataclasses.replace(again.service, id="svc2"))
    run(ServiceGone(210, "svc1"), again)
    d = run.state.deployments[SHOP]
    assert (d.rollout.revision, d.rollout.status, d.gone_since) == (2, Status.SUCCESS, None)


def test_a_listing_removes_what_is_missing() -> None:
    """A resync without the service marks it removed."""
    run = Run()(service(100, "1.0"), ServicesListed(200, ()))
    d = run.state.deployments[SHOP]
    assert d.service is not None and d.service.removed and d.gone_since == 200


def test_tasks_join_the_service_deployment_for_usage_only() -> None:
    """Task containers seen before their service move to its deployment when it is seen; they
    start no rollout of their own, and their CPU counts for the service."""
    run = Run()(task("c1", "1.0", 90), UsageSampled(95, {"c1": Usage(2.0, 100.0)}))
    web = DeploymentKey("web", "production")
    assert run.state.deployments[web].rollout.judge is Judge.ORCHESTRATOR
    assert not [e for e in run.events if isinstance(e, RolloutStarted)]
    run(service(100, "1.0"), task("c2", "1.0", 101))
    assert set(run.state.deployments) == {SHOP}
    d = run.state.deployments[SHOP]
    assert set(d.members) == {"c1", "c2"} and not d.rollout.members
    assert d.cpu_seconds == 2.0 and run.state.owners["c2"] == SHOP
    run(InstanceGone(120, "c1"))
    assert run.state.deployments[SHOP].cpu_seconds == 2.0  # retired, kept


def test_the_index_of_task_holders_follows_the_state() -> None:
    """Which deployments hold a service's tasks, kept by each step as a walk of every member would find it:
    tasks under two keys of their own, claimed by the service, one gone, the service moved."""
    run = Run()(task("c1", "1.0", 90), task("c2", "1.0", 91, key=DeploymentKey("web", "staging")))
    steps: list[Observation] = [
        service(100, "1.0"), task("c3", "1.0", 101), InstanceGone(102, "c1"),
        dataclasses.replace(service(200, "1.0"), key=DeploymentKey("shop", "staging")),
    ]  # fmt: skip
    for observation in [Tick(95), *steps]:
        index = run(observation).state.index
        assert isinstance(index, Index) and index.head is run.state
        assert index.tasks == Index.build(run.state.deployments, run.state.retired, SETTINGS).tasks
    assert isinstance(index, Index) and set(index.tasks["svc1"]) == {DeploymentKey("shop", "staging")}


def test_worker_keeps_only_usage_and_judges_nothing() -> None:
    """Without the service (a worker), a task deployment is never judged, even past the deadline."""
    run = Run()(task("c1", "1.0", 90)).tick(90 + 10_000)
    d = run.state.deployments[DeploymentKey("web", "production")]
    assert d.rollout.status is Status.IN_PROGRESS and d.service is None


def test_released_keeps_usage_and_drops_the_service() -> None:
    """No longer the leader: the service facts go, the tasks stay."""
    run = Run()(service(100, "1.0"), task("c1", "1.0", 101), ServicesReleased(110))
    d = run.state.deployments[SHOP]
    assert d.service is None and set(d.members) == {"c1"}


def test_state_file_keeps_the_service() -> None:
    """The service facts and task links survive a save and a load."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING), task("c1", "1.1", 201))
    assert decode(encode(run.state)) == run.state


def test_service_labels_changed_moves_the_deployment() -> None:
    """The same service under a new key: the old deployment goes, the new one has its tasks."""
    run = Run()(service(100, "1.0"), task("c1", "1.0", 101))
    other = DeploymentKey("shop", "staging")
    run(dataclasses.replace(service(200, "1.0"), key=other))
    assert set(run.state.deployments) == {other}
    assert run.state.owners["c1"] == other and "c1" in run.state.deployments[other].members


def test_tick_judges_the_deadline_of_an_update() -> None:
    """An update stuck in `updating` fails at its progress deadline."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING))
    run(Tick(200 + 601))
    assert run.state.deployments[SHOP].rollout.status is Status.FAILED


def test_manual_rollback_during_an_update() -> None:
    """A rollback asked for while the update still runs (or before the watcher saw it finish) is
    manual: counted, and a success once back; the update it replaced is superseded, not failed."""
    run = Run()(service(100, "1.0"), service(200, "1.1", state=UpdateState.UPDATING))
    run(service(205, "1.0", state=UpdateState.ROLLBACK_STARTED, message=MANUAL, by=Initiator.PERSON))
    run(service(209, "1.0", state=UpdateState.ROLLBACK_COMPLETED, message="rollback completed", changed_at=205))
    d = run.state.deployments[SHOP]
    assert (d.rollout.status, d.rollout.rollback, d.rollbacks) == (Status.SUCCESS, True, 1)
    assert not [e for e in run.events if isinstance(e, RolloutFinished) and e.revision == 2]


def test_usage_only_deployments_show_their_usage_alone() -> None:
    """Tasks whose service another watcher exports: /metrics has their CPU and memory, and the
    read API's list and the board leave them out; with the service followed, everything shows."""
    run = Run()(task("c1", "1.0", 90), UsageSampled(95, {"c1": Usage(2.0, 100.0)}))
    assert run.state.deployments[WEB].usage_only
    registry = CollectorRegistry()
    registry.register(DeploymentCollector(snapshot=lambda: run.state, settings=SETTINGS))
    names = {line.split("{")[0] for line in generate_latest(registry).decode().splitlines() if "web" in line}
    assert names == {"deployment_cpu_usage_seconds_total", "deployment_memory_usage_bytes"}
    _, side = read_side()
    side.submit(task("c1", "1.0", NOW))
    api = ReadApi(snapshot=side.core.snapshot, settings=SETTINGS, stream=side.stream, ready=lambda: True)
    assert json.loads(api.list_body(side.core.snapshot(), None)) == {"deployments": []}
    side.submit(service(NOW + 1, "1.0", key=WEB))
    assert [d["name"] for d in json.loads(api.list_body(side.core.snapshot(), None))["deployments"]] == ["web"]


def test_task_without_a_name_of_its_own() -> None:
    """A task container whose labels name no deployment (the name is on its service only) joins
    the service's deployment where the service is followed, and is ignored where it is not."""
    nameless = DeploymentKey("", "production")
    run = Run()(task("c1", "1.0", 90, key=nameless))
    assert not run.state.deployments and not run.state.owners
    run(service(100, "1.0"), task("c2", "1.0", 101, key=nameless))
    assert set(run.state.deployments[SHOP].members) == {"c2"} and run.state.owners["c2"] == SHOP


# -- every path of a failed update rolled back counts one failure, one change failure, one recovery

AUTOMATIC = "update rolled back due to failure: task 3x1 has failed"


@st.composite
def rolled_back_updates(draw: st.DrawFn) -> tuple[list[ServiceSeen], list[bool], list[float]]:
    """What the orchestrator shows, one observation after another, of an update of `web` from 1.0 to
    1.1 that fails and is rolled back: by the orchestrator (updating → rollback_started →
    rollback_completed) or by hand after a pause (updating → paused → rollback_started, "manually
    requested"). Any observation may be missed (a burst, a reconnect) except one of the new template
    and the pause it failed with (what the watcher must see to know the update failed) and the
    last, all replicas back; running counts vary in between. With each, whether a resync (a
    listing) delivers it, and the ticks that follow it."""
    automatic = draw(st.booleans())
    at = 1000.0
    step = st.floats(min_value=0.5, max_value=20.0)
    replicas = st.integers(min_value=0, max_value=3)

    def seen(version: str, state: UpdateState, *, changed_at: float, message: str = "", running: int = 3,
             finished_at: float | None = None) -> ServiceSeen:  # fmt: skip
        by = Initiator.PERSON if message == MANUAL else Initiator.ORCHESTRATOR  # as the source tells
        return service(at, version, state=state, message=message, running=running, changed_at=changed_at,
                       finished_at=finished_at, by=by)  # fmt: skip

    update_at = at
    path: list[tuple[ServiceSeen, bool]] = []  # an observation, and whether the watcher may miss it
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path.append((seen("1.1", UpdateState.UPDATING, changed_at=update_at, running=draw(replicas)), True))
        at += draw(step)
    if not automatic:
        for n in range(draw(st.integers(min_value=1, max_value=2))):
            message = "update paused due to failure or early termination of task 3x1"
            paused = seen("1.1", UpdateState.PAUSED, changed_at=update_at, message=message, running=draw(replicas))
            path.append((paused, n > 0))
            at += draw(step)
    rollback_at = at
    message = AUTOMATIC if automatic else MANUAL
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path.append((seen("1.0", UpdateState.ROLLBACK_STARTED, changed_at=rollback_at, message=message,
                          running=draw(replicas)), True))  # fmt: skip
        at += draw(step)
    completed_at = at - draw(st.floats(min_value=0.0, max_value=0.4))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        path.append((seen("1.0", UpdateState.ROLLBACK_COMPLETED, changed_at=rollback_at, message="rollback completed",
                          running=draw(st.integers(min_value=0, max_value=2)), finished_at=completed_at), True))  # fmt: skip
        at += draw(step)
    path.append((seen("1.0", UpdateState.ROLLBACK_COMPLETED, changed_at=rollback_at, message="rollback completed",
                      finished_at=completed_at), False))  # fmt: skip
    kept = [s for s, missable in path if not missable or draw(st.booleans())]
    if all(s.version == "1.0" for s in kept):  # the new template must be seen at least once
        kept.insert(0, path[0][0])
    listed = [draw(st.booleans()) for _ in kept]
    ticks = [draw(st.sampled_from([0.0, 0.0, 0.5, 3.0])) for _ in kept]
    return kept, listed, ticks


@given(rolled_back_updates())
@settings(max_examples=examples(300), deadline=None)
def test_every_rolled_back_update_counts_one_failure_one_change_failure_one_recovery(
    path: tuple[list[ServiceSeen], list[bool], list[float]],
) -> None:
    """Whatever the order of what the watcher saw of it, events or resyncs, with ticks in between:
    the update is one failed rollout and one change failure, the rollback one success, counted as
    a rollback, and the recovery runs from the failure to the rollback's completion."""
    observations, listed, ticks = path
    run = Run()(service(900, "1.0"))
    for seen, as_listing, tick in zip(observations, listed, ticks, strict=True):
        run(ServicesListed(seen.at, (seen,)) if as_listing else seen)
        if tick:
            run.tick(seen.at + tick)
    d = run.state.deployments[SHOP]
    f = d.dora
    assert (d.rollout.version, d.rollout.status, d.rollout.rollback, d.rollbacks) == ("1.0", Status.SUCCESS, True, 1)
    assert (f.successes, f.failures, f.change_failures, f.failing_since) == (2, 1, 1, None)
    assert f.recoveries.count == 1
    failed_at = next(e.at for e in run.events if isinstance(e, RolloutFinished) and e.status is Status.FAILED)
    assert 0 < f.recoveries.total <= observations[-1].at - failed_at


# -- a restart during an update: the container list and the service list race


def test_a_restart_during_an_update_keeps_its_deadline_whichever_list_comes_first() -> None:
    """A watcher restarted during an update relists containers and services at once: a task of the
    new template (its deployment.timestamp an hour old) and the service `updating`, 1 of 3 running.
    In either order the update stays in progress, its deadline counting from now. Before, the task
    first failed it at once: "1 of 3 replicas running within the progress deadline"."""
    now = 10_000.0
    labelled = dataclasses.replace(identity("1.1", at=now - 60, key=SHOP), commit="", deployed_at=now - 3600)
    tasks = Resync(now, Origin.CONTAINER, (Instance(id="c1", identity=labelled, running=True, running_since=now - 50,
                                                    service_id="svc1"),))  # fmt: skip
    services = ServicesListed(now, (service(now, "1.1", state=UpdateState.UPDATING, running=1, changed_at=now - 120),))
    for first, second in ((tasks, services), (services, tasks)):
        rollout = Run()(first, second).state.deployments[SHOP].rollout
        assert (rollout.status, rollout.reason, rollout.deadline_at) == (Status.IN_PROGRESS, "", now + 600)
