"""What the machine would otherwise find by walking every deployment: when each one's time rules
can next do something (retention, deadlines, stable times, analysis windows), which retired DORA
figures are oldest, which deployment follows an orchestrated service, and which deployments hold
that service's task containers. Kept up to date by
``Txn`` as it changes the state, so an observation or a tick costs the same at 5,000 deployments
as at 50 (issue #21).

A cache, never a fact: the machine's results are those of the full walk. It is mutable, shared
by a state and the next one made from it (``head``): a ``Txn`` on the newest state claims and
updates it; one on any other (a test applying two observations to the same state, a state built
by hand or loaded) finds none, and ``Index.build`` makes one from the state in O(n).

Heaps with lazy deletion: an entry holds the very object it was made for, and is dropped when
popped if the state holds another by then. Rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator, Mapping

from watcher.domain.analysis import Outcome
from watcher.domain.model import Deployment, DeploymentKey, Retired, State, Status
from watcher.domain.settings import RuleSettings

# A deployment whose rollout is under way is looked at every tick (its rules read the clock).
EVERY_TICK = -math.inf
# Retention is checked a little before its time, then every tick until it expires: float sums
# may round a threshold up by an ulp, and must never make a deployment outstay it.
_EARLY = 1e-3

_Wake = tuple[float, int, DeploymentKey, Deployment]
_Age = tuple[float, DeploymentKey, int, Retired]


def wake(deployment: Deployment, settings: RuleSettings) -> float | None:
    """The earliest time a tick may change ``deployment`` or drop it (retention.tick); None: never,
    until something else changes it."""
    rollout = deployment.rollout
    if rollout.status is Status.IN_PROGRESS or (
        rollout.analysis is not None and rollout.analysis.outcome is Outcome.RUNNING
    ):
        return EVERY_TICK
    if deployment.members or (deployment.service is not None and not deployment.service.removed):
        return None
    at = EVERY_TICK
    if deployment.gone_since is not None:
        at = max(at, deployment.gone_since + settings.retention.gone_seconds - _EARLY)
    if deployment.reported_at is not None:
        at = max(at, deployment.reported_at + settings.api.retention_seconds - _EARLY)
    return at


class Index:
    """The wake times of a state's deployments, its retired figures by age, its services' deployments."""

    def __init__(self, settings: RuleSettings) -> None:
        self.settings = settings
        self.head: State | None = None  # the state it describes; None while a Txn changes it
        self._seq = itertools.count()
        self._wakes: list[_Wake] = []
        self._ages: list[_Age] = []
        self.services: dict[str, DeploymentKey] = {}  # service id → the deployment following it
        # Service id → the deployments holding task containers of it (a service seen after its tasks
        # claims them from there, ``domain.services``), as a dict used as an ordered set.
        self.tasks: dict[str, dict[DeploymentKey, None]] = {}
        self.visited = 0  # entries popped so far: what the unit test counts (tests/unit/test_scale.py)

    @classmethod
    def build(
        cls, deployments: Mapping[DeploymentKey, Deployment], retired: Mapping[DeploymentKey, Retired],
        settings: RuleSettings,
    ) -> Index:  # fmt: skip
        index = cls(settings)
        for deployment in deployments.values():
            index.put(deployment, None)
        for key, figures in retired.items():
            index._ages.append((figures.dropped_at, key, next(index._seq), figures))
        heapq.heapify(index._wakes)
        heapq.heapify(index._ages)
        return index

    def put(self, deployment: Deployment, before: Deployment | None) -> None:
        """``deployment`` replaces ``before`` (None: it is new)."""
        at = wake(deployment, self.settings)
        if at is not None:
            heapq.heappush(self._wakes, (at, next(self._seq), deployment.key, deployment))
        self._follow(deployment, before)

    def drop(self, deployment: Deployment) -> None:
        self._unfollow(deployment)

    def retire(self, key: DeploymentKey, figures: Retired) -> None:
        heapq.heappush(self._ages, (figures.dropped_at, key, next(self._seq), figures))

    def due(self, deployments: Mapping[DeploymentKey, Deployment], now: float) -> list[Deployment]:
        """The deployments a tick at ``now`` must look at, by key; they leave the heap (``put`` or
        ``keep`` them back)."""
        found: dict[DeploymentKey, Deployment] = {}
        while self._wakes and self._wakes[0][0] <= now:
            _, _, key, deployment = heapq.heappop(self._wakes)
            self.visited += 1
            if deployments.get(key) is deployment:
                found[key] = deployment
        return [found[key] for key in sorted(found)]

    def keep(self, deployment: Deployment) -> None:
        """A due deployment a tick left as it was: it wakes again at its time."""
        at = wake(deployment, self.settings)
        if at is not None:
            heapq.heappush(self._wakes, (at, next(self._seq), deployment.key, deployment))

    def oldest(self, retired: Mapping[DeploymentKey, Retired]) -> Iterator[tuple[DeploymentKey, Retired]]:
        """The retired figures, oldest first (then by key), while the caller forgets them."""
        while self._ages:
            _, key, _, figures = self._ages[0]
            self.visited += 1
            if retired.get(key) is not figures:
                heapq.heappop(self._ages)
                continue
            yield key, figures
            if retired.get(key) is figures:
                return  # kept: every younger one is kept too
            heapq.heappop(self._ages)

    def stale(self, live: int) -> bool:
        """Whether dead entries outnumber the live ones enough to rebuild."""
        return len(self._wakes) + len(self._ages) > 2 * live + 256

    def _follow(self, deployment: Deployment, before: Deployment | None) -> None:
        if before is not None:
            self._unfollow(before, unless=deployment)
        if deployment.service is not None:
            self.services[deployment.service.id] = deployment.key
        if before is None or before.members is not deployment.members:  # the same members: the same tasks
            if before is not None:
                self._untask(before)
            for service_id in _task_services(deployment):
                self.tasks.setdefault(service_id, {})[deployment.key] = None

    def _untask(self, deployment: Deployment) -> None:
        for service_id in _task_services(deployment):
            holders = self.tasks.get(service_id)
            if holders is not None:
                holders.pop(deployment.key, None)
                if not holders:
                    del self.tasks[service_id]

    def _unfollow(self, deployment: Deployment, *, unless: Deployment | None = None) -> None:
        if unless is None:
            self._untask(deployment)
        service = deployment.service
        if service is None or (unless is not None and unless.service is not None and unless.service.id == service.id):
            return
        if self.services.get(service.id) == deployment.key:
            del self.services[service.id]


def _task_services(deployment: Deployment) -> set[str]:
    """The services whose task containers ``deployment`` holds."""
    return {m.instance.service_id for m in deployment.members.values() if m.instance.service_id}
