"""The state file's part for a deployment's kept rollouts (``Deployment.revisions``; ``codec`` holds
the rest). A file without them (of a watcher before they were kept) reads as none kept: no schema bump."""

from __future__ import annotations

from typing import Any

from watcher.domain.analysis import Outcome
from watcher.domain.model import Judge, RevisionRecord, Status
from watcher.persistence.typedjson import DecodeError, Object, member_of

Document = dict[str, Any]
_OUTCOMES = {outcome.text for outcome in Outcome}


def encode(records: tuple[RevisionRecord, ...]) -> list[Document]:
    return [
        {
            "revision": r.revision,
            "version": r.version,
            "previous_version": r.previous_version,
            "commit": r.commit,
            "status": r.status.text,
            "reason": r.reason,
            "judge": r.judge.value,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "duration": r.duration,
            "rollback": r.rollback,
            "analysis": r.analysis,
        }
        for r in records
    ]


def decode(d: Object) -> tuple[RevisionRecord, ...]:
    """The ``revisions`` of deployment ``d``; none when the file has none."""
    return tuple(
        _decode(Object(raw, f"{d.where}.revisions[{n}]")) for n, raw in enumerate(d.array("revisions", default=[]))
    )


def _decode(r: Object) -> RevisionRecord:
    analysis = r.optional_text("analysis")
    if analysis is not None and analysis not in _OUTCOMES:
        raise DecodeError(f"{r.where}.analysis: {analysis!r:.40} is not one of {', '.join(sorted(_OUTCOMES))}")
    return RevisionRecord(
        revision=r.integer("revision", minimum=1), version=r.label("version"), commit=r.label("commit"),
        previous_version=r.label("previous_version"), status=r.choice("status", Status.from_text),
        reason=r.text("reason"), judge=r.choice("judge", member_of(Judge)), started_at=r.time("started_at"),
        finished_at=r.optional_time("finished_at"), duration=r.optional_amount("duration"), rollback=r.flag("rollback"),
        analysis=analysis,
    )  # fmt: skip
