"""The state file: its format round-trips, bad files are moved aside, writes are atomic."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.unit.builders import Run, reported, rich_state, started
from watcher.domain.analysis import Analysis, Check, Measured, Mode, Outcome, Request, Result
from watcher.domain.model import (
    DURATION_BUCKETS,
    LEAD_TIME_BUCKETS,
    RECOVERY_BUCKETS,
    Deployment,
    DeploymentKey,
    Dora,
    Health,
    Histogram,
    Identity,
    Instance,
    Judge,
    Member,
    OrchestratedService,
    Origin,
    Retired,
    RevisionRecord,
    Rollout,
    State,
    Status,
    UpdateState,
    VersionSeen,
)
from watcher.domain.observations import InstanceHealth
from watcher.domain.times import LATEST
from watcher.persistence import codec as store
from watcher.persistence import statefile, typedjson
from watcher.persistence.codec import DecodeError, decode, encode
from watcher.persistence.statefile import StateFile
from watcher.selfmetrics import SelfMetrics

FORMAT = (Path(__file__).parents[2] / "docs" / "state-file.md").read_text()
NOW = 1_717_243_200.0  # 2024-06-01T12:00:00Z


def test_round_trip_of_a_rich_state() -> None:
    """decode(encode(state)) is the same state, owners map included."""
    state = rich_state()
    assert state.deployments[DeploymentKey("api", "production")].rollbacks == 1
    assert decode(encode(state)) == state


# The ranges of the file (docs/state-file.md), their bounds drawn often: what the domain holds.
def _bounded(low: int, high: int) -> st.SearchStrategy[int]:
    return st.sampled_from([low, high]) | st.integers(low, high)


@dataclasses.dataclass(frozen=True)
class Numbers:
    """The numbers states are drawn with: the file's ranges, or any (``wild``)."""

    times: st.SearchStrategy[float]
    amounts: st.SearchStrategy[float]
    counts: st.SearchStrategy[int]
    revisions: st.SearchStrategy[int]
    exit_codes: st.SearchStrategy[int]
    nanos: st.SearchStrategy[int]


IN_RANGE = Numbers(
    times=st.sampled_from([0.0, LATEST]) | st.floats(0, LATEST),
    amounts=st.sampled_from([0.0, typedjson.MAX_AMOUNT]) | st.floats(0, typedjson.MAX_AMOUNT),
    counts=_bounded(0, store.MAX_COUNT),
    revisions=_bounded(1, store.MAX_COUNT),
    exit_codes=_bounded(-store.MAX_COUNT - 1, store.MAX_COUNT),
    nanos=_bounded(0, store.MAX_NANOS),
)
_any_integer = st.integers() | st.sampled_from([2**64 - 1, 2**64, -(2**63) - 1, -1, 10**400, -(10**400)])
_any_float = st.floats(allow_nan=False, allow_infinity=False)
WILD = Numbers(
    times=_any_float, amounts=_any_float, counts=_any_integer, revisions=_any_integer, exit_codes=_any_integer,
    nanos=_any_integer,
)  # fmt: skip
texts = st.text(max_size=12)
# What a query may measure: any sign, infinities (a ratio over nothing); a NaN is never kept (no data).
values = st.none() | st.floats(allow_nan=False)
requests = st.builds(
    Request, checks=st.lists(texts, max_size=3).map(tuple), mode=st.sampled_from(Mode), rollback=st.booleans()
)


@st.composite
def analyses(draw: st.DrawFn, numbers: Numbers) -> Analysis:
    """A rollout's analysis at any point: checks with baselines, counts, the last result."""
    times, counts = numbers.times, numbers.counts
    checks = tuple(
        Measured(
            check=Check(name=draw(texts), query=draw(texts), min=draw(values), max=draw(values),
                        max_increase=draw(values)),
            baseline=draw(values), baseline_taken=draw(st.booleans()), current=draw(values),
            measured_at=draw(st.none() | times), passes=draw(counts), failures=draw(counts), nodata=draw(counts),
            errors=draw(counts), last=draw(st.none() | st.sampled_from(Result)),
        )
        for _ in range(draw(st.integers(1, 3)))
    )  # fmt: skip
    return Analysis(
        mode=draw(st.sampled_from(Mode)), checks=checks, rollback=draw(st.booleans()),
        outcome=draw(st.sampled_from(Outcome)), measuring_since=draw(st.none() | times),
        ends_at=draw(st.none() | times), reason=draw(texts), rollback_done=draw(st.booleans()),
    )  # fmt: skip


