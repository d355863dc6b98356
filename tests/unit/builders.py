"""Builders shared by the unit tests: observations, runs of the state machine, states, engine
documents, label parses, settings and expositions. Test modules import these from here, never
from one another, so a test module can change without breaking another's."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from watcher.config import (
    AnalysisSettings,
    DockerSettings,
    LabelSettings,
    RolloutSettings,
    ServiceSettings,
    Settings,
    StatsSettings,
    StorageSettings,
    WebSettings,
)
from watcher.domain import labels
from watcher.domain.analysis import Check
from watcher.domain.events import DeploymentDropped, DomainEvent, RolloutFinished, RolloutRevised, RolloutStarted
from watcher.domain.labels import Parsed
from watcher.domain.machine import apply
from watcher.domain.model import (
    Deployment,
    DeploymentKey,
    Health,
    Identity,
    Initiator,
    Instance,
    OrchestratedService,
    State,
    Status,
    UpdateState,
    Usage,
)
from watcher.domain.observations import (
    AnalysisMeasured,
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceOOMKilled,
    InstanceSeen,
    Observation,
    RolloutReported,
    ServiceSeen,
    Tick,
    UsageSampled,
)
from watcher.exposition.rendering import Exposition
from watcher.selfmetrics import SelfMetrics

# --- observations and runs of the state machine ------------------------------------------------------

API = DeploymentKey("api", "production")
SETTINGS = Settings(rollout=RolloutSettings(stable_seconds=10, progress_deadline_seconds=600, restart_limit=3))


def identity(version: str, *, at: float, key: DeploymentKey = API, **extra: Any) -> Identity:
    return Identity(
        key=key, version=version, commit=f"c-{version}", image=f"shop/api:{version}", created_at=at, deployed_at=at,
        **extra,
    )  # fmt: skip


def created(cid: str, version: str, at: float, **extra: Any) -> InstanceSeen:
    """A container as its create event shows it: not running yet, not inspected."""
    return InstanceSeen(
        at, Instance(id=cid, identity=identity(version, at=at, **extra), running=False, inspected=False)
    )


def started(cid: str, version: str, at: float, *, created_at: float | None = None, healthcheck: bool = False,
            restarts: int = 0, **extra: Any) -> InstanceSeen:  # fmt: skip
    """A container as inspect shows it right after its start event."""
    ident = identity(version, at=at if created_at is None else created_at, **extra)
    return InstanceSeen(
        at,
        Instance(
            id=cid, identity=ident, running=True, running_since=at, has_healthcheck=healthcheck,
            health=Health.STARTING if healthcheck else Health.NONE, restart_count=restarts,
        ),
    )  # fmt: skip


def reported(
    version: str,
    status: str,
    at: float,
    *,
    key: DeploymentKey = API,
    started_at: float | None = None,
    finished_at: float | None = None,
) -> RolloutReported:
    """A report from deploy tooling, as the CI/CD API makes it."""
    return RolloutReported(
        at=at, key=key, version=version, commit=f"c-{version}", status=Status[status.upper()], started_at=started_at,
        finished_at=finished_at,
    )  # fmt: skip


class Run:
    """Feeds observations in order, each applied at its own `at` unless `now` says otherwise."""

    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.settings = settings
        self.state = State()
        self.events: list[DomainEvent] = []

    def __call__(self, *observations: Observation, now: float | None = None) -> Run:
        for observation in observations:
            step = apply(self.state, observation, now=observation.at if now is None else now, settings=self.settings)
            self.state = step.state
            self.events += step.events
        return self

    def tick(self, at: float) -> Run:
        return self(Tick(at))

    @property
    def types(self) -> list[type[DomainEvent]]:
        """The classes of the events so far, in order."""
        return [type(e) for e in self.events]

    def d(self, key: DeploymentKey = API) -> Deployment:
        return self.state.deployments[key]

    @property
    def status(self) -> Status:
        return self.d().rollout.status


def replay(state: State, events: list[DomainEvent]) -> dict[DeploymentKey, tuple[int, Status]]:
    """Each deployment's (revision, status) after ``events``, from ``state``'s; asserts each event
    starts from the status the previous ones left."""
    now = {key: (d.rollout.revision, d.rollout.status) for key, d in state.deployments.items()}
    for event in events:
        match event:
            case RolloutStarted(key=key, revision=revision):
                now[key] = (revision, Status.IN_PROGRESS)
            case RolloutFinished(key=key, revision=revision, status=status):
                assert now[key] == (revision, Status.IN_PROGRESS), f"{event} finishes a rollout not in progress"
                now[key] = (revision, status)
            case RolloutRevised(key=key, revision=revision, before=before, after=after):
                assert now[key] == (revision, before) and before is not after, f"{event} revises what was not"
                now[key] = (revision, after)
            case DeploymentDropped(key=key):
                del now[key]
    return now


# --- Swarm services ----------------------------------------------------------------------------------

SHOP = DeploymentKey("shop", "production")


def service(
    at: float, version: str, *, state: UpdateState = UpdateState.NONE, running: int = 3, desired: int = 3,
    message: str = "", changed_at: float | None = None, finished_at: float | None = None, key: DeploymentKey = SHOP,
    by: Initiator = Initiator.ORCHESTRATOR,
) -> ServiceSeen:  # fmt: skip
    """The service `web` with version ``version`` (its task template follows the version)."""
    return ServiceSeen(
        at=at, key=key,
        service=OrchestratedService(id="svc1", name="web", template=f"t-{version}", update_state=state,
                                    message=message, desired=desired, running=running),
        version=version, commit="", image=f"app:{version}", changed_at=at if changed_at is None else changed_at,
        finished_at=finished_at, rollback_by=by,
    )  # fmt: skip


# --- rollout analysis -------------------------------------------------------------------------------

ERROR_RATE = Check(name="error_rate", query='sum(rate(errors{job="{{deployment}}"}[1m]))', max=0.02, max_increase=0.5)
ANALYSIS = AnalysisSettings(
    prometheus_url="http://prometheus:9090", interval_seconds=30, window_seconds=300, failure_limit=2, host="h1",
    checks=(ERROR_RATE, Check(name="p99", query='p99{version="{{version}}"}', max=0.5)),
)  # fmt: skip
ANALYSED = dataclasses.replace(SETTINGS, analysis=ANALYSIS)


def measured(
    at: float, value: float | None, *, revision: int = 1, check: str = "error_rate", error: str = "",
    baseline: bool = False, key: DeploymentKey = API,
) -> AnalysisMeasured:  # fmt: skip
    """A measurement of a check, as the analysis source submits it."""
    return AnalysisMeasured(
        at=at, key=key, revision=revision, check=check, value=value, error=error, baseline=baseline
    )  # fmt: skip


# --- a state holding every kind of thing -------------------------------------------------------------

WORKER = DeploymentKey("worker", "staging")


def rich_state() -> State:
    """Every kind of thing the state holds: rollouts of each status, a rollback, history,
    durations, usage, retired CPU, a gone deployment, replicas, overrides and tuning labels."""
    run = Run()
    run(started("a", "1.0.0", 100, healthcheck=True), InstanceHealth(103, "a", Health.HEALTHY))
    run(started("b", "2.0.0", 200), UsageSampled(205, {"a": Usage(1.5, 2e6), "b": Usage(0.25, 3e6)}))
    run(InstanceGone(206, "a")).tick(210)
    run(started("c", "3.0.0", 300, restarts=1), InstanceExited(301, "c", 1))
    run(started("d", "2.0.0", 400), created("e", "2.0.0", 400.5))  # a rollback, a replica not started yet
    run(
        started("w", "abc1234", 500, key=WORKER, status_override=Status.SUCCESS, stable_seconds=2.5,
                progress_deadline_seconds=60.0),
        InstanceOOMKilled(501, "w"),
    )  # fmt: skip
    run(started("x", "1", 600, key=DeploymentKey("gone", "production")), InstanceGone(601, "x"))
    return run.state


# --- Docker documents --------------------------------------------------------------------------------

CID = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"
STARTED_AT = "2024-05-01T12:00:00.5Z"
CREATED_AT = "2024-05-01T11:59:58.123456789Z"


def inspected(
    *,
    status: str = "running",
    running: bool = True,
    paused: bool = False,
    restarting: bool = False,
    oom: bool = False,
    exit_code: int = 0,
    test: list[str] | None = None,
    health: str | None = "healthy",
    container_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A container inspect document shaped like Docker's."""
    state: dict[str, Any] = {
        "Status": status,
        "Running": running,
        "Paused": paused,
        "Restarting": restarting,
        "OOMKilled": oom,
        "Dead": status == "dead",
        "Pid": 4242 if running else 0,
        "ExitCode": exit_code,
        "Error": "",
        "StartedAt": STARTED_AT,
        "FinishedAt": "0001-01-01T00:00:00Z" if running else "2024-05-01T12:10:00Z",
    }
    if health is not None:
        state["Health"] = {"Status": health, "FailingStreak": 0, "Log": []}
    config: dict[str, Any] = {
        "Hostname": CID[:12],
        "Image": "registry.example.com/shop/api:1.4.2",
        "Env": ["PATH=/usr/bin"],
        "Labels": {"deployment.name": "api", "com.docker.compose.project": "shop"}
        if container_labels is None
        else container_labels,
    }
    if test is not None:
        config["Healthcheck"] = {"Test": test, "Interval": 5_000_000_000}
    return {
        "Id": CID,
        "Created": CREATED_AT,
        "Path": "/app/run",
        "Args": [],
        "State": state,
        "Image": IMAGE_ID,
        "Name": "/x",
        "RestartCount": 2,
        "Config": config,
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}},
    }


