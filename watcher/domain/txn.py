"""One ``apply()`` in progress: copy-on-write access to the previous state, and the events it makes;
a deployment's members added and removed, which containers, resyncs and services share.

The previous state is never modified: the first change copies the mapping it changes, and an
observation that changes nothing gives back the very same ``State`` (nothing to render or save).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from watcher.domain import dora, limits
from watcher.domain.events import DomainEvent
from watcher.domain.model import Deployment, DeploymentKey, Dora, Member, Retired, State
from watcher.domain.settings import RuleSettings


class Txn:
    """One apply(): the state it started from, the changes so far, and the events they made."""

    def __init__(self, base: State, *, now: float, settings: RuleSettings) -> None:
        self.base = base
        self.now = now
        self.settings = settings
        self.events: list[DomainEvent] = []
        self.resyncing = False  # what a resync reveals happened at some unknown time before it
        self.touched: dict[DeploymentKey, None] = {}  # deployments put, in order (a set that keeps it)
        self._deployments: dict[DeploymentKey, Deployment] | None = None
        self._owners: dict[str, DeploymentKey] | None = None
        self._retired: dict[DeploymentKey, Retired] | None = None

    @property
    def deployments(self) -> Mapping[DeploymentKey, Deployment]:
        return self.base.deployments if self._deployments is None else self._deployments

    @property
    def owners(self) -> Mapping[str, DeploymentKey]:
        """Instance id → the deployment it belongs to."""
        return self.base.owners if self._owners is None else self._owners

    @property
    def retired(self) -> Mapping[DeploymentKey, Retired]:
        """The DORA figures of dropped deployments, kept for ``retention.dora_seconds``."""
        return self.base.retired if self._retired is None else self._retired

    def retire(self, key: DeploymentKey, figures: Dora | None) -> None:
        """Keep (``figures``) or forget (None) the DORA figures of a deployment no longer tracked."""
        if self._retired is None:
            self._retired = dict(self.base.retired)
        if figures is None:
            del self._retired[key]
        else:
            self._retired[key] = Retired(figures, self.now)

    def revive(self, key: DeploymentKey) -> Dora:
        """The DORA figures a new deployment starts from: those it had when it was dropped, if kept."""
        retired = self.retired.get(key)
        if retired is None:
            return Dora()
        self.retire(key, None)
        return dora.revived(retired.dora)

    def put(self, deployment: Deployment) -> None:
        if self._deployments is None:
            self._deployments = dict(self.base.deployments)
        self._deployments[deployment.key] = deployment
        self.touched[deployment.key] = None

    def drop(self, key: DeploymentKey) -> None:
        if self._deployments is None:
            self._deployments = dict(self.base.deployments)
        del self._deployments[key]

    def own(self, instance_id: str, key: DeploymentKey | None) -> None:
        if self._owners is None:
            self._owners = dict(self.base.owners)
        if key is None:
            self._owners.pop(instance_id, None)
        else:
            self._owners[instance_id] = key

    def emit(self, event: DomainEvent) -> None:
        self.events.append(event)

    def state(self) -> State:
        """The state after the changes: the previous one itself when there were none."""
        if self._deployments is None and self._owners is None and self._retired is None:
            return self.base
        return State(self.deployments, self.owners, self.retired)


def with_member(deployment: Deployment, member: Member) -> Deployment:
    """``deployment`` with ``member`` added or replaced; no longer gone."""
    members = dict(deployment.members)
    members[member.instance.id] = member
    return dataclasses.replace(deployment, members=members, gone_since=None)


def without_member(txn: Txn, deployment: Deployment, instance_id: str) -> Deployment:
    """The instance is gone: its CPU retires, and the deployment is gone with its last one, unless it
    is a live service's (whose tasks may all run on other nodes)."""
    members = dict(deployment.members)
    member = members.pop(instance_id)
    txn.own(instance_id, None)
    live = deployment.service is not None and not deployment.service.removed
    return dataclasses.replace(
        deployment,
        members=members,
        retired_cpu_nanos=limits.add_nanos(deployment.retired_cpu_nanos, member.cpu_nanos),
        gone_since=deployment.gone_since if members or live else (deployment.gone_since or txn.now),
    )
