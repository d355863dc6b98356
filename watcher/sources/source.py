"""The one seam every source plugs into, as Traefik's ``Provider``: what it is given, what it says.

A source turns the outside world into observations and nothing else. The runtime builds each
from one ``Given`` (``watcher.runtime.compose.SOURCES``), runs its ``run_forever`` as a root
task, serves its ``routes``, and asks every source whether it is ``fresh``: ``/ready`` and the
rule clock wait until all are, so time alone never judges what a lagging source last said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NoReturn, Protocol

from aiohttp import web

from watcher.config import Settings
from watcher.domain.machine import Step
from watcher.domain.model import State
from watcher.domain.observations import Observation
from watcher.selfmetrics import SelfMetrics


@dataclass(frozen=True)
class Given:
    """What the runtime hands every source."""

    settings: Settings
    metrics: SelfMetrics
    submit: Callable[[Observation], None]  # where observations go
    step: Callable[[Observation], Step]  # the same, for a source that answers with what it did (an API)
    snapshot: Callable[[], State]  # the state now (what to sample, what awaits a start)
    clock: Callable[[], float]
    api_token: str | None = None  # a secret, read by the CLI: not in the settings, never logged


class Source(Protocol):
    """A source of observations; subclass it for the defaults (always fresh, no routes)."""

    name: ClassVar[str]  # its root task's name, in logs

    async def run_forever(self) -> NoReturn:
        """Observe for ever: a failure of the outside world is retried here, never raised."""
        ...

    def fresh(self) -> bool:
        """Whether what it last reported is current (connected and resynced)."""
        return True

    def problem(self) -> str:
        """Why it is not fresh: the last failure, for ``/ready``."""
        return ""

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes it serves (a push source's endpoint)."""
        return []
