"""What a deployment shows, told by the stream at every step: a container's start, an inspect, a
replica count, its removal and its return each come with an event carrying the row, so a board
fed by the stream alone shows what the JSON API says at every moment."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.builders import ANALYSED, API, SETTINGS, SHOP, Run, created, measured, reported, service, started
from watcher.domain.analysis import Mode, Request
from watcher.domain.events import (
    DeploymentChanged,
    DeploymentRemoved,
    DeploymentReturned,
    DomainEvent,
    RolloutFinished,
    RolloutStarted,
)
from watcher.domain.model import Health, Origin, State, UpdateState
from watcher.domain.observations import (
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceStarted,
    Observation,
    Resync,
    ServiceGone,
    Tick,
)
from watcher.domain.rules import CHECK_HEALTHCHECK, CHECK_RUNNING
from watcher.web import views


def test_a_start_and_its_inspect_are_told_before_the_verdict() -> None:
    """Created, then started (the event alone), then inspected: each changes the row, each is an
    event; the verdict after the stable time is told by its own event only."""
    run = Run()(created("a", "1.0.0", 100))
    assert run.types == [RolloutStarted]
    run(InstanceStarted(101, "a"))
    assert run.events[1:] == [
        DeploymentChanged(key=API, at=101, revision=1, version="1.0.0", current=1, running=1,
                          failing=(CHECK_HEALTHCHECK,)),
    ]  # fmt: skip
    assert run.events[1].message == "revision 1 (1.0.0): 1 of 1 containers running, failing: docker_healthcheck"
    run(started("a", "1.0.0", 101, created_at=100))
    assert run.events[2:] == [
        DeploymentChanged(key=API, at=101, revision=1, version="1.0.0", current=1, running=1, failing=()),
    ]
    assert run.events[2].message == "revision 1 (1.0.0): 1 of 1 containers running, healthy"
    run.tick(111)
    assert run.types[3:] == [RolloutFinished]


def test_a_crash_after_success_is_told() -> None:
    """A container of a finished rollout exits: no verdict changes, the row does."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    del run.events[:]
    run(InstanceExited(200, "a", 1))
    assert run.events == [
        DeploymentChanged(key=API, at=200, revision=1, version="1.0.0", current=1, running=0, failing=(CHECK_RUNNING,))
    ]


def test_nothing_shown_changed_nothing_told() -> None:
    """A tick before the stable time, a leftover's health: the row is the same, no event."""
    run = Run()(started("a", "1.0.0", 100, healthcheck=True), started("b", "2.0.0", 200, healthcheck=True))
    del run.events[:]
    run(InstanceHealth(205, "a", Health.UNHEALTHY)).tick(206)
    assert run.events == []


def test_the_last_container_gone_is_a_removal_and_a_new_one_its_return() -> None:
    """Removed is a state of its own: told when it begins, shown as such, told when it ends."""
    run = Run()(started("a", "1.0.0", 100)).tick(110)
    del run.events[:]
    run(InstanceGone(200, "a"))
    assert run.events == [
        DeploymentRemoved(key=API, at=200, revision=1, version="1.0.0", why="no container of it is left")
    ]
    assert run.events[0].message == "removed: no container of it is left"
    row = views.summary(run.d(), settings=SETTINGS)
    assert (row["removed"], row["gone_since"], row["instances"]) == (True, 200, {"current": 0, "running": 0})
    del run.events[:]
    run(started("b", "1.0.0", 300))
    assert run.events == [DeploymentReturned(key=API, at=300, revision=1, version="1.0.0")]
    assert views.summary(run.d(), settings=SETTINGS)["removed"] is False


def test_a_removed_swarm_service_is_removed() -> None:
    """A Swarm service removed: removed, saying why, whatever its task containers still do here."""
    run = Run()(service(100, "1.0"))
    assert views.summary(run.state.deployments[SHOP], settings=SETTINGS)["removed"] is False
    del run.events[:]
    run(ServiceGone(200, "svc1"))
    assert run.events == [
        DeploymentRemoved(key=SHOP, at=200, revision=1, version="1.0", why="its Swarm service was removed")
    ]
    assert run.state.deployments[SHOP].removed


