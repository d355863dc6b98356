"""The rollouts each deployment keeps (``Deployment.revisions``) and what the read API makes of them:
``GET /api/v1/rollouts`` across deployments, the detail's ``revisions``."""

from __future__ import annotations

import dataclasses
import json

import pytest
from pytest_aiohttp import AiohttpClient

from tests.unit.builders import API, SETTINGS, Run, reported, started
from tests.unit.readside import NOW, read_side
from tests.unit.test_readapi import check, response_schema
from watcher.domain.model import Deployment, DeploymentKey, Judge, RevisionRecord, Rollout, State, Status
from watcher.domain.observations import InstanceExited, Tick
from watcher.domain.settings import RetentionSettings
from watcher.persistence.codec import decode, encode
from watcher.web import rollouts, views

STAGING = DeploymentKey("api", "staging")


def kept(run: Run, key: DeploymentKey = API) -> list[tuple[int, str, str, str, float | None]]:
    return [(r.revision, r.version, r.previous_version, r.status.text, r.duration) for r in run.d(key).revisions]


def test_each_rollout_is_kept_at_its_verdict_and_when_superseded() -> None:
    """Revisions, not distinct versions: a version deployed again is a new record; one superseded before its
    verdict stays in progress and says by what; the current one is recorded once it has a verdict."""
    run = Run()
    run(started("a", "1.0.0", NOW)).tick(NOW + 11)
    assert kept(run) == [(1, "1.0.0", "", "success", 11.0)]
    run(started("b", "2.0.0", NOW + 20))
    assert kept(run) == [(1, "1.0.0", "", "success", 11.0)]  # in progress: not yet
    run(started("c", "1.0.0", NOW + 25))  # 2.0.0 superseded before its verdict
    run(InstanceExited(NOW + 30, "c", 1))
    assert kept(run) == [
        (3, "1.0.0", "2.0.0", "failed", 5.0), (2, "2.0.0", "1.0.0", "in_progress", None),
        (1, "1.0.0", "", "success", 11.0),
    ]  # fmt: skip
    superseded = run.d().revisions[1]
    assert superseded.reason == "superseded by revision 3" and superseded.finished_at is None
    assert [h.version for h in run.d().history] == ["1.0.0", "2.0.0"]  # the history keeps distinct versions


def test_a_revised_verdict_replaces_its_record() -> None:
    """A verdict revised after the fact (deploy tooling reporting a failure after a success) is the record's last word."""
    run = Run()
    run(reported("1.0.0", "success", NOW, started_at=NOW - 30), reported("1.0.0", "failed", NOW + 5))
    assert [(r.revision, r.status) for r in run.d().revisions] == [(1, Status.FAILED)]


def test_revisions_are_bounded_by_the_setting() -> None:
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(revisions=3))
    run = Run(settings)
    for n in range(1, 8):
        run(reported(f"{n}.0", "success", NOW + 10 * n, started_at=NOW + 10 * n - 5))
    assert [r.revision for r in run.d().revisions] == [7, 6, 5]


def test_revisions_survive_the_state_file_and_an_older_file_has_none() -> None:
    run = Run()
    run(started("a", "1.0.0", NOW)).tick(NOW + 11)
    run(started("b", "2.0.0", NOW + 20), InstanceExited(NOW + 21, "b", 2))
    assert decode(encode(run.state)) == run.state
    document = json.loads(encode(run.state))
    assert [r["revision"] for r in document["deployments"][0]["revisions"]] == [2, 1]
    del document["deployments"][0]["revisions"]
    assert decode(json.dumps(document).encode()).deployments[API].revisions == ()


def record(revision: int, started_at: float) -> RevisionRecord:
    return RevisionRecord(
        revision=revision, version=f"{revision}.0", previous_version=f"{revision - 1}.0", commit="c",
        status=Status.SUCCESS, reason="", judge=Judge.CONTAINERS, started_at=started_at,
        finished_at=started_at + 1, duration=1.0, rollback=False, analysis=None,
    )  # fmt: skip


def fleet(deployments: int, revisions: int) -> State:
    """``deployments`` deployments of ``revisions`` rollouts each, one every minute, interleaved."""
    state = {}
    for n in range(deployments):
        key = DeploymentKey(f"d{n:05}", "production")
        kept = tuple(record(r, NOW + 60 * r + n / deployments) for r in range(revisions - 1, 0, -1))
        start = NOW + 60 * revisions + n / deployments
        current = Rollout(revision=revisions, version=f"{revisions}.0", commit="c", image="i", started_at=start)
        state[key] = Deployment(key=key, rollout=current, revisions=kept)
    return State(state)


