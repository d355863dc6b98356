"""The verdict is a function of the observations, never of their order (#19).

A restarted watcher relists containers and Swarm services at once, and the two lists race; a CI
job's report races the container it deployed. Whatever the order (of the lists, and within each),
the same observations at the same moment give the same deployments: rollouts, statuses, deadlines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from watcher.config import RolloutSettings, Settings
from watcher.domain.machine import apply
from watcher.domain.model import (
    DeploymentKey,
    Identity,
    Initiator,
    Instance,
    OrchestratedService,
    Origin,
    State,
    Status,
    UpdateState,
)
from watcher.domain.observations import (
    InstanceSeen,
    Observation,
    Resync,
    RolloutReported,
    ServiceSeen,
    ServicesListed,
    Tick,
)

SETTINGS = Settings(rollout=RolloutSettings(stable_seconds=10, progress_deadline_seconds=600, restart_limit=3))
NOW = 1_714_570_000.0
API = DeploymentKey("api", "production")
SHOP = DeploymentKey("shop", "production")
WEB = DeploymentKey("web", "production")  # what tasks of `shop` say when only its service's labels name it
VERSIONS = ("1.0", "1.1", "2.0")
# A start long before (an hour-old deployment.timestamp), a minute before, or just now.
AGES = (3600.0, 60.0, 0.0)
EMPTY = State()


def run(observations: Sequence[Observation], *, state: State = EMPTY, now: float = NOW) -> State:
    for observation in observations:
        state = apply(state, observation, now=now, settings=SETTINGS).state
    return state


def identity(key: DeploymentKey, version: str, *, created: float, deployed: float, commit: str = "") -> Identity:
    return Identity(
        key=key, version=version, commit=commit, image=f"shop/{key.name}:{version}", created_at=created,
        deployed_at=deployed,
    )  # fmt: skip


@st.composite
def containers(draw: st.DrawFn, key: DeploymentKey, *, prefix: str, service_id: str = "") -> list[Instance]:
    """Containers of ``key`` (tasks of ``service_id``, if given): versions, ages and states mixed."""
    found = []
    for n in range(draw(st.integers(min_value=0 if service_id else 1, max_value=3))):
        created = NOW - draw(st.sampled_from(AGES))
        deployed = created - draw(st.sampled_from(AGES))
        running = draw(st.booleans())
        found.append(
            Instance(
                id=f"{prefix}{n}",
                identity=identity(key, draw(st.sampled_from(VERSIONS)), created=created, deployed=deployed),
                running=running,
                running_since=created if running else None,
                exit_code=None if running else draw(st.sampled_from((None, 0, 1))),
                service_id=service_id,
            )
        )
    return found


@st.composite
def services(draw: st.DrawFn) -> ServiceSeen:
    """The service `shop` as a listing finds it: any version, update state and replica count."""
    version = draw(st.sampled_from(VERSIONS))
    state = draw(st.sampled_from(UpdateState))
    return ServiceSeen(
        at=NOW, key=SHOP,
        service=OrchestratedService(id="svc1", name="shop", template=f"t-{version}", update_state=state,
                                    desired=3, running=draw(st.integers(min_value=0, max_value=3))),
        version=version, commit="", image=f"shop/shop:{version}", changed_at=NOW - draw(st.sampled_from(AGES)),
        progress_deadline_seconds=draw(st.sampled_from((None, 300.0))), rollback_by=draw(st.sampled_from(Initiator)),
    )  # fmt: skip


@st.composite
def restarts(draw: st.DrawFn) -> tuple[State, list[Observation], list[Observation]]:
    """What a restarted watcher reads at once: the container list (plain containers of `api`, tasks of
    `shop`, whose own labels name `shop` or another) and the service list; in both orders, the
    containers too. The state file it starts from knew nothing, or, two hours ago, an `api` container
    and `shop` updating to 1.0, a task of it running (which may still be there)."""
    saved = EMPTY
    if draw(st.booleans()):
        before = NOW - 7200
        old = Instance(id="old", identity=identity(API, "1.0", created=before, deployed=before), running=True,
                       running_since=before)  # fmt: skip
        known = ServiceSeen(
            at=before, key=SHOP,
            service=OrchestratedService(id="svc1", name="shop", template="t-1.0", update_state=UpdateState.UPDATING,
                                        desired=3, running=draw(st.integers(min_value=0, max_value=3))),
            version="1.0", commit="", image="shop/shop:1.0", changed_at=before,
        )  # fmt: skip
        task = Instance(id="t", identity=identity(SHOP, "1.0", created=before, deployed=before), running=True,
                        running_since=before, service_id="svc1")  # fmt: skip
        saved = run([Resync(before, Origin.CONTAINER, (old, task)), ServicesListed(before, (known,))], now=before)
    plain = draw(containers(API, prefix="c"))
    tasks = draw(containers(draw(st.sampled_from((SHOP, WEB))), prefix="t", service_id="svc1"))
    listed = ServicesListed(NOW, (draw(services()),))
    if saved is not EMPTY:  # those it knew may be there still
        plain += [m.instance for d in saved.deployments.values() for m in d.members.values() if draw(st.booleans())]
    one = Resync(NOW, Origin.CONTAINER, tuple(plain + tasks))
    other = Resync(NOW, Origin.CONTAINER, tuple(draw(st.permutations(plain + tasks))))
    return saved, [one, listed], [listed, other] if draw(st.booleans()) else [other, listed]


@given(restarts())
@settings(max_examples=examples(300), deadline=None)
def test_a_restart_judges_the_same_whatever_is_read_first(
    restart: tuple[State, list[Observation], list[Observation]],
) -> None:
    """Every order gives the same deployments: rollouts (revision, version, start, members, status,
    deadline), history, rollbacks, DORA figures and members."""
    saved, *orders = restart
    one, other = (run(order, state=saved) for order in orders)
    assert one.deployments == other.deployments
    assert one.owners == other.owners


@st.composite
def races(draw: st.DrawFn) -> tuple[State, list[Observation], list[Observation]]:
    """A CI job's announcement of a rollout of `api` and the event of the container it started, read
    at one moment in either order; the job's start (the container's deployment.timestamp) given or
    not; a deadline label or not; `api` new, or 1.0 deployed before."""
    saved = EMPTY
    if draw(st.booleans()):
        before = NOW - 7200
        old = Instance(id="old", identity=identity(API, "1.0", created=before, deployed=before), running=True,
                       running_since=before)  # fmt: skip
        saved = run([InstanceSeen(before, old), Tick(before + 60)], now=before + 60)
    version = draw(st.sampled_from(VERSIONS))
    began = NOW - draw(st.sampled_from(AGES))
    created = NOW - draw(st.sampled_from((0.0, 2.0)))  # `docker run`, then the job's report
    labelled = identity(API, version, created=created, deployed=min(began, created), commit="abc")
    deadline = draw(st.sampled_from((None, 300.0)))  # its deployment.progress_deadline_seconds
    container = Instance(id="c", identity=dataclasses.replace(labelled, progress_deadline_seconds=deadline),
                         running=True, running_since=created)  # fmt: skip
    report = RolloutReported(
        at=NOW, key=API, version=version, commit="abc", status=Status.IN_PROGRESS,
        started_at=draw(st.sampled_from((None, began))),
    )  # fmt: skip
    return saved, [InstanceSeen(NOW, container), report], [report, InstanceSeen(NOW, container)]


@given(races())
@settings(max_examples=examples(200), deadline=None)
def test_a_report_racing_its_container_judges_the_same(
    race: tuple[State, list[Observation], list[Observation]],
) -> None:
    """Either order gives the same current rollout: revision, version, status, judge, members, deadline.
    (When it began, by whose word, may differ: the job's start or the container's label.)"""
    saved, *orders = race
    one, other = (run(order, state=saved).deployments[API].rollout for order in orders)
    fields = ("revision", "version", "status", "reason", "finished_at", "rollback", "members", "judge", "deadline_at")
    assert [getattr(one, f) for f in fields] == [getattr(other, f) for f in fields]
