"""Nothing the Docker side does ends the watcher: a real Watcher against a fake engine that
misbehaves (``tests/hostile_engine.py``) stays up, serves /metrics that parse, says why it is
not ready, counts each failure by kind, and after the faults ends in the state a clean resync gives."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiodocker.docker
import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import examples
from tests.hostile_engine import FAULTS, HostileEngine
from tests.polling import poll_async
from watcher.config import (
    DockerSettings,
    ExpositionSettings,
    RolloutSettings,
    ServiceSettings,
    Settings,
    StatsSettings,
    StorageSettings,
    WebSettings,
)
from watcher.domain import labels
from watcher.domain.machine import apply
from watcher.domain.model import DeploymentKey, Instance, Origin, State
from watcher.domain.observations import Resync
from watcher.runtime.compose import Watcher
from watcher.selfmetrics import EngineErrorKind
from watcher.sources.docker import causes as docker_causes
from watcher.sources.engine import Engine, EngineError
from watcher.sources.engine import _event as engine_event

ERRORS = "deployment_watcher_docker_errors_total"
PROPERTY_EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES") or examples(20))  # a few seconds; more for a long hunt


def hostile_settings(host: str, *, stats: bool = True) -> Settings:
    """Quick to reconnect, quick to time out, every metric fresh."""
    return Settings(
        web=WebSettings(listen_address="127.0.0.1:0"),
        docker=DockerSettings(
            host=host, backoff_initial_seconds=0.01, backoff_max_seconds=0.1, request_timeout_seconds=0.5,
            silence_seconds=1.0,
        ),
        stats=StatsSettings(enabled=stats, source="api", interval_seconds=1.0),
        rollout=RolloutSettings(stable_seconds=1.0),
        storage=StorageSettings(directory=""),
        exposition=ExpositionSettings(min_interval_seconds=0.0, max_staleness_seconds=0.1),
        service=ServiceSettings(shutdown_timeout_seconds=5.0),
    )  # fmt: skip


@dataclasses.dataclass
class Running:
    service: Watcher
    task: asyncio.Task[None]
    http: aiohttp.ClientSession

    def alive(self) -> None:
        assert not self.task.done(), (
            f"the watcher stopped: {self.task.exception() if not self.task.cancelled() else ''}"
        )

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(f"http://127.0.0.1:{self.service.port}{path}") as response:
            return response.status, await response.text()

    async def metrics(self) -> dict[str, float]:
        """/metrics, parsed by Prometheus' own parser: every sample by name and labels."""
        status, body = await self.get("/metrics")
        assert status == 200
        return {
            sample.name + repr(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def errors(self, kind: str) -> float:
        return self.service.registry.get_sample_value(ERRORS, {"kind": kind}) or 0.0


@asynccontextmanager
async def watching(settings: Settings) -> AsyncIterator[Running]:
    """A real Watcher serving on a free port; stopped at the end, and it must stop cleanly."""
    service = Watcher(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop=stop))

    async def port() -> int | None:
        if task.done():
            task.result()
        return service.port

    await poll_async("the service serving", port, timeout=10, interval=0.01)
    async with aiohttp.ClientSession() as http:
        running = Running(service, task, http)
        try:
            yield running
        finally:
            running.alive()
            stop.set()
            await task


@asynccontextmanager
async def hostile(tmp: Path, *, seed: int = 0) -> AsyncIterator[HostileEngine]:
    engine = HostileEngine(tmp / "engine.sock", seed=seed)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


async def until(what: str, check: Callable[[], bool], *, running: Running, timeout: float = 10) -> None:
    async def checked() -> bool:
        running.alive()
        return check()

    await poll_async(what, checked, timeout=timeout, interval=0.02)


def tracked(name: str, version: str, **extra: str) -> dict[str, str]:
    return {"deployment.name": name, "deployment.version": version, "deployment.environment": "test", **extra}


# -- the state a clean resync gives


def _micros(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _facts(instance: Instance) -> Instance:
    """What the containers say, on one clock: times to the microsecond (events and inspects
    round differently), and whether it came from an inspect or an event left out."""
    identity = instance.identity
    return dataclasses.replace(
        instance,
        identity=dataclasses.replace(
            identity, created_at=round(identity.created_at, 6), deployed_at=round(identity.deployed_at, 6)
        ),
        running_since=_micros(instance.running_since),
        exited_at=_micros(instance.exited_at),
        inspected=True,
    )


def members(state: State) -> dict[DeploymentKey, dict[str, Instance]]:
    """Each deployment's containers and their facts (deployments without any left out)."""
    return {
        key: {i: _facts(m.instance) for i, m in deployment.members.items()}
        for key, deployment in state.deployments.items()
        if deployment.members
    }


def resynced(engine: HostileEngine, settings: Settings) -> dict[DeploymentKey, dict[str, Instance]]:
    """What applying a Resync of the engine's containers to an empty state gives."""
    now = engine.now() / 1e6
    instances = []
    for made in engine.containers.values():
        if not labels.is_tracked(made.labels, settings=settings.labels):
            continue
        instance, _ = docker_causes.from_inspect(made.inspect(), now=now, settings=settings.labels)
        if instance is not None:
            instances.append(instance)
    step = apply(State(), Resync(now, Origin.CONTAINER, tuple(instances)), now=now, settings=settings)
    return members(step.state)


# -- the reproductions


async def test_an_event_line_beyond_aiohttps_limit_is_read(tmp_path: Path) -> None:
    """A container with a 600 KB label, and a `docker exec` of 300 KB of arguments: read, applied,
    no error, no reconnect; a deployment after them is followed as usual."""
    async with hostile(tmp_path) as engine, watching(hostile_settings(f"unix://{engine.path}")) as running:
        await until("connected", lambda: running.service.ready(), running=running)
        resyncs = running.service.metrics.resyncs._value.get()
        big = engine.run("big", labels=tracked("big", "1", note="x" * 600_000))
        other = engine.run("other", labels={"untracked": "y" * 600_000})
        engine.exec(other, ["sh", "-c", "echo " + "z" * 300_000])
        engine.exec(big, ["true", *(["a" * 1000] * 300)])
        after = engine.run("after", labels=tracked("after", "2"))
        expected = resynced(engine, running.service.settings)
        await until("the deployments", lambda: members(running.service.core.snapshot()) == expected, running=running)
        assert {k.name for k in expected} == {"big", "after"}
        note = expected[DeploymentKey("big", "test")][big].identity
        assert note.version == "1"
        assert all(running.errors(kind) == 0 for kind in EngineErrorKind)
        assert running.service.metrics.resyncs._value.get() == resyncs
        assert after in running.service.core.snapshot().owners
        await running.metrics()


async def test_a_line_beyond_the_hard_cap_is_a_gap_repaired_by_a_resync(tmp_path: Path) -> None:
    """An event no reader should hold: counted, the watcher reconnects and resyncs, and what
    happened meanwhile is found."""
    async with hostile(tmp_path) as engine, watching(hostile_settings(f"unix://{engine.path}")) as running:
        await until("connected", lambda: running.service.ready(), running=running)
        engine.fault("beyond_cap")
        made = engine.run("behind", labels=tracked("behind", "1"))
        await until("counted", lambda: running.errors("oversized_event") == 1, running=running)
        expected = resynced(engine, running.service.settings)
        await until("resynced", lambda: members(running.service.core.snapshot()) == expected, running=running)
        assert made in running.service.core.snapshot().owners


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("invalid_json", "invalid_event"),
        ("not_an_object", "invalid_event"),
        ("garbage", "invalid_event"),
        ("truncated", "connection"),
        ("error_500", "http_error"),
        ("garbage_body", "protocol"),
        ("hang", "timeout"),
    ],
)
async def test_each_fault_is_counted_by_kind_and_repaired(tmp_path: Path, fault: str, kind: str) -> None:
    """The fault is counted under its kind, the watcher reconnects, and the state is a clean resync's."""
    async with hostile(tmp_path) as engine, watching(hostile_settings(f"unix://{engine.path}", stats=False)) as running:
        await until("connected", lambda: running.service.ready(), running=running)
        engine.run("before", labels=tracked("before", "1"))
        await until("followed", lambda: len(running.service.core.snapshot().owners) == 1, running=running)
        engine.fault(fault)
        if fault in ("error_500", "garbage_body", "hang"):
            engine.fault("close_streams")  # the reconnect meets the failing requests
        if fault == "garbage":
            engine.run("after", labels=tracked("after", "1"))  # ends the garbage's line
        await until(f"{kind} counted", lambda: running.errors(kind) >= 1, running=running)
        engine.calm()
        engine.run("later", labels=tracked("later", "1"))
        expected = resynced(engine, running.service.settings)
        await until("resynced", lambda: members(running.service.core.snapshot()) == expected, running=running)
        await running.metrics()


