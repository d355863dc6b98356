"""Label problems as every source reports them: one warning per object and problem, counted once.

A container or service with a bad label is seen again at every event and resync; the warning is
for the person who deployed it, once, until the object is gone (``forget``, ``keep_only``).
"""

from __future__ import annotations

import logging
from collections.abc import Set
from dataclasses import dataclass, field

from watcher.domain import labels
from watcher.domain.labels import Parsed
from watcher.selfmetrics import SelfMetrics


@dataclass
class LabelProblems:
    kind: str  # what the objects are ("container", "service"), first word of the warning
    log: logging.Logger  # the source's own logger
    metrics: SelfMetrics
    analysis_off: bool = False  # analysis.prometheus_url is empty: requests for it are ignored
    _warned: set[str] = field(default_factory=set)  # objects whose problems were logged
    _off_said: bool = False

    def report(self, object_id: str, name: str, parsed: Parsed) -> None:
        asked = parsed.identity is not None and parsed.identity.analysis is not None
        if asked and self.analysis_off and not self._off_said:
            self._off_said = True  # once: every deployment asking would repeat it
            self.log.info(
                "%s %s asks for rollout analysis (%s), which is off (analysis.prometheus_url is empty): ignored",
                self.kind, name or object_id[:12], labels.ANALYSIS,
            )  # fmt: skip
        if not parsed.problems or object_id in self._warned:
            return
        self._warned.add(object_id)
        name = name or object_id[:12]
        for problem in parsed.problems:
            self.metrics.label_errors.labels(problem.label).inc()
            self.log.warning("%s %s: label %s %s", self.kind, name, problem.label, problem.message)

    def forget(self, object_id: str) -> None:
        self._warned.discard(object_id)

    def keep_only(self, object_ids: Set[str]) -> None:
        self._warned &= object_ids