@st.composite
def states(draw: st.DrawFn, numbers: Numbers = IN_RANGE) -> State:
    """Arbitrary states: any strings (control characters, quotes, non-ASCII), numbers as ``numbers`` says."""
    times, amounts, counts, nanos = numbers.times, numbers.amounts, numbers.counts, numbers.nanos
    keys = draw(st.lists(st.builds(DeploymentKey, texts, texts), unique=True, max_size=3))
    ids = iter(draw(st.lists(st.text(min_size=1, max_size=8), unique=True, min_size=3 * len(keys))))
    deployments = {}
    for key in keys:
        members = {}
        for _ in range(draw(st.integers(0, 3))):
            instance_id = next(ids)
            identity = Identity(
                key=key, version=draw(texts), commit=draw(texts), image=draw(texts), created_at=draw(times),
                deployed_at=draw(times), status_override=draw(st.none() | st.sampled_from(Status)),
                stable_seconds=draw(st.none() | amounts), progress_deadline_seconds=draw(st.none() | amounts),
                commit_time=draw(st.none() | times), hotfix=draw(st.booleans()), analysis=draw(st.none() | requests),
            )  # fmt: skip
            instance = Instance(
                id=instance_id, identity=identity, running=draw(st.booleans()), running_since=draw(st.none() | times),
                has_healthcheck=draw(st.booleans()), health=draw(st.sampled_from(Health)),
                exit_code=draw(st.none() | numbers.exit_codes),
                exited_at=draw(st.none() | times),
                exit_requested=draw(st.booleans()),
                oom_killed=draw(st.booleans()), restart_count=draw(counts), start_error=draw(texts),
                source=draw(st.sampled_from(Origin)), inspected=draw(st.booleans()), service_id=draw(texts),
            )  # fmt: skip
            members[instance_id] = Member(instance, draw(times), draw(nanos), draw(amounts))
        rollout = Rollout(
            revision=draw(numbers.revisions), version=draw(texts), commit=draw(texts), image=draw(texts),
            started_at=draw(times), status=draw(st.sampled_from(Status)), finished_at=draw(st.none() | times),
            reason=draw(texts), rollback=draw(st.booleans()), members=frozenset(draw(st.lists(texts, max_size=3))),
            trigger_created_at=draw(times), deadline_at=draw(amounts), witnessed=draw(st.booleans()),
            judge=draw(st.sampled_from(Judge)), commit_time=draw(st.none() | times), hotfix=draw(st.booleans()),
            seen_at=draw(st.none() | times), analysis=draw(st.none() | analyses(numbers)),
        )  # fmt: skip
        history = tuple(
            VersionSeen(draw(texts), draw(texts), draw(numbers.revisions), draw(times))
            for _ in range(draw(st.integers(0, 3)))
        )
        kept = tuple(
            RevisionRecord(
                revision=draw(numbers.revisions), version=draw(texts), previous_version=draw(texts),
                commit=draw(texts), status=draw(st.sampled_from(Status)), reason=draw(texts),
                judge=draw(st.sampled_from(Judge)), started_at=draw(times), finished_at=draw(st.none() | times),
                duration=draw(st.none() | amounts), rollback=draw(st.booleans()),
                analysis=draw(st.none() | st.sampled_from([outcome.text for outcome in Outcome])),
            )
            for _ in range(draw(st.integers(0, 3)))
        )  # fmt: skip
        histogram = tuple(draw(st.lists(counts, min_size=len(DURATION_BUCKETS) + 1,
                                     max_size=len(DURATION_BUCKETS) + 1)))  # fmt: skip
        service = OrchestratedService(
            id=draw(texts), name=draw(texts), template=draw(texts), update_state=draw(st.sampled_from(UpdateState)),
            message=draw(texts), desired=draw(counts), running=draw(counts), removed=draw(st.booleans()),
            rolled_back_failure=draw(st.booleans()),
        )  # fmt: skip
        deployments[key] = Deployment(
            key=key, rollout=rollout, history=history, revisions=kept, rollbacks=draw(counts),
            durations=Histogram(DURATION_BUCKETS, histogram, draw(amounts)), members=members, retired_cpu_nanos=draw(nanos),
            gone_since=draw(st.none() | times),
            reported_at=draw(st.none() | times), dora=draw(dora_figures(numbers)),
            service=draw(st.none() | st.just(service)),
        )  # fmt: skip
    owners = {i: key for key, d in deployments.items() for i in d.members}
    others = st.builds(DeploymentKey, texts, texts).filter(lambda key: key not in deployments)
    retired = {key: Retired(draw(dora_figures(numbers)), draw(times))
               for key in draw(st.lists(others, unique=True, max_size=2))}  # fmt: skip
    return State(deployments, owners, retired)


