"""State snapshot → Prometheus metric families, built fresh for every rendering of /metrics.

``collect()`` only reads one immutable ``State`` and never blocks, so a deployment that
was dropped simply stops appearing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple, TypeVar

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from watcher.config import Settings
from watcher.domain.analysis import Result
from watcher.domain.model import Deployment, Histogram, State, iter_sorted
from watcher.domain.rules import health_checks

KEY_LABELS = ["deployment", "environment"]
# The series budget (docs/metrics.md): the histograms are exported with fewer buckets than the
# domain counts, each bound one of the domain's, so every exported bucket is exact. Rollout
# durations: a minute, five, half an hour. Lead time and recovery: the bounds of the DORA levels
# (1 h, 1 d, 1 week, 1 month), so a level read from a median is never off by a bucket.
DURATION_BOUNDS = (60.0, 300.0, 1800.0)
DORA_BOUNDS = (3600.0, 86400.0, 604800.0, 2592000.0)
PER_ENVIRONMENT = "environment"  # exposition.dora_histograms: one lead-time and recovery histogram per environment
# deployment_info's ``kind``: what the deployment is.
KIND_CONTAINER = "container"
KIND_SWARM_SERVICE = "swarm_service"
# deployment_swarm_update_state's ``state`` while no update ran (Swarm's own word is an empty one).
NO_UPDATE = "none"


class DeploymentCollector(Collector):
    """Per-deployment series, from whatever ``snapshot()`` returns when collected."""

    def __init__(self, *, snapshot: Callable[[], State], settings: Settings) -> None:
        self._snapshot = snapshot
        self._settings = settings

    def describe(self) -> list[Metric]:
        return list(_Families())

    def collect(self) -> Iterator[Metric]:
        f = _Families()
        deployments = list(iter_sorted(self._snapshot()))
        for d in deployments:
            f.add(d, settings=self._settings)
        if self._settings.exposition.dora_histograms == PER_ENVIRONMENT:
            f.lead_times, f.recoveries = environment_families(dora_sums(deployments))
        yield from f


class Coarse(NamedTuple):
    """A histogram as exported: cumulative counts at ``bounds`` then +Inf, and the sum."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    total: float

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        les = [*map(floatToGoString, self.bounds), "+Inf"]
        family.add_metric(labels, list(zip(les, self.counts, strict=True)), self.total)


def coarse(h: Histogram, bounds: tuple[float, ...]) -> Coarse:
    """``h``'s cumulative counts at ``bounds`` and +Inf, and its sum. Exact when each of ``bounds`` is one of
    ``h``'s (the domain's buckets); else the fine buckets up to the bound (a state file from another version)."""
    fine = list(zip(h.bounds, h.counts, strict=False))
    counts = [float(sum(count for le, count in fine if le <= upper)) for upper in bounds]
    return Coarse(bounds, (*counts, float(sum(h.counts))), h.total)


def dora_coarse(d: Deployment) -> tuple[Coarse, Coarse]:
    """One deployment's lead times and recoveries at the exported bounds."""
    return coarse(d.dora.lead_times, DORA_BOUNDS), coarse(d.dora.recoveries, DORA_BOUNDS)


def dora_sums(deployments: Iterable[Deployment]) -> dict[str, tuple[Coarse, Coarse]]:
    """Lead times and recoveries summed per environment, over the deployments that export DORA figures: exactly,
    rounded once (``math.fsum``), so in any order (the exposition keeps them by moving one deployment at a time)."""
    figures: dict[str, list[tuple[Coarse, Coarse]]] = {}
    for d in deployments:
        if not d.usage_only:
            figures.setdefault(d.key.environment, []).append(dora_coarse(d))
    return {environment: (_summed([f[0] for f in found]), _summed([f[1] for f in found]))
            for environment, found in figures.items()}  # fmt: skip


def _summed(histograms: list[Coarse]) -> Coarse:
    counts = tuple(math.fsum(column) for column in zip(*(h.counts for h in histograms), strict=True))
    return Coarse(histograms[0].bounds, counts, math.fsum(h.total for h in histograms))


