"""The core: the current state, the one place observations are applied, and who hears of it.

Every source submits here; each step's events go to the subscribers in order
(``watcher.runtime.subscribers``), and a change is told to the listeners (the exposition, the
state saver). Time passing is an observation too, sent by ``tick_forever``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NoReturn

from watcher.config import Settings
from watcher.domain.machine import Step, apply
from watcher.domain.model import State
from watcher.domain.observations import Observation, Tick
from watcher.runtime.subscribers import Subscriber
from watcher.selfmetrics import SelfMetrics

TICK_SECONDS = 1.0  # resolution of time-based rules (stable time, deadlines, retention)


class Core:
    """Holds the current state; the one place observations are applied."""

    def __init__(
        self,
        *,
        settings: Settings,
        metrics: SelfMetrics,
        clock: Callable[[], float] = time.time,
        state: State | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.state = state or State()
        self._listeners: list[Callable[[Step], None]] = []
        self._subscribers: list[Subscriber] = []
        self.metrics.deployments.set(len(self.state.deployments))

    def on_change(self, listener: Callable[[Step], None]) -> None:
        """Call ``listener(step)`` after every observation that changed the state (it must not block)."""
        self._listeners.append(listener)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Hand ``subscriber`` every event of every step, in order (see ``watcher.runtime.subscribers``)."""
        self._subscribers.append(subscriber)

    def snapshot(self) -> State:
        return self.state

    def submit(self, observation: Observation) -> None:
        self.step(observation)

    def step(self, observation: Observation) -> Step:
        """Apply ``observation`` and say what it did (the CI/CD API answers with it)."""
        step = apply(self.state, observation, now=self.clock(), settings=self.settings)
        changed = step.state is not self.state
        self.state = step.state
        for event in step.events:
            for subscriber in self._subscribers:
                subscriber(event)
        self.metrics.deployments.set(len(self.state.deployments))
        if changed:
            for listener in self._listeners:
                listener(step)
        return step

    async def tick_forever(self, *, fresh: Callable[[], bool] = lambda: True) -> NoReturn:
        """Time passing, every TICK_SECONDS, but only while ``fresh()``: rules that fire on time
        alone (stable time, deadlines) must not judge data that may be stale. After a
        disconnect, the resync's fresh data decides first."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if fresh():
                self.submit(Tick(self.clock()))
            # Counted here, on the loop's thread: renderings run in a worker thread.
            self.metrics.asyncio_tasks.set(len(asyncio.all_tasks()))