@st.composite
def dora_figures(draw: st.DrawFn, numbers: Numbers = IN_RANGE) -> Dora:
    """Any DORA figures: counts, both histograms, the failure being recovered from, the commits counted."""
    counts = numbers.counts

    def histogram(bounds: tuple[float, ...]) -> Histogram:
        histogram = draw(st.lists(counts, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
        return Histogram(bounds, tuple(histogram), draw(numbers.amounts))

    return Dora(
        successes=draw(counts), failures=draw(counts), change_failures=draw(counts), rework=draw(counts),
        lead_times=histogram(LEAD_TIME_BUCKETS), recoveries=histogram(RECOVERY_BUCKETS),
        failing_since=draw(st.none() | numbers.times), failed_revision=draw(counts),
        commits=tuple(draw(st.lists(texts, max_size=3))),
    )  # fmt: skip


@settings(deadline=None)  # a busy CI machine must not make it flaky
@given(states())
def test_round_trip_property(state: State) -> None:
    """Any state the domain holds, its numbers at the edges of their ranges (a Swarm service's
    replica counts included), survives the file unchanged."""
    assert decode(encode(state)) == state


@settings(deadline=None)
@given(states(WILD))
def test_whatever_encode_writes_decode_accepts(state: State) -> None:
    """Even numbers the domain never holds (its sources clamp them) are written so that the file
    loads: each read as its nearest bound, never the whole file refused, and loaded again unchanged."""
    clamped: list[str] = []
    loaded = decode(encode(state), clamped=clamped)
    assert decode(encode(loaded)) == loaded
    assert clamped or loaded == state


def _fields(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {name for child in value.values() for name in _fields(child)}
    if isinstance(value, list):
        return {name for child in value for name in _fields(child)}
    return set()


def test_every_field_of_the_file_is_documented() -> None:
    """The format is a contract: docs/state-file.md names every field written."""
    documented = set(re.findall(r"`([a-z_]+)`", FORMAT))
    assert _fields(json.loads(encode(rich_state()))) - documented == set()


def test_the_file_says_its_schema() -> None:
    """The top level carries the schema number and no field of a generic dataclass dump."""
    document = json.loads(encode(rich_state()))
    assert document["schema"] == store.SCHEMA == 3
    assert "key" not in document["deployments"][0] and "instance" not in document["deployments"][0]["members"][0]


def test_migration_table_reaches_the_current_schema() -> None:
    """Every older schema has its step: a file of any schema this watcher ever wrote is readable."""
    assert all(old in store.MIGRATIONS for old in range(1, store.SCHEMA))


def test_an_older_schema_is_migrated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of schema 3 is read through MIGRATIONS[3] once the current schema is 4, and written as 4."""
    state = rich_state()
    old = json.loads(encode(state))
    for d in old["deployments"]:  # pretend schema 2 called it so
        d["rollback_total"] = d.pop("rollbacks")

    def to_4(document: store.Document) -> store.Document:
        for d in document["deployments"]:
            d["rollbacks"] = d.pop("rollback_total")
        return document

    monkeypatch.setattr(store, "SCHEMA", 4)
    monkeypatch.setitem(store.MIGRATIONS, 3, to_4)
    assert decode(json.dumps(old).encode()) == state
    assert json.loads(encode(state))["schema"] == 4
    assert decode(encode(state)) == state  # a file already at schema 4 is not migrated again


def test_a_missing_migration_is_an_unreadable_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no step from the file's schema, the file cannot be read."""
    data = encode(rich_state())
    monkeypatch.setattr(store, "SCHEMA", 4)
    with pytest.raises(DecodeError, match="no migration from schema 3"):
        decode(data)


def _corrupt(document: dict[str, Any], path: str, value: object) -> bytes:
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "top level is not an object"),
        (b'{"deployments": []}', "no valid schema"),
        (b'{"schema": "1", "deployments": []}', "no valid schema"),
        (b'{"schema": 4, "deployments": []}', "schema 4 is newer"),
        (b'{"schema": 1, "deployments": [], "x": NaN}', "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b'{"schema": 2}', "state.deployments: missing"),
        (b'{"schema": 1}', "cannot migrate from schema 1: KeyError"),
        (
            b'{"schema": 1, "deployments": [{"rollout": {"reported": "yes"}}]}',
            "cannot migrate from schema 1: TypeError",
        ),
    ],
)
def test_bad_files_are_refused(data: bytes, message: str) -> None:
    """Not JSON, no or a newer schema, a wrong shape: DecodeError saying what."""
    with pytest.raises(DecodeError, match=message):
        decode(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("deployments.0.rollout.status", "done", "rollout.status: 'done' is not one of"),
        ("deployments.0.rollbacks", True, "rollbacks: expected an integer"),
        ("deployments.0.members.0.health", None, "health: expected a string"),
        ("deployments.0.members.0.identity.status_override", "bogus", "status_override"),
        ("deployments.0.durations.buckets", [1, 2], "are not this watcher's buckets"),
        ("deployments.0.durations.counts", [0], "expected 11 counts"),
        ("deployments.1.name", "api", "appears twice"),
        ("deployments.0.history", {}, "history: expected a list"),
        ("deployments.0.members.0.inspected", "yes", "inspected: expected true or false"),
        ("deployments.0.rollout.version", "v\udc80", "rollout.version: not UTF-8 text"),
    ],
)
def test_wrong_fields_are_refused_by_path(path: str, value: object, message: str) -> None:
    """A field of the wrong type or value is refused with its path in the message."""
    document = json.loads(encode(rich_state()))
    document["deployments"][1]["environment"] = document["deployments"][0]["environment"]
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode(_corrupt(document, path, value))


