"""Unit tests of docker_causes: table-driven, plain data."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import CID, RUNC_ERROR, inspected
from watcher.config import LabelSettings
from watcher.domain import labels
from watcher.domain.labels import Parsed
from watcher.domain.model import DeploymentKey, Health, Instance, Origin
from watcher.domain.observations import (
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceOOMKilled,
    InstanceStarted,
    InstanceStopRequested,
)
from watcher.sources.docker.causes import (
    START_ERROR_LENGTH,
    Cause,
    Inspect,
    classify,
    from_create_event,
    from_inspect,
    is_tracked,
    network_disconnect,
)
from watcher.sources.jsonfields import event_time
from watcher.sources.jsonfields import time as parse_time

TIME_NANO = 1_700_000_000_123_456_789
AT = TIME_NANO / 1_000_000_000
SETTINGS = LabelSettings()
NOW = 1_714_570_000.0


def event(
    action: str,
    attributes: dict[str, str] | None = None,
    *,
    type_: str = "container",
    actor_id: str | None = CID,
) -> dict[str, Any]:
    """A Docker event as API 1.52 sends it: no legacy ``status``/``id``/``from``."""
    actor: dict[str, Any] = {
        "Attributes": {
            "image": "registry.example.com/shop/api:1.4.2",
            "name": "shop-api-1",
            "deployment.name": "api",
            **(attributes or {}),
        }
    }
    if actor_id is not None:
        actor["ID"] = actor_id
    return {
        "Type": type_,
        "Action": action,
        "Actor": actor,
        "scope": "local",
        "time": 1_700_000_000,
        "timeNano": TIME_NANO,
    }


# --- classify -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "attributes", "expected"),
    [
        ("create", {}, Inspect(AT, CID)),
        ("start", {}, InstanceStarted(AT, CID)),
        ("die", {"exitCode": "3"}, InstanceExited(AT, CID, 3)),
        ("die", {"exitCode": "0"}, InstanceExited(AT, CID, 0)),
        ("die", {"exitCode": "137", "execDuration": "12"}, InstanceExited(AT, CID, 137)),
        ("die", {"exitCode": "oops"}, InstanceExited(AT, CID, -1)),
        ("die", {"exitCode": ""}, InstanceExited(AT, CID, -1)),
        ("kill", {"signal": "15"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "SIGTERM"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "sigterm"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "TERM"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "9"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "SIGKILL"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "2"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "3"}, InstanceStopRequested(AT, CID)),
        ("kill", {"signal": "1"}, None),
        ("kill", {"signal": "SIGHUP"}, None),
        ("kill", {"signal": "10"}, None),
        ("kill", {}, None),
        ("oom", {}, InstanceOOMKilled(AT, CID)),
        ("health_status: healthy", {}, InstanceHealth(AT, CID, Health.HEALTHY)),
        ("health_status: unhealthy", {}, InstanceHealth(AT, CID, Health.UNHEALTHY)),
        ("health_status: starting", {}, InstanceHealth(AT, CID, Health.STARTING)),
        ("health_status:healthy", {}, InstanceHealth(AT, CID, Health.HEALTHY)),
        ("health_status", {}, Inspect(AT, CID)),
        ("health_status: bogus", {}, None),
        ("destroy", {}, InstanceGone(AT, CID)),
        ("exec_create: sh -c true", {"execID": "e1"}, None),
        ("exec_start: sh -c true", {"execID": "e1"}, None),
        ("exec_die", {"execID": "e1", "exitCode": "1"}, None),
        ("attach", {}, None),
        ("resize", {"height": "40", "width": "120"}, None),
        ("top", {}, None),
        ("rename", {"oldName": "/x"}, None),
        ("commit", {}, None),
        ("", {}, None),
    ],
)
def test_classify(action: str, attributes: dict[str, str], expected: Cause) -> None:
    """Each container event action maps to the observation the state machine needs."""
    assert classify(event(action, attributes)) == expected


# --- what other engines send ----------------------------------------------------------

PODMAN_ID = "c4388fd5842af479b957181ce3e3e4ccc8de40e756cd7d2e07d40216aa147bee"
PODMAN_TIME_NANO = 1_796_073_184_654_775_572
PODMAN_AT = PODMAN_TIME_NANO / 1e9


def podman_event(action: str, exit_code: str = "0", **fields: str) -> dict[str, Any]:
    """An event as Podman 4.3's Docker-compatible API sends it (captured from /events)."""
    attributes = {
        "containerExitCode": exit_code,
        "deployment.name": "x",
        "deployment.version": "1",
        "image": "docker.io/deployment-watcher-test/busybox:latest",
        "name": "pmtest",
        "podId": "",
    }
    if action == "die":
        attributes["exitCode"] = exit_code
    return {
        "status": action,
        "id": PODMAN_ID,
        "from": "docker.io/deployment-watcher-test/busybox:latest",
        "Type": "container",
        "Action": action,
        "Actor": {"ID": PODMAN_ID, "Attributes": attributes},
        "scope": "local",
        "time": 1_796_073_184,
        "timeNano": PODMAN_TIME_NANO,
        **fields,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (podman_event("create"), Inspect(PODMAN_AT, PODMAN_ID)),
        (podman_event("start"), InstanceStarted(PODMAN_AT, PODMAN_ID)),
        # Podman's word for destroy.
        (podman_event("remove"), InstanceGone(PODMAN_AT, PODMAN_ID)),
        # A crash: the exit code says so, whatever came before.
        (podman_event("die", "1"), InstanceExited(PODMAN_AT, PODMAN_ID, 1)),
        (podman_event("die", "139"), InstanceExited(PODMAN_AT, PODMAN_ID, 139)),
        # `podman stop`, `rm -f` and `kill` send no kill event with a signal: what the container's
        # state says decides, as after a reconnect.
        (podman_event("die", "137"), Inspect(PODMAN_AT, PODMAN_ID)),
        (podman_event("die", "143"), Inspect(PODMAN_AT, PODMAN_ID)),
        (podman_event("die", "0"), Inspect(PODMAN_AT, PODMAN_ID)),
        (podman_event("kill"), None),
        # The status in HealthStatus is the one before the check that sent the event: read the container.
        (podman_event("health_status", HealthStatus="healthy"), Inspect(PODMAN_AT, PODMAN_ID)),
        (podman_event("health_status", HealthStatus="unhealthy"), Inspect(PODMAN_AT, PODMAN_ID)),
        (podman_event("init"), None),
        (podman_event("cleanup"), None),
        (podman_event("exec"), None),
        (podman_event("exec_died", "1"), None),
        (podman_event("attach"), None),
        (podman_event("restart"), None),
    ],
)
def test_podman_events(raw: dict[str, Any], expected: Cause) -> None:
    """Podman 4.3's events, as its Docker-compatible API sends them, map to the same observations."""
    assert classify(raw) == expected


