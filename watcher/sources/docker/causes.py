"""Docker's JSON → observations. Pure: the I/O lives in docker_watch.

Events are read by ``Action``, ``Actor.ID`` and ``Actor.Attributes`` (the legacy
``status``/``id``/``from`` fields are gone from API 1.52) and ordered by ``timeNano``.
Podman's Docker-compatible API sends a few events differently (docs/engines.md): ``remove``
for ``destroy``, ``health_status`` without the status in the action, and no ``kill`` event
before the ``die`` of a stop.
Nothing here raises: a field of the wrong JSON type (never sent by a sane engine, but a
crash would stop the watcher) reads as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watcher.config import AnalysisSettings, LabelSettings
from watcher.domain import labels, observations, text
from watcher.domain.labels import Parsed
from watcher.domain.limits import MAX_COUNT
from watcher.domain.model import Health, Instance
from watcher.sources.jsonfields import event_time
from watcher.sources.jsonfields import object_ as _object
from watcher.sources.jsonfields import text as _text
from watcher.sources.jsonfields import time as _time

# Signals `docker stop`, `docker kill` and `docker rm -f` send to end a container:
# an exit that follows one was asked for, not a crash.
_STOP_SIGNALS = frozenset(
    {"2", "3", "9", "15", "SIGINT", "SIGQUIT", "SIGKILL", "SIGTERM", "INT", "QUIT", "KILL", "TERM"}
)
# Exit codes of a container stopped on purpose (0, or 128 + one of the signals above),
# used when only inspect data is at hand (after a reconnect) and no stop event was seen, and
# on Podman, which sends none.
_STOPPED_CODES = frozenset({0, 130, 131, 137, 143})
_HEALTH = {h.value: h for h in Health}
START_ERROR_LENGTH = 300  # characters of a failed start's error kept


@dataclass(frozen=True, slots=True)
class Inspect:
    """The event needs the container's full facts: inspect it, then report ``InstanceSeen``."""

    at: float
    container_id: str


Cause = Inspect | observations.InstanceChange | None


def event_id(event: Mapping[str, Any]) -> str:
    """The container's id ("" when the event has none)."""
    return _text(_object(event.get("Actor")).get("ID")) or _text(event.get("id"))


def event_action(event: Mapping[str, Any]) -> str:
    return _text(event.get("Action")) or _text(event.get("status"))


def event_attributes(event: Mapping[str, Any]) -> Mapping[str, Any]:
    return _object(_object(event.get("Actor")).get("Attributes"))


def classify(event: Mapping[str, Any]) -> Cause:
    """What a container event means for the state machine (None: nothing)."""
    if event.get("Type", "container") != "container":
        return None
    container_id = event_id(event)
    at = event_time(event)
    if not container_id or at is None:
        return None
    action = event_action(event)
    attributes = event_attributes(event)
    match action.split(":", 1)[0]:
        case "create" | "pause" | "unpause":
            return Inspect(at, container_id)
        case "start":
            return observations.InstanceStarted(at, container_id)
        case "kill":
            if str(attributes.get("signal", "")).upper() in _STOP_SIGNALS:
                return observations.InstanceStopRequested(at, container_id)
            return None
        case "die":
            code = _integer(attributes.get("exitCode", 0), default=-1)
            if code in _STOPPED_CODES and _from_podman(attributes):
                # No kill event told whether the stop was asked for: the container's state
                # says, as after a reconnect (and a removed container is gone anyway).
                return Inspect(at, container_id)
            return observations.InstanceExited(at, container_id, code)
        case "oom":
            return observations.InstanceOOMKilled(at, container_id)
        case "health_status" if ":" not in action:
            # Podman's: its HealthStatus field holds the status from before the check that
            # sent the event (Podman 4.3), so the container's state is read instead.
            return Inspect(at, container_id)
        case "health_status":
            health = _HEALTH.get(action.split(":", 1)[1].strip())
            return observations.InstanceHealth(at, container_id, health) if health else None
        case "destroy" | "remove":  # remove: Podman's word
            return observations.InstanceGone(at, container_id)
    return None


def _from_podman(attributes: Mapping[str, Any]) -> bool:
    """Podman adds ``podId`` to the attributes of every container event; Docker never does."""
    return "podId" in attributes