@pytest.mark.parametrize(
    ("path", "value", "bound"),
    [
        ("deployments.0.rollbacks", 10**400, store.MAX_COUNT),
        ("deployments.0.rollout.revision", 2**63, store.MAX_COUNT),
        ("deployments.0.rollout.revision", 0, 1),
        ("deployments.0.retired_cpu_nanos", 2**64, store.MAX_NANOS),
        ("deployments.0.members.0.cpu_nanos", -1, 0),
        ("deployments.0.members.0.exit_code", -(2**63) - 1, -(2**63)),
        ("deployments.0.rollout.started_at", 10**400, LATEST),
        ("deployments.0.rollout.started_at", -1, 0),
        ("deployments.0.rollout.finished_at", 1e300, LATEST),
        ("deployments.0.durations.sum", 10**400, typedjson.MAX_AMOUNT),
        ("deployments.0.members.0.memory_bytes", -0.5, 0),
        ("deployments.0.members.0.identity.stable_seconds", -(10**400), 0),
    ],
)
def test_numbers_out_of_range_are_read_as_the_nearest_bound(path: str, value: object, bound: float) -> None:
    """Each such number, met as it is, crashed every scrape (or every save) after every restart; it
    then made the whole file unusable, every deployment's history and DORA counts lost for one
    value an older watcher wrote. Now it reads as its bound, noted, and the rest loads as it was."""
    state = rich_state()
    clamped: list[str] = []
    loaded = decode(_corrupt(json.loads(encode(state)), path, value), clamped=clamped)
    assert len(clamped) == 1 and f".{path.rsplit('.', 1)[1]}: " in clamped[0] and clamped[0].endswith(f" → {bound}")
    document = json.loads(encode(loaded))
    assert document == json.loads(_corrupt(json.loads(encode(state)), path, bound))
    assert decode(encode(loaded)) == loaded


