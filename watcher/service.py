"""Wiring: one Core holding the state, root tasks supervised, the HTTP server, signals."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from aiohttp import web
from prometheus_client import CollectorRegistry

from watcher import heap, stats, webconfig, websecurity
from watcher.api import DeploymentsApi
from watcher.config import Settings, parse_listen_address
from watcher.docker_watch import DockerWatch
from watcher.exposition import Exposition
from watcher.http import make_app
from watcher.observations import Observation, Tick
from watcher.selfmetrics import SelfMetrics
from watcher.state import State, Step, apply
from watcher.store import StateFile

log = logging.getLogger(__name__)

SAVE_RETRY_SECONDS = 5.0  # after a failed save (full or read-only disk), even with no new change
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
        self.metrics.deployments.set(len(self.state.deployments))

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every observation that changed the state (it must not block)."""
        self._listeners.append(listener)

    def snapshot(self) -> State:
        return self.state

    def submit(self, observation: Observation) -> None:
        self.step(observation)

    def step(self, observation: Observation) -> Step:
        """Apply ``observation`` and say what it did (the CI/CD API answers with it)."""
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


class Service:
    """Everything the watcher runs, built from settings; ``run()`` (once) until stopped."""

    def __init__(
        self, settings: Settings, *, registry: CollectorRegistry | None = None, api_token: str | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        directory = settings.storage.directory
        self.state_file = StateFile(directory, metrics=self.metrics) if directory else None
        # Loaded before the Docker watch starts: its first resync reconciles the saved state.
        initial = self.state_file.load() if self.state_file else None
        self.core = Core(settings=settings, metrics=self.metrics, state=initial)
        self._saved = self.core.snapshot()  # the state the file holds
        self._changed = asyncio.Event()
        self.core.on_change(self._changed.set)
        # One writer thread: a save still running when the service stops ends before the final one.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-file")
        self.exposition = Exposition(
            snapshot=self.core.snapshot, registry=self.registry, settings=settings, metrics=self.metrics
        )
        self.core.on_change(self.exposition.changed)
        self.docker = DockerWatch(settings=settings, submit=self.core.submit, metrics=self.metrics)
        self.api = DeploymentsApi(
            token=api_token, settings=settings, snapshot=self.core.snapshot, step=self.core.step,
            clock=self.core.clock, metrics=self.metrics,
        )  # fmt: skip
        self.port: int | None = None  # bound port, once serving (0 in settings picks a free one)
        path = settings.web.config_file
        self.web_config = webconfig.load(path) if path else webconfig.WebConfig()

    def ready(self) -> bool:
        return self.docker.connected

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or SIGTERM/SIGINT); a root task dying stops all, raising its error."""
        stop = stop or asyncio.Event()
        await self.exposition.refresh()  # the first scrape is served from memory too
        heap.freeze_long_lived()  # modules and the loaded state: not walked by every full collection
        app = make_app(exposition=self.exposition, ready=self.ready)
        app.add_routes(self.api.routes())
        websecurity.install(app, config=self.web_config, failures=self.metrics.basic_auth_failures)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            host, port = parse_listen_address(self.settings.web.listen_address)
            site = web.TCPSite(runner, host, port, ssl_context=self.web_config.tls)
            await site.start()
            self.port = runner.addresses[0][1]
            scheme = "https" if self.web_config.tls else "http"
            log.info("serving metrics on %s://%s:%d", scheme, host, self.port)
            if self.web_config.users and not self.web_config.tls:
                log.warning("basic auth without TLS: passwords cross the network in clear text")
            await _supervise(self._root_tasks(), stop=stop)
        finally:
            try:
                await self._save()  # whatever changed since the last save
            finally:
                self._writer.shutdown(wait=True)
                await runner.cleanup()

    def _root_tasks(self) -> dict[str, Coroutine[Any, Any, NoReturn]]:
        tasks = {
            "docker watch": self.docker.run_forever(),
            "rule clock": self._rule_clock(),
            "exposition": self.exposition.run_forever(),
        }
        if self.settings.stats.enabled:
            tasks["stats poll"] = stats.poll_forever(
                settings=self.settings, snapshot=self.core.snapshot, submit=self.core.submit, metrics=self.metrics
            )
        if self.state_file:
            tasks["state file"] = self._save_forever()
        return tasks

    async def _rule_clock(self) -> NoReturn:
        # Time alone judges nothing while Docker is away: a loaded state holds facts from before
        # the restart until the first resync, and after a disconnect the last facts may be stale.
        # Judged by the clock, a rollout would pass its stable time or deadline on them.
        await self.core.tick_forever(fresh=lambda: self.docker.connected)

    async def _save_forever(self) -> NoReturn:
        """Save after a change, at most once per debounce period: changes meanwhile ride along.
        After a failed save, try again every SAVE_RETRY_SECONDS even when nothing changes."""
        while True:
            if self.core.snapshot() is self._saved:
                await self._changed.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), SAVE_RETRY_SECONDS)
            await asyncio.sleep(self.settings.storage.debounce_seconds)
            await self._save()

    async def _save(self) -> None:
        self._changed.clear()
        state = self.core.snapshot()
        if self.state_file is None or state is self._saved:
            return
        if await asyncio.get_running_loop().run_in_executor(self._writer, self._write, self.state_file, state):
            self._saved = state

    @staticmethod
    def _write(state_file: StateFile, state: State) -> bool:
        """In the writer thread: the save, then its encoding's temporaries (megabytes at 1,000
        deployments) handed back to the OS, neither on the event loop."""
        try:
            return state_file.save(state)
        finally:
            heap.release_free_memory()


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