async def test_without_a_socket_it_waits_says_why_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """DOCKER_HOST unset and no socket anywhere: not a crash but a wait; /ready says why; the
    warning is logged once, the retries at debug."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(aiodocker.docker, "_sock_search_paths", [tmp_path / "docker.sock"])
    monkeypatch.setenv("HOME", str(tmp_path))  # no docker context either
    caplog.set_level(logging.DEBUG, logger="watcher")
    async with watching(hostile_settings("")) as running:
        await until("retries", lambda: running.errors("no_socket") >= 3, running=running)
        status, body = await running.get("/ready")
        assert status == 503 and "no Docker socket" in body, body
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("watcher")]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "no Docker socket" in warnings[0].getMessage()
        assert "lost" not in warnings[0].getMessage()  # it never had it
        samples = await running.metrics()
        assert all(f"{ERRORS}[('kind', '{kind}')]" in samples for kind in EngineErrorKind)


async def test_a_socket_that_appears_later_is_connected_to(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A configured socket path with nothing there: /ready names it; once a daemon listens there,
    the watcher connects, resyncs and says it is connected again."""
    caplog.set_level(logging.INFO, logger="watcher")
    path = tmp_path / "engine.sock"
    async with watching(hostile_settings(f"unix://{path}")) as running:
        await until("retries", lambda: running.errors("no_socket") >= 2, running=running)
        status, body = await running.get("/ready")
        assert status == 503 and f"no Docker socket at {path}" in body, body
        async with hostile(tmp_path) as engine:
            engine.run("late", labels=tracked("late", "1"))
            await until("connected", lambda: running.service.ready(), running=running)
            assert (await running.get("/ready"))[0] == 200
            expected = resynced(engine, running.service.settings)
            assert members(running.service.core.snapshot()) == expected
    assert any("connected again" in r.getMessage() for r in caplog.records)


