"""One ``apply()`` in progress: copy-on-write access to the previous state, and the events it makes;
a deployment's members added and removed, which containers, resyncs and services share.

The previous state is never modified: a change makes a new version of the mapping it changes, sharing
the rest (``PMap``); an observation that changes nothing gives back the very same ``State`` (nothing to render or save).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from watcher.domain import dora, limits
from watcher.domain.events import DomainEvent
from watcher.domain.index import Index
from watcher.domain.model import Deployment, DeploymentKey, Dora, Member, Retired, State
from watcher.domain.pmap import PMap
from watcher.domain.settings import RuleSettings


class Txn:
    """One apply(): the state it started from, the changes so far, and the events they made.

    Each change makes a new version of the mapping it changes (``PMap``: O(log n), the rest shared),
    and tells the state's ``Index``, so nothing here walks or copies every deployment."""

    def __init__(self, base: State, *, now: float, settings: RuleSettings) -> None:
        self.base = base
        self.now = now
        self.settings = settings
        self.events: list[DomainEvent] = []
        self.resyncing = False  # what a resync reveals happened at some unknown time before it
        self.touched: dict[DeploymentKey, None] = {}  # deployments put, in order (a set that keeps it)
        # Deployments put or dropped, and retired figures kept or forgotten: what a save writes (``Changes``).
        self.changed: set[DeploymentKey] = set()
        self.changed_retired: set[DeploymentKey] = set()
        self._deployments: PMap[DeploymentKey, Deployment] | None = None
        self._owners: PMap[str, DeploymentKey] | None = None
        self._retired: PMap[DeploymentKey, Retired] | None = None
        self._index: Index | None = None
        index = base.index
        if isinstance(index, Index) and index.head is base and index.settings == settings:
            index.head = None  # claimed: a failure midway leaves it to no state
            self._index = index

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

    @property
    def index(self) -> Index:
        """What finds deployments without walking them all; built (O(n)) when the base state has none."""
        if self._index is None:
            self._index = Index.build(self.deployments, self.retired, self.settings)
        return self._index

    def retire(self, key: DeploymentKey, figures: Dora | None) -> None:
        """Keep (``figures``) or forget (None) the DORA figures of a deployment no longer tracked."""
        retired = PMap.of(self.retired)
        self.changed_retired.add(key)
        if figures is None:
            self._retired = retired.delete(key)
        else:
            kept = Retired(figures, self.now)
            self._retired = retired.set(key, kept)
            if self._index is not None:
                self._index.retire(key, kept)

    def revive(self, key: DeploymentKey) -> Dora:
        """The DORA figures a new deployment starts from: those it had when it was dropped, if kept."""
        retired = self.retired.get(key)
        if retired is None:
            return Dora()
        self.retire(key, None)
        return dora.revived(retired.dora)

    def put(self, deployment: Deployment) -> None:
        deployments = PMap.of(self.deployments)
        if self._index is not None:
            self._index.put(deployment, deployments.get(deployment.key))
        self._deployments = deployments.set(deployment.key, deployment)
        self.touched[deployment.key] = None
        self.changed.add(deployment.key)

    def drop(self, key: DeploymentKey) -> None:
        deployments = PMap.of(self.deployments)
        if self._index is not None:
            self._index.drop(deployments[key])
        self._deployments = deployments.delete(key)
        self.changed.add(key)

    def own(self, instance_id: str, key: DeploymentKey | None) -> None:
        owners = PMap.of(self.owners)
        if key is None:
            if instance_id in owners:
                self._owners = owners.delete(instance_id)
        else:
            self._owners = owners.set(instance_id, key)

    def emit(self, event: DomainEvent) -> None:
        self.events.append(event)

    def state(self) -> State:
        """The state after the changes: the previous one itself when there were none."""
        index = self._index
        if self._deployments is None and self._owners is None and self._retired is None:
            if index is not None:
                object.__setattr__(self.base, "index", index)  # a cache, not a fact: see State.index
                index.head = self.base
            return self.base
        if index is not None and index.stale(len(self.deployments) + len(self.retired)):
            index = Index.build(self.deployments, self.retired, self.settings)
        state = State(self.deployments, self.owners, self.retired, index=index)
        if index is not None:
            index.head = state
        return state


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
