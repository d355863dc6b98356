"""The series budget of docs/metrics.md: at most 25 series per deployment by default, whatever its history."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.builders import API, SETTINGS, SHOP, Run, exposition_for, service, started
from watcher.config import ExpositionSettings, Settings
from watcher.domain.model import DeploymentKey, Health, State, UpdateState
from watcher.domain.observations import InstanceExited, InstanceHealth
from watcher.exposition.families import DORA_BOUNDS, DURATION_BOUNDS, DeploymentCollector

BUDGET = 25
WEB = DeploymentKey("web", "staging")
HISTOGRAM = 3  # a histogram's series beyond its finite buckets: +Inf, _sum and _count


def busy() -> Run:
    """One container deployment with everything a container has but an analysis: every health check,
    five versions, a failed rollout and the recovery after it, lead times, a rollback."""
    run = Run()
    for i, version in enumerate(("1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.2.0")):
        at = 1000.0 * (i + 1)
        run(started(f"c{i}", version, at, healthcheck=True, commit_time=at - 7200))
        if version == "1.1.0":
            run(InstanceExited(at + 1, f"c{i}", 1))
        else:
            run(InstanceHealth(at + 2, f"c{i}", Health.HEALTHY))
        run.tick(at + 30)
    return run


def series_of(run: Run, settings: Settings, key: DeploymentKey = API) -> dict[str, int]:
    """Series per family name (samples by sample name) of the deployment ``key``."""
    registry = CollectorRegistry()
    registry.register(DeploymentCollector(snapshot=lambda: run.state, settings=settings))
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.labels.get("deployment") == key.name:
                counts[family.name] = counts.get(family.name, 0) + 1
    return counts


def test_the_default_budget_holds() -> None:
    """A deployment with history, DORA figures and every health check: at most 25 series, as the formula says."""
    run = busy()
    d = run.d()
    assert len(d.history) >= 4 and d.dora.lead_times.count and d.dora.change_failures and d.rollbacks
    counts = series_of(run, SETTINGS)
    assert counts["deployment_health_check"] == 4
    assert sum(counts.values()) <= BUDGET, counts
    # docs/metrics.md: 9 one-series families, C checks, 4 DORA counters, the duration histogram, N versions.
    formula = 9 + 4 + 4 + (len(DURATION_BOUNDS) + HISTOGRAM) + SETTINGS.exposition.version_info_versions
    assert sum(counts.values()) == formula
    assert "deployment_lead_time_seconds" not in counts and "deployment_recovery_seconds" not in counts


def test_a_swarm_service_keeps_the_budget() -> None:
    """A Swarm service with history, updates, a rollback and DORA figures: one health check, its replicas and
    one series of its update state (the current one, not one-hot), within the 25."""
    run = Run()(service(100, "1.0"))
    for n, (version, state) in enumerate(
        [("1.1", UpdateState.UPDATING), ("1.1", UpdateState.COMPLETED), ("1.2", UpdateState.UPDATING),
         ("1.1", UpdateState.ROLLBACK_STARTED), ("1.1", UpdateState.ROLLBACK_COMPLETED)]
    ):  # fmt: skip
        run(service(200.0 + 100 * n, version, state=state, running=3 if "COMPLETED" in state.name else 1))
        run.tick(230.0 + 100 * n)
    d = run.d(SHOP)
    assert d.service is not None and d.rollbacks and len(d.history) >= 3 and d.dora.successes
    counts = series_of(run, SETTINGS, SHOP)
    assert counts["deployment_swarm_update_state"] == 1 and counts["deployment_replicas"] == 2
    # docs/metrics.md: 9 one-series families, C = 1 check, 4 DORA counters, the duration histogram, V versions, S = 3.
    formula = 9 + 1 + 4 + (len(DURATION_BOUNDS) + HISTOGRAM) + SETTINGS.exposition.version_info_versions + 3
    assert sum(counts.values()) == formula <= BUDGET, counts


def test_per_deployment_dora_histograms_add_their_buckets() -> None:
    """``exposition.dora_histograms: deployment``: two histograms more per deployment, at the DORA bands."""
    run = busy()
    settings = dataclasses.replace(SETTINGS, exposition=ExpositionSettings(dora_histograms="deployment"))
    default, per_deployment = series_of(run, SETTINGS), series_of(run, settings)
    assert sum(per_deployment.values()) - sum(default.values()) == 2 * (len(DORA_BOUNDS) + HISTOGRAM)


async def test_environment_histograms_follow_their_deployments() -> None:
    """The per-environment histograms as rendered are the sums of the state shown: a new lead time counts, a
    dropped environment's series go; byte for byte what the collector gives for the same state."""
    run = busy()
    states = [run.state]
    run(started("w1", "1.0.0", 9000, key=WEB, commit_time=9000 - 600)).tick(9030)
    states.append(run.state)
    states.append(State({key: d for key, d in run.state.deployments.items() if key != WEB}, run.state.owners))
    shown = {"state": states[0]}
    exposition, _ = exposition_for(lambda: shown["state"])
    for state in states:
        shown["state"] = state
        await exposition.refresh()
        text = (await exposition.page(accept="", accept_encoding="")).body.decode()
        registry = CollectorRegistry()
        registry.register(DeploymentCollector(snapshot=lambda state=state: state, settings=SETTINGS))  # type: ignore[misc]
        expected = [line for line in generate_latest(registry).decode().splitlines() if "lead_time" in line]
        assert [line for line in text.splitlines() if "lead_time" in line] == expected
        assert ('environment="staging"' in "\n".join(expected)) == (WEB in state.deployments)
