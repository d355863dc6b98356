"""A resync: everything a source has now, after a (re)connect or periodically.

Its instances missing from the list are gone; the known ones are brought up to date and judged
once the whole list is applied; what appeared meanwhile is one rollout per deployment. What it
reveals happened at some unknown time before it: no durations come from it.
"""

from __future__ import annotations

from watcher.domain import instances, retention, rollouts, services
from watcher.domain.model import DeploymentKey, Instance, Judge
from watcher.domain.observations import Resync
from watcher.domain.txn import Txn, without_member

# What a container list judges: a Swarm service is judged on its own list's facts, which may come
# after this one (a restart), never on what was saved before.
JUDGED = (Judge.CONTAINERS, Judge.DEPLOY_TOOLING)


def resync(txn: Txn, resync: Resync) -> None:
    txn.resyncing = True
    listed = {i.id: i for i in resync.instances}
    for instance_id, key in list(txn.owners.items()):
        deployment = txn.deployments[key]
        instance = listed.get(instance_id)
        if instance is None:
            if deployment.members[instance_id].instance.source is resync.source:
                txn.put(without_member(txn, deployment, instance_id))
        elif services.home(txn, instance) != key:
            # Read as another deployment's now: the label settings changed across a restart.
            txn.put(without_member(txn, deployment, instance_id))
    known = [i for i in resync.instances if i.id in txn.owners]
    # Oldest first; the same creation time (one `docker compose up`, or a second's resolution) is
    # told apart by the id, so that the list's order never decides which is the newest.
    new = sorted((i for i in resync.instances if i.id not in txn.owners), key=lambda i: (i.identity.created_at, i.id))
    for instance in known:
        instances.seen(txn, instance, at=resync.at, witnessed=False, listed=True)
    # Judged once the whole list is applied, not one replica's news against another's old state.
    for key in dict.fromkeys(services.home(txn, i) for i in known):
        if txn.deployments[key].rollout.judge in JUDGED:
            txn.put(rollouts.evaluate(txn, txn.deployments[key]))
    # What appeared while we were not looking is one rollout per deployment, to the newest
    # version (its replicas with it); older new instances are leftovers.
    by_key: dict[DeploymentKey, list[Instance]] = {}
    for instance in new:
        by_key.setdefault(services.home(txn, instance), []).append(instance)
    for group in by_key.values():
        newest = group[-1].identity.version
        first = next(i for i in group if i.identity.version == newest)
        for instance in [first] + [i for i in group if i is not first and i.identity.version == newest]:
            instances.seen(txn, instance, at=resync.at, witnessed=False)
        for instance in group:
            if instance.identity.version != newest:
                instances.add_leftover(txn, instance, at=resync.at)
    retention.tick(txn, judged_by=JUDGED)
