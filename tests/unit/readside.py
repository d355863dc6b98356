"""An in-process watcher app with the read side (board, read API, stream) and the CI/CD API, as the service wires it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.unit.builders import SETTINGS
from watcher.config import Settings
from watcher.config.webconfig import WebConfig
from watcher.domain.model import DeploymentKey, State
from watcher.domain.observations import Observation
from watcher.exposition.rendering import Exposition
from watcher.runtime.core import Core
from watcher.selfmetrics import SelfMetrics
from watcher.sources.api.reports import DeploymentsApi
from watcher.web import security
from watcher.web.app import make_app
from watcher.web.board import Board
from watcher.web.readapi import ReadApi
from watcher.web.stream import EventStream

NOW = 1_750_000_000.0
TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class ReadSide:
    core: Core
    stream: EventStream
    metrics: SelfMetrics
    registry: CollectorRegistry
    clock: Clock = field(default_factory=Clock)

    def submit(self, *observations: Observation) -> None:
        for observation in observations:
            self.clock.now = max(self.clock.now, observation.at)
            self.core.submit(observation)

    def copies(self, key: DeploymentKey, count: int) -> None:
        """The state becomes ``count`` copies of deployment ``key``, named service-0000 and on (for the
        board at scale)."""
        one = self.core.state.deployments[key]
        self.core.state = State({
            name: dataclasses.replace(one, key=name)
            for name in (DeploymentKey(f"service-{n:04d}", key.environment) for n in range(count))
        })  # fmt: skip


def read_side(
    *, settings: Settings = SETTINGS, web_config: WebConfig | None = None, queue_events: int = 256,
    write_timeout: float = 10.0, buffer_events: int = 1000, max_clients: int = 256, max_clients_per_address: int = 32,
    heartbeat: float = 15.0, ready: Callable[[], bool] = lambda: True,
) -> tuple[web.Application, ReadSide]:  # fmt: skip
    """The app and its parts, wired like ``Service.run`` does (basic auth when ``web_config`` has users;
    ``ready()`` what /ready and the read API say of the Docker sync)."""
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    clock = Clock()
    core = Core(settings=settings, metrics=metrics, clock=clock)
    stream = EventStream(
        snapshot=core.snapshot, settings=settings, metrics=metrics, queue_events=queue_events,
        write_timeout=write_timeout, buffer_events=buffer_events, max_clients=max_clients,
        max_clients_per_address=max_clients_per_address, heartbeat=heartbeat,
    )  # fmt: skip
    core.subscribe(stream.publish)
    exposition = Exposition(snapshot=core.snapshot, registry=registry, settings=settings, metrics=metrics)
    board = Board(snapshot=core.snapshot, settings=settings, stream=stream, clock=clock, metrics=metrics)
    app = make_app(exposition=exposition, ready=ready, board=board)
    api = DeploymentsApi(
        token=TOKEN, settings=settings, snapshot=core.snapshot, step=core.step, clock=clock, metrics=metrics
    )
    app.add_routes(api.routes())
    app.add_routes(ReadApi(snapshot=core.snapshot, settings=settings, stream=stream, ready=ready, clock=clock).routes())
    app.on_shutdown.append(stream.close)
    if web_config is not None:
        security.install(app, config=web_config, failures=metrics.basic_auth_failures)
    return app, ReadSide(core, stream, metrics, registry, clock)