@pytest.mark.parametrize("code", ["137", "143", "0"])
def test_docker_die_with_a_stop_code_is_taken_as_it_is(code: str) -> None:
    """On Docker a kill event tells a requested stop; a die without one is applied as sent."""
    assert classify(event("die", {"exitCode": code})) == InstanceExited(AT, CID, int(code))


def test_docker_26_events_keep_the_legacy_fields() -> None:
    """Docker 26.1 (API 1.45) still sends status/id/from beside Action and Actor; they change nothing."""
    for action, expected in [
        ("die", InstanceExited(AT, CID, 137)),
        ("health_status: healthy", InstanceHealth(AT, CID, Health.HEALTHY)),
        ("kill", InstanceStopRequested(AT, CID)),
        ("stop", None),
        ("destroy", InstanceGone(AT, CID)),
    ]:
        raw = event(action, {"exitCode": "137", "execDuration": "5", "signal": "15"})
        raw.update(status=action, id=CID, **{"from": "deployment-watcher-test/busybox:latest"})
        assert classify(raw) == expected, action


@pytest.mark.parametrize("type_", ["network", "image", "volume", "daemon", "plugin"])
def test_non_container_events_are_ignored(type_: str) -> None:
    """Events of other object types mean nothing, even with a container-like action."""
    assert classify(event("create", type_=type_)) is None
    assert classify(event("destroy", type_=type_)) is None


@pytest.mark.parametrize("actor_id", [None, ""])
def test_event_without_actor_id_is_ignored(actor_id: str | None) -> None:
    """An event that names no container is ignored."""
    assert classify(event("die", {"exitCode": "1"}, actor_id=actor_id)) is None


def test_event_without_actor_is_ignored() -> None:
    """An event with no Actor at all is ignored."""
    raw = event("start")
    del raw["Actor"]
    assert classify(raw) is None