def test_counts_of_a_histogram_out_of_range_are_clamped_each() -> None:
    clamped: list[str] = []
    document = json.loads(encode(rich_state()))
    loaded = decode(_corrupt(document, "deployments.0.durations.counts", [2**63] * 11), clamped=clamped)
    assert loaded.deployments[DeploymentKey("api", "production")].durations.counts == (store.MAX_COUNT,) * 11
    assert len(clamped) == 11


@pytest.mark.parametrize("token", [b"Infinity", b"-Infinity", b"NaN", b"1e400", b"-1e400"])
def test_numbers_json_cannot_hold_are_refused(token: bytes) -> None:
    """Non-standard tokens, and 1e400, which Python's json reads as infinity without complaint."""
    data = encode(rich_state())
    assert data.count(b'"sum":14.0') == 1
    with pytest.raises(DecodeError, match=r"not JSON|sum: expected a finite number"):
        decode(data.replace(b'"sum":14.0', b'"sum":' + token))


def test_a_field_added_with_a_default_needs_no_new_schema() -> None:
    """Members of a file written before `inspected` existed read as inspected: what they were."""
    state = rich_state()
    document = json.loads(encode(state))
    members = [m for d in document["deployments"] for m in d["members"]]
    assert not all(m["inspected"] for m in members)  # the replica known from its create event
    for member in members:
        del member["inspected"]
    loaded = decode(json.dumps(document).encode())
    assert all(m.instance.inspected for d in loaded.deployments.values() for m in d.members.values())


def schema_1_state() -> State:
    """The state in data/state-schema-1.json: rich_state, and deployments deploy tooling judges
    (announced, taken over from its containers, reported final only and then joined by one)."""
    run = Run()
    run.state = rich_state()
    run(reported("5.0.0", "in_progress", 700, key=DeploymentKey("cd", "production"), started_at=690))
    adopted = DeploymentKey("adopted", "staging")
    run(started("m", "7.0.0", 800, key=adopted), reported("7.0.0", "in_progress", 801, key=adopted))
    final = DeploymentKey("final", "production")
    run(reported("8.0.0", "success", 900, key=final))
    run(started("h", "8.0.0", 905, key=final, healthcheck=True), InstanceHealth(906, "h", Health.HEALTHY))
    # Written when a report's deadline counted from its started_at (690), not from its arrival (700).
    cd = run.state.deployments[DeploymentKey("cd", "production")]
    deployments = {
        **run.state.deployments,
        cd.key: dataclasses.replace(cd, rollout=dataclasses.replace(cd.rollout, deadline_at=1290.0)),
    }
    return State(deployments, run.state.owners)


def test_a_file_of_schema_1_loads_with_every_field() -> None:
    """A file exactly as the watcher wrote it before schema 2 loads as the state it held; `reported`
    becomes who judges the rollout, and written back only the schema, writer and that field differ."""
    data = (Path(__file__).parent / "data" / "state-schema-1.json").read_bytes()
    old = json.loads(data)
    assert old["schema"] == 1
    state = decode(data)
    assert state == before_dora(schema_1_state())
    judges = {key.name: d.rollout.judge for key, d in state.deployments.items()}
    assert judges == {
        "adopted": Judge.DEPLOY_TOOLING, "api": Judge.CONTAINERS, "cd": Judge.DEPLOY_TOOLING,
        "final": Judge.DEPLOY_TOOLING, "gone": Judge.CONTAINERS, "worker": Judge.CONTAINERS,
    }  # fmt: skip
    new = json.loads(encode(state))
    assert new["schema"] == 3
    for d in old["deployments"]:
        d["rollout"]["judge"] = "deploy_tooling" if d["rollout"].pop("reported") else "containers"
        # Fields added since schema 2 without a new schema, written with their defaults; schema 3's analysis.
        d["service"] = None
        d["revisions"] = []
        d["rollout"]["seen_at"] = None
        d["rollout"]["analysis"] = None
        for member in d["members"]:
            member["service_id"] = ""
            member["start_error"] = ""
            member["identity"]["analysis"] = None
    assert without_dora_fields(new)["deployments"] == old["deployments"]


