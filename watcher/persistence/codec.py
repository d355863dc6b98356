"""The state file's schema: ``encode(state) → bytes`` and ``decode(bytes) → State`` (pure), with the
migrations from older schemas. The typed reads of untrusted JSON are ``typedjson``'s; ``statefile``
is the adapter that loads the file at start-up and saves it atomically.

The format is a contract, documented field by field in docs/state-file.md: JSON with a top-level
``schema`` number, every field written explicitly. A change old files cannot be read with bumps
``SCHEMA`` and adds ``MIGRATIONS[old]``, a function turning a document of schema ``old`` into one of
``old + 1``; files are migrated in memory when loaded and written in the current schema. A new field
whose default means what files without it meant needs no new schema: decode it with that default
when it is missing, and list the default in docs/state-file.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from watcher import __version__
from watcher.domain import limits
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
    Rollout,
    State,
    Status,
    UpdateState,
    VersionSeen,
    iter_sorted,
    shared_counts,
)
from watcher.persistence import analyses, revisions
from watcher.persistence.typedjson import (
    MAX_COUNT,
    DecodeError,
    Object,
    amount,
    integer,
    load,
    member_of,
    noting_clamped,
    text,
)

SCHEMA = 3
FILE_NAME = "state.json"

Document = dict[str, Any]
# The interface: what a state file holds, and the error of one that cannot be read (typedjson's).
__all__ = [
    "FILE_NAME", "MAX_COUNT", "MAX_NANOS", "MIGRATIONS", "SCHEMA", "DecodeError", "Document", "decode",
    "decode_document", "encode", "encode_deployment", "encode_pieces", "encode_retired", "load",
]  # fmt: skip


def _judge_of_schema_1(document: Document) -> Document:
    """Schema 2 says who judges a rollout (``judge``) where schema 1 said whether deploy tooling did (``reported``)."""
    for deployment in document["deployments"]:
        rollout = deployment["rollout"]
        reported = rollout.pop("reported")
        if not isinstance(reported, bool):
            raise TypeError(f"rollout.reported of {deployment.get('name')!r:.40} is not true or false")
        rollout["judge"] = (Judge.DEPLOY_TOOLING if reported else Judge.CONTAINERS).value
    return document


def _analysis_of_schema_2(document: Document) -> Document:
    """Schema 3 holds rollouts' analyses (and containers' requests for one): a schema 2 file has none,
    which is what their absence reads as. The schema went up so that an older watcher refuses a file
    whose analyses under way it would silently drop."""
    return document


# Schema N → a function turning a schema N document into a schema N + 1 one; applied in order.
MIGRATIONS: dict[int, Callable[[Document], Document]] = {1: _judge_of_schema_1, 2: _analysis_of_schema_2}


# The ranges the numbers of a file lie in, beyond typedjson's counts and amounts (watcher.domain.limits).
# The watcher writes nothing outside them: its sources clamp what engines send.
MAX_NANOS = limits.MAX_NANOS


# -- encode


def encode(state: State, *, journal: str = "") -> bytes:
    """The state file's bytes for ``state``, in the current schema; ``journal``: the id of the journal
    that continues this file (``watcher.persistence.journal``), written as its ``journal`` field."""
    return b"".join(encode_pieces(state, journal=journal))


def encode_pieces(state: State, *, journal: str = "") -> Iterator[bytes]:
    """``encode``'s bytes, a deployment at a time: written as they come, the file is never whole in
    memory (8 MB at 5,000 deployments, and as much again to join it)."""
    head = {"schema": SCHEMA, "written_by": f"deployment-watcher {__version__}"} | (
        {"journal": journal} if journal else {}
    )
    yield _dumps(head)[:-1] + b',"deployments":['
    for n, deployment in enumerate(iter_sorted(state)):
        yield encode_deployment(deployment) if not n else b"," + encode_deployment(deployment)
    yield b'],"retired":['
    yield b",".join(encode_retired(key, r) for key, r in sorted(state.retired.items()))
    yield b"]}\n"


def encode_deployment(d: Deployment) -> bytes:
    """One deployment's object of ``deployments``: the file's piece, and a journal record's."""
    return _dumps(_encode_deployment(d))