def test_event_without_attributes() -> None:
    """Missing attributes do not break classification."""
    raw = event("die")
    raw["Actor"] = {"ID": CID}
    assert classify(raw) == InstanceExited(AT, CID, 0)
    raw = event("kill")
    raw["Actor"] = {"ID": CID, "Attributes": None}
    assert classify(raw) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"Actor": ["not", "an", "object"]}, None),
        ({"Actor": {"ID": CID, "Attributes": ["exitCode", "1"]}}, InstanceExited(AT, CID, 0)),
        ({"Actor": {"ID": {"nested": 1}}}, None),
        ({"timeNano": None, "time": "yesterday"}, None),
        ({"timeNano": float("nan"), "time": float("inf")}, None),
        ({"timeNano": 10**400}, InstanceExited(1_700_000_000.0, CID, 1)),
        ({"Action": ["die"]}, None),
    ],
)
def test_malformed_event_is_ignored_or_read_safely(change: dict[str, Any], expected: Cause) -> None:
    """Regression (property test): fields of the wrong JSON type read as absent instead of raising."""
    assert classify({**event("die", {"exitCode": "1"}), **change}) == expected


@pytest.mark.parametrize("code", [None, ["1"], {"x": 1}, "9" * 5000])
def test_die_with_unreadable_exit_code(code: object) -> None:
    """Regression (property test): an exitCode that is no integer is -1, not an exception."""
    raw = event("die")
    raw["Actor"]["Attributes"]["exitCode"] = code
    assert classify(raw) == InstanceExited(AT, CID, -1)


# --- event_time -----------------------------------------------------------------------


def test_event_time_uses_time_nano() -> None:
    """The event time is timeNano in seconds, not the whole-second ``time``."""
    raw = event("start")
    raw["time"] = 1
    at = event_time(raw)
    assert at == TIME_NANO / 1_000_000_000
    assert at == pytest.approx(1_700_000_000.123456789, abs=1e-6)
    assert isinstance(at, float)


def test_event_time_falls_back_to_time() -> None:
    """Engines without timeNano give whole seconds."""
    raw = event("start")
    del raw["timeNano"]
    assert event_time(raw) == 1_700_000_000.0


def test_classified_observation_carries_the_event_time() -> None:
    """Observations are stamped with the event's nanosecond time."""
    cause = classify(event("oom"))
    assert isinstance(cause, InstanceOOMKilled)
    assert cause.at == AT


# --- parse_time -----------------------------------------------------------------------

MAY_1_NOON = 1_714_564_800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", MAY_1_NOON),
        ("2024-05-01T12:00:00.123456789Z", MAY_1_NOON + 0.123456),
        ("2024-05-01T12:00:00.5Z", MAY_1_NOON + 0.5),
        ("2024-05-01T12:00:00+00:00", MAY_1_NOON),
        ("2024-05-01T14:00:00+02:00", MAY_1_NOON),
        ("2024-05-01T14:00:00.25+02:00", MAY_1_NOON + 0.25),
        ("2024-05-01T14:00:00.123456789+02:00", MAY_1_NOON + 0.123456),
        ("2024-05-01T07:00:00-05:00", MAY_1_NOON),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    """RFC 3339 times with nanoseconds and any offset become unix seconds."""
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [None, "", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000000Z", "garbage", "2024-13-01T00:00:00Z", "12:00"],
)
def test_parse_time_none(text: str | None) -> None:
    """The zero time, an empty value and garbage are no time."""
    assert parse_time(text) is None


# --- from_inspect ---------------------------------------------------------------------


def seen(data: dict[str, Any]) -> Instance:
    instance, parsed = from_inspect(data, now=NOW, settings=SETTINGS)
    assert instance is not None, parsed
    return instance