def from_inspect(
    data: Mapping[str, Any], *, now: float, settings: LabelSettings, analysis: AnalysisSettings | None = None
) -> tuple[Instance | None, Parsed]:
    """A container's inspect JSON → its Instance (None when it is not a deployment)."""
    container_id = _text(data.get("Id"))
    if not container_id:
        return None, Parsed(None)
    config = _object(data.get("Config"))
    state = _object(data.get("State"))
    created_at = _time(data.get("Created")) or now
    container_labels = {k: v for k, v in _object(config.get("Labels")).items() if isinstance(v, str)}
    parsed = labels.parse(
        container_labels,
        image=_text(config.get("Image")),
        image_id=_text(data.get("Image")),
        created_at=created_at,
        now=now,
        settings=settings,
        analysis=analysis,
    )
    if parsed.identity is None:
        return None, parsed
    running = bool(state.get("Running")) and not state.get("Paused") and not state.get("Restarting")
    exited = state.get("Status") in ("exited", "dead")
    exit_code = _integer(state.get("ExitCode"), default=0) if exited else None
    healthcheck = _object(config.get("Healthcheck")).get("Test")
    health = _object(state.get("Health")).get("Status")
    oom = bool(state.get("OOMKilled"))
    instance = Instance(
        id=container_id,
        identity=parsed.identity,
        running=running,
        running_since=_time(state.get("StartedAt")) if running else None,
        has_healthcheck=isinstance(healthcheck, list) and bool(healthcheck) and healthcheck[0] != "NONE",
        health=_HEALTH.get(_text(health), Health.NONE),
        exit_code=exit_code,
        exited_at=_time(state.get("FinishedAt")) if exited else None,
        exit_requested=exit_code in _STOPPED_CODES and not oom,
        oom_killed=oom,
        restart_count=max(0, _integer(data.get("RestartCount"), default=0)),
        service_id=container_labels.get(labels.SWARM_SERVICE_ID, ""),
        start_error=_start_error(state),
    )
    return instance, parsed


def _start_error(state: Mapping[str, Any]) -> str:
    """Why the container's start failed ('' when it did not): still ``created``, with the error and
    exit code the daemon kept (127: no such command, 126: not executable, 128: anything else)."""
    error = _text(state.get("Error")).strip()
    code = _integer(state.get("ExitCode"), default=0)
    if state.get("Status") != "created" or not (error or code):
        return ""
    # A runtime's message can be long and hold line breaks; it ends up in a log line and the API's answer.
    return text.clean(f"exit code {code}: {error or 'no reason given'}", limit=START_ERROR_LENGTH).value


def network_disconnect(event: Mapping[str, Any]) -> str:
    """The container a network ``disconnect`` event is about ('' for any other event).

    After a start that failed, Docker 20.10 sends no container event at all, only the
    ``connect`` and ``disconnect`` of the container's network; this is how the watcher hears of it.
    """
    if event.get("Type") != "network" or event_action(event) != "disconnect":
        return ""
    return _text(event_attributes(event).get("container"))


def from_create_event(
    event: Mapping[str, Any], cause: Inspect, *, settings: LabelSettings, analysis: AnalysisSettings | None = None
) -> tuple[Instance | None, Parsed]:
    """The container a create event (classified as ``cause``) made, from the event alone;
    None when the event does not say enough.

    Inspecting it instead would wait for the start that usually follows at once (the daemon
    holds the container while starting it): seconds, under load. The event has the labels
    and the image name; only a version taken from the image id needs an inspect.
    """
    attributes = event_attributes(event)
    parsed = labels.parse(
        attributes,
        image=_text(attributes.get("image")),
        image_id="",
        created_at=cause.at,
        now=cause.at,
        settings=settings,
        analysis=analysis,
    )
    if parsed.identity is None or parsed.identity.version == labels.UNKNOWN_VERSION:
        return None, parsed
    service_id = _text(attributes.get(labels.SWARM_SERVICE_ID))
    instance = Instance(
        id=cause.container_id, identity=parsed.identity, running=False, inspected=False, service_id=service_id
    )
    return instance, parsed


def is_tracked(event: Mapping[str, Any], *, settings: LabelSettings) -> bool:
    return labels.is_tracked(event_attributes(event), settings=settings)


def _integer(value: object, *, default: int) -> int:
    """A JSON integer within 64 bits, or one written as text (event attributes are strings)."""
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            return default
    # Beyond 64 bits is no exit code or restart count, and no state file may hold it.
    return number if number is not None and -MAX_COUNT - 1 <= number <= MAX_COUNT else default