def environment_families(
    sums: Mapping[str, tuple[Coarse, Coarse]],
) -> tuple[HistogramMetricFamily, HistogramMetricFamily]:
    """deployment_lead_time_seconds and deployment_recovery_seconds per environment (no deployment label)."""
    empty = _Families()
    families = []
    for i, like in enumerate((empty.lead_times, empty.recoveries)):
        family = HistogramMetricFamily(like.name, like.documentation, labels=["environment"])
        for environment in sorted(sums):
            sums[environment][i].add_to(family, [environment])
        families.append(family)
    return families[0], families[1]


def deployment_families(deployment: Deployment, *, settings: Settings) -> list[Metric]:
    """The families of /metrics with only this deployment's series (the exposition renders them one by one)."""
    f = _Families()
    f.add(deployment, settings=settings)
    return list(f)


_Family = TypeVar("_Family", bound=Metric)


def _family(cls: Callable[..., _Family], name: str, documentation: str, *labels: str) -> _Family:
    """A family of per-deployment series: each is labelled with the deployment's key, then ``labels``."""
    return cls(name, documentation, labels=[*KEY_LABELS, *labels])


class _Families:
    """The empty families of one scrape, each with its HELP text."""

    def __init__(self) -> None:
        cached = "Sampled every stats interval and cached in between."
        self.status = _family(
            GaugeMetricFamily, "deployment_status", "Status of the current rollout: 0 failed, 1 success, 2 in progress."
        )
        self.version = _family(
            GaugeMetricFamily,
            "deployment_version",
            "Revision number of the current rollout (1, 2, 3 ...); the version string is on deployment_info.",
        )
        self.timestamp = _family(
            GaugeMetricFamily, "deployment_timestamp", "Unix seconds when the current rollout started.", "version"
        )
        self.health = _family(
            GaugeMetricFamily,
            "deployment_health_status",
            "1 when every health check of the current rollout passes, else 0.",
        )
        # Its own series, not a value of deployment_health_status: a removed deployment is not
        # unhealthy, and alert rules leave it out with `unless deployment_removed == 1`.
        self.removed = _family(
            GaugeMetricFamily,
            "deployment_removed",
            "1 when no instance of the deployment is left (its containers or its Swarm service removed): kept"
            " until retention drops it; else 0.",
        )
        self.info = _family(
            InfoMetricFamily,
            "deployment",
            "The current rollout: status, version, commit and image; kind: container or swarm_service.",
        )
        self.cpu = _family(
            CounterMetricFamily,
            "deployment_cpu_usage_seconds",
            f"CPU seconds used by all containers of the deployment, kept across container replacement. {cached}",
        )
        self.memory = _family(
            GaugeMetricFamily,
            "deployment_memory_usage_bytes",
            f"Working set (usage minus inactive file) of the running containers. {cached}",
        )
        self.rollbacks = _family(
            CounterMetricFamily,
            "deployment_rollback_count",
            "Rollbacks detected: a new rollout to a version older than the current one.",
        )
        self.checks = _family(
            GaugeMetricFamily,
            "deployment_health_check",
            "One health check of the current rollout: 1 pass, 0 fail.",
            "check_type",
        )
        self.durations = _family(
            HistogramMetricFamily, "deployment_duration_seconds", "Rollout time from start to success or failure."
        )
        # A gauge, not an info family: in OpenMetrics an info family would be named
        # deployment_version, which is the revision gauge's name.
        self.versions = _family(
            GaugeMetricFamily,
            "deployment_version_info",
            "Versions deployed recently (the last N distinct ones); value 1.",
            "version",
            "commit_sha",
        )
        # DORA (docs/dora.md): kept in the state file, so restarts lose nothing.
        self.rollouts = _family(
            CounterMetricFamily,
            "deployment_rollouts",
            "Finished rollouts by outcome (success, failed), each counted once at its first verdict.",
            "outcome",
        )
        self.change_failures = _family(
            CounterMetricFamily,
            "deployment_change_failures",
            "Changes that needed intervention: a failed rollout, one revised to failed, or a success followed by"
            " a rollback or a hotfix; each revision at most once.",
        )
        self.lead_times = _family(
            HistogramMetricFamily,
            "deployment_lead_time_seconds",
            "Lead time for changes: success time minus commit time, each commit once.",
        )
        self.recoveries = _family(
            HistogramMetricFamily,
            "deployment_recovery_seconds",
            "Time from a change failure to the next successful rollout.",
        )
        self.rework = _family(
            CounterMetricFamily,
            "deployment_rework",
            "Rollouts marked as hotfix (deployment.change_type=hotfix): rework.",
        )
        self.replicas = _family(
            GaugeMetricFamily,
            "deployment_replicas",
            "A Swarm service's tasks: desired by the orchestrator, and running (exported by the Swarm leader's watcher).",
            "state",
        )
        self.update_state = _family(
            GaugeMetricFamily,
            "deployment_swarm_update_state",
            "A Swarm service's UpdateStatus.State, as its state label (none: no update ran since it was created or last"
            " changed); always 1, one series per service.",
            "state",
        )
        # docs/analysis.md: present while the current rollout has an analysis.
        self.analysis_status = _family(
            GaugeMetricFamily,
            "deployment_analysis_status",
            "The current rollout's analysis: 0 failed, 1 passed, 2 running, 3 inconclusive; absent when it has none.",
        )
        self.analysis_values = _family(
            GaugeMetricFamily,
            "deployment_analysis_value",
            "A check's value: sample current (the last measurement) or baseline (at the rollout's start);"
            " absent until measured.",
            "check",
            "sample",
        )
        self.analysis_measurements = _family(
            CounterMetricFamily,
            "deployment_analysis_measurements",
            "A check's measurements of the current rollout by result: pass, fail, nodata, error.",
            "check",
            "result",
        )

    def add(self, d: Deployment, *, settings: Settings) -> None:
        """The series of one deployment."""
        key = [d.key.name, d.key.environment]
        r = d.rollout
        if d.usage_only:
            # Swarm tasks on a node whose watcher does not export their service (a worker, a
            # manager that is not the leader): their CPU and memory only, summed across nodes.
            self.cpu.add_metric(key, d.cpu_seconds)
            self.memory.add_metric(key, d.memory_bytes)
            return
        self.status.add_metric(key, r.status.value)
        self.version.add_metric(key, r.revision)
        self.timestamp.add_metric([*key, r.version], r.started_at)
        passed = health_checks(d, settings=settings)
        self.health.add_metric(key, 1 if all(passed.values()) else 0)
        self.removed.add_metric(key, 1 if d.removed else 0)
        kind = KIND_CONTAINER if d.service is None else KIND_SWARM_SERVICE
        self.info.add_metric(
            key, {"status": r.status.text, "version": r.version, "commit": r.commit, "image": r.image, "kind": kind}
        )
        self.cpu.add_metric(key, d.cpu_seconds)
        self.memory.add_metric(key, d.memory_bytes)
        self.rollbacks.add_metric(key, d.rollbacks)
        for check, ok in sorted(passed.items()):
            self.checks.add_metric([*key, check], 1 if ok else 0)
        coarse(d.durations, DURATION_BOUNDS).add_to(self.durations, key)
        for seen in d.history[: settings.exposition.version_info_versions]:
            self.versions.add_metric([*key, seen.version, seen.commit], 1)
        dora = d.dora
        self.rollouts.add_metric([*key, "success"], dora.successes)
        self.rollouts.add_metric([*key, "failed"], dora.failures)
        self.change_failures.add_metric(key, dora.change_failures)
        if settings.exposition.dora_histograms != PER_ENVIRONMENT:
            lead_times, recoveries = dora_coarse(d)
            lead_times.add_to(self.lead_times, key)
            recoveries.add_to(self.recoveries, key)
        self.rework.add_metric(key, dora.rework)
        if d.service is not None and not d.service.removed:  # a removed service has neither: no stale values
            self.replicas.add_metric([*key, "desired"], d.service.desired)
            self.replicas.add_metric([*key, "running"], d.service.running)
            # One series, the current state (info-style): six one-hot series cost a service its series budget
            # (docs/metrics.md), and `{state="paused"} == 1` or `{state=~"rollback_.*"}` select as before.
            self.update_state.add_metric([*key, d.service.update_state.value or NO_UPDATE], 1)
        if r.analysis is not None:
            self.analysis_status.add_metric(key, r.analysis.outcome.value)
            for m in r.analysis.checks:
                named = [*key, m.check.name]
                for sample, value in (("current", m.current), ("baseline", m.baseline)):
                    if value is not None:
                        self.analysis_values.add_metric([*named, sample], value)
                for result in Result:
                    self.analysis_measurements.add_metric([*named, result.value], m.count(result))

    def __iter__(self) -> Iterator[Metric]:
        return iter(vars(self).values())