def test_from_inspect_running_container() -> None:
    """A running, healthy, labelled container becomes a full Instance."""
    instance, parsed = from_inspect(inspected(test=["CMD-SHELL", "true"]), now=NOW, settings=SETTINGS)
    assert parsed.problems == ()
    assert instance is not None
    assert instance.identity is parsed.identity
    assert instance.id == CID
    assert instance.running is True
    assert instance.running_since == pytest.approx(MAY_1_NOON + 0.5)
    assert instance.has_healthcheck is True
    assert instance.health is Health.HEALTHY
    assert instance.exit_code is None
    assert instance.exited_at is None
    assert instance.exit_requested is False
    assert instance.oom_killed is False
    assert instance.restart_count == 2
    assert instance.source is Origin.CONTAINER
    identity = instance.identity
    assert identity.key == DeploymentKey("api", "production")
    assert identity.version == "1.4.2"
    assert identity.image == "registry.example.com/shop/api:1.4.2"
    assert identity.created_at == pytest.approx(MAY_1_NOON - 2 + 0.123456, abs=1e-6)
    assert identity.deployed_at == identity.created_at


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        (["CMD-SHELL", "true"], True),
        (["CMD", "curl", "-f", "http://localhost/health"], True),
        (["NONE"], False),
        ([], False),
        (None, False),
    ],
)
def test_has_healthcheck(test: list[str] | None, expected: bool) -> None:
    """A Healthcheck counts unless it is missing, empty or ``NONE``."""
    assert seen(inspected(test=test)).has_healthcheck is expected


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("healthy", Health.HEALTHY),
        ("unhealthy", Health.UNHEALTHY),
        ("starting", Health.STARTING),
        ("bogus", Health.NONE),
        (None, Health.NONE),
    ],
)
def test_health(health: str | None, expected: Health) -> None:
    """State.Health.Status becomes the instance's health (NONE without one)."""
    assert seen(inspected(test=["CMD-SHELL", "true"], health=health)).health is expected


@pytest.mark.parametrize(
    ("status", "exit_code", "oom", "requested"),
    [
        ("exited", 0, False, True),
        ("exited", 137, False, True),
        ("exited", 143, False, True),
        ("exited", 130, False, True),
        ("exited", 1, False, False),
        ("exited", 2, False, False),
        ("exited", 139, False, False),
        ("exited", 137, True, False),
        ("exited", 0, True, False),
        ("dead", 143, False, True),
        ("dead", 1, False, False),
    ],
)
def test_exited_container(status: str, exit_code: int, oom: bool, requested: bool) -> None:
    """An exited container has its exit code; 0/130/137/143 without OOM count as a requested stop."""
    instance = seen(inspected(status=status, running=False, exit_code=exit_code, oom=oom, health=None))
    assert instance.running is False
    assert instance.running_since is None
    assert instance.exit_code == exit_code
    assert instance.exit_requested is requested
    assert instance.oom_killed is oom
    assert instance.exited_at == 1_714_565_400.0  # FinishedAt, 2024-05-01T12:10:00Z


@pytest.mark.parametrize(
    ("status", "paused", "restarting"),
    [("paused", True, False), ("restarting", False, True)],
)
def test_paused_or_restarting_is_not_running(status: str, paused: bool, restarting: bool) -> None:
    """Docker says Running for paused and restarting containers; they do not serve, so not running."""
    instance = seen(inspected(status=status, running=True, paused=paused, restarting=restarting))
    assert instance.running is False
    assert instance.running_since is None
    assert instance.exit_code is None
    assert instance.exited_at is None
    assert instance.exit_requested is False


def test_created_container_is_not_running() -> None:
    """A created, never started container is neither running nor exited."""
    instance = seen(inspected(status="created", running=False, health=None))
    assert instance.running is False
    assert instance.exit_code is None
    assert instance.start_error == ""


@pytest.mark.parametrize(
    ("exit_code", "error", "expected"),
    [
        (127, RUNC_ERROR, f"exit code 127: {RUNC_ERROR}"),
        (128, "", "exit code 128: no reason given"),
        (0, "mount failed\nsee the log", "exit code 0: mount failed see the log"),
        (0, "", ""),  # created, never started: nothing failed (yet)
    ],
)
def test_a_failed_start_is_read_from_inspect(exit_code: int, error: str, expected: str) -> None:
    """A container still `created`, with an exit code or an error the daemon kept, failed to start."""
    data = inspected(status="created", running=False, health=None, exit_code=exit_code)
    data["State"]["Error"] = error
    instance = seen(data)
    assert (instance.running, instance.exit_code, instance.start_error) == (False, None, expected)


def test_a_failed_start_error_is_bounded() -> None:
    """A runtime's message of any length is kept to START_ERROR_LENGTH characters."""
    data = inspected(status="created", running=False, health=None, exit_code=128)
    data["State"]["Error"] = "x" * 100_000
    assert len(seen(data).start_error) == START_ERROR_LENGTH


