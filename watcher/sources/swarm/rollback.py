"""The rollbacks the watcher asks of Swarm: a followed service whose gate analysis failed, asking for
it (``deployment.analysis.on_failure=rollback``, and ``analysis.allow_rollback`` on), is rolled back
as ``docker service rollback`` does: ``POST /services/{id}/update?version=<index>&rollback=previous``
with the service's current spec.

Asked once per rollout. The state says what is wanted (``rollouts.rollback_wanted``), so a watcher
restarted between the failure and the request still asks; a ``RollbackAsked`` closes it whatever the
answer, and what is in flight, or submitted and not yet applied, is not asked again meanwhile. The
service is read before each request: one whose task template is no longer the failed rollout's
(updated since, or already rolled back) is left alone, so a request repeated after a reconnect
cannot roll back the rollback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from watcher.config import Settings
from watcher.domain.model import Deployment, DeploymentKey, OrchestratedService, State
from watcher.domain.observations import Observation, RollbackAsked
from watcher.domain.rollouts import rollback_wanted
from watcher.selfmetrics import SelfMetrics
from watcher.sources.engine import Engine, EngineError
from watcher.sources.jsonfields import object_
from watcher.sources.swarm import causes

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # between two readings of the state for rollbacks wanted
ATTEMPTS = 3  # updates of a service that changed between its read and the request, read again
CONFLICT = "out of sequence"  # Swarm's answer to an update of a version that is not the current one
REFUSED = 403  # a socket proxy that lets only reads through


@dataclass
class Rollbacks:
    settings: Settings
    submit: Callable[[Observation], None]
    metrics: SelfMetrics
    snapshot: Callable[[], State]
    clock: Callable[[], float]
    _in_flight: set[tuple[DeploymentKey, int]] = field(default_factory=set)
    _submitted: set[tuple[DeploymentKey, int]] = field(default_factory=set)  # until the state applies them

    @asynccontextmanager
    async def beside(self, engine: Engine) -> AsyncIterator[None]:
        """Rollbacks asked through ``engine`` for as long as the block runs (a session following services)."""
        task = asyncio.create_task(self._forever(engine), name="swarm rollbacks")
        try:
            yield
        finally:
            task.cancel()

    async def _forever(self, engine: Engine) -> NoReturn:
        while True:
            await self.ask_wanted(engine)
            await asyncio.sleep(CHECK_SECONDS)

    async def ask_wanted(self, engine: Engine) -> None:
        """Asks for each rollback the state wants that is not asked yet."""
        wanted = {(d.key, d.rollout.revision): d for d in self.snapshot().deployments.values()}
        wanted = {k: d for k, d in wanted.items() if rollback_wanted(d, self.settings)}
        self._submitted &= wanted.keys()  # the others were applied (or a newer rollout came)
        due = [d for k, d in wanted.items() if k not in self._in_flight and k not in self._submitted]
        self._in_flight.update((d.key, d.rollout.revision) for d in due)  # before any await: rounds may overlap
        await asyncio.gather(*(self._ask(engine, deployment) for deployment in due))

    async def _ask(self, engine: Engine, deployment: Deployment) -> None:
        asked = (deployment.key, deployment.rollout.revision)
        service = deployment.service
        assert service is not None, "rollback_wanted: only a service"
        try:
            try:
                error = await self._rollback(engine, deployment, service, attempts=ATTEMPTS)
            except EngineError as failure:
                error = _refused(service) if failure.status == REFUSED else failure.reason
                log.error("Swarm services: the rollback of service %s could not be asked: %s", service.name, error)
            self.metrics.swarm_rollbacks.labels("error" if error else "ok").inc()
            self.submit(RollbackAsked(at=self.clock(), key=deployment.key, revision=asked[1], error=error))
            self._submitted.add(asked)
        finally:
            self._in_flight.discard(asked)

    async def _rollback(
        self, engine: Engine, deployment: Deployment, service: OrchestratedService, *, attempts: int
    ) -> str:
        """Asks Swarm to roll ``service`` back; the reason it was not asked, or ""."""
        data = await engine.get(f"services/{service.id}")
        spec = data.get("Spec")
        if not isinstance(spec, Mapping) or causes.fingerprint(object_(spec.get("TaskTemplate"))) != service.template:
            log.warning(
                "Swarm services: service %s changed since the analysis of its version %s failed: not rolled back",
                service.name, deployment.rollout.version,
            )  # fmt: skip
            return "the service changed since its analysis failed"
        index = str(object_(data.get("Version")).get("Index", ""))
        try:
            answer = await engine.post(f"services/{service.id}/update", spec, version=index, rollback="previous")
        except EngineError as failure:
            if CONFLICT not in failure.reason or attempts <= 1:
                raise
            return await self._rollback(engine, deployment, service, attempts=attempts - 1)
        log.info(
            "Swarm services: rolling back service %s from version %s to %s: its analysis asked for it (%s)",
            service.name, deployment.rollout.version, self._previous_version(data),
            deployment.rollout.analysis.reason if deployment.rollout.analysis else "",
        )  # fmt: skip
        for warning in answer.get("Warnings") or ():
            log.warning("Swarm services: the rollback of service %s: %s", service.name, warning)
        return ""

    def _previous_version(self, data: Mapping[str, Any]) -> str:
        """The version of the spec Swarm goes back to, by the same labels as any service."""
        previous = {"ID": data.get("ID"), "Spec": data.get("PreviousSpec")}
        seen, _ = causes.from_service(previous, at=0.0, replicas=(0, 0), settings=self.settings.labels)
        return seen.version if seen is not None else "its previous spec"


def _refused(service: OrchestratedService) -> str:
    return (
        f"the Docker socket refused POST /services/{service.id}/update (HTTP 403): analysis.allow_rollback needs "
        "POST on /services, which a read-only socket proxy refuses; let it through (docker-socket-proxy: "
        "SERVICES=1 and POST=1, see docs/analysis.md) or set analysis.allow_rollback: false"
    )
