"""CPU and memory samples of instances: the CPU counter per deployment stays monotonic."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from watcher.domain import limits
from watcher.domain.model import DeploymentKey, Member, Usage
from watcher.domain.txn import Txn


def sampled(txn: Txn, usage: Mapping[str, Usage]) -> None:
    changed: dict[DeploymentKey, dict[str, Member]] = {}
    retired: dict[DeploymentKey, int] = {}
    for instance_id, sample in usage.items():
        key = txn.owners.get(instance_id)
        cpu_nanos = _cpu_nanos(sample)
        if key is None or cpu_nanos is None:
            continue
        member = txn.deployments[key].members[instance_id]
        if (member.cpu_nanos, member.memory_bytes) == (cpu_nanos, sample.memory_bytes):
            continue  # an idle container: no new state, so nothing to render or save
        members = changed.setdefault(key, dict(txn.deployments[key].members))
        if cpu_nanos < member.cpu_nanos:
            # The container restarted and its cgroup counter began again.
            retired[key] = limits.add_nanos(retired.get(key, 0), member.cpu_nanos)
        members[instance_id] = dataclasses.replace(member, cpu_nanos=cpu_nanos, memory_bytes=sample.memory_bytes)
    for key, members in changed.items():
        deployment = txn.deployments[key]
        txn.put(
            dataclasses.replace(
                deployment,
                members=members,
                retired_cpu_nanos=limits.add_nanos(deployment.retired_cpu_nanos, retired.get(key, 0)),
            )
        )


def _cpu_nanos(sample: Usage) -> int | None:
    """The sample's CPU in nanoseconds; None for a sample no source makes sense of (NaN,
    negative, beyond the 64-bit nanosecond counter of a cgroup)."""
    nanos = sample.cpu_seconds * 1e9
    if not (0 <= nanos < 2.0**64 and 0 <= sample.memory_bytes < math.inf):
        return None
    return round(nanos)
