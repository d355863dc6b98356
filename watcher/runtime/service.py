"""Wiring: one Core holding the state, root tasks supervised, the HTTP server, a bounded shutdown.

Supervision: the root tasks (the Docker watch, the rule clock, the exposition, the stats poll,
the state file) run for ever. None of them ends on what the outside world does: the Docker
sources turn every failure of the engine into an ``EngineError`` and retry (the watch
reconnects and resyncs), the state file retries a failed save, the HTTP server answers each
request on its own. So a root task that ends has met a bug in the watcher: it is logged with
the task's name, the others are stopped, the final save is made, and the process exits with
the error (``_start``, ``_raise_crashes``) for the supervisor (Docker's restart policy,
systemd) to restart it from the state file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from aiohttp import web
from prometheus_client import CollectorRegistry

from watcher import heap
from watcher.config import Settings, parse_listen_address, webconfig
from watcher.domain.machine import Step, apply
from watcher.domain.model import State
from watcher.domain.observations import Observation, Tick
from watcher.exposition.rendering import Exposition
from watcher.persistence.statefile import StateFile, state_directory
from watcher.runtime import shutdown, subscribers
from watcher.runtime.subscribers import Subscriber
from watcher.selfmetrics import SelfMetrics
from watcher.sources.api.reports import DeploymentsApi
from watcher.sources.docker.watch import DockerWatch
from watcher.sources.stats import sampling as stats
from watcher.sources.swarm.watch import SwarmWatch
from watcher.web import limits
from watcher.web import security as websecurity
from watcher.web.app import make_app
from watcher.web.board import Board
from watcher.web.readapi import ReadApi
from watcher.web.stream import EventStream

log = logging.getLogger(__name__)

SAVE_RETRY_SECONDS = 5.0  # after a failed save (full or read-only disk), even with no new change
TICK_SECONDS = 1.0  # resolution of time-based rules (stable time, deadlines, retention)
# At shutdown, for requests in flight: ours take milliseconds, and a client that stalls midway
# (a body never finished, a response never read) must not hold the stop (aiohttp waits 60 s).
HTTP_GRACE_SECONDS = 1.0
RECANCEL_SECONDS = 1.0  # a root task still running this long after its cancellation gets another
WRITER_THREAD = "state-file"


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
        self._subscribers: list[Subscriber] = []
        self.metrics.deployments.set(len(self.state.deployments))

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every observation that changed the state (it must not block)."""
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
        directory = state_directory(settings.storage.directory)
        self.state_file = (
            StateFile(directory, metrics=self.metrics, max_bytes=settings.storage.max_file_bytes) if directory else None
        )
        if self.state_file:
            log.info("state file: %s", self.state_file.path)
        else:
            log.info("no state file (storage.directory %r): nothing is kept across restarts",
                     settings.storage.directory)  # fmt: skip
        if self.state_file:
            self.state_file.lock()  # DirectoryInUse: another watcher saves there
        # Loaded before the Docker watch starts: its first resync reconciles the saved state.
        initial = self.state_file.load() if self.state_file else None
        self.core = Core(settings=settings, metrics=self.metrics, state=initial)
        # What the state machine says happened, to each subscriber: one line each.
        self.core.subscribe(subscribers.logging_to(log))
        self.core.subscribe(subscribers.counting(self.metrics.state_changes))
        self.core.subscribe(subscribers.counting_skew(self.metrics.clock_skew))
        self.stream = EventStream(
            snapshot=self.core.snapshot, settings=settings, metrics=self.metrics,
            max_clients=settings.web.max_stream_clients,
            max_clients_per_address=settings.web.max_stream_clients_per_address,
        )  # fmt: skip
        self.core.subscribe(self.stream.publish)
        self._saved = self.core.snapshot()  # the state the file holds
        self._changed = asyncio.Event()
        self.core.on_change(self._changed.set)
        # One writer thread: a save still running when the service stops ends before the final one.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=WRITER_THREAD)
        self._writing: concurrent.futures.Future[bool] | None = None  # the newest save handed to it
        self.exposition = Exposition(
            snapshot=self.core.snapshot, registry=self.registry, settings=settings, metrics=self.metrics
        )
        self.core.on_change(self.exposition.changed)
        self.docker = DockerWatch(
            settings=settings, submit=self.core.submit, metrics=self.metrics, snapshot=self.core.snapshot
        )
        self.swarm = SwarmWatch(settings=settings, submit=self.core.submit, metrics=self.metrics)
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
        """Serve until ``stop`` is set (or SIGTERM/SIGINT/SIGHUP), then stop within ``service.shutdown_timeout_seconds``.

        A root task dying stops all, raising its error. ``ShutdownIncomplete``: the shutdown did
        not finish in time, or SIGINT forced it; what did not end may still be running.
        """
        stop = stop or asyncio.Event()
        force = asyncio.Event()
        # Out of descriptors, the accept loop would log a traceback per connection it cannot take.
        with limits.accept_errors_counted(self.metrics.accept_errors), shutdown.signals(stop=stop, force=force):
            await self.exposition.refresh()  # the first scrape is served from memory too
            heap.freeze_long_lived()  # modules and the loaded state: not walked by every full collection
            board = Board(
                snapshot=self.core.snapshot,
                settings=self.settings,
                stream=self.stream,
                clock=self.core.clock,
                metrics=self.metrics,
            )
            app = make_app(
                exposition=self.exposition, ready=self.ready, why_not=lambda: self.docker.problem, board=board
            )
            app.add_routes(self.api.routes())
            read_api = ReadApi(
                snapshot=self.core.snapshot, settings=self.settings, stream=self.stream, ready=self.ready
            )
            app.add_routes(read_api.routes())
            app.on_shutdown.append(self.stream.close)  # open streams would hold the HTTP server's stop
            websecurity.install(app, config=self.web_config, failures=self.metrics.basic_auth_failures)
            websecurity.guard_hosts(  # outermost: a rebound page gets nothing, not even a basic auth prompt
                app, allowed=websecurity.allowed_hosts(self.settings.web.allowed_hosts),
                refusals=self.metrics.host_refusals,
            )  # fmt: skip
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_GRACE_SECONDS)
            await runner.setup()
            roots: list[asyncio.Task[None]] = []
            try:
                host, port = parse_listen_address(self.settings.web.listen_address)
                site = web.TCPSite(runner, host, port, ssl_context=self.web_config.tls)
                await site.start()
                self.port = runner.addresses[0][1]
                scheme = "https" if self.web_config.tls else "http"
                log.info("serving metrics on %s://%s:%d", scheme, host, self.port)
                if self.web_config.users and not self.web_config.tls:
                    log.warning("basic auth without TLS: passwords cross the network in clear text")
                limits.check_descriptors(self.settings.web.max_stream_clients)
                roots = _start(self._root_tasks())
                await _until_stopped(roots, stop=stop)
            finally:
                stop.set()  # a crash stops too; from now on SIGINT forces the exit
                log.info("stopping")
                await shutdown.bounded(
                    self._shut_down(runner, roots), timeout=self.settings.service.shutdown_timeout_seconds,
                    force=force, busy_threads=self._busy_threads,
                )  # fmt: skip
                if self.state_file:
                    self.state_file.unlock()  # saved for the last time: another watcher may take over
        _raise_crashes(roots)

    async def _shut_down(self, runner: web.AppRunner, roots: list[asyncio.Task[None]]) -> None:
        """The final save first: it is what a restart relies on (rollback counts, history), so it
        waits neither for a root task nor for a client that does not end. Then the tasks end and
        the port closes, and whatever the API accepted meanwhile is saved too."""
        for task in roots:
            task.cancel()
        await self._save()
        await asyncio.gather(
            asyncio.create_task(_ended(roots), name="root tasks ending"),
            asyncio.create_task(runner.cleanup(), name="HTTP server closing"),
        )
        await self._save()
        self._writer.shutdown(wait=False)  # the saves above have ended: nothing to wait for

    def _busy_threads(self) -> list[threading.Thread]:
        """What the shutdown may wait for in a thread: the state file's writer, while it saves."""
        if self._writing is None or self._writing.done():
            return []
        return [thread for thread in threading.enumerate() if thread.name.startswith(WRITER_THREAD)]

    def _root_tasks(self) -> dict[str, Coroutine[Any, Any, NoReturn]]:
        tasks = {
            "docker watch": self.docker.run_forever(),
            "swarm watch": self.swarm.run_forever(),
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
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
                # arrives in the same instant as the change it waits for, and the loop goes on.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SAVE_RETRY_SECONDS):
                        await self._changed.wait()
            await asyncio.sleep(self.settings.storage.debounce_seconds)
            await self._save()

    async def _save(self) -> None:
        self._changed.clear()
        state = self.core.snapshot()
        if self.state_file is None or state is self._saved:
            return
        self._writing = self._writer.submit(self._write, self.state_file, state)
        if await asyncio.wrap_future(self._writing):
            self._saved = state

    @staticmethod
    def _write(state_file: StateFile, state: State) -> bool:
        """In the writer thread: the save, then its encoding's temporaries (megabytes at 1,000
        deployments) handed back to the OS, neither on the event loop."""
        try:
            return state_file.save(state)
        finally:
            heap.release_free_memory()


def _start(coroutines: dict[str, Coroutine[Any, Any, NoReturn]]) -> list[asyncio.Task[None]]:
    """The root tasks, named: a crash is logged with the name, and so is a task that does not stop."""

    async def watch(name: str, coroutine: Coroutine[Any, Any, NoReturn]) -> None:
        try:
            await coroutine
        except Exception:
            log.exception("root task %r crashed; stopping the watcher", name)
            raise

    return [asyncio.create_task(watch(name, coroutine), name=name) for name, coroutine in coroutines.items()]


async def _until_stopped(roots: list[asyncio.Task[None]], *, stop: asyncio.Event) -> None:
    """Until ``stop`` is set or a root task ends (they never should: it crashed)."""
    stopped = asyncio.create_task(stop.wait(), name="until stopped")
    try:
        await asyncio.wait([stopped, *roots], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()


async def _ended(roots: list[asyncio.Task[None]]) -> None:
    """Until the cancelled root tasks have ended.

    One still running RECANCEL_SECONDS after its cancellation is cancelled again: a cancellation
    can be lost (Python 3.11's asyncio.wait_for drops one that arrives in the same instant as
    the result it waits for; the watcher's own loops use asyncio.timeout, libraries may not),
    and the task then carries on as if never told to stop.
    """
    pending = {task for task in roots if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
        for task in pending:
            log.warning("root task %r still running after its cancellation; cancelling it again", task.get_name())
            task.cancel()


def _raise_crashes(roots: list[asyncio.Task[None]]) -> None:
    errors = [error for task in roots if not task.cancelled() and (error := task.exception()) is not None]
    if errors:
        raise BaseExceptionGroup("root tasks crashed", errors)
