"""The live part of ``--check-config``: each configured check's query run once against Prometheus.

Placeholders are filled with a sample deployment, so a query that Prometheus refuses (a syntax
error, an unknown function) or that returns several series is found before a rollout asks for it.
No data is fine: the sample deployment has none. When Prometheus does not answer at all, nothing
could be tried: that is said, not counted as a problem (the config may be checked where Prometheus
is out of reach, in CI).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from watcher.config import Settings
from watcher.domain.analysis import fill
from watcher.sources.analysis.prometheus import Prometheus


@dataclass(frozen=True)
class Trial:
    problems: list[str] = field(default_factory=list)  # each failing query, every one
    unreachable: str = ""  # why nothing could be tried


def sample(settings: Settings) -> dict[str, str]:
    """The placeholders' values for the trial."""
    return {
        "deployment": "sample", "environment": settings.labels.default_environment, "version": "sample",
        "previous_version": "sample-previous", "host": settings.analysis.host or "sample",
    }  # fmt: skip


async def try_checks(settings: Settings) -> Trial:
    """Each check's query, filled with ``sample``, run once (all at once)."""
    checks = settings.analysis.checks
    if not settings.analysis.prometheus_url or not checks:
        return Trial()
    values = sample(settings)
    async with Prometheus(settings.analysis) as prometheus:
        answers = await asyncio.gather(*(prometheus.query(fill(check.query, values)) for check in checks))
    if not any(answer.answered for answer in answers):
        return Trial(unreachable=f"Prometheus at {settings.analysis.prometheus_url} did not answer: {answers[0].error}")
    return Trial(problems=[
        f"analysis.checks {check.name}: its query (with a sample deployment) failed: {answer.error}"
        for check, answer in zip(checks, answers, strict=True) if answer.error
    ])  # fmt: skip