def test_the_feed_merges_newest_first_and_reads_only_what_it_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 deployments × 50 revisions: the newest ``limit`` across all, only they made JSON, each deployment
    read down to ``since`` only."""
    state = fleet(5000, 50)
    made = 0
    real = views.revision_view

    def counted(r: RevisionRecord) -> views.Json:
        nonlocal made
        made += 1
        return real(r)

    monkeypatch.setattr(views, "revision_view", counted)
    items = rollouts.feed(state, since=0, limit=7)
    assert made == 7
    assert [(i["deployment"], i["revision"]) for i in items] == [
        ("d04999", 50), ("d04998", 50), ("d04997", 50), ("d04996", 50), ("d04995", 50), ("d04994", 50), ("d04993", 50),
    ]  # fmt: skip
    assert items[0]["status"] == "in_progress" and items[0]["previous_version"] == ""
    recent = rollouts.feed(fleet(1000, 50), since=NOW + 60 * 48 + 0.5, limit=5000)
    assert len(recent) == 2500 and {i["revision"] for i in recent} == {48, 49, 50}
    starts = [i["started_at"] for i in recent]
    assert starts == sorted(starts, reverse=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [({}, (NOW - 86400, 500)), ({"since": "12.5", "limit": "5000"}, (12.5, 5000)), ({"limit": "1"}, (NOW - 86400, 1))],
)
def test_query_parameters(query: dict[str, str], expected: tuple[float, int]) -> None:
    assert rollouts.parse(query, now=NOW) == expected


@pytest.mark.parametrize(
    "query",
    [{"since": "yesterday"}, {"since": "nan"}, {"since": "inf"}, {"limit": "0"}, {"limit": "5001"}, {"limit": "-1"},
     {"limit": "1.5"}, {"limit": "٣"}],
)  # fmt: skip
def test_bad_query_parameters_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(rollouts.BadQuery):
        rollouts.parse(query, now=NOW)


async def test_rollouts_and_revisions_in_the_read_api(aiohttp_client: AiohttpClient) -> None:
    """GET /api/v1/rollouts: newest first across deployments, the current ones in progress too, as described;
    ?since= and ?limit= bound it, a bad one is a 400 with a JSON error; the detail lists every revision."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(started("a", "1.0.0", NOW), Tick(NOW + 20))
    side.submit(started("b", "2.0.0", NOW + 50), InstanceExited(NOW + 55, "b", 1))
    side.submit(reported("9.0", "in_progress", NOW + 90, key=STAGING))
    side.clock.now = NOW + 100
    answer = await client.get("/api/v1/rollouts")
    assert answer.status == 200 and answer.content_type == "application/json"
    feed = await answer.json()
    check(feed, response_schema("/api/v1/rollouts"))
    assert [(i["deployment"], i["environment"], i["revision"], i["version"], i["status"]) for i in feed["rollouts"]] == [
        ("api", "staging", 1, "9.0", "in_progress"),
        ("api", "production", 2, "2.0.0", "failed"),
        ("api", "production", 1, "1.0.0", "success"),
    ]  # fmt: skip
    failed = feed["rollouts"][1]
    assert failed == {
        "deployment": "api", "environment": "production", "revision": 2, "version": "2.0.0",
        "previous_version": "1.0.0", "commit": "c-2.0.0", "status": "failed", "reason": "container b exited with code 1",
        "judge": "containers", "started_at": NOW + 50, "finished_at": NOW + 55, "duration_seconds": 5.0,
        "rollback": False, "analysis": None,
    }  # fmt: skip
    since = await (await client.get("/api/v1/rollouts", params={"since": str(NOW + 60), "limit": "1"})).json()
    assert [i["revision"] for i in since["rollouts"]] == [1] and since["rollouts"][0]["environment"] == "staging"
    side.clock.now = NOW + 86400 + 100  # the default: the last 24 h
    assert await (await client.get("/api/v1/rollouts")).json() == {"rollouts": []}
    bad = await client.get("/api/v1/rollouts", params={"limit": "0"})
    assert bad.status == 400 and "limit" in (await bad.json())["error"]
    check(await bad.json(), response_schema("/api/v1/rollouts", "400"))
    detail = await (await client.get("/api/v1/deployments/production/api")).json()
    check(detail, response_schema("/api/v1/deployments/{environment}/{name}"))
    assert [(r["revision"], r["status"]) for r in detail["revisions"]] == [(2, "failed"), (1, "success")]
    assert "deployment" not in detail["revisions"][0]
    assert {k: v for k, v in failed.items() if k not in ("deployment", "environment")} == detail["revisions"][0]