def before_dora(state: State) -> State:
    """``state`` with every DORA figure at zero, no rollout's ``seen_at`` and no revisions kept: what a file
    written before them holds."""
    deployments = {
        key: dataclasses.replace(d, dora=Dora(), rollout=dataclasses.replace(d.rollout, seen_at=None), revisions=())
        for key, d in state.deployments.items()
    }
    return State(deployments, state.owners)


def without_dora_fields(document: store.Document) -> store.Document:
    """A written document without the fields the DORA figures added (all at their defaults here)."""
    assert document.pop("retired") == []
    zero: dict[str, object] = {"successes": 0, "failures": 0, "change_failures": 0, "rework": 0, "failing_since": None,
            "failed_revision": 0, "commits": []}  # fmt: skip
    for d in document["deployments"]:
        figures = d.pop("dora")
        assert {k: v for k, v in figures.items() if k in zero} == zero
        assert sum(figures["lead_times"]["counts"]) == sum(figures["recoveries"]["counts"]) == 0
        assert (d["rollout"].pop("commit_time"), d["rollout"].pop("hotfix")) == (None, False)
        for m in d["members"]:
            assert (m["identity"].pop("commit_time"), m["identity"].pop("hotfix")) == (None, False)
    return document


def test_a_file_of_schema_2_before_dora_loads_with_zero_figures() -> None:
    """A schema-2 file written before the DORA figures loads as the state it held, every figure zero;
    written back, only the DORA fields (at their defaults) are added."""
    data = (Path(__file__).parent / "data" / "state-schema-2.json").read_bytes()
    old = json.loads(data)
    assert old["schema"] == 2 and "retired" not in old and all("dora" not in d for d in old["deployments"])
    state = decode(data)
    assert state == before_dora(schema_1_state())
    assert all(d.dora == Dora() for d in state.deployments.values()) and not state.retired
    for d in old["deployments"]:
        d["service"] = None  # added since, without a new schema: their defaults; schema 3's analysis
        d["revisions"] = []
        d["rollout"]["seen_at"] = None
        d["rollout"]["analysis"] = None
        for member in d["members"]:
            member["service_id"] = ""
            member["start_error"] = ""
            member["identity"]["analysis"] = None
    assert without_dora_fields(json.loads(encode(state)))["deployments"] == old["deployments"]


def test_retired_figures_twice_are_refused() -> None:
    """A deployment's retired DORA figures listed twice, or beside the live deployment, make a corrupt file."""
    state = rich_state()
    figures = Retired(Dora(successes=1), 5.0)
    document = json.loads(encode(State(state.deployments, state.owners, {DeploymentKey("old", "x"): figures})))
    document["retired"] *= 2
    with pytest.raises(DecodeError, match="appears twice"):
        decode(json.dumps(document).encode())
    live = json.loads(encode(State(state.deployments, state.owners, {DeploymentKey("api", "production"): figures})))
    with pytest.raises(DecodeError, match="appears twice"):
        decode(json.dumps(live).encode())


