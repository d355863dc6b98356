"""The read API in process: the list and one deployment as JSON, shaped as openapi.json says,
sharing its path with the CI/CD API, behind basic auth like /metrics."""

from __future__ import annotations

import base64
import importlib.resources
import json
from typing import Any
from urllib.parse import quote

import bcrypt
import jsonschema
import pytest
from pytest_aiohttp import AiohttpClient

from tests.unit.builders import ANALYSED, API, SETTINGS, Run, measured, reported, started
from tests.unit.readside import AUTH, NOW, read_side
from watcher.config.webconfig import WebConfig
from watcher.domain.analysis import Request
from watcher.domain.model import Deployment, DeploymentKey, Health, iter_sorted
from watcher.domain.observations import InstanceExited, InstanceHealth, Tick
from watcher.domain.settings import RuleSettings
from watcher.web import views
from watcher.web.readapi import ReadApi
from watcher.wire import EVENT_ID_HEADER, MAX_LENGTH_HEADER, READY_HEADER

SPEC = json.loads((importlib.resources.files("watcher.web") / "openapi.json").read_text())


def check(instance: Any, schema: dict[str, Any]) -> None:
    """``instance`` matches ``schema`` (a piece of openapi.json, its $refs resolved in the document)."""
    jsonschema.Draft202012Validator({**schema, "components": SPEC["components"]}).validate(instance)


def response_schema(path: str, status: str = "200") -> dict[str, Any]:
    content = SPEC["paths"][path]["get"]["responses"][status]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def test_the_description_is_valid() -> None:
    """openapi.json is OpenAPI 3.1 and each of its schemas is a valid JSON Schema."""
    assert SPEC["openapi"].startswith("3.1")
    for schema in SPEC["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert set(SPEC["paths"]) == {
        "/api/v1/deployments", "/api/v1/deployments/{environment}/{name}", "/api/v1/rollouts", "/api/v1/events",
        "/api/v1/openapi.json",
    }  # fmt: skip


async def test_the_list_shows_every_deployment_sorted_and_filters_by_environment(aiohttp_client: AiohttpClient) -> None:
    """GET /api/v1/deployments: each deployment's current rollout, sorted; ?environment= keeps one environment."""
    app, side = read_side()
    client = await aiohttp_client(app)
    staging = DeploymentKey("api", "staging")
    side.submit(started("a", "1.0.0", NOW), reported("2.0.0", "in_progress", NOW, key=staging), Tick(NOW + 11))
    answer = await client.get("/api/v1/deployments")
    assert answer.status == 200 and answer.content_type == "application/json"
    listed = await answer.json()
    check(listed, response_schema("/api/v1/deployments"))
    assert [(d["name"], d["environment"], d["status"], d["version"]) for d in listed["deployments"]] == [
        ("api", "production", "success", "1.0.0"),
        ("api", "staging", "in_progress", "2.0.0"),
    ]
    first = listed["deployments"][0]
    assert first["duration_seconds"] == 11.0 and first["healthy"] is True
    assert first["health_checks"] == {"containers_running": True, "no_oom_kill": True, "no_restart_loop": True}
    assert first["instances"] == {"current": 1, "running": 1} and first["last_versions"] == ["1.0.0"]
    only = await (await client.get("/api/v1/deployments", params={"environment": "staging"})).json()
    assert [d["environment"] for d in only["deployments"]] == ["staging"]
    none = await (await client.get("/api/v1/deployments", params={"environment": "nowhere"})).json()
    assert none == {"deployments": []}