async def test_the_swarm_source_takes_garbage_answers_as_engine_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Swarm source's own requests (``/info`` every few seconds, even on no Swarm manager; its
    nodes, services, tasks through the engine's one JSON call) and event lines: whatever body the
    engine answers, an EngineError, never another exception (found by the soak: ``\\xff\\xfe`` for
    ``/info`` ended the watcher with a UnicodeDecodeError)."""
    settings = hostile_settings("")
    bodies = [b"null", b'"text"', b"[1, {}]", b"<html>proxy error</html>", b"\xff\xfe", b"[[]]"]
    async with hostile(tmp_path) as engine:
        settings = dataclasses.replace(
            settings, docker=dataclasses.replace(settings.docker, host=f"unix://{engine.path}")
        )
        async with Engine.open(settings.docker) as opened:
            for body in bodies:
                monkeypatch.setattr(engine, "_garbage_body", lambda body=body: body)
                engine._failing[:] = ["garbage_body"]
                with pytest.raises(EngineError):
                    await opened.get("info")
            for path in ("services", "tasks"):
                monkeypatch.setattr(engine, "_garbage_body", lambda: b'[{"ID": "x"}, 5]')
                engine._failing[:] = ["garbage_body"]
                with pytest.raises(EngineError):
                    await opened.listed(path)
    # Its event lines are read by the shared engine's reader.
    for line in (b"\xff\xfe\n", b"[1, 2]\n", b"{nope\n", b"null\n"):
        with pytest.raises(EngineError):
            await engine_event(line)


async def test_the_engines_json_call_answers_objects_lists_and_http_errors(tmp_path: Path) -> None:
    """``Engine.get``/``listed``, the one call for JSON answers the typed calls do not ask (the
    Swarm source's): an object, a list of objects, an HTTP error as an ``http_error``; and the
    daemon's clock read from ``/info``."""
    async with hostile(tmp_path) as engine, Engine.open(DockerSettings(host=f"unix://{engine.path}")) as opened:
        assert (await opened.get("version"))["Version"] == "20.10.99-hostile"
        assert await opened.listed("containers/json") == []
        with pytest.raises(EngineError) as caught:
            await opened.get("nodes/nope")
        assert (caught.value.kind, caught.value.reason) == (
            "http_error",
            'nodes/nope: HTTP 404: {"message": "page not found"}',
        )
        with pytest.raises(EngineError, match="not a list of JSON objects"):
            await opened.listed("info")
        assert await opened.daemon_time() == pytest.approx(engine.now() / 1e6, abs=1)


# -- the property: whatever happens, the watcher stays up and ends where a resync would


def _step() -> st.SearchStrategy[tuple[Any, ...]]:
    pick = st.integers(min_value=0, max_value=5)
    return st.one_of(
        st.tuples(st.just("run"), st.sampled_from(["a", "b", "c"]), st.sampled_from(["1", "2", "3"]), st.booleans()),
        st.tuples(st.just("stop"), pick),
        st.tuples(st.just("crash"), pick, st.sampled_from([1, 3])),
        st.tuples(st.just("remove"), pick),
        st.tuples(st.just("health"), pick, st.sampled_from(["healthy", "unhealthy"])),
        st.tuples(st.just("exec"), pick, st.sampled_from([10, 300_000])),
        st.tuples(st.just("fault"), st.sampled_from(FAULTS)),
        st.tuples(st.just("chaos"), st.sampled_from([0.0, 0.2, 0.5])),
        st.tuples(st.just("pause"), st.sampled_from([0.01, 0.1, 0.3])),
    )


def _apply(engine: HostileEngine, step: tuple[Any, ...]) -> float:
    """One step on the engine; the seconds to wait after it."""
    ids = list(engine.containers)
    kind = step[0]
    if kind == "run":
        engine.run(f"app-{step[1]}-{len(engine.requests)}", labels=tracked(step[1], step[2]), healthcheck=step[3])
    elif kind == "fault":
        engine.fault(step[1])
    elif kind == "chaos":
        engine.chaos(step[1])
    elif kind == "pause":
        return float(step[1])
    elif ids:
        target = ids[step[1] % len(ids)]
        if kind == "stop":
            engine.stop(target)
        elif kind == "crash":
            engine.crash(target, exit_code=step[2])
        elif kind == "remove":
            engine.remove(target)
        elif kind == "health":
            engine.health(target, step[2])
        elif kind == "exec":
            engine.exec(target, ["echo", "x" * step[2]])
    return 0.01


async def _scenario(steps: list[tuple[Any, ...]], seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with hostile(Path(tmp), seed=seed) as engine:
            settings = hostile_settings(f"unix://{engine.path}")
            async with watching(settings) as running:
                for step in steps:
                    await asyncio.sleep(_apply(engine, step))
                    running.alive()
                    await running.metrics()
                engine.calm()
                expected = resynced(engine, settings)

                def settled() -> bool:
                    return running.service.ready() and members(running.service.core.snapshot()) == expected

                await until("the state of a clean resync", settled, running=running, timeout=15)
                await running.metrics()


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(_step(), min_size=1, max_size=20), seed=st.integers(0, 2**16))
def test_whatever_the_daemon_does_the_watcher_stays_up_and_ends_resynced(
    steps: list[tuple[Any, ...]], seed: int
) -> None:
    """Containers coming and going among faults of every kind: the watcher never stops,
    /metrics always parses, and once the faults stop its state is a clean resync's."""
    asyncio.run(_scenario(steps, seed))


def test_the_harness_answers_like_a_daemon(tmp_path: Path) -> None:
    """aiodocker, the client the watcher uses, reads the fake engine's answers as a daemon's."""

    async def check() -> Mapping[str, Any]:
        async with hostile(tmp_path) as engine:
            made = engine.run("x", labels=tracked("x", "1"), healthcheck=True)
            async with aiodocker.Docker(url=f"unix://{engine.path}") as docker:
                assert (await docker.version())["ApiVersion"]
                listed = await docker.containers.list(all=True, filters='{"label": ["deployment.name"]}')
                assert [c.id for c in listed] == [made]
                stats = await docker.containers.container(made).stats(stream=False)
                assert stats[0]["memory_stats"]["usage"] > 0
                shown: Mapping[str, Any] = await docker.containers.container(made).show()
                return shown

    shown = asyncio.run(check())
    instance, parsed = docker_causes.from_inspect(shown, now=0.0, settings=Settings().labels)
    assert instance is not None and instance.running and instance.has_healthcheck and not parsed.problems