def test_truncated_files_are_refused() -> None:
    """A file cut anywhere (a save interrupted on a filesystem without atomic rename) is refused."""
    data = encode(rich_state())
    for cut in range(0, len(data) - 1, max(1, len(data) // 97)):
        with pytest.raises(DecodeError):
            decode(data[:cut])


# -- the file on disk


def state_file(directory: Path) -> tuple[StateFile, CollectorRegistry]:
    registry = CollectorRegistry()
    return StateFile(str(directory), metrics=SelfMetrics(registry), clock=lambda: NOW), registry


def metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_save_then_load(tmp_path: Path) -> None:
    """A saved state loads back; the directory is made when missing; saves are counted and timed."""
    file, registry = state_file(tmp_path / "data" / "deeper")
    state = rich_state()
    assert file.save(state) is True
    assert state_file(tmp_path / "data" / "deeper")[0].load() == state
    assert metric(registry, "deployment_watcher_state_saves_total") == 1
    assert metric(registry, "deployment_watcher_state_last_save_timestamp_seconds") == NOW
    assert metric(registry, "deployment_watcher_state_save_errors_total") == 0


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """A save of an unknown change replaces the whole file; only state.json and its (empty) journal
    remain in the directory."""
    file, _ = state_file(tmp_path)
    file.save(State())
    first_inode = os.stat(file.path).st_ino
    file.save(rich_state())
    assert sorted(os.listdir(tmp_path)) == ["state.journal", "state.json"]
    assert os.stat(file.path).st_ino != first_inode  # renamed over, never rewritten in place
    assert decode(file.path.read_bytes()) == rich_state()


def test_missing_file_starts_fresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No file yet: an empty state, an info line, no error counted."""
    file, registry = state_file(tmp_path)
    with caplog.at_level(logging.INFO):
        assert file.load() == State()
    assert f"no state file at {tmp_path / 'state.json'}: starting fresh" in caplog.text
    assert metric(registry, "deployment_watcher_state_load_errors_total") == 0


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        encode(rich_state())[:200],
        b'{"schema": 99, "deployments": []}',
        b"",
        encode(rich_state()).replace(b'"rollbacks":1', b'"rollbacks":1e400'),
    ],
    ids=["corrupt", "truncated", "newer-schema", "empty", "infinite"],
)
def test_unusable_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    """Corrupt, truncated or unknown: renamed to state.json.corrupt-<UTC time>, an error logged and counted."""
    (tmp_path / "state.json").write_bytes(content)
    file, registry = state_file(tmp_path)
    assert file.load() == State()
    aside = tmp_path / "state.json.corrupt-20240601T120000Z"
    assert os.listdir(tmp_path) == [aside.name] and aside.read_bytes() == content
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"the state file {tmp_path / 'state.json'} is unusable" in errors[0].getMessage()
    assert f"moved it to {aside}" in errors[0].getMessage()
    assert metric(registry, "deployment_watcher_state_load_errors_total") == 1
    assert file.save(rich_state()) and file.load() == rich_state()  # and it goes on


def loaded_within(file: StateFile, seconds: float) -> State:
    """``file.load()``, failing (not hanging the test run) when it takes longer than ``seconds``."""
    result: list[State] = []
    loader = threading.Thread(target=lambda: result.append(file.load()), daemon=True)
    loader.start()
    loader.join(seconds)
    if loader.is_alive():
        with suppress(OSError):  # a FIFO: a writer that comes and goes lets the blocked open return
            os.close(os.open(file.path, os.O_WRONLY | os.O_NONBLOCK))
        loader.join(5)
        pytest.fail(f"loading {file.path} did not return within {seconds} s")
    return result[0]


def fifo(path: Path) -> None:
    os.mkfifo(path)


def directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").touch()


def link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def link_to_a_good_file(path: Path) -> None:
    target = path.with_name("elsewhere.json")
    target.write_bytes(encode(rich_state()))
    path.symlink_to(target)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (fifo, "not a regular file (a FIFO)"),
        (directory, "not a regular file (a directory)"),
        (link_to_dev_zero, "a symbolic link, not a regular file"),
        (link_to_a_good_file, "a symbolic link, not a regular file"),
    ],
    ids=["fifo", "directory", "link-to-dev-zero", "link"],
)
def test_only_a_regular_file_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: Callable[[Path], None], reason: str
) -> None:
    """A FIFO used to hang the start before anything was served, a link to /dev/zero to end it in
    MemoryError (a crash loop): anything but a regular file is unusable, moved aside (the link
    itself, not what it points to), logged and counted, and the watcher starts fresh."""
    make(tmp_path / "state.json")
    file, registry = state_file(tmp_path)
    assert loaded_within(file, 5) == State()
    assert f"the state file {tmp_path / 'state.json'} is unusable ({reason})" in caplog.text
    assert metric(registry, "deployment_watcher_state_load_errors_total") == 1
    assert os.path.lexists(tmp_path / "state.json.corrupt-20240601T120000Z")
    assert file.save(rich_state()) and file.load() == rich_state()


def test_an_oversized_file_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file beyond storage.max_file_bytes is moved aside unread: loading it could exhaust memory."""
    data = encode(rich_state(), journal="0" * 16)  # as long as a save writes it (a journal id of 16 digits)
    (tmp_path / "state.json").write_bytes(data)
    file = StateFile(tmp_path, metrics=SelfMetrics(CollectorRegistry()), clock=lambda: NOW, max_bytes=len(data) - 1)
    assert file.load() == State()
    assert f"is unusable ({len(data)} bytes, more than storage.max_file_bytes ({len(data) - 1}))" in caplog.text
    assert (tmp_path / "state.json.corrupt-20240601T120000Z").read_bytes() == data
    exactly = StateFile(tmp_path, metrics=SelfMetrics(CollectorRegistry()), max_bytes=len(data))
    assert exactly.save(rich_state()) and exactly.load() == rich_state()


def test_temp_files_of_an_interrupted_save_are_removed_at_load(tmp_path: Path) -> None:
    """A save killed midway leaves a temp file; the next start removes it and keeps the real file."""
    file, _ = state_file(tmp_path)
    file.save(rich_state())
    (tmp_path / ".state.json.x1y2z3.tmp").write_bytes(b'{"schema": 1, "depl')
    (tmp_path / ".state.journal.x1y2z3.tmp").write_bytes(b'{"journal": "')
    assert file.load() == rich_state()
    assert sorted(os.listdir(tmp_path)) == ["state.journal", "state.json"]


def test_failed_save_is_logged_counted_and_cleaned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The rename fails (state.json is a non-empty directory): False, path and reason logged once, no temp file."""
    (tmp_path / "state.json").mkdir()
    (tmp_path / "state.json" / "keep").touch()
    file, registry = state_file(tmp_path)
    assert file.save(rich_state()) is False
    assert file.save(rich_state()) is False
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"cannot save the state file {tmp_path / 'state.json'}: Is a directory; the watcher keeps running and "
        "keeps trying"
    ]
    assert metric(registry, "deployment_watcher_state_save_errors_total") == 2
    assert metric(registry, "deployment_watcher_state_saves_total") == 0
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    (tmp_path / "state.json" / "keep").unlink()
    (tmp_path / "state.json").rmdir()
    with caplog.at_level(logging.INFO):
        assert file.save(rich_state()) is True
    assert "saved the state file" in caplog.text and "again" in caplog.text


def test_save_where_no_directory_can_be_made(tmp_path: Path) -> None:
    """A data directory below a file: the save fails cleanly with the reason, nothing raised."""
    (tmp_path / "file").touch()
    file, registry = state_file(tmp_path / "file" / "data")
    assert file.save(State()) is False
    assert metric(registry, "deployment_watcher_state_save_errors_total") == 1


def test_a_state_json_cannot_hold_is_a_failed_save_not_a_crash(tmp_path: Path) -> None:
    """A non-finite number (never made by the state machine) fails the save cleanly instead of raising."""
    file, registry = state_file(tmp_path)
    run = Run()(started("a", "1.0.0", 100))
    deployment = run.d()
    member = dataclasses.replace(deployment.members["a"], memory_bytes=float("nan"))  # apply() refuses NaN
    broken = State({deployment.key: dataclasses.replace(deployment, members={"a": member})}, run.state.owners)
    assert file.save(broken) is False
    assert metric(registry, "deployment_watcher_state_save_errors_total") == 1
    assert os.listdir(tmp_path) == []


def test_the_state_directory_is_held_by_one_watcher(tmp_path: Path) -> None:
    """A second holder (here in the same process: flock locks belong to an open file) is refused,
    told the first one's pid and host; once unlocked, the directory can be taken again."""
    first, _ = state_file(tmp_path / "data")
    first.lock()
    holder = f"{os.getpid()} {socket.gethostname()}"
    assert (tmp_path / "data" / statefile.LOCK_NAME).read_text() == f"{holder}\n"
    second, _ = state_file(tmp_path / "data")
    with pytest.raises(
        statefile.DirectoryInUse, match=re.escape(f"(pid {os.getpid()} on host {socket.gethostname()})")
    ):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()


def test_a_directory_that_cannot_be_locked_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No lock file can be made (here: the directory's place is taken by a file): a warning, no refusal."""
    (tmp_path / "data").touch()
    file, _ = state_file(tmp_path / "data")
    file.lock()
    assert f"cannot lock the state directory {tmp_path / 'data'}" in caplog.text