async def test_one_deployment_in_full(aiohttp_client: AiohttpClient) -> None:
    """GET /api/v1/deployments/{environment}/{name}: members, health checks, verdict and reason, history."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(started("a", "1.0.0", NOW, healthcheck=True), InstanceHealth(NOW + 2, "a", Health.HEALTHY))
    side.submit(started("b", "2.0.0", NOW + 10), InstanceExited(NOW + 12, "b", 3))
    answer = await client.get("/api/v1/deployments/production/api")
    assert answer.status == 200
    detail = await answer.json()
    check(detail, response_schema("/api/v1/deployments/{environment}/{name}"))
    assert (detail["status"], detail["revision"], detail["reason"]) == (
        "failed", 2, "container b exited with code 3",
    )  # fmt: skip
    assert [(m["id"], m["current"], m["running"], m["exit_code"], m["health"]) for m in detail["members"]] == [
        ("a", False, True, None, "healthy"),
        ("b", True, False, 3, "none"),
    ]
    assert detail["health_checks"]["containers_running"] is False and detail["healthy"] is False
    assert [(h["revision"], h["version"], h["commit"]) for h in detail["history"]] == [
        (2, "2.0.0", "c-2.0.0"), (1, "1.0.0", "c-1.0.0"),
    ]  # fmt: skip
    assert detail["durations"] == {"count": 2, "sum_seconds": 4.0}


async def test_an_analysis_in_the_summary_and_the_detail(aiohttp_client: AiohttpClient) -> None:
    """A rollout's analysis in both answers: its state, each check's query as sent, limits, figures (an infinity
    as "+Inf", NaN as null: JSON has neither) and counts; null for a rollout without one."""
    app, side = read_side(settings=ANALYSED)
    client = await aiohttp_client(app)
    side.submit(
        started("a", "1.0.0", NOW, analysis=Request(checks=("error_rate", "p99"))),
        measured(NOW + 1, float("inf"), baseline=True), measured(NOW + 1, float("nan"), check="p99", baseline=True),
        Tick(NOW + 20), measured(NOW + 30, 0.041), measured(NOW + 31, None, check="p99", error="timeout"),
    )  # fmt: skip
    listed = (await (await client.get("/api/v1/deployments")).json())["deployments"]
    check({"deployments": listed}, response_schema("/api/v1/deployments"))
    detail = await (await client.get("/api/v1/deployments/production/api")).json()
    check(detail, response_schema("/api/v1/deployments/{environment}/{name}"))
    analysis = detail["analysis"]
    assert listed[0]["analysis"] == analysis
    assert {k: v for k, v in analysis.items() if k != "checks"} == {
        "mode": "gate", "status": "running", "measuring_since": NOW + 20, "ends_at": NOW + 320, "reason": "",
        "failures": 1, "failure_limit": 2, "rollback": False, "rollback_done": False,
    }  # fmt: skip
    assert analysis["checks"] == [
        {"name": "error_rate", "query": 'sum(rate(errors{job="api"}[1m]))', "min": None, "max": 0.02,
         "max_increase": 0.5, "baseline": "+Inf", "current": 0.041,
         "measurements": {"pass": 0, "fail": 1, "nodata": 0, "error": 0}, "last": "fail"},
        {"name": "p99", "query": 'p99{version="1.0.0"}', "min": None, "max": 0.5, "max_increase": None,
         "baseline": None, "current": None, "measurements": {"pass": 0, "fail": 0, "nodata": 0, "error": 1},
         "last": "error"},
    ]  # fmt: skip
    side.submit(started("b", "2.0.0", NOW + 40))
    assert (await (await client.get("/api/v1/deployments/production/api")).json())["analysis"] is None


def test_the_analysis_events_are_shaped_as_described() -> None:
    """analysis_measured (a baseline of -Inf, a failure with its figures) and analysis_finished, as the Event schema says."""
    run = Run(ANALYSED)(started("a", "1.0.0", 100, analysis=Request(checks=("error_rate",))))
    run(measured(101, float("-inf"), baseline=True)).tick(120)(measured(130, 0.041), measured(160, 0.041))
    shown = [view[1] for view in map(views.event_view, run.events) if view is not None]
    for fields in shown:
        check({**fields, "deployment": None}, SPEC["components"]["schemas"]["Event"])
    said = [f for f in shown if f["event"].startswith("analysis_")]
    assert [(f["event"], f.get("value"), f.get("result"), f.get("outcome")) for f in said] == [
        ("analysis_measured", "-Inf", "pass", None),
        ("analysis_measured", 0.041, "fail", None),
        ("analysis_measured", 0.041, "fail", None),
        ("analysis_finished", None, None, "failed"),
    ]
    assert said[-1]["reason"] == "analysis error_rate: 0.041 > max 0.02 (baseline -Inf)" and said[-1]["mode"] == "gate"


async def test_unknown_deployment_is_404_json(aiohttp_client: AiohttpClient) -> None:
    """A deployment the watcher does not track: 404 with an error in JSON."""
    app, _ = read_side()
    client = await aiohttp_client(app)
    answer = await client.get("/api/v1/deployments/production/nope")
    assert answer.status == 404
    body = await answer.json()
    check(body, response_schema("/api/v1/deployments/{environment}/{name}", "404"))
    assert "nope" in body["error"]


async def test_answers_say_the_event_id_the_sync_and_the_limit(aiohttp_client: AiohttpClient) -> None:
    """Each answer of the list and of one deployment (a 404 too) says the newest event id of its state (resume the
    stream from it; its run changes with a restart), whether the watcher is synced with Docker (until then a
    deployment missing may only not be known yet: the 404 says so too) and labels.max_value_length."""
    synced = False
    app, side = read_side(ready=lambda: synced)
    client = await aiohttp_client(app)
    missing = await client.get("/api/v1/deployments/production/api")
    assert missing.status == 404 and missing.headers[READY_HEADER] == "false"
    assert missing.headers[EVENT_ID_HEADER] == f"{side.stream.run}.0"
    assert "not synced with the Docker Engine yet" in (await missing.json())["error"]
    side.submit(reported("1.0.0", "in_progress", NOW))
    synced = True
    for path in ("/api/v1/deployments", "/api/v1/deployments?environment=production",
                 "/api/v1/deployments/production/api", "/api/v1/deployments/production/nope"):  # fmt: skip
        answer = await client.get(path)
        assert answer.headers[EVENT_ID_HEADER] == side.stream.last_id == f"{side.stream.run}.1", path
        assert answer.headers[READY_HEADER] == "true", path
        assert answer.headers[MAX_LENGTH_HEADER] == str(SETTINGS.labels.max_value_length), path
    assert "not synced" not in (await (await client.get("/api/v1/deployments/production/nope")).json())["error"]
    for path, status in (("/api/v1/deployments", "200"), ("/api/v1/deployments/{environment}/{name}", "200"),
                         ("/api/v1/deployments/{environment}/{name}", "404")):  # fmt: skip
        described = SPEC["paths"][path]["get"]["responses"][status]["headers"]
        assert set(described) == {EVENT_ID_HEADER, READY_HEADER, MAX_LENGTH_HEADER}, (path, status)


async def test_a_name_is_looked_up_as_labels_make_it(aiohttp_client: AiohttpClient) -> None:
    """A name or environment asked for is cleaned and cut as label values are: the whole name given to a
    container finds the deployment the watcher made of it."""
    app, side = read_side()
    client = await aiohttp_client(app)
    limit = SETTINGS.labels.max_value_length
    whole = "a" * (limit - 1) + "bc"
    side.submit(reported("1.0.0", "success", NOW, key=DeploymentKey(whole[:limit], "production")))
    answer = await client.get(f"/api/v1/deployments/%20production%09/{whole}")
    assert answer.status == 200 and (await answer.json())["name"] == whole[:limit]
    listed = await (await client.get("/api/v1/deployments", params={"environment": " production\n"})).json()
    assert [d["name"] for d in listed["deployments"]] == [whole[:limit]]


@pytest.mark.parametrize(
    "name", ["a/b", "<img src=x onerror=alert(1)>", "ünï cödé", "50%", 'a"} or vector(1) #', "{x}"]
)
async def test_any_label_value_is_addressable(aiohttp_client: AiohttpClient, name: str) -> None:
    """Names with slashes, markup, non-ASCII, percent signs or braces are found percent-encoded in the path."""
    app, side = read_side()
    client = await aiohttp_client(app)
    key = DeploymentKey(name, "env/1")
    side.submit(reported("1.0.0", "success", NOW, key=key, started_at=NOW - 5))
    answer = await client.get(f"/api/v1/deployments/{quote('env/1', safe='')}/{quote(name, safe='')}")
    assert answer.status == 200
    assert (await answer.json())["name"] == name


async def test_get_and_post_share_the_path(aiohttp_client: AiohttpClient) -> None:
    """POST /api/v1/deployments is the CI/CD API, GET the read API; other methods are 405."""
    app, _ = read_side()
    client = await aiohttp_client(app)
    posted = await client.post("/api/v1/deployments", json={"deployment": "api", "version": "1", "status": "success"},
                               headers=AUTH)  # fmt: skip
    assert posted.status == 201
    listed = await (await client.get("/api/v1/deployments")).json()
    assert [d["name"] for d in listed["deployments"]] == ["api"]
    assert (await client.put("/api/v1/deployments", headers=AUTH)).status == 405
    assert (await client.delete("/api/v1/deployments/production/api")).status == 405


async def test_reads_need_a_user_and_reports_keep_their_token(aiohttp_client: AiohttpClient) -> None:
    """With basic auth configured, every GET of the read side needs a user; POST keeps its bearer token."""
    users = {"alice": bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4))}
    app, _ = read_side(web_config=WebConfig(users=users))
    client = await aiohttp_client(app)
    alice = {"Authorization": "Basic " + base64.b64encode(b"alice:wonderland").decode()}
    for path in ("/api/v1/deployments", "/api/v1/deployments/production/api", "/api/v1/openapi.json",
                 "/api/v1/events", "/", "/deployment?environment=production&name=api", "/static/board.js"):  # fmt: skip
        assert (await client.get(path)).status == 401, path
    assert (await client.get("/api/v1/deployments", headers=alice)).status == 200
    report = {"deployment": "api", "version": "1", "status": "success"}
    assert (await client.post("/api/v1/deployments", json=report, headers=AUTH)).status == 201


async def test_openapi_is_served(aiohttp_client: AiohttpClient) -> None:
    """/api/v1/openapi.json is the packaged description, as JSON."""
    app, _ = read_side()
    client = await aiohttp_client(app)
    answer = await client.get("/api/v1/openapi.json")
    assert answer.status == 200 and answer.content_type == "application/json"
    assert await answer.json() == SPEC


def test_the_list_is_encoded_once_per_state() -> None:
    """The same state (and environment) gives the very same bytes; a change gives new ones."""
    _, side = read_side()
    api = ReadApi(snapshot=side.core.snapshot, settings=SETTINGS, stream=side.stream, ready=lambda: True)
    side.submit(started("a", "1.0.0", NOW))
    first = api.list_body(side.core.snapshot(), None)
    assert api.list_body(side.core.snapshot(), None) is first
    assert api.cached(side.core.snapshot(), None) is first and api.cached(side.core.snapshot(), "staging") is None
    side.submit(started("b", "1.0.0", NOW + 1, key=DeploymentKey("web", "production")))
    assert api.cached(side.core.snapshot(), None) is None
    again = api.list_body(side.core.snapshot(), None)
    assert again is not first
    state = side.core.snapshot()
    assert json.loads(again) == {"deployments": [views.summary(d, settings=SETTINGS) for d in iter_sorted(state)]}


def test_after_a_change_only_changed_rows_are_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment that did not change keeps its encoded row; the one that changed is encoded again."""
    _, side = read_side()
    api = ReadApi(snapshot=side.core.snapshot, settings=SETTINGS, stream=side.stream, ready=lambda: True)
    side.submit(started("a", "1.0.0", NOW), started("b", "1.0.0", NOW, key=DeploymentKey("web", "production")))
    side.submit(Tick(NOW + 11))  # both rollouts succeed
    api.list_body(side.core.snapshot(), None)
    encoded: list[str] = []
    summary = views.summary

    def counting(deployment: Deployment, *, settings: RuleSettings) -> dict[str, Any]:
        encoded.append(deployment.key.name)
        return summary(deployment, settings=settings)

    monkeypatch.setattr(views, "summary", counting)
    side.submit(started("c", "2.0.0", NOW + 12))  # only api changes
    del encoded[:]  # the stream's payloads
    body = json.loads(api.list_body(side.core.snapshot(), None))
    assert encoded == ["api"]
    assert [(d["name"], d["version"]) for d in body["deployments"]] == [("api", "2.0.0"), ("web", "1.0.0")]
    api.list_body(side.core.snapshot(), "production")
    assert encoded == ["api"]


def test_views_do_not_depend_on_the_clock() -> None:
    """A view is a function of the state alone (so it can be cached); an in-progress rollout has no duration."""
    _, side = read_side()
    side.submit(started("a", "1.0.0", NOW))
    deployment = side.core.snapshot().deployments[API]
    assert views.summary(deployment, settings=SETTINGS)["duration_seconds"] is None
    side.clock.now += 100
    assert views.detail(deployment, settings=SETTINGS) == views.detail(deployment, settings=SETTINGS)
