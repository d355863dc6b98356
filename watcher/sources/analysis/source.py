"""The analysis source: the checks of rollouts under analysis, measured in Prometheus.

Every second it reads the state and sends the queries due (``schedule``), a few at a time; each
answer is an ``AnalysisMeasured``, whatever it says: the core judges it. Prometheus away is a run
of error measurements, never a failure of the rollout nor of the watcher; with
``analysis.prometheus_url`` empty the source does nothing at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn

from watcher.config import Settings
from watcher.domain.model import State
from watcher.domain.observations import AnalysisMeasured
from watcher.selfmetrics import SelfMetrics
from watcher.sources.analysis.prometheus import Answer, Prometheus
from watcher.sources.analysis.schedule import Query, Schedule
from watcher.sources.source import Given, Source

log = logging.getLogger(__name__)

# Queries in flight at once: 100 deployments × 2 checks every 30 s is 7 a second, each a few ms.
CONCURRENCY = 8


@dataclass
class AnalysisSource(Source):
    settings: Settings
    snapshot: Callable[[], State]
    submit: Callable[[AnalysisMeasured], None]
    metrics: SelfMetrics
    clock: Callable[[], float] = time.time
    scan_seconds: float = 1.0  # how often the state is read for queries due
    name: ClassVar[str] = "analysis"
    _failing: dict[str, str] = field(default_factory=dict)  # check → its last error, logged once
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def given(cls, given: Given) -> AnalysisSource:
        return cls(
            settings=given.settings, snapshot=given.snapshot, submit=given.submit, metrics=given.metrics,
            clock=given.clock,
        )  # fmt: skip

    def problem(self) -> str:
        # Always fresh: Prometheus away must not make /ready fail (nor hold the rule clock); said here.
        return "; ".join(f"analysis {check}: {error}" for check, error in sorted(self._failing.items()))

    async def run_forever(self) -> NoReturn:
        settings = self.settings.analysis
        if not settings.prometheus_url:
            await asyncio.Event().wait()  # never set: analysis off
        schedule = Schedule(settings.interval_seconds)
        limit = asyncio.Semaphore(CONCURRENCY)
        async with Prometheus(settings) as prometheus:
            try:
                while True:
                    for query in schedule.due(self.snapshot(), self.clock()):
                        schedule.started(query)
                        task = asyncio.create_task(
                            self._measure(prometheus, query, schedule, limit), name=f"analysis {query.check}"
                        )
                        self._tasks.add(task)
                        task.add_done_callback(self._done)
                    await asyncio.sleep(self.scan_seconds)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _measure(
        self, prometheus: Prometheus, query: Query, schedule: Schedule, limit: asyncio.Semaphore
    ) -> None:
        sent_at = self.clock()
        try:
            async with limit:
                sent_at = self.clock()  # the next measurement is an interval after this one was asked
                answer = await prometheus.query(query.promql, at=query.at)
        finally:
            schedule.finished(query, sent_at=sent_at)
        self.metrics.analysis_queries.labels(answer.result).inc()
        self._log(query, answer)
        self.submit(AnalysisMeasured(
            at=sent_at, key=query.key, revision=query.revision, check=query.check, value=answer.value,
            error=answer.error, baseline=query.baseline,
        ))  # fmt: skip

    def _log(self, query: Query, answer: Answer) -> None:
        """A warning when a check's queries start failing (or fail differently), a line when they answer again."""
        last = self._failing.get(query.check)
        if answer.error and answer.error != last:
            log.warning("analysis %s: the query failed: %s", query.check, answer.error)
            self._failing[query.check] = answer.error
        elif not answer.error and last is not None:
            log.info("analysis %s: Prometheus answers again", query.check)
            del self._failing[query.check]

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("analysis: a measurement failed unexpectedly", exc_info=error)