def encode_retired(key: DeploymentKey, r: Retired) -> bytes:
    """One object of ``retired``."""
    return _dumps({"name": key.name, "environment": key.environment, "dropped_at": r.dropped_at,
                   "dora": _encode_dora(r.dora)})  # fmt: skip


def _dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def _encode_deployment(d: Deployment) -> Document:
    return {
        "name": d.key.name,
        "environment": d.key.environment,
        "rollout": _encode_rollout(d.rollout),
        "history": [
            {"version": h.version, "commit": h.commit, "revision": h.revision, "started_at": h.started_at}
            for h in d.history
        ],
        "revisions": revisions.encode(d.revisions),
        "rollbacks": d.rollbacks,
        "durations": _encode_histogram(d.durations),
        "retired_cpu_nanos": d.retired_cpu_nanos,
        "gone_since": d.gone_since,
        "reported_at": d.reported_at,
        "members": [_encode_member(d.members[i]) for i in sorted(d.members)],
        "dora": _encode_dora(d.dora),
        "service": None if d.service is None else _encode_service(d.service),
    }


def _encode_service(s: OrchestratedService) -> Document:
    return {
        "id": s.id,
        "name": s.name,
        "template": s.template,
        "update_state": s.update_state.value,
        "message": s.message,
        "desired": s.desired,
        "running": s.running,
        "removed": s.removed,
        "rolled_back_failure": s.rolled_back_failure,
    }


def _encode_dora(f: Dora) -> Document:
    return {
        "successes": f.successes,
        "failures": f.failures,
        "change_failures": f.change_failures,
        "rework": f.rework,
        "lead_times": _encode_histogram(f.lead_times),
        "recoveries": _encode_histogram(f.recoveries),
        "failing_since": f.failing_since,
        "failed_revision": f.failed_revision,
        "commits": list(f.commits),
    }


def _encode_histogram(h: Histogram) -> Document:
    return {"buckets": list(h.bounds), "counts": list(h.counts), "sum": h.total}


def _encode_rollout(r: Rollout) -> Document:
    return {
        "revision": r.revision,
        "version": r.version,
        "commit": r.commit,
        "image": r.image,
        "started_at": r.started_at,
        "status": r.status.text,
        "finished_at": r.finished_at,
        "reason": r.reason,
        "rollback": r.rollback,
        "members": sorted(r.members),
        "trigger_created_at": r.trigger_created_at,
        "deadline_at": r.deadline_at,
        "witnessed": r.witnessed,
        "judge": r.judge.value,
        "commit_time": r.commit_time,
        "hotfix": r.hotfix,
        "seen_at": r.seen_at,
        "analysis": None if r.analysis is None else analyses.encode(r.analysis),
    }


def _encode_member(m: Member) -> Document:
    i, identity = m.instance, m.instance.identity
    return {
        "id": i.id,
        "source": i.source.value,
        "updated_at": m.updated_at,
        "cpu_nanos": m.cpu_nanos,
        "memory_bytes": m.memory_bytes,
        "running": i.running,
        "running_since": i.running_since,
        "has_healthcheck": i.has_healthcheck,
        "health": i.health.value,
        "exit_code": i.exit_code,
        "exited_at": i.exited_at,
        "exit_requested": i.exit_requested,
        "oom_killed": i.oom_killed,
        "restart_count": i.restart_count,
        "inspected": i.inspected,
        "service_id": i.service_id,
        "start_error": i.start_error,
        "identity": {
            "version": identity.version,
            "commit": identity.commit,
            "image": identity.image,
            "created_at": identity.created_at,
            "deployed_at": identity.deployed_at,
            "status_override": identity.status_override.text if identity.status_override else None,
            "stable_seconds": identity.stable_seconds,
            "progress_deadline_seconds": identity.progress_deadline_seconds,
            "commit_time": identity.commit_time,
            "hotfix": identity.hotfix,
            "analysis": None if identity.analysis is None else analyses.encode_request(identity.analysis),
        },
    }


# -- decode