def test_an_exited_container_has_no_start_error() -> None:
    """The error of a container that ran and exited is its exit, not a failed start."""
    data = inspected(status="exited", running=False, health=None, exit_code=1)
    data["State"]["Error"] = "something"
    assert seen(data).start_error == ""


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"Type": "network", "Action": "disconnect", "Actor": {"ID": "n1", "Attributes": {"container": CID}}}, CID),
        ({"Type": "network", "Action": "connect", "Actor": {"ID": "n1", "Attributes": {"container": CID}}}, ""),
        ({"Type": "network", "Action": "disconnect", "Actor": {"ID": "n1", "Attributes": {}}}, ""),
        ({"Type": "network", "Action": "disconnect", "Actor": {"ID": "n1", "Attributes": {"container": 7}}}, ""),
        ({"Type": "container", "Action": "disconnect", "Actor": {"ID": CID, "Attributes": {}}}, ""),
    ],
)
def test_network_disconnect(event: dict[str, Any], expected: str) -> None:
    """The container a network disconnect is about: what a failed start shows of itself on Docker 20.10."""
    assert network_disconnect(event) == expected


@pytest.mark.parametrize("container_labels", [{}, {"maintainer": "ops@example.com"}])
def test_unlabelled_container(container_labels: dict[str, str]) -> None:
    """A container without deployment labels is no Instance and has no problems."""
    assert from_inspect(inspected(container_labels=container_labels), now=NOW, settings=SETTINGS) == (
        None,
        Parsed(None, ()),
    )


def test_null_labels() -> None:
    """Docker's ``"Labels": null`` is no labels."""
    data = inspected()
    data["Config"]["Labels"] = None
    assert from_inspect(data, now=NOW, settings=SETTINGS) == (None, Parsed(None, ()))


def test_empty_name_gives_problems_and_no_instance() -> None:
    """A container ignored for a label problem reports the problem."""
    instance, parsed = from_inspect(inspected(container_labels={"deployment.name": " "}), now=NOW, settings=SETTINGS)
    assert instance is None
    assert parsed.identity is None
    assert [p.label for p in parsed.problems] == [labels.NAME]


def test_label_problems_are_returned_with_the_instance() -> None:
    """Problems of a tracked container come back next to its Instance."""
    data = inspected(container_labels={"deployment.name": "api", "deployment.status": "done"})
    instance, parsed = from_inspect(data, now=NOW, settings=SETTINGS)
    assert instance is not None
    assert [p.label for p in parsed.problems] == [labels.STATUS]


def test_compose_container_with_compose_tracking() -> None:
    """With track_compose, compose labels are enough to make an Instance."""
    data = inspected(container_labels={"com.docker.compose.project": "shop", "com.docker.compose.service": "web"})
    assert from_inspect(data, now=NOW, settings=SETTINGS)[0] is None
    instance, _ = from_inspect(data, now=NOW, settings=LabelSettings(track_compose=True))
    assert instance is not None
    assert instance.identity.key == DeploymentKey("shop/web", "production")


def test_missing_created_uses_now() -> None:
    """Without a Created time the creation time is the time of inspection."""
    data = inspected()
    del data["Created"]
    assert seen(data).identity.created_at == NOW


def test_missing_restart_count() -> None:
    """A missing RestartCount is zero."""
    data = inspected()
    del data["RestartCount"]
    assert seen(data).restart_count == 0


@pytest.mark.parametrize(
    "change",
    [
        {"Config": True},
        {"State": ["running"]},
        {"Created": 1714564800},
        {"RestartCount": "many"},
        {"Config": {"Labels": {"deployment.name": "api", "deployment.version": 7}, "Healthcheck": {"Test": 5}}},
        {"State": {"Running": True, "StartedAt": 0, "Health": "healthy", "Status": "exited", "ExitCode": "x"}},
    ],
)
def test_malformed_inspect_reads_safely(change: dict[str, Any]) -> None:
    """Regression (property test): inspect fields of the wrong JSON type read as absent."""
    data = {**inspected(), **change}
    instance, _ = from_inspect(data, now=NOW, settings=SETTINGS)
    assert instance is None or (instance.id == CID and instance.restart_count >= 0)


@pytest.mark.parametrize("container_id", [None, "", 42])
def test_inspect_without_id_is_no_instance(container_id: object) -> None:
    """Regression (property test): inspect data without a string Id gives no instance, no KeyError."""
    data = inspected()
    data["Id"] = container_id
    assert from_inspect(data, now=NOW, settings=SETTINGS) == (None, Parsed(None))
    del data["Id"]
    assert from_inspect(data, now=NOW, settings=SETTINGS) == (None, Parsed(None))