def test_a_replica_count_is_told() -> None:
    """A Swarm service's running replicas drop after its rollout succeeded: the check's change is an event."""
    run = Run()(service(100, "1.0"))
    del run.events[:]
    run(service(200, "1.0", running=2, changed_at=100))
    assert run.events == [
        DeploymentChanged(key=SHOP, at=200, revision=1, version="1.0", current=0, running=0,
                          failing=("replicas_running",)),
    ]  # fmt: skip


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A row less CPU and memory, which the board re-reads rather than follows."""
    return {k: v for k, v in row.items() if k not in ("cpu_seconds", "memory_bytes")}


def _board(board: dict[Any, dict[str, Any]], state: State, events: tuple[DomainEvent, ...] | list[DomainEvent]) -> None:
    """What a board does with a step's events: each carries its deployment's row after the step."""
    for event in events:
        if views.event_view(event) is None:
            continue
        deployment = state.deployments.get(event.key)
        if deployment is None:
            board.pop(event.key, None)
        else:
            board[event.key] = _shown(views.summary(deployment, settings=ANALYSED))


VERSIONS = st.sampled_from(("1.0.0", "2.0.0"))
ANALYSES = st.sampled_from(
    (None, Request(checks=("error_rate", "p99")), Request(checks=("error_rate",), mode=Mode.OBSERVE, rollback=True))
)
VALUES = st.sampled_from((None, 0.001, 0.004, 0.041, math.inf, math.nan))


@given(st.data())
def test_a_board_fed_by_the_stream_shows_what_the_api_says(data: st.DataObject) -> None:
    """Containers created, started, inspected, exiting, unhealthy, gone; reports, ticks, resyncs, a
    Swarm service updated, scaled, removed, rollouts analysed (baselines, measurements, errors, the window's end),
    in any order: after every step, the rows a board built from the stream's events alone are the JSON API's rows
    (CPU and memory aside)."""
    run = Run(ANALYSED)
    board: dict[Any, dict[str, Any]] = {}
    at, born = 100.0, 0
    for _ in range(data.draw(st.integers(1, 30))):
        at += 1
        live = sorted(run.state.owners)
        of_live = ("start", "exit", "unhealthy", "healthy", "gone", "inspect") if live else ()
        measurable = ("measure",) if run.state.deployments else ()
        kinds = ("create", "run", "report", "tick", "resync", "service", "service gone", *of_live, *measurable)
        kind = data.draw(st.sampled_from(kinds))
        observation: Observation
        if kind == "create":
            observation, born = created(f"c{born}", data.draw(VERSIONS), at), born + 1
        elif kind == "run":
            healthcheck = data.draw(st.booleans())
            analysis = data.draw(ANALYSES)
            observation = started(f"c{born}", data.draw(VERSIONS), at, healthcheck=healthcheck, analysis=analysis)
            born += 1
        elif kind == "report":
            status = data.draw(st.sampled_from(("in_progress", "success", "failed")))
            observation = dataclasses.replace(reported(data.draw(VERSIONS), status, at), analysis=data.draw(ANALYSES))
        elif kind == "service":
            state = data.draw(st.sampled_from(UpdateState))
            running = data.draw(st.integers(0, 3))
            seen = service(at, data.draw(VERSIONS), state=state, running=running, changed_at=at - 1)
            observation = dataclasses.replace(seen, analysis=data.draw(ANALYSES))
        elif kind == "measure":
            key = data.draw(st.sampled_from(sorted(run.state.deployments)))
            observation = measured(
                at, data.draw(VALUES), key=key, revision=run.d(key).rollout.revision,
                check=data.draw(st.sampled_from(("error_rate", "p99"))),
                error=data.draw(st.sampled_from(("", "timeout"))), baseline=data.draw(st.booleans()),
            )  # fmt: skip
        elif kind == "service gone":
            observation = ServiceGone(at, "svc1")
        elif kind == "tick":
            at += data.draw(st.sampled_from((1, 5, 20, 700, 4000)))
            observation = Tick(at)
        elif kind == "resync":
            kept = data.draw(st.lists(st.sampled_from(live), unique=True)) if live else []
            observation = Resync(at, Origin.CONTAINER, tuple(run.d().members[i].instance for i in kept))
        else:
            target = data.draw(st.sampled_from(live))
            member = run.d().members[target].instance
            changes: dict[str, Observation] = {
                "start": InstanceStarted(at, target),
                "exit": InstanceExited(at, target, data.draw(st.sampled_from((0, 1)))),
                "unhealthy": InstanceHealth(at, target, Health.UNHEALTHY),
                "healthy": InstanceHealth(at, target, Health.HEALTHY),
                "gone": InstanceGone(at, target),
                "inspect": started(target, member.identity.version, at, created_at=member.identity.created_at,
                                   healthcheck=data.draw(st.booleans())),
            }  # fmt: skip
            observation = changes[kind]
        done = len(run.events)
        run(observation)
        _board(board, run.state, run.events[done:])
        api = {key: _shown(views.summary(d, settings=ANALYSED)) for key, d in run.state.deployments.items()}
        assert board == api, f"after {observation}"
