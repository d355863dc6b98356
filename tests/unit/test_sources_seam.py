"""One seam for every source: the runtime built from a list that includes a fake source runs it,
serves its routes, waits for it in ``/ready`` and the rule clock, and stops it. Nothing else
names the fake: a new source is its own package and one line in ``SOURCES``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import ClassVar, NoReturn

import aiohttp
import pytest
from aiohttp import web

from tests.polling import poll_async
from watcher.config import DockerSettings, ServiceSettings, Settings, StorageSettings, WebSettings
from watcher.domain.model import DeploymentKey, Identity, Instance
from watcher.domain.observations import InstanceSeen, Observation, Tick
from watcher.runtime import core as core_module
from watcher.runtime.compose import SOURCES, Watcher
from watcher.sources.source import Given, Source

KEY = DeploymentKey("fake", "production")


class FakeSource(Source):
    """Reports one instance at once, and is fresh only once the test says it synced."""

    name: ClassVar[str] = "fake source"

    def __init__(self, given: Given) -> None:
        self.given = given
        self.synced = asyncio.Event()
        self.stopped = False

    async def run_forever(self) -> NoReturn:
        try:
            now = self.given.clock()
            identity = Identity(key=KEY, version="1", commit="", image="fake:1", created_at=now, deployed_at=now)
            self.given.submit(InstanceSeen(now, Instance(id="f1", identity=identity, running=False)))
            await self.synced.wait()
            await asyncio.Event().wait()
        finally:
            self.stopped = True
        raise AssertionError("unreachable")

    def fresh(self) -> bool:
        return self.synced.is_set()

    def problem(self) -> str:
        return "the fake has not synced yet"

    def routes(self) -> list[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text=f"{len(self.given.snapshot().deployments)} deployments\n")

        return [web.get("/fake", hello)]


def settings(tmp_path: Path) -> Settings:
    return Settings(
        web=WebSettings(listen_address="127.0.0.1:0"),
        docker=DockerSettings(host=f"unix://{tmp_path}/no-docker.sock", backoff_initial_seconds=5),
        storage=StorageSettings(directory=""),
        service=ServiceSettings(shutdown_timeout_seconds=8),
    )


async def serving(watcher: Watcher, stop: asyncio.Event) -> asyncio.Task[None]:
    running = asyncio.create_task(watcher.run(stop=stop))

    async def port() -> int | None:
        if running.done():
            running.result()
        return watcher.port

    await poll_async("the watcher serving", port, timeout=10, interval=0.01)
    return running


async def test_a_fake_source_in_the_list_is_run_served_and_stopped_beside_the_real_ones(tmp_path: Path) -> None:
    """Built from SOURCES plus the fake: the fake's observation reaches the state, its route is
    served, ``/ready`` names every source not yet fresh (the Docker Engine is not there), and the
    stop ends its root task."""
    watcher = Watcher(settings(tmp_path), sources=(*SOURCES, FakeSource))
    assert [source.name for source in watcher.sources] == [
        "docker watch", "swarm watch", "stats poll", "deployments api", "analysis", "fake source",
    ]  # fmt: skip
    fake = watcher.sources[-1]
    assert isinstance(fake, FakeSource)
    stop = asyncio.Event()
    running = await serving(watcher, stop)
    try:

        async def seen() -> bool:
            return KEY in watcher.core.snapshot().deployments

        await poll_async("the fake's instance", seen, timeout=5, interval=0.01)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{watcher.port}") as http:
            async with http.get("/fake") as response:
                assert (response.status, await response.text()) == (200, "1 deployments\n")
            async with http.get("/ready") as response:
                body = await response.text()
            assert response.status == 503
            assert "the fake has not synced yet" in body and "Docker" in body
    finally:
        stop.set()
        await running
    assert fake.stopped


async def test_readiness_and_the_rule_clock_wait_for_every_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime of the fake alone: not ready and no tick until it says it is fresh, then both."""
    monkeypatch.setattr(core_module, "TICK_SECONDS", 0.01)
    watcher = Watcher(settings(tmp_path), sources=[FakeSource])
    [fake] = watcher.sources
    assert isinstance(fake, FakeSource)
    ticks: list[float] = []
    submit = watcher.core.submit

    def counting(observation: Observation) -> None:
        if isinstance(observation, Tick):
            ticks.append(time.monotonic())
        submit(observation)

    monkeypatch.setattr(watcher.core, "submit", counting)
    stop = asyncio.Event()
    running = await serving(watcher, stop)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{watcher.port}") as http:
            async with http.get("/ready") as response:
                assert (response.status, await response.text()) == (503, "not ready: the fake has not synced yet\n")
            await asyncio.sleep(0.1)
            assert ticks == []
            fake.synced.set()
            async with http.get("/ready") as response:
                assert (response.status, await response.text()) == (200, "ready\n")

            async def ticked() -> int:
                return len(ticks)

            await poll_async("the rule clock ticking", ticked, until=lambda n: n >= 2, timeout=5, interval=0.01)
    finally:
        stop.set()
        await running
    assert fake.stopped
