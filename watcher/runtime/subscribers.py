"""Subscribers to the state machine's events: what the watcher does with each (a log line, a count).

A subscriber is any callable taking one ``DomainEvent`` (the hook protocol ``Subscriber``);
``Watcher`` registers them on the ``Core``, one line each, and the core calls every subscriber
with every event of a step, in order, once the new state is in place. A subscriber runs on the
event loop inside that step: it must not block, and it never reaches back into a source or
submits an observation (``lint-imports`` keeps this module from importing any adapter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from prometheus_client import Counter

from watcher.domain.analysis import Outcome
from watcher.domain.events import AnalysisFinished, DeploymentRejected, DomainEvent, StaleObservation, TimeRefused

E = TypeVar("E", bound=DomainEvent)


class Subscriber(Protocol):
    def __call__(self, event: DomainEvent, /) -> None: ...


# Stale observations are routine after a reconnect; a rejected deployment is a limit an operator must
# see, and a time refused for clock skew a clock (a CI runner's, a laptop's) someone must set right.
_LEVELS: Mapping[type[DomainEvent], int] = {
    StaleObservation: logging.DEBUG, DeploymentRejected: logging.WARNING, TimeRefused: logging.WARNING,
}  # fmt: skip


def logging_to(log: logging.Logger) -> Subscriber:
    """Each event as one line of ``log``: ``deployment <name>/<environment>: <message>``."""

    def log_line(event: DomainEvent) -> None:
        level = _LEVELS.get(type(event), logging.INFO)
        if isinstance(event, AnalysisFinished) and event.outcome in (Outcome.FAILED, Outcome.INCONCLUSIVE):
            # A rollout analysed for nothing (Prometheus down, no traffic) or failed by it: someone must look.
            level = logging.WARNING
        log.log(level, "deployment %s/%s: %s", event.key.name, event.key.environment, event.message)

    return log_line


def counting(counter: Counter) -> Subscriber:
    """Each event counted in ``counter`` under its ``kind``."""

    def count(event: DomainEvent) -> None:
        counter.labels(event.kind).inc()

    return count


def counting_each(counter: Counter, kind: type[E], label: Callable[[E], str]) -> Subscriber:
    """Each event of ``kind`` counted in ``counter`` under ``label(event)`` (a time refused for clock
    skew under its source, an analysis ended under its outcome)."""

    def count(event: DomainEvent) -> None:
        if isinstance(event, kind):
            counter.labels(label(event)).inc()

    return count