def decode(data: bytes, *, clamped: list[str] | None = None) -> State:
    """The state in a state file of this or an older schema; DecodeError for anything else.

    ``clamped``: where a number out of its range was read as its nearest bound, and what it was.
    """
    return decode_document(load(data), clamped=clamped)


def decode_document(document: Document, *, clamped: list[str] | None = None) -> State:
    """``decode`` of a file's JSON object (its journal replayed onto it: ``watcher.persistence.journal``)."""
    schema = document.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise DecodeError(f"no valid schema number (got {schema!r})")
    if schema > SCHEMA:
        raise DecodeError(f"schema {schema} is newer than this watcher's schema {SCHEMA}")
    for old in range(schema, SCHEMA):
        migrate = MIGRATIONS.get(old)
        if migrate is None:
            raise DecodeError(f"no migration from schema {old}")
        try:
            document = migrate(document)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a corrupt document of that schema
            raise DecodeError(f"cannot migrate from schema {old}: {exc!r:.200}") from None
    with noting_clamped(clamped):
        return _decode_state(Object(document, "state"))


def _decode_state(root: Object) -> State:
    deployments: dict[DeploymentKey, Deployment] = {}
    owners: dict[str, DeploymentKey] = {}
    for n, raw in enumerate(root.array("deployments")):
        deployment = _decode_deployment(Object(raw, f"deployments[{n}]"))
        if deployment.key in deployments:
            raise DecodeError(f"deployments[{n}]: {deployment.key.name}/{deployment.key.environment} appears twice")
        for instance_id in deployment.members:
            if instance_id in owners:
                raise DecodeError(f"deployments[{n}]: instance {instance_id} also belongs to another deployment")
            owners[instance_id] = deployment.key
        deployments[deployment.key] = deployment
    retired: dict[DeploymentKey, Retired] = {}
    for n, raw in enumerate(root.array("retired", default=[])):
        r = Object(raw, f"retired[{n}]")
        key = DeploymentKey(r.label("name"), r.label("environment"))
        if key in retired or key in deployments:
            raise DecodeError(f"retired[{n}]: {key.name}/{key.environment} appears twice")
        retired[key] = Retired(_decode_dora(r.child("dora")), r.time("dropped_at"))
    return State(deployments, owners, retired)


def _decode_deployment(d: Object) -> Deployment:
    key = DeploymentKey(d.label("name"), d.label("environment"))
    history = []
    for n, raw in enumerate(d.array("history")):
        h = Object(raw, f"{d.where}.history[{n}]")
        history.append(VersionSeen(h.label("version"), h.label("commit"), h.integer("revision", minimum=1),
                                   h.time("started_at")))  # fmt: skip
    members: dict[str, Member] = {}
    for n, raw in enumerate(d.array("members")):
        member = _decode_member(Object(raw, f"{d.where}.members[{n}]"), key=key)
        if member.instance.id in members:
            raise DecodeError(f"{d.where}.members[{n}]: instance {member.instance.id} appears twice")
        members[member.instance.id] = member
    return Deployment(
        key=key,
        rollout=_decode_rollout(d.child("rollout")),
        history=tuple(history),
        revisions=revisions.decode(d),  # none in a file of a watcher before they were kept
        rollbacks=d.integer("rollbacks"),
        durations=_decode_histogram(d.child("durations"), DURATION_BUCKETS),
        members=members,
        retired_cpu_nanos=d.integer("retired_cpu_nanos", maximum=MAX_NANOS),
        gone_since=d.optional_time("gone_since"),
        reported_at=d.optional_time("reported_at"),
        dora=_decode_dora(d.child("dora")) if d.has("dora") else Dora(),
        service=_decode_service(d.child("service")) if d.present("service") else None,
    )


def _decode_service(s: Object) -> OrchestratedService:
    return OrchestratedService(
        id=s.text("id"),
        name=s.text("name"),
        template=s.text("template"),
        update_state=s.choice("update_state", member_of(UpdateState)),
        message=s.text("message"),
        desired=s.integer("desired"),
        running=s.integer("running"),
        removed=s.flag("removed"),
        rolled_back_failure=s.flag("rolled_back_failure"),
    )


