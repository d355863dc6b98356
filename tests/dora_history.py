"""Thirty days of DORA history for two deployments, known event by event: the series the watcher
would export over them, and the figures of each window computed by hand from the events.

The rules (deploy/prometheus/rules/dora.yml) and the DORA dashboard are checked against these
figures: by ``promtool test rules`` (tests/e2e/test_dora_rules.py) and in a real Prometheus that
holds the history backfilled (tests/e2e/test_dora_prometheus.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from watcher.exposition.families import DORA_BOUNDS

DAY = 86400
DAYS = 30  # the history's length; it ends at offset DAYS * DAY ("now")
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
API = ("api", "production")
WEB = ("web", "staging")
KEYS = (API, WEB)
HOUR = 3600
# A fleet (docs/fleet.md): api runs on two hosts, whose watchers both count each of its rollouts;
# the rules count it once, so every figure is the same as with one host.
HOSTS = {API: ("host-1", "host-2"), WEB: ("host-1",)}


@dataclass(frozen=True)
class Event:
    """Something the watcher counted: at ``at`` seconds from the history's start."""

    at: int
    key: tuple[str, str]
    kind: str  # success, failed, change_failure, rework, lead, recovery
    value: float = 0.0  # seconds, for lead and recovery


def events() -> list[Event]:
    """The history. No event lies within an hour of a day boundary, so a window that starts a few
    minutes late (the real Prometheus evaluates a little after the history ends) holds the same events.

    api (production): a success every day at 10:00, its commit 2 h + 10 min × day old. Every day
    d with d % 7 == 3, an extra rollout at 14:00 fails (a change failure) and one at 14:30
    recovers (30 min), of a commit already counted. Day 20 at 16:00, a hotfix after the day's
    success: the success is a change failure, the hotfix rework, recovered in 20 min.
    web (staging): a success every third day at 12:00, its commit 3 days + 1 h × day old; day 27
    at 12:00 fails instead, and day 28 at 09:00 a success of a new commit recovers (21 h).
    """
    found = []
    for day in range(DAYS):
        base = day * DAY
        found += [Event(base + 10 * HOUR, API, "success"), Event(base + 10 * HOUR, API, "lead", 2 * HOUR + 600 * day)]
        if day % 7 == 3:
            found += [
                Event(base + 14 * HOUR, API, "failed"),
                Event(base + 14 * HOUR, API, "change_failure"),
                Event(base + 14 * HOUR + 1800, API, "success"),
                Event(base + 14 * HOUR + 1800, API, "recovery", 1800),
            ]
        if day == 20:
            found += [
                Event(base + 16 * HOUR, API, "change_failure"),
                Event(base + 16 * HOUR + 1200, API, "success"),
                Event(base + 16 * HOUR + 1200, API, "rework"),
                Event(base + 16 * HOUR + 1200, API, "recovery", 1200),
            ]
        if day == 27:
            found += [Event(base + 12 * HOUR, WEB, "failed"), Event(base + 12 * HOUR, WEB, "change_failure")]
        elif day == 28:
            found += [
                Event(base + 9 * HOUR, WEB, "success"),
                Event(base + 9 * HOUR, WEB, "lead", 3 * DAY + HOUR * day),
                Event(base + 9 * HOUR, WEB, "recovery", 21 * HOUR),
            ]
        elif day % 3 == 0:
            found += [
                Event(base + 12 * HOUR, WEB, "success"),
                Event(base + 12 * HOUR, WEB, "lead", 3 * DAY + HOUR * day),
            ]
    return sorted(found, key=lambda e: e.at)


# -- the series the watcher exports, at any time


# exposition.dora_histograms: the modes, and whether lead times and recoveries are per environment.
MODES = {"environment": True, "deployment": False}


