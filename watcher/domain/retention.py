"""Time passing: deployments past their retention are dropped, the others' rules fire on time.

A deployment with no instance left stays exported for ``retention.gone_seconds``; one that deploy
tooling reported stays while its reports are younger than ``api.retention_seconds``.
"""

from __future__ import annotations

from watcher.domain import rollouts
from watcher.domain.events import DeploymentDropped
from watcher.domain.model import Deployment, Status
from watcher.domain.settings import RuleSettings
from watcher.domain.txn import Txn


def tick(txn: Txn) -> None:
    for key, deployment in list(txn.deployments.items()):
        why = expired(deployment, now=txn.now, settings=txn.settings)
        if why:
            txn.drop(key)
            txn.emit(DeploymentDropped(key=key, at=txn.now, why=why))
        elif deployment.rollout.status is Status.IN_PROGRESS:
            evaluated = rollouts.evaluate(txn, deployment)
            if evaluated is not deployment:
                txn.put(evaluated)


def expired(deployment: Deployment, *, now: float, settings: RuleSettings) -> str:
    """Why a deployment is no longer exported, or '' while it is kept."""
    if deployment.members or (deployment.service is not None and not deployment.service.removed):
        return ""  # a Swarm service may have no task on this node
    gone, kept = settings.retention.gone_seconds, settings.api.retention_seconds
    if deployment.gone_since is not None and now - deployment.gone_since < gone:
        return ""
    if deployment.reported_at is None:
        return f"no containers for {gone:g} s"
    if now - deployment.reported_at < kept:
        return ""
    return f"no containers, and no report for {kept:g} s"