# What Docker 20.10 inspects after `docker run … /nonexistent` (no container event is sent).
RUNC_ERROR = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: "
    'exec: "/nonexistent": stat /nonexistent: no such file or directory: unknown'
)


# --- labels, as a container created at LABELS_CREATED shows them at LABELS_NOW -------------------------------------

LABELS_CREATED = 1_700_000_000.0
LABELS_NOW = 1_700_000_600.0
IMAGE = "registry.example.com/shop/api:1.4.2"
IMAGE_ID = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
LABEL_DEFAULTS = LabelSettings()


def parse_labels(
    values: Mapping[str, str],
    *,
    image: str = IMAGE,
    image_id: str = IMAGE_ID,
    settings: LabelSettings = LABEL_DEFAULTS,
    analysis: AnalysisSettings | None = None,
    orchestrated: bool = False,
) -> Parsed:
    return labels.parse(
        values, image=image, image_id=image_id, created_at=LABELS_CREATED, now=LABELS_NOW, settings=settings,
        analysis=analysis, orchestrated=orchestrated,
    )  # fmt: skip


def problems_on(parsed: Parsed, label: str) -> list[str]:
    return [p.message for p in parsed.problems if p.label == label]


# --- expositions -------------------------------------------------------------------------------------

PROMETHEUS_2 = (  # what Prometheus 2.42 sends, with Accept-Encoding: gzip
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def scenario() -> Run:
    """Two deployments: api rolled 1 → 2 → back to 1 with a failure; web with an odd version."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    run(started("b", "2.0.0", 200), InstanceExited(201, "b", 1), started("c", "1.0.0", 300)).tick(311)
    run(started("w", 'x"y\\z\nü', 400, key=DeploymentKey("web", "staging")))
    run(UsageSampled(410, {"c": Usage(2.5, 1024), "w": Usage(1.0, 2048)}))
    return run


def exposition_for(
    snapshot: Callable[[], State],
    *,
    registry: CollectorRegistry | None = None,
    settings: Settings = SETTINGS,
    clock: Callable[[], float] | None = None,
) -> tuple[Exposition, SelfMetrics]:
    """An exposition of ``snapshot()`` and ``registry``; its own counters live in a registry of their own."""
    metrics = SelfMetrics(CollectorRegistry())
    extra = {"clock": clock} if clock else {}
    registry = CollectorRegistry() if registry is None else registry
    return Exposition(snapshot=snapshot, registry=registry, settings=settings, metrics=metrics, **extra), metrics


def app_for(state: State, *, registry: CollectorRegistry | None = None) -> Exposition:
    return exposition_for(lambda: state, registry=registry)[0]


# --- settings and configuration files ----------------------------------------------------------------


def quiet_settings(tmp_path: Path, *, directory: str = "", shutdown_timeout: float = 8.0) -> Settings:
    """A service that serves on a free port and waits for a Docker Engine that is not there."""
    return Settings(
        web=WebSettings(listen_address="127.0.0.1:0"),
        docker=DockerSettings(host=f"unix://{tmp_path}/no-docker.sock", backoff_initial_seconds=5),
        stats=StatsSettings(enabled=False),
        storage=StorageSettings(directory=directory, debounce_seconds=60),
        service=ServiceSettings(shutdown_timeout_seconds=shutdown_timeout),
    )


# Files PyYAML cannot read, each with what its one problem line says.
UNREADABLE = [
    pytest.param(b'web:\n  listen_address: "\xff:9102"\n', "not UTF-8 text (line 2: byte 0xff)", id="latin-1"),
    # Python lets PyYAML compose about 500 levels (two frames a level, against a recursion limit of 1000): 600 is
    # always too deep, and quicker to fail than 1000 (the scanner's work grows with the square of the depth).
    pytest.param(b"[" * 600 + b"]" * 600, "not valid YAML: nested too deeply", id="600-nested-lists"),
]