# --- is_tracked -----------------------------------------------------------------------


def test_is_tracked_reads_event_attributes() -> None:
    """Events carry the container's labels as attributes: tracked by deployment.name."""
    assert is_tracked(event("start"), settings=SETTINGS) is True
    untracked = event("start")
    untracked["Actor"]["Attributes"] = {"image": "nginx", "name": "web"}
    assert is_tracked(untracked, settings=SETTINGS) is False


@pytest.mark.parametrize("action", ["pause", "unpause"])
def test_pause_and_unpause_reinspect(action: str) -> None:
    """A paused container is not serving: pause and unpause re-read the container."""
    event = {"Type": "container", "Action": action, "Actor": {"ID": "c1", "Attributes": {}}, "timeNano": 5_000_000_000}
    assert classify(event) == Inspect(5.0, "c1")


# --- from_create_event ------------------------------------------------------------------


def created(data: dict[str, Any]) -> tuple[Instance | None, Parsed]:
    """A create event through classify, then from_create_event, as the watcher does."""
    cause = classify(data)
    assert isinstance(cause, Inspect)
    return from_create_event(data, cause, settings=SETTINGS)


def test_create_event_gives_a_created_instance_without_inspect() -> None:
    """A create event's labels and image name are enough: identity from them, not running."""
    instance, parsed = created(event("create", {"deployment.version": "2.0.0", "deployment.environment": "staging"}))
    assert parsed.problems == ()
    assert instance is not None
    assert instance.id == CID
    assert instance.identity.key == DeploymentKey("api", "staging")
    assert instance.identity.version == "2.0.0"
    assert instance.identity.created_at == AT
    assert not instance.running
    assert not instance.inspected  # the rules wait for the inspect after its start


def test_create_event_takes_the_version_from_the_image_tag() -> None:
    """Without a version label the image tag, which the event carries, is the version."""
    instance, _ = created(event("create"))
    assert instance is not None and instance.identity.version == "1.4.2"


def test_create_event_needing_the_image_id_asks_for_an_inspect() -> None:
    """A version that could only come from the image id (tag `latest`) is not in the event."""
    instance, _ = created(event("create", {"image": "shop/api:latest"}))
    assert instance is None


def test_create_event_reports_label_problems() -> None:
    """Bad labels on the event come back as problems, as they do from inspect data."""
    instance, parsed = created(event("create", {"deployment.version": "1.0\n"}))
    assert instance is not None
    assert [p.label for p in parsed.problems] == ["deployment.version"]


def test_create_event_of_an_unlabelled_container() -> None:
    """No deployment.name: no instance, and no problems to report."""
    data = event("create")
    del data["Actor"]["Attributes"]["deployment.name"]
    assert created(data) == (None, Parsed(None))


@pytest.mark.parametrize(
    "event",
    [
        {"timeNano": -(10**9)},
        {"timeNano": 10**30},  # year 31 million
        {"time": 10**12},
        {"time": -1},
    ],
)
def test_event_times_no_state_file_may_hold_are_no_times(event: dict[str, Any]) -> None:
    """An event from before 1970 or after 9999 (a daemon gone wrong) has no time, so is not applied."""
    assert event_time(event) is None


@pytest.mark.parametrize("code", [str(2**63), 2**63, -(2**63) - 1, "9" * 40])
def test_exit_codes_beyond_64_bits_are_unreadable(code: object) -> None:
    """An exit code no state file may hold reads as unknown (-1), like one that is not a number."""
    event = {
        "Type": "container",
        "Action": "die",
        "timeNano": 10**18,
        "Actor": {"ID": CID, "Attributes": {"exitCode": code}},
    }
    assert classify(event) == InstanceExited(1e9, CID, -1)


def test_times_before_1970_are_no_times() -> None:
    """A creation time before 1970 is none (the current time is used, as for a missing one)."""
    assert parse_time("1969-12-31T23:59:59Z") is None


def test_times_after_the_year_9999_are_no_times() -> None:
    """The last second of 9999 at a negative offset lies beyond what a state file holds: stored,
    it used to make the whole file unusable at the next start."""
    assert parse_time("9999-12-31T23:59:59.999999999-23:59") is None
    assert parse_time("9999-12-31T23:59:59Z") == 253402300799.0
