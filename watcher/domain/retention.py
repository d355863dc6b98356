"""Time passing: deployments past their retention are dropped, the others' rules fire on time.

A deployment with no instance left stays exported for ``retention.gone_seconds``; one that deploy
tooling reported stays while its reports are younger than ``api.retention_seconds``; neither
leaves before the verdict of its current rollout. A dropped
deployment's DORA figures are kept for ``retention.dora_seconds``: one that comes back meanwhile
continues its counters, so Prometheus, which still holds the old series, never sees them go down.
"""

from __future__ import annotations

from collections.abc import Collection

from watcher.domain import rollouts
from watcher.domain.events import DeploymentDropped
from watcher.domain.model import Deployment, Dora, Judge, Status
from watcher.domain.settings import RuleSettings
from watcher.domain.txn import Txn


def tick(txn: Txn, *, judged_by: Collection[Judge] = tuple(Judge)) -> None:
    """Time's rules, now, for the deployments ``judged_by`` decides. A resync judges only those its
    source speaks of: the others' facts may be stale (a restart, before their own source's list).
    Only the deployments whose wake time has come are looked at (``watcher.domain.index``): those
    with a rollout or analysis under way, and those whose retention may have run out."""
    index = txn.index
    for deployment in index.due(txn.deployments, txn.now):
        key = deployment.key
        if deployment.rollout.judge not in judged_by:
            index.keep(deployment)
            continue
        why = expired(deployment, now=txn.now, settings=txn.settings)
        if why:
            txn.drop(key)
            if deployment.dora != Dora():  # nothing to continue otherwise
                txn.retire(key, deployment.dora)
            txn.emit(DeploymentDropped(key=key, at=txn.now, why=why))
        else:
            # evaluate() ends an analysis whose window passed (an observe one runs past its rollout's verdict).
            evaluated = rollouts.evaluate(txn, deployment)
            if evaluated is not deployment:
                txn.put(evaluated)
            else:
                index.keep(deployment)
    _forget_retired(txn)


def _forget_retired(txn: Txn) -> None:
    """Retired DORA figures past ``retention.dora_seconds``, and the oldest beyond the deployment cap:
    oldest first, until one is kept (every younger one is kept too)."""
    kept, cap = txn.settings.retention.dora_seconds, txn.settings.retention.max_deployments
    for key, retired in txn.index.oldest(txn.retired):
        if txn.now - retired.dropped_at >= kept or len(txn.retired) > cap:
            txn.retire(key, None)


def expired(deployment: Deployment, *, now: float, settings: RuleSettings) -> str:
    """Why a deployment is no longer exported, or '' while it is kept."""
    if deployment.members or (deployment.service is not None and not deployment.service.removed):
        return ""  # a Swarm service may have no task on this node
    if deployment.rollout.status is Status.IN_PROGRESS and not deployment.usage_only:
        return ""  # every rollout gets its verdict, at the latest at its progress deadline
    gone, kept = settings.retention.gone_seconds, settings.api.retention_seconds
    if deployment.gone_since is not None and now - deployment.gone_since < gone:
        return ""
    if deployment.reported_at is None:
        return f"no containers for {gone:g} s"
    if now - deployment.reported_at < kept:
        return ""
    return f"no containers, and no report for {kept:g} s"
