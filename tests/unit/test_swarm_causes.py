"""Swarm JSON → observations: identity from service then container labels, the update state,
replicas from ServiceStatus or tasks, events, leadership; odd JSON reads as absent."""

from __future__ import annotations

from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from watcher.config import Settings
from watcher.domain.model import DeploymentKey, Initiator, UpdateState
from watcher.domain.observations import ServicesListed
from watcher.domain.settings import LabelSettings
from watcher.selfmetrics import SelfMetrics
from watcher.sources import jsonfields
from watcher.sources.swarm import causes
from watcher.sources.swarm.watch import SwarmWatch

LABELS = LabelSettings()


def service_json(**extra: Any) -> dict[str, Any]:
    """A service as `GET /services?status=true` of a 20.10 engine returns it."""
    data: dict[str, Any] = {
        "ID": "mxrzs0vtn2vyh2xlvtuhrgbqc",
        "CreatedAt": "2026-11-30T21:30:36.336012754Z",
        "UpdatedAt": "2026-11-30T21:30:46.336012754Z",
        "Spec": {
            "Name": "web",
            "Labels": {"deployment.name": "shop"},
            "TaskTemplate": {"ContainerSpec": {"Image": "app:1.1", "Labels": {"deployment.environment": "prod"}}},
            "Mode": {"Replicated": {"Replicas": 2}},
        },
        "ServiceStatus": {"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 0},
    }
    data.update(extra)
    return data


def test_identity_from_service_then_container_labels_then_tag() -> None:
    """Name from the service labels, environment from the container labels, version from the tag."""
    seen, parsed = causes.from_service(service_json(), at=1000.0, replicas=None, settings=LABELS)
    assert seen is not None and not parsed.problems
    assert seen.key == DeploymentKey("shop", "prod") and seen.version == "1.1"
    assert (seen.service.desired, seen.service.running, seen.service.update_state) == (2, 1, UpdateState.NONE)
    assert seen.changed_at == jsonfields.time("2026-11-30T21:30:46.336012754Z")


def test_service_labels_win() -> None:
    """The same label on the service and its containers: the service's wins."""
    data = service_json()
    data["Spec"]["Labels"]["deployment.version"] = "2.0"
    data["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"]["deployment.version"] = "1.9"
    seen, _ = causes.from_service(data, at=1000.0, replicas=None, settings=LABELS)
    assert seen is not None and seen.version == "2.0"


def test_update_status_read() -> None:
    """UpdateStatus gives the state, the message, the start and completion times; rollback_paused too."""
    status = {"State": "rollback_paused", "StartedAt": "2026-11-30T21:31:00Z", "CompletedAt": "2026-11-30T21:31:09Z",
              "Message": "rollback paused"}  # fmt: skip
    seen, _ = causes.from_service(service_json(UpdateStatus=status), at=1000.0, replicas=None, settings=LABELS)
    assert seen is not None
    assert (seen.service.update_state, seen.service.message) == (UpdateState.ROLLBACK_PAUSED, "rollback paused")
    assert seen.changed_at == jsonfields.time("2026-11-30T21:31:00Z")
    assert seen.finished_at == jsonfields.time("2026-11-30T21:31:09Z")


@pytest.mark.parametrize(
    ("message", "by"),
    [
        ("manually requested rollback", Initiator.PERSON),  # `docker service rollback`
        ("update rolled back due to failure or early termination of task 3x1", Initiator.ORCHESTRATOR),
    ],
)
def test_who_asked_for_the_rollback(message: str, by: Initiator) -> None:
    """The CLI's words are read here, at the edge: the domain is told who started the rollback."""
    status = {"State": "rollback_started", "StartedAt": "2026-11-30T21:31:00Z", "Message": message}
    seen, _ = causes.from_service(service_json(UpdateStatus=status), at=1000.0, replicas=None, settings=LABELS)
    assert seen is not None and seen.rollback_by is by


def test_no_deployment_name_is_not_tracked_unless_asked() -> None:
    """Without deployment.name the service is none of ours; with track_compose its name is used."""
    data = service_json()
    del data["Spec"]["Labels"]["deployment.name"]
    assert causes.from_service(data, at=1.0, replicas=None, settings=LABELS)[0] is None
    seen, _ = causes.from_service(data, at=1.0, replicas=None, settings=LabelSettings(track_compose=True))
    assert seen is not None and seen.key.name == "web"


def test_template_fingerprint_ignores_replicas() -> None:
    """A scale changes Mode, not the task template: the same fingerprint."""
    scaled = service_json()
    scaled["Spec"]["Mode"]["Replicated"]["Replicas"] = 5
    a, _ = causes.from_service(service_json(), at=1.0, replicas=None, settings=LABELS)
    b, _ = causes.from_service(scaled, at=1.0, replicas=None, settings=LABELS)
    assert a is not None and b is not None and a.service.template == b.service.template


def test_replicas_from_tasks() -> None:
    """Old engines: desired from the mode, running from tasks desired and running."""
    tasks = [
        {"DesiredState": "running", "Status": {"State": "running"}},
        {"DesiredState": "running", "Status": {"State": "starting"}},
        {"DesiredState": "shutdown", "Status": {"State": "running"}},
    ]
    assert causes.replicas_from_tasks(service_json(), tasks) == (2, 1)
    assert causes.replicas_from_tasks({"Spec": {"Mode": {"Global": {}}}}, tasks) == (2, 1)


async def test_old_engines_count_replicas_beside_the_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine without ServiceStatus (API < 1.41): the replicas counted from its tasks reach the
    observation beside the service's JSON, which stays the engine's (no field of ours added to it)."""
    answers = {"services": [service_json(ServiceStatus=None)], "tasks": [{"DesiredState": "running",
                                                                          "Status": {"State": "running"}}]}  # fmt: skip
    submitted: list[object] = []
    watch = SwarmWatch(Settings(), submitted.append, SelfMetrics(CollectorRegistry()))

    class Engine:
        async def listed(self, path: str, **params: str) -> Any:
            return answers[path]

    watch._with_status = False  # as read at the connect, from the engine's API version
    await watch._resync(cast(Any, Engine()), at=1000.0)
    (listed,) = submitted
    assert isinstance(listed, ServicesListed)
    assert [(s.service.desired, s.service.running) for s in listed.services] == [(2, 1)]
    assert answers["services"] == [service_json(ServiceStatus=None)]


def test_events_classified() -> None:
    """create/update inspect the service, remove is gone; other types and actions are nothing."""
    event = {"Type": "service", "Action": "update", "Actor": {"ID": "s1", "Attributes": {"name": "web"}},
             "timeNano": 1796074246870686927}  # fmt: skip
    at = 1796074246870686927 / 1e9
    assert causes.classify(event) == causes.ServiceEvent(at, "s1", removed=False)
    assert causes.classify({**event, "Action": "remove"}) == causes.ServiceEvent(at, "s1", removed=True)
    assert causes.classify({**event, "Type": "container"}) is None
    assert causes.classify({**event, "Actor": "junk"}) is None
    assert causes.classify({**event, "timeNano": 10**30}) is None  # past the year 9999


def test_leadership() -> None:
    """The leader is a manager whose node says Leader; a worker or a follower is not."""
    info = {"Swarm": {"NodeID": "n1", "LocalNodeState": "active", "ControlAvailable": True}}
    assert causes.leader(info, {"ManagerStatus": {"Leader": True}})
    assert not causes.leader(info, {"ManagerStatus": {"Reachability": "reachable"}})
    worker = {"Swarm": {"NodeID": "n2", "LocalNodeState": "active", "ControlAvailable": False}}
    assert not causes.is_manager(worker) and causes.node_id(worker) == "n2"
    assert causes.node_id({"Swarm": {"LocalNodeState": "inactive"}}) == ""


def test_odd_json_reads_as_absent() -> None:
    """Wrong JSON types never raise."""
    seen, _ = causes.from_service({"ID": 3, "Spec": []}, at=1.0, replicas=None, settings=LABELS)
    assert seen is None
    junk = service_json(UpdateStatus={"State": 7}, ServiceStatus="x")
    seen, _ = causes.from_service(junk, at=1.0, replicas=None, settings=LABELS)
    assert seen is not None and seen.service.update_state is UpdateState.NONE and seen.service.desired == 0


def test_new_template_before_the_updater_is_updating() -> None:
    """A service event of an update comes before UpdateStatus: a new template is already updating,
    while one changed outside its template (a scale) is not."""
    previous = {"TaskTemplate": {"ContainerSpec": {"Image": "app:1.0"}}}
    seen, _ = causes.from_service(service_json(PreviousSpec=previous), at=1.0, replicas=None, settings=LABELS)
    assert seen is not None and seen.service.update_state is UpdateState.UPDATING
    same = {"TaskTemplate": service_json()["Spec"]["TaskTemplate"]}
    seen, _ = causes.from_service(service_json(PreviousSpec=same), at=1.0, replicas=None, settings=LABELS)
    assert seen is not None and seen.service.update_state is UpdateState.NONE


def test_times_outside_what_a_state_file_holds_read_as_absent() -> None:
    """A service time before 1970 reads as absent: the creation time stands in."""
    seen, _ = causes.from_service(service_json(UpdatedAt="1900-01-01T00:00:00Z"), at=5.0, replicas=None,
                                  settings=LABELS)  # fmt: skip
    assert seen is not None and seen.changed_at == jsonfields.time("2026-11-30T21:30:36.336012754Z")
    assert jsonfields.time("0001-01-01T00:00:00Z") is None and jsonfields.time("junk") is None


@pytest.mark.parametrize(
    ("desired", "running", "expected"),
    [
        (2**64 - 1, 3, (0, 3)),  # uint64 on the wire: -1 that wrapped around
        (2**63, 2**64 + 5, (0, 0)),  # no count of tasks, whatever it was meant to be
        (-1, -7, (0, 0)),
        (2**63 - 1, 1, (2**63 - 1, 1)),  # the largest count a state file holds, kept as it is
        (1e300, 2.0, (0, 2)),
    ],
)
def test_replica_counts_beyond_what_a_state_file_holds_read_as_zero(
    desired: object, running: object, expected: tuple[int, int]
) -> None:
    """ServiceStatus' counts are uint64: 2**64 - 1 (a negative the engine wrapped around) used to be
    stored as it came, exported as 1.8e19, saved, and the whole state file refused at the next start."""
    data = service_json(ServiceStatus={"DesiredTasks": desired, "RunningTasks": running})
    seen, _ = causes.from_service(data, at=1000.0, replicas=None, settings=LABELS)
    assert seen is not None and (seen.service.desired, seen.service.running) == expected
    old_engine = service_json(Spec={**service_json()["Spec"], "Mode": {"Replicated": {"Replicas": desired}}})
    assert causes.replicas_from_tasks(old_engine, []) == (expected[0], 0)


def test_times_after_the_year_9999_read_as_absent() -> None:
    """An offset can carry the last second of 9999 beyond what a state file holds."""
    assert jsonfields.time("9999-12-31T23:59:59.999999999-23:59") is None