def samples_at(
    t: int, history: list[Event], *, keys: tuple[tuple[str, str], ...] = KEYS, per_environment: bool = False
) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every sample of the five DORA families at offset ``t`` for the deployments ``keys``: (name, labels, value)."""
    if per_environment:
        for environment in sorted({e for _, e in keys}):
            mine = [e for e in history if e.key in keys and e.key[1] == environment and e.at <= t]
            yield from _histograms(mine, {"environment": environment})
    for name, environment in keys:
        key = (name, environment)
        mine = [e for e in history if e.key == key and e.at <= t]
        labels = {"deployment": name, "environment": environment}

        def count(kind: str, mine: list[Event] = mine) -> float:
            return float(sum(e.kind == kind for e in mine))

        yield "deployment_rollouts_total", {**labels, "outcome": "success"}, count("success")
        yield "deployment_rollouts_total", {**labels, "outcome": "failed"}, count("failed")
        yield "deployment_change_failures_total", labels, count("change_failure")
        yield "deployment_rework_total", labels, count("rework")
        if not per_environment:
            yield from _histograms(mine, labels)


def _histograms(mine: list[Event], labels: dict[str, str]) -> Iterator[tuple[str, dict[str, str], float]]:
    """The lead-time and recovery histograms of the events ``mine``, at the exported bounds."""
    for family, kind in (("deployment_lead_time_seconds", "lead"), ("deployment_recovery_seconds", "recovery")):
        values = [e.value for e in mine if e.kind == kind]
        for le in (*DORA_BOUNDS, math.inf):
            yield f"{family}_bucket", {**labels, "le": _le(le)}, float(sum(v <= le for v in values))
        yield f"{family}_count", labels, float(len(values))
        yield f"{family}_sum", labels, float(sum(values))


def _le(bound: float) -> str:
    """A bucket bound as the Prometheus client writes it."""
    return str(floatToGoString(bound))


def scraped_at(
    t: int, history: list[Event], *, per_environment: bool = False
) -> Iterator[tuple[str, dict[str, str], float]]:
    """The samples at ``t`` as Prometheus stores them: from the watcher of each host, with its target labels."""
    for host in sorted({h for hosts in HOSTS.values() for h in hosts}):
        target = {"job": "deployment-watcher", "instance": f"{host}:9102", "host": host}
        mine = tuple(key for key in KEYS if host in HOSTS[key])
        for name, labels, value in samples_at(t, history, keys=mine, per_environment=per_environment):
            yield name, {**labels, **target}, value


# -- the figures, by hand


@dataclass(frozen=True)
class Figures:
    """One window's figures for some deployments; None where the rules give no series."""

    deployments_per_day: float
    lead_time_p50: float | None
    change_failure_rate: float | None
    recovery_p50: float | None
    rework_rate: float | None

    def levels(self) -> dict[str, int | None]:
        """The DORA levels (3 elite … 0 low) with the thresholds of dora.yml."""
        f, lead, cfr, rec = self.deployments_per_day, self.lead_time_p50, self.change_failure_rate, self.recovery_p50
        return {
            "deployment_frequency": (f >= 1) + (f >= 1 / 7) + (f >= 1 / 30),
            "lead_time": None if lead is None else (lead < DAY) + (lead < 7 * DAY) + (lead < 30 * DAY),
            "change_failure_rate": None if cfr is None else (cfr <= 0.05) + (cfr <= 0.10) + (cfr <= 0.15),
            "recovery": None if rec is None else (rec < HOUR) + (rec < DAY) + (rec < 7 * DAY),
        }


def figures(history: list[Event], *, days: int, keys: tuple[tuple[str, str], ...], end: int = DAYS * DAY) -> Figures:
    """The figures over the ``days`` before ``end`` for the deployments ``keys`` together."""
    inside = [e for e in history if e.key in keys and end - days * DAY < e.at <= end]

    def n(kind: str) -> int:
        return sum(e.kind == kind for e in inside)

    rollouts = n("success") + n("failed")
    return Figures(
        deployments_per_day=n("success") / days,
        lead_time_p50=median_of_buckets([e.value for e in inside if e.kind == "lead"], DORA_BOUNDS),
        change_failure_rate=min(1.0, n("change_failure") / rollouts) if rollouts else None,
        recovery_p50=median_of_buckets([e.value for e in inside if e.kind == "recovery"], DORA_BOUNDS),
        rework_rate=n("rework") / rollouts if rollouts else None,
    )


def median_of_buckets(values: list[float], bounds: tuple[float, ...]) -> float | None:
    """The median as histogram_quantile estimates it from the buckets: linear within the bucket
    holding rank count / 2, from 0 in the first; the last finite bound when it falls in +Inf."""
    if not values:
        return None
    rank = len(values) / 2
    below, lower = 0, 0.0
    for upper in bounds:
        inside = sum(lower < v <= upper for v in values) if lower else sum(v <= upper for v in values)
        if below + inside >= rank:
            return lower + (upper - lower) * (rank - below) / inside
        below, lower = below + inside, upper
    return bounds[-1]
