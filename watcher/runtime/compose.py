"""The composition root: the core, the sources, the outputs and the HTTP server, built from settings.

``SOURCES`` lists every source; a new one is its package under ``watcher/sources/`` and one line
there. Each is built from one ``Given``, runs as a root task (``watcher.runtime.supervision``),
serves its routes, and says whether it is fresh: ``/ready`` and the rule clock wait for all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from aiohttp import web
from prometheus_client import CollectorRegistry

from watcher import heap
from watcher.config import ENV_PREFIX, Settings, parse_listen_address, webconfig
from watcher.domain.events import AnalysisFinished, TimeRefused
from watcher.exposition.rendering import Exposition
from watcher.runtime import shutdown, subscribers, supervision
from watcher.runtime.core import Core
from watcher.runtime.saver import StateSaver
from watcher.selfmetrics import SelfMetrics
from watcher.sources.analysis.source import AnalysisSource
from watcher.sources.api.reports import DeploymentsApi
from watcher.sources.docker.watch import DockerWatch
from watcher.sources.source import Given, Source
from watcher.sources.stats.sampling import StatsPoll
from watcher.sources.swarm.watch import SwarmWatch
from watcher.web import limits
from watcher.web import security as websecurity
from watcher.web.app import make_app
from watcher.web.board import Board
from watcher.web.boardparts import WatcherHealth
from watcher.web.readapi import ReadApi
from watcher.web.stream import EventStream

log = logging.getLogger(__name__)

# Every source of observations, in the order they start.
SOURCES: tuple[Callable[[Given], Source], ...] = (
    DockerWatch.given,
    SwarmWatch.given,
    StatsPoll.given,
    DeploymentsApi.given,
    AnalysisSource.given,  # does nothing while analysis.prometheus_url is empty
)
# At shutdown, for requests in flight: ours take milliseconds, and a client that stalls midway
# (a body never finished, a response never read) must not hold the stop (aiohttp waits 60 s).
HTTP_GRACE_SECONDS = 1.0


class CannotListen(Exception):
    """The listen address is taken, or forbidden: one line naming the setting to change."""

    def __init__(self, address: str, error: OSError) -> None:
        why = os.strerror(error.errno).lower() if error.errno else str(error)
        if error.errno == errno.EACCES:
            why += " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
        super().__init__(
            f"cannot listen on {address}: {why}; choose another address with --web.listen-address "
            f"(or {ENV_PREFIX}WEB_LISTEN_ADDRESS, web.listen_address in the config file)"
        )


class Watcher:
    """Everything the watcher runs, built from settings; ``run()`` (once) until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        api_token: str | None = None,
        sources: Sequence[Callable[[Given], Source]] = SOURCES,
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self.saver = StateSaver(settings.storage, metrics=self.metrics)
        self.core = Core(settings=settings, metrics=self.metrics, state=self.saver.load())
        # What the state machine says happened, to each subscriber: one line each.
        self.core.subscribe(subscribers.logging_to(log))
        self.core.subscribe(subscribers.counting(self.metrics.state_changes))
        self.core.subscribe(subscribers.counting_each(self.metrics.clock_skew, TimeRefused, lambda e: e.source))
        self.core.subscribe(
            subscribers.counting_each(self.metrics.analyses, AnalysisFinished, lambda e: e.outcome.text)
        )
        self.stream = EventStream(
            snapshot=self.core.snapshot, settings=settings, metrics=self.metrics,
            max_clients=settings.web.max_stream_clients,
            max_clients_per_address=settings.web.max_stream_clients_per_address,
        )  # fmt: skip
        self.core.subscribe(self.stream.publish)
        self.core.on_change(self.saver.follow(self.core.snapshot))
        self.exposition = Exposition(
            snapshot=self.core.snapshot, registry=self.registry, settings=settings, metrics=self.metrics
        )
        self.core.on_change(lambda _: self.exposition.changed())
        given = Given(
            settings=settings, metrics=self.metrics, submit=self.core.submit, step=self.core.step,
            snapshot=self.core.snapshot, clock=self.core.clock, api_token=api_token,
        )  # fmt: skip
        self.sources = [make(given) for make in sources]
        self.port: int | None = None  # bound port, once serving (0 in settings picks a free one)
        path = settings.web.config_file
        self.web_config = webconfig.load(path) if path else webconfig.WebConfig()

    def ready(self) -> bool:
        """Every source is fresh: what the state shows is current."""
        return all(source.fresh() for source in self.sources)

    def own_health(self) -> WatcherHealth:
        """What the board's summary says of the watcher: its Docker source fresh (as ``/ready``), Swarm
        services followed, analysis configured."""
        by_name = {source.name: source for source in self.sources}
        docker, swarm = by_name.get("docker watch"), by_name.get("swarm watch")
        return WatcherHealth(
            docker=docker is not None and docker.fresh(),
            swarm=bool(getattr(swarm, "following", False)) and swarm is not None and swarm.fresh(),
            analysis=bool(self.settings.analysis.prometheus_url),
        )

    def why_not(self) -> str:
        return "; ".join(source.problem() for source in self.sources if not source.fresh())

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
            runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=HTTP_GRACE_SECONDS)
            await runner.setup()
            roots: list[asyncio.Task[None]] = []
            try:
                host, port = parse_listen_address(self.settings.web.listen_address)
                site = web.TCPSite(runner, host, port, ssl_context=self.web_config.tls)
                try:
                    await site.start()
                except OSError as exc:
                    raise CannotListen(self.settings.web.listen_address, exc) from None
                self.port = runner.addresses[0][1]
                scheme = "https" if self.web_config.tls else "http"
                log.info("serving metrics on %s://%s:%d", scheme, host, self.port)
                if self.web_config.users and not self.web_config.tls:
                    log.warning("basic auth without TLS: passwords cross the network in clear text")
                limits.check_descriptors(self.settings.web.max_stream_clients)
                roots = supervision.start(self._root_tasks())
                await supervision.until_stopped(roots, stop=stop)
            finally:
                stop.set()  # a crash stops too; from now on SIGINT forces the exit
                log.info("stopping")
                await shutdown.bounded(
                    self._shut_down(runner, roots), timeout=self.settings.service.shutdown_timeout_seconds,
                    force=force, busy_threads=self.saver.busy_threads,
                )  # fmt: skip
                self.saver.release()
        supervision.raise_crashes(roots)

    def _app(self) -> web.Application:
        board = Board(
            snapshot=self.core.snapshot, settings=self.settings, stream=self.stream, clock=self.core.clock,
            metrics=self.metrics, health=self.own_health, grafana_url=self.settings.web.grafana_url,
        )  # fmt: skip
        app = make_app(exposition=self.exposition, ready=self.ready, why_not=self.why_not, board=board)
        for source in self.sources:
            app.add_routes(source.routes())
        read_api = ReadApi(snapshot=self.core.snapshot, settings=self.settings, stream=self.stream, ready=self.ready)
        app.add_routes(read_api.routes())
        app.on_shutdown.append(self.stream.close)  # open streams would hold the HTTP server's stop
        websecurity.install(app, config=self.web_config, failures=self.metrics.basic_auth_failures)
        websecurity.guard_hosts(  # outermost: a rebound page gets nothing, not even a basic auth prompt
            app, allowed=websecurity.allowed_hosts(self.settings.web.allowed_hosts),
            refusals=self.metrics.host_refusals,
        )  # fmt: skip
        return app

    async def _shut_down(self, runner: web.AppRunner, roots: list[asyncio.Task[None]]) -> None:
        """The final save first: it is what a restart relies on (rollback counts, history), so it
        waits neither for a root task nor for a client that does not end. Then the tasks end and
        the port closes, and whatever the API accepted meanwhile is saved too."""
        for task in roots:
            task.cancel()
        await self.saver.save()
        await asyncio.gather(
            asyncio.create_task(supervision.ended(roots), name="root tasks ending"),
            asyncio.create_task(runner.cleanup(), name="HTTP server closing"),
        )
        await self.saver.save(final=True)
        self.saver.close()  # the saves above have ended: nothing to wait for

    def _root_tasks(self) -> dict[str, Coroutine[Any, Any, NoReturn]]:
        tasks = {source.name: source.run_forever() for source in self.sources}
        # Time alone judges nothing while a source is away: a loaded state holds facts from before
        # the restart until the first resync, and after a disconnect the last facts may be stale.
        # Judged by the clock, a rollout would pass its stable time or deadline on them.
        tasks["rule clock"] = self.core.tick_forever(fresh=self.ready)
        tasks["exposition"] = self.exposition.run_forever()
        tasks["heap"] = heap.keep_frozen()
        if self.saver.state_file:
            tasks["state file"] = self.saver.save_forever()
        return tasks