def _decode_dora(f: Object) -> Dora:
    return Dora(
        successes=f.integer("successes"),
        failures=f.integer("failures"),
        change_failures=f.integer("change_failures"),
        rework=f.integer("rework"),
        lead_times=_decode_histogram(f.child("lead_times"), LEAD_TIME_BUCKETS),
        recoveries=_decode_histogram(f.child("recoveries"), RECOVERY_BUCKETS),
        failing_since=f.optional_time("failing_since"),
        failed_revision=f.integer("failed_revision"),
        commits=tuple(text(c, f"{f.where}.commits") for c in f.array("commits")),
    )


def _decode_histogram(h: Object, bounds: tuple[float, ...]) -> Histogram:
    buckets = [amount(b, f"{h.where}.buckets") for b in h.array("buckets")]
    if buckets != list(bounds):
        # Counts cannot be re-bucketed: changing the buckets needs a new schema and a migration.
        raise DecodeError(f"{h.where}.buckets: {buckets} are not this watcher's buckets {list(bounds)}")
    counts = [integer(c, f"{h.where}.counts") for c in h.array("counts")]
    if len(counts) != len(bounds) + 1:
        raise DecodeError(f"{h.where}.counts: expected {len(bounds) + 1} counts (the last for +Inf)")
    return Histogram(bounds, shared_counts(tuple(counts)), h.amount("sum"))


def _decode_rollout(r: Object) -> Rollout:
    return Rollout(
        revision=r.integer("revision", minimum=1),
        version=r.label("version"),
        commit=r.label("commit"),
        image=r.label("image"),
        started_at=r.time("started_at"),
        status=r.choice("status", Status.from_text),
        finished_at=r.optional_time("finished_at"),
        reason=r.text("reason"),
        rollback=r.flag("rollback"),
        members=frozenset(text(m, f"{r.where}.members") for m in r.array("members")),
        trigger_created_at=r.time("trigger_created_at"),
        deadline_at=r.amount("deadline_at"),  # a start plus a deadline label of any size
        witnessed=r.flag("witnessed"),
        judge=r.choice("judge", member_of(Judge)),
        commit_time=r.optional_time("commit_time") if r.has("commit_time") else None,
        hotfix=r.flag("hotfix", default=False),
        seen_at=r.optional_time("seen_at") if r.has("seen_at") else None,
        analysis=analyses.decode(r.child("analysis")) if r.present("analysis") else None,
    )


def _decode_member(m: Object, *, key: DeploymentKey) -> Member:
    i = m.child("identity")
    identity = Identity(
        key=key,
        version=i.text("version"),
        commit=i.text("commit"),
        image=i.text("image"),
        created_at=i.time("created_at"),
        deployed_at=i.time("deployed_at"),
        status_override=i.optional_choice("status_override", Status.from_text),
        stable_seconds=i.optional_amount("stable_seconds"),
        progress_deadline_seconds=i.optional_amount("progress_deadline_seconds"),
        commit_time=i.optional_time("commit_time") if i.has("commit_time") else None,
        hotfix=i.flag("hotfix", default=False),
        analysis=analyses.decode_request(i.child("analysis")) if i.present("analysis") else None,
    )
    instance = Instance(
        id=m.text("id"),
        identity=identity,
        running=m.flag("running"),
        running_since=m.optional_time("running_since"),
        has_healthcheck=m.flag("has_healthcheck"),
        health=m.choice("health", member_of(Health)),
        exit_code=m.optional_integer("exit_code", minimum=-MAX_COUNT - 1),
        exited_at=m.optional_time("exited_at"),
        exit_requested=m.flag("exit_requested"),
        oom_killed=m.flag("oom_killed"),
        restart_count=m.integer("restart_count"),
        source=m.choice("source", member_of(Origin)),
        inspected=m.flag("inspected", default=True),
        service_id=m.text("service_id", default=""),
        start_error=m.text("start_error", default=""),
    )
    return Member(instance, m.time("updated_at"), m.integer("cpu_nanos", maximum=MAX_NANOS), m.amount("memory_bytes"))
