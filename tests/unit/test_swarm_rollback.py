"""The rollback the watcher asks of Swarm when a service's gate analysis failed (watcher.sources.swarm.rollback),
against a fake engine: asked once, as ``docker service rollback`` does; read again on a version conflict;
a refusal (a read-only proxy) said and closed; a service changed since is left alone."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from watcher.config import Settings
from watcher.domain.analysis import Analysis, Mode, Outcome
from watcher.domain.model import Deployment, DeploymentKey, OrchestratedService, Rollout, State
from watcher.domain.observations import Observation, RollbackAsked
from watcher.domain.settings import AnalysisSettings
from watcher.selfmetrics import EngineErrorKind, SelfMetrics
from watcher.sources.engine import Engine, EngineError
from watcher.sources.swarm.causes import fingerprint
from watcher.sources.swarm.rollback import Rollbacks
from watcher.sources.swarm.watch import SwarmWatch

KEY = DeploymentKey("shop", "prod")
ALLOWED = Settings(analysis=AnalysisSettings(prometheus_url="http://prometheus:9090", allow_rollback=True))
TEMPLATE = {"ContainerSpec": {"Image": "app:2", "Labels": {"deployment.environment": "prod"}}}
SPEC = {"Name": "web", "Labels": {"deployment.name": "shop", "deployment.version": "2"}, "TaskTemplate": TEMPLATE}
PREVIOUS = {**SPEC, "Labels": {"deployment.name": "shop", "deployment.version": "1"}, "TaskTemplate": {}}
REASON = "analysis error_rate: 0.1 > max 0.02 (baseline 0.01)"


def state(*, rollback: bool = True, done: bool = False, of_a_rollback: bool = False) -> State:
    analysis = Analysis(mode=Mode.GATE, checks=(), rollback=rollback, outcome=Outcome.FAILED, reason=REASON,
                        rollback_done=done)  # fmt: skip
    rollout = Rollout(revision=2, version="2", commit="", image="app:2", started_at=100.0, analysis=analysis,
                      rollback=of_a_rollback)  # fmt: skip
    service = OrchestratedService(id="sid", name="web", template=fingerprint(TEMPLATE))
    return State(deployments={KEY: Deployment(key=KEY, rollout=rollout, service=service)})


class FakeEngine:
    """Services as ``GET /services/{id}`` answers them, each update bumping the version; ``refusals``:
    the errors the next updates raise."""

    def __init__(self, *refusals: EngineError, index: int = 12, spec: Mapping[str, Any] = SPEC) -> None:
        self.refusals = list(refusals)
        self.index = index
        self.spec = spec
        self.posts: list[tuple[str, Mapping[str, Any], dict[str, str]]] = []
        self.reading = asyncio.Event()
        self.reading.set()

    async def get(self, path: str, **params: str) -> Mapping[str, Any]:
        assert path == "services/sid" and not params
        await self.reading.wait()
        return {
            "ID": "sid",
            "Version": {"Index": self.index},
            "Spec": copy.deepcopy(self.spec),
            "PreviousSpec": PREVIOUS,
        }

    async def post(self, path: str, body: Mapping[str, Any], **params: str) -> Mapping[str, Any]:
        self.posts.append((path, body, params))
        if self.refusals:
            self.index += 1  # somebody else's update came first
            raise self.refusals.pop(0)
        return {"Warnings": None}


# As Docker 26.1 answers an update of a stale version (checked against a real swarm).
CONFLICT = EngineError(
    EngineErrorKind.HTTP_ERROR,
    "services/sid/update: HTTP 500: rpc error: code = Unknown desc = update out of sequence",
    status=500,
)
FORBIDDEN = EngineError(EngineErrorKind.HTTP_ERROR, "services/sid/update: HTTP 403: Forbidden", status=403)


class Run:
    def __init__(self, given: State, settings: Settings = ALLOWED) -> None:
        self.state = given
        self.seen: list[Observation] = []
        self.registry = CollectorRegistry()
        self.rollbacks = Rollbacks(settings, self.seen.append, SelfMetrics(self.registry), lambda: self.state,
                                   lambda: 500.0)  # fmt: skip

    async def ask(self, engine: FakeEngine) -> None:
        await self.rollbacks.ask_wanted(engine)  # type: ignore[arg-type]

    def counted(self, result: str) -> float | None:
        return self.registry.get_sample_value("deployment_watcher_swarm_rollbacks_total", {"result": result})


async def test_asked_once_as_docker_service_rollback_does(caplog: pytest.LogCaptureFixture) -> None:
    run, engine = Run(state()), FakeEngine()
    caplog.set_level(logging.INFO)
    await run.ask(engine)
    assert engine.posts == [("services/sid/update", SPEC, {"version": "12", "rollback": "previous"})]
    assert run.seen == [RollbackAsked(at=500.0, key=KEY, revision=2)]
    assert (run.counted("ok"), run.counted("error")) == (1, 0)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert said == [
        f"Swarm services: rolling back service web from version 2 to 1: its analysis asked for it ({REASON})"
    ]
    await run.ask(engine)  # submitted, not applied yet: not asked again
    run.state = state(done=True)  # applied
    await run.ask(engine)
    assert len(engine.posts) == 1 and len(run.seen) == 1


async def test_a_version_conflict_reads_the_service_again() -> None:
    run, engine = Run(state()), FakeEngine(CONFLICT)
    await run.ask(engine)
    assert [params["version"] for _, _, params in engine.posts] == ["12", "13"]
    assert run.seen == [RollbackAsked(at=500.0, key=KEY, revision=2)] and run.counted("ok") == 1


async def test_conflicts_without_end_give_up_once() -> None:
    run, engine = Run(state()), FakeEngine(CONFLICT, CONFLICT, CONFLICT, CONFLICT)
    await run.ask(engine)
    assert len(engine.posts) == 3
    assert len(run.seen) == 1 and isinstance(asked := run.seen[0], RollbackAsked)
    assert "update out of sequence" in asked.error and run.counted("error") == 1


async def test_refused_by_a_read_only_proxy(caplog: pytest.LogCaptureFixture) -> None:
    run, engine = Run(state()), FakeEngine(FORBIDDEN)
    await run.ask(engine)
    assert len(engine.posts) == 1 and run.counted("error") == 1 and run.counted("ok") == 0
    assert len(run.seen) == 1 and isinstance(asked := run.seen[0], RollbackAsked)
    assert "analysis.allow_rollback needs POST on /services" in asked.error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "service web" in errors[0] and "SERVICES=1 and POST=1" in errors[0]
    await run.ask(engine)
    assert len(engine.posts) == 1  # closed: never asked again


async def test_a_service_changed_since_is_left_alone() -> None:
    run, engine = Run(state()), FakeEngine(spec={**SPEC, "TaskTemplate": {"ContainerSpec": {"Image": "app:3"}}})
    await run.ask(engine)
    assert engine.posts == []
    assert len(run.seen) == 1 and isinstance(asked := run.seen[0], RollbackAsked)
    assert asked.error == "the service changed since its analysis failed"


async def test_two_rounds_at_once_post_once() -> None:
    run, engine = Run(state()), FakeEngine()
    engine.reading.clear()
    first = asyncio.create_task(run.ask(engine))
    await asyncio.sleep(0)
    await run.ask(engine)  # the first is in flight
    engine.reading.set()
    await first
    assert len(engine.posts) == 1 and len(run.seen) == 1


@pytest.mark.parametrize(
    "given",
    [state(rollback=False), state(done=True), state(of_a_rollback=True)],
    ids=["on_failure=fail", "asked before", "a rollback"],  # Swarm's previous spec: the version rolled back from
)
async def test_not_wanted_not_asked(given: State) -> None:
    run, engine = Run(given), FakeEngine()
    await run.ask(engine)
    assert engine.posts == [] and run.seen == []


def test_only_when_allowed() -> None:
    """allow_rollback off (or analysis off): the Swarm source asks nothing, the analysis only fails rollouts."""
    metrics = SelfMetrics(CollectorRegistry())
    off = dataclasses.replace(ALLOWED, analysis=dataclasses.replace(ALLOWED.analysis, allow_rollback=False))
    assert SwarmWatch(off, print, metrics, snapshot=State)._rollbacks is None
    assert SwarmWatch(ALLOWED, print, metrics, snapshot=State)._rollbacks is not None


async def test_the_engine_posts_json(tmp_path: Path) -> None:
    """``Engine.post``: the body as JSON, the parameters in the query; a refusal's HTTP status kept."""
    got: list[tuple[str, str, dict[str, str], object]] = []

    async def update(request: web.Request) -> web.Response:
        got.append((request.method, request.path, dict(request.query), await request.json()))
        if request.query.get("version") == "0":
            return web.json_response({"message": "refused"}, status=403)
        return web.json_response({"Warnings": None})

    app = web.Application()
    app.router.add_post("/services/{id}/update", update)
    runner = web.AppRunner(app)
    await runner.setup()
    socket = tmp_path / "docker.sock"
    await web.UnixSite(runner, str(socket)).start()
    try:
        async with aiodocker.Docker(url=f"unix://{socket}") as client:
            engine = Engine(client, timeout=5)
            answer = await engine.post("services/sid/update", SPEC, version="12", rollback="previous")
            assert answer == {"Warnings": None}
            with pytest.raises(EngineError) as refused:
                await engine.post("services/sid/update", SPEC, version="0", rollback="previous")
    finally:
        await runner.cleanup()
    assert got[0] == ("POST", "/services/sid/update", {"version": "12", "rollback": "previous"}, SPEC)
    assert refused.value.status == 403 and "HTTP 403" in refused.value.reason
