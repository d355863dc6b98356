"""Wiring: one Core holding the state, root tasks supervised, the HTTP server, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from aiohttp import web
from prometheus_client import CollectorRegistry

from watcher import stats
from watcher.collector import DeploymentCollector
from watcher.config import Settings, parse_listen_address
from watcher.docker_watch import DockerWatch
from watcher.http import make_app
from watcher.observations import Observation, Tick
from watcher.selfmetrics import SelfMetrics
from watcher.state import State, apply

log = logging.getLogger(__name__)

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
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every observation that changed the state (it must not block)."""
        self._listeners.append(listener)

    def snapshot(self) -> State:
        return self.state

    def submit(self, observation: Observation) -> None:
        step = apply(self.state, observation, now=self.clock(), settings=self.settings)
        changed = step.state is not self.state
        self.state = step.state
        for note in step.notes:
            self.metrics.notes.labels(note.kind).inc()
            level = logging.DEBUG if note.kind == "stale" else logging.INFO
            if note.kind == "rejected":
                level = logging.WARNING
            log.log(level, "deployment %s/%s: %s", note.key.name, note.key.environment, note.message)
        self.metrics.deployments.set(len(self.state.deployments))
        if changed:
            for listener in self._listeners:
                listener()

    async def tick_forever(self) -> NoReturn:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.submit(Tick(self.clock()))
            # Counted here, on the loop's thread: scrapes render in a worker thread.
            self.metrics.asyncio_tasks.set(len(asyncio.all_tasks()))


class Service:
    """Everything the watcher runs, built from settings; ``run()`` until stopped."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self.core = Core(settings=settings, metrics=self.metrics)
        self.registry.register(DeploymentCollector(snapshot=self.core.snapshot, settings=settings))
        self.docker = DockerWatch(settings=settings, submit=self.core.submit, metrics=self.metrics)
        self.port: int | None = None  # bound port, once serving (0 in settings picks a free one)

    def ready(self) -> bool:
        return self.docker.connected

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or SIGTERM/SIGINT); a root task dying stops all, raising its error."""
        stop = stop or asyncio.Event()
        runner = web.AppRunner(make_app(registry=self.registry, ready=self.ready), access_log=None)
        await runner.setup()
        try:
            host, port = parse_listen_address(self.settings.web.listen_address)
            site = web.TCPSite(runner, host, port)
            await site.start()
            self.port = runner.addresses[0][1]
            log.info("serving metrics on %s:%d", host, self.port)
            await _supervise(self._root_tasks(), stop=stop)
        finally:
            await runner.cleanup()

    def _root_tasks(self) -> dict[str, Coroutine[Any, Any, NoReturn]]:
        tasks = {"docker watch": self.docker.run_forever(), "rule clock": self.core.tick_forever()}
        if self.settings.stats.enabled:
            tasks["stats poll"] = stats.poll_forever(
                settings=self.settings, snapshot=self.core.snapshot, submit=self.core.submit, metrics=self.metrics
            )
        return tasks


class _Stopped(Exception):
    pass


async def _supervise(tasks: dict[str, Coroutine[Any, Any, NoReturn]], *, stop: asyncio.Event) -> None:
    """Run root tasks until ``stop``: any task ending (they never should) cancels the others."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signum, stop.set)

    async def watch(name: str, coro: Coroutine[Any, Any, NoReturn]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("root task %r crashed; stopping the watcher", name)
            raise

    async def until_stopped() -> None:
        await stop.wait()
        raise _Stopped

    try:
        async with asyncio.TaskGroup() as group:
            for name, coro in tasks.items():
                group.create_task(watch(name, coro), name=name)
            group.create_task(until_stopped(), name="stop")
    except* _Stopped:
        log.info("stopping")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
