"""Swarm's JSON (services, tasks, service events, the node) → observations. Pure: the I/O is in swarm.watch.

A service's identity: its labels (``deploy.labels`` in a stack file) win over the container
labels of its task template (a stack service's ``labels:``); the version falls back to the
image tag. Service events carry no labels: every one is a reason to inspect the service.
Nothing here raises: a field of the wrong JSON type reads as absent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from watcher.domain import labels
from watcher.domain.labels import Parsed
from watcher.domain.model import Initiator, OrchestratedService, UpdateState
from watcher.domain.observations import ServiceSeen
from watcher.domain.settings import AnalysisSettings, LabelSettings
from watcher.sources.jsonfields import count as _count
from watcher.sources.jsonfields import event_time
from watcher.sources.jsonfields import number as _number
from watcher.sources.jsonfields import object_ as _object
from watcher.sources.jsonfields import text as _text
from watcher.sources.jsonfields import time as _time

_STATES = {s.value: s for s in UpdateState if s is not UpdateState.NONE}
# UpdateStatus.Message of `docker service rollback`: a person asked for it (else the orchestrator
# rolled back a failed update).
MANUAL_ROLLBACK = "manually requested rollback"
# The update states of a rollout the orchestrator is still carrying out.
ROLLING = frozenset({UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED})


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """A service event: inspect the service (``removed``: it is gone, nothing to inspect)."""

    at: float
    service_id: str
    removed: bool


def classify(event: Mapping[str, Any]) -> ServiceEvent | None:
    """What a ``type=service`` event means; None for anything else."""
    if event.get("Type") != "service":
        return None
    service_id = _text(_object(event.get("Actor")).get("ID"))
    at = event_time(event)
    action = _text(event.get("Action"))
    if not service_id or at is None or action not in ("create", "update", "remove"):
        return None
    return ServiceEvent(at, service_id, removed=action == "remove")


def from_service(
    data: Mapping[str, Any], *, at: float, replicas: tuple[int, int] | None, settings: LabelSettings,
    analysis: AnalysisSettings | None = None,
) -> tuple[ServiceSeen | None, Parsed]:  # fmt: skip
    """A service's JSON (``GET /services``) → what it is now; None when it is no deployment.

    ``replicas``: (desired, running) from its tasks; None to read ``ServiceStatus`` (API ≥ 1.41).
    """
    service_id = _text(data.get("ID"))
    spec = _object(data.get("Spec"))
    name = _text(spec.get("Name"))
    template = _object(spec.get("TaskTemplate"))
    container = _object(template.get("ContainerSpec"))
    merged = {**_labels(container.get("Labels")), **_labels(spec.get("Labels"))}
    if labels.NAME not in merged and settings.track_compose and name:
        merged[labels.NAME] = name  # tracked by its service name, as compose services are
    created_at = _time(data.get("CreatedAt")) or at
    parsed = labels.parse(
        {k: v for k, v in merged.items() if k != labels.TIMESTAMP},
        image=_text(container.get("Image")), image_id="", created_at=created_at, now=at, settings=settings,
        analysis=analysis, orchestrated=True,
    )  # fmt: skip
    identity = parsed.identity
    if not service_id or identity is None:
        return None, parsed
    status = _object(data.get("UpdateStatus"))
    state = _STATES.get(_text(status.get("State")), UpdateState.NONE)
    previous = _object(_object(data.get("PreviousSpec")).get("TaskTemplate"))
    if not status and previous and fingerprint(previous) != fingerprint(template):
        # A new template whose update has not begun yet: the service event comes a moment before
        # the updater sets ``updating`` (until then the old tasks are the running ones).
        state = UpdateState.UPDATING
    started = _time(status.get("StartedAt")) if state is not UpdateState.NONE else None
    desired, running = replicas if replicas is not None else _service_status(data)
    message = _text(status.get("Message"))
    return (
        ServiceSeen(
            at=at,
            key=identity.key,
            service=OrchestratedService(
                id=service_id, name=name, template=fingerprint(template), update_state=state,
                message=message, desired=desired, running=running,
            ),
            version=identity.version,
            commit=identity.commit,
            image=identity.image,
            changed_at=started or _time(data.get("UpdatedAt")) or created_at,
            finished_at=_time(status.get("CompletedAt")) if state is not UpdateState.NONE else None,
            progress_deadline_seconds=identity.progress_deadline_seconds,
            rollback_by=Initiator.PERSON if message.startswith(MANUAL_ROLLBACK) else Initiator.ORCHESTRATOR,
            analysis=identity.analysis,
        ),
        parsed,
    )  # fmt: skip


def fingerprint(template: Mapping[str, Any]) -> str:
    """Equal task templates, equal fingerprints: a rollback returns to the earlier one."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def replicas_from_tasks(service: Mapping[str, Any], tasks: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(desired, running) from a service's tasks, for engines without ``ServiceStatus`` (API < 1.41)."""
    wanted = [t for t in tasks if _text(t.get("DesiredState")) == "running"]
    running = sum(1 for t in wanted if _text(_object(t.get("Status")).get("State")) == "running")
    replicated = _object(_object(_object(service.get("Spec")).get("Mode")).get("Replicated"))
    replicas = replicated.get("Replicas")
    return (_count(replicas) if _number(replicas) is not None else len(wanted)), running


def is_rolling(seen: ServiceSeen) -> bool:
    """Whether the service is still changing: its tasks are read again until it is not."""
    service = seen.service
    return service.update_state in ROLLING or service.running != service.desired


def leader(info: Mapping[str, Any], node: Mapping[str, Any] | None) -> bool:
    """Whether the engine of ``info`` (``GET /info``) is the Swarm leader, by its node (``GET /nodes/<id>``)."""
    swarm = _object(info.get("Swarm"))
    if not swarm.get("ControlAvailable") or node is None:
        return False
    return _object(node.get("ManagerStatus")).get("Leader") is True


def node_id(info: Mapping[str, Any]) -> str:
    """The engine's Swarm node id; "" when it is in no swarm."""
    swarm = _object(info.get("Swarm"))
    return _text(swarm.get("NodeID")) if _text(swarm.get("LocalNodeState")) == "active" else ""


def is_manager(info: Mapping[str, Any]) -> bool:
    return bool(node_id(info)) and _object(info.get("Swarm")).get("ControlAvailable") is True


def _service_status(data: Mapping[str, Any]) -> tuple[int, int]:
    status = _object(data.get("ServiceStatus"))
    return _count(status.get("DesiredTasks")), _count(status.get("RunningTasks"))


def _labels(value: object) -> dict[str, str]:
    return {k: v for k, v in _object(value).items() if isinstance(k, str) and isinstance(v, str)}
