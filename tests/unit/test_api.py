"""The CI/CD API: body validation, bearer-token auth, size limit, what a report records; the token setting."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient, AiohttpServer

from watcher import cli
from watcher.clients import notify
from watcher.config import ApiSettings, ConfigError, RetentionSettings, Settings
from watcher.domain.model import DeploymentKey, Status
from watcher.exposition.rendering import Exposition
from watcher.runtime.core import Core
from watcher.selfmetrics import SelfMetrics
from watcher.sources.api.reports import DeploymentsApi, Invalid, parse_report, read_token
from watcher.web.app import make_app
from watcher.wire import REPORTS_PATH as PATH

NOW = 1_750_000_000.0
TOKEN = "s3cret-token-0123456789"
SETTINGS = Settings()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = DeploymentKey("api", "production")


def body(**fields: Any) -> dict[str, Any]:
    return {"deployment": "api", "version": "1.4.2", "status": "in_progress", **fields}


# -- the body → a report


def test_full_body_becomes_a_report() -> None:
    """Every field is read; RFC 3339 and unix seconds both give unix seconds."""
    report = parse_report(
        body(environment="staging", commit="9f1c2ab", status="success", started_at="2025-06-15T15:00:00Z",
             finished_at=NOW - 10),
        at=NOW, settings=SETTINGS,
    )  # fmt: skip
    assert report.key == DeploymentKey("api", "staging")
    assert (report.version, report.commit, report.status) == ("1.4.2", "9f1c2ab", Status.SUCCESS)
    assert (report.started_at, report.finished_at, report.at) == (1_749_999_600.0, NOW - 10, NOW)


def test_optional_fields_have_defaults() -> None:
    """No environment: the configured default; no commit: empty; no times: None; values stripped."""
    report = parse_report(body(deployment=" api ", environment=None), at=NOW, settings=SETTINGS)
    assert report.key == API
    assert (report.commit, report.started_at, report.finished_at) == ("", None, None)


@pytest.mark.parametrize(
    ("fields", "field", "needle"),
    [
        ({"stauts": "success"}, "stauts", "unknown field"),
        ({"deployment": None}, "deployment", "is required"),
        ({"deployment": 5}, "deployment", "must be a string"),
        ({"deployment": "  "}, "deployment", "must not be empty"),
        ({"version": "x" * 129}, "version", "at most 128"),
        ({"version": "1.0\n# HELP"}, "version", "unprintable"),
        ({"commit": "\ud800"}, "commit", "unprintable"),
        ({"environment": ["prod"]}, "environment", "must be a string"),
        ({"status": None}, "status", "is required"),
        ({"status": "done"}, "status", "in_progress, success, failed"),
        ({"status": 1}, "status", "in_progress, success, failed"),
        ({"started_at": True}, "started_at", "unix seconds (a number) or an RFC 3339 string"),
        ({"started_at": "yesterday"}, "started_at", "RFC 3339"),
        ({"started_at": "2025-06-15T15:00:00"}, "started_at", "time zone"),
        ({"started_at": 0}, "started_at", "before the year 2000"),
        ({"started_at": NOW * 1000}, "started_at", "milliseconds"),
        ({"started_at": 10**400}, "started_at", "finite"),
        ({"finished_at": NOW}, "finished_at", "only for status success or failed"),
        ({"status": "failed", "started_at": NOW, "finished_at": NOW - 1}, "finished_at", "before started_at"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, Any], field: str, needle: str) -> None:
    """Each bad field is refused with a message naming it."""
    with pytest.raises(Invalid) as caught:
        parse_report(body(**fields), at=NOW, settings=SETTINGS)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ") and needle in str(caught.value)


def test_body_must_be_an_object() -> None:
    """A JSON array or string is not a report."""
    with pytest.raises(Invalid, match="body: must be a JSON object"):
        parse_report([body()], at=NOW, settings=SETTINGS)


def test_length_limit_follows_the_label_limit() -> None:
    """Values may be as long as labels.max_value_length, no longer."""
    settings = Settings(labels=dataclasses.replace(SETTINGS.labels, max_value_length=8))
    assert parse_report(body(version="12345678"), at=NOW, settings=settings).version == "12345678"
    with pytest.raises(Invalid, match="at most 8"):
        parse_report(body(version="123456789"), at=NOW, settings=settings)


# -- the HTTP endpoint


@dataclass
class Server:
    client: Any
    core: Core
    registry: CollectorRegistry

    async def post(self, payload: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(PATH, data=json.dumps(payload), headers=AUTH if headers is None else headers)
        return response.status, await response.json()

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value("deployment_watcher_api_requests_total", {"outcome": outcome})
        assert value is not None
        return value


async def serve(aiohttp_client: AiohttpClient, *, token: str | None = TOKEN, settings: Settings = SETTINGS) -> Server:
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    core = Core(settings=settings, metrics=metrics, clock=lambda: NOW)
    api = DeploymentsApi(
        token=token, settings=settings, snapshot=core.snapshot, step=core.step, clock=core.clock, metrics=metrics
    )
    exposition = Exposition(snapshot=core.snapshot, registry=registry, settings=settings, metrics=metrics)
    app = make_app(exposition=exposition, ready=lambda: True)
    app.add_routes(api.routes())
    return Server(await aiohttp_client(app), core, registry)


async def test_reports_are_recorded_with_their_outcome(aiohttp_client: AiohttpClient) -> None:
    """201 started, 200 updated, 200 unchanged, 202 stale; the answer shows the rollout recorded."""
    server = await serve(aiohttp_client)
    status, answer = await server.post(body(commit="9f1c2ab", started_at=NOW - 60))
    assert (status, answer["outcome"], answer["deployment"], answer["environment"]) == (
        201,
        "started",
        "api",
        "production",
    )
    assert answer["rollout"] == {
        "revision": 1, "version": "1.4.2", "commit": "9f1c2ab", "status": "in_progress", "started_at": NOW - 60,
        "finished_at": None, "rollback": False, "reason": "",
    }  # fmt: skip
    status, answer = await server.post(body(status="success"))
    assert (status, answer["outcome"], answer["rollout"]["status"]) == (200, "updated", "success")
    assert "after 60.0 s" in answer["message"]
    status, answer = await server.post(body(status="success"))
    assert (status, answer["outcome"]) == (200, "unchanged")
    status, answer = await server.post(body(version="1.3.0", status="failed", started_at=NOW - 3600))
    assert (status, answer["outcome"], answer["rollout"]["version"]) == (202, "stale", "1.4.2")
    assert server.core.state.deployments[API].durations.count == 1
    assert [server.count(o) for o in ("started", "updated", "unchanged", "stale")] == [1, 1, 1, 1]


async def test_reported_rollback_is_counted(aiohttp_client: AiohttpClient) -> None:
    """Going back to an older version through the API is a rollback."""
    server = await serve(aiohttp_client)
    await server.post(body(version="1.0.0", status="success"))
    await server.post(body(version="2.0.0", status="success"))
    status, answer = await server.post(body(version="1.0.0"))
    assert (status, answer["rollout"]["rollback"], answer["rollout"]["revision"], answer["rollbacks"]) == (
        201, True, 3, 1
    )  # fmt: skip


async def test_a_skewed_report_neither_freezes_the_deployment_nor_is_refused(aiohttp_client: AiohttpClient) -> None:
    """started_at 8 h ahead (a CI runner's clock): recorded from its arrival, the answer says why; a
    correct report of the next version is then 201, not 202 "stale" (before: stale for 8 h)."""
    server = await serve(aiohttp_client)
    status, answer = await server.post(body(started_at=NOW + 8 * 3600))
    assert (status, answer["outcome"], answer["rollout"]["started_at"]) == (201, "started", NOW)
    assert answer["message"].startswith(
        "started_at lies 28800 s after the moment the watcher observed it (clock skew?); using the report's arrival; "
    )
    status, answer = await server.post(body(version="1.4.3", started_at=NOW))  # the clock stands still here
    assert (status, answer["outcome"], answer["rollout"]["revision"]) == (201, "started", 2)
    status, answer = await server.post(body(version="1.4.3", status="success", commit_time=NOW + 60))
    assert (status, answer["rollout"]["status"]) == (200, "success")
    assert "commit_time lies 60 s after" in answer["message"]
    assert server.core.state.deployments[API].dora.lead_times.count == 0


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="deployment-watcher"'),
        (
            {"Authorization": "Bearer wrong-token-0123456789"},
            'Bearer realm="deployment-watcher", error="invalid_token"',
        ),
        ({"Authorization": f"Basic {TOKEN}"}, 'Bearer realm="deployment-watcher", error="invalid_token"'),
        ({"Authorization": f"Bearer {TOKEN}x"}, 'Bearer realm="deployment-watcher", error="invalid_token"'),
        ({"Authorization": "Bearer"}, 'Bearer realm="deployment-watcher", error="invalid_token"'),
    ],
)
async def test_missing_or_wrong_token_is_401_and_records_nothing(
    aiohttp_client: AiohttpClient, headers: dict[str, str], challenge: str
) -> None:
    """Without the right bearer token: 401 with a Bearer challenge, and the state is untouched."""
    server = await serve(aiohttp_client)
    response = await server.client.post(PATH, data=json.dumps(body()), headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == challenge
    assert (await response.json())["outcome"] == "unauthorized"
    assert server.core.state.deployments == {}
    assert server.count("unauthorized") == 1


async def test_bearer_scheme_is_case_insensitive(aiohttp_client: AiohttpClient) -> None:
    """RFC 6750 schemes are case-insensitive: `bearer` works too."""
    server = await serve(aiohttp_client)
    status, _ = await server.post(body(), headers={"Authorization": f"bearer {TOKEN}"})
    assert status == 201


async def test_api_without_token_is_off(aiohttp_client: AiohttpClient) -> None:
    """No token configured: 403 saying the API is disabled, even with a token sent; nothing recorded."""
    server = await serve(aiohttp_client, token=None)
    status, answer = await server.post(body())
    assert status == 403
    assert "disabled" in answer["error"] and "WATCHER_API_TOKEN" in answer["error"]
    assert server.core.state.deployments == {}
    assert server.count("disabled") == 1


async def test_body_above_the_limit_is_413(aiohttp_client: AiohttpClient) -> None:
    """Bodies over api.max_body_bytes are refused, announced by Content-Length or streamed in chunks."""
    settings = Settings(api=ApiSettings(max_body_bytes=1024))
    server = await serve(aiohttp_client, settings=settings)
    status, answer = await server.post(body(commit="x" * 2000))
    assert (status, answer["outcome"]) == (413, "too_large")
    assert "1024 bytes" in answer["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512

    response = await server.client.post(PATH, data=chunks(), headers=AUTH)
    assert response.status == 413
    assert server.core.state.deployments == {}
    assert server.count("too_large") == 2


@pytest.mark.parametrize("raw", [b"", b"deployment=api", b"{'deployment': 'api'}", b"\xff\xfe{", b"[" * 5000, b"NaN"])
async def test_non_json_is_400(aiohttp_client: AiohttpClient, raw: bytes) -> None:
    """Anything that is not a JSON document is a 400 naming the body (deep nesting too)."""
    server = await serve(aiohttp_client, settings=Settings(api=ApiSettings(max_body_bytes=8192)))
    response = await server.client.post(PATH, data=raw, headers=AUTH)
    answer = await response.json()
    assert (response.status, answer["field"]) == (400, "body")
    assert server.count("invalid") == 1


async def test_invalid_field_is_400_naming_it(aiohttp_client: AiohttpClient) -> None:
    """A field error answers 400 with the field's name, and records nothing."""
    server = await serve(aiohttp_client)
    status, answer = await server.post(body(status="done"))
    assert (status, answer["field"]) == (400, "status")
    assert answer["error"].startswith("status: must be one of")
    assert server.core.state.deployments == {}


async def test_report_beyond_the_cap_is_507(aiohttp_client: AiohttpClient) -> None:
    """A new deployment beyond retention.max_deployments is refused as not stored."""
    server = await serve(aiohttp_client, settings=Settings(retention=RetentionSettings(max_deployments=1)))
    assert (await server.post(body()))[0] == 201
    status, answer = await server.post(body(deployment="other"))
    assert (status, answer["outcome"]) == (507, "rejected")
    assert "cap of 1" in answer["error"]


async def test_only_post_is_allowed(aiohttp_client: AiohttpClient) -> None:
    """GET on the API path is 405."""
    server = await serve(aiohttp_client)
    assert (await server.client.get(PATH, headers=AUTH)).status == 405


async def test_token_never_logged(aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture) -> None:
    """Neither accepted nor refused requests put a token in the log."""
    caplog.set_level(logging.DEBUG)
    server = await serve(aiohttp_client)
    await server.post(body())
    await server.post(body(), headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert "refused a request" in caplog.text and "reported api/production" in caplog.text
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


# -- the token setting


def test_token_from_file_or_environment(tmp_path: Path) -> None:
    """The token comes from api.token_file (trailing newline stripped) or WATCHER_API_TOKEN; neither: off."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token(ApiSettings(token_file=str(path)), {}) == TOKEN
    assert read_token(ApiSettings(), {"WATCHER_API_TOKEN": TOKEN}) == TOKEN
    assert read_token(ApiSettings(), {}) is None
    assert read_token(ApiSettings(), {"WATCHER_API_TOKEN": ""}) is None


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read it"),
        ("\n", "the token is empty"),
        ("short-token", "shorter than 16"),
        ("has a space in the middle", "without spaces"),
        ("nön-ascii-token-0123456789", "printable ASCII"),
    ],
)
def test_bad_token_file_is_a_config_error(tmp_path: Path, content: str | None, needle: str) -> None:
    """An unreadable, empty, short or unsendable token is a configuration error that does not quote it."""
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_token(ApiSettings(token_file=str(path)), {})
    assert needle in str(caught.value) and f"api.token_file {path}" in str(caught.value)
    if content and content.strip():
        assert content.strip() not in str(caught.value)


def test_token_file_and_environment_together_is_an_error(tmp_path: Path) -> None:
    """Two sources of the token are ambiguous: a configuration error."""
    path = tmp_path / "token"
    path.write_text(TOKEN)
    with pytest.raises(ConfigError, match="both set"):
        read_token(ApiSettings(token_file=str(path)), {"WATCHER_API_TOKEN": TOKEN})


def test_cli_unreadable_token_file_exits_2(
    clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A token file that cannot be read stops the start (and --check-config) with exit 2."""
    missing = tmp_path / "missing"
    assert cli.main(["--check-config", f"--api.token-file={missing}"]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and f"api.token_file {missing}: cannot read it" in err


def test_cli_check_config_never_prints_the_token(
    clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--check-config accepts WATCHER_API_TOKEN (not an unknown variable) and prints no token."""
    clean_environ.setenv("WATCHER_API_TOKEN", TOKEN)
    assert cli.main(["--check-config"]) == 0
    out, err = capsys.readouterr()
    assert "token_file: ''" in out
    assert TOKEN not in out + err
    clean_environ.delenv("WATCHER_API_TOKEN")
    path = tmp_path / "token"
    path.write_text(TOKEN)
    assert cli.main(["--check-config", f"--api.token-file={path}"]) == 0
    out, err = capsys.readouterr()
    assert str(path) in out and TOKEN not in out + err


# -- the notify client against a real server (urllib runs in a thread; the loop serves)


async def notify_main(*args: str) -> int:
    return await asyncio.to_thread(notify.main, list(args))


REPORT_FLAGS = ("--deployment", "api", "--version", "1.4.2", "--status", "in_progress")


async def test_notify_exit_codes(
    aiohttp_client: AiohttpClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """0 recorded or stale, 2 invalid, 3 wrong token; the answer on stdout, messages on stderr."""
    server = await serve(aiohttp_client)
    url = str(server.client.make_url("/"))
    monkeypatch.setenv("WATCHER_API_TOKEN", TOKEN)
    assert await notify_main(*REPORT_FLAGS, "--url", url, "--commit", "9f1c2ab", "--started-at", str(NOW - 5)) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rollout"]["started_at"] == NOW - 5
    assert "started: api/production revision 1 (1.4.2) in_progress" in err
    assert server.core.state.deployments[API].rollout.commit == "9f1c2ab"
    flags = ("--deployment", "api", "--version", "1.0.0", "--status", "success", "--url", url)
    assert await notify_main(*flags, "--started-at", "2025-01-01T00:00:00Z") == 0
    assert "ignored the report as stale" in capsys.readouterr().err
    assert await notify_main(*flags, "--started-at", "yesterday") == 2
    assert "started_at: is not an RFC 3339 time" in capsys.readouterr().err
    monkeypatch.setenv("WATCHER_API_TOKEN", "wrong-token-0123456789")
    assert await notify_main(*REPORT_FLAGS, "--url", url) == 3
    assert "(401): missing or wrong bearer token" in capsys.readouterr().err


async def test_notify_token_file_and_missing_token(
    aiohttp_client: AiohttpClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--token-file is read; no token at all is a usage error before any request."""
    server = await serve(aiohttp_client)
    url = str(server.client.make_url("/"))
    monkeypatch.delenv("WATCHER_API_TOKEN", raising=False)
    assert await notify_main(*REPORT_FLAGS, "--url", url) == 2
    assert "no token" in capsys.readouterr().err
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert await notify_main(*REPORT_FLAGS, "--url", url, "--token-file", str(path)) == 0
    assert await notify_main(*REPORT_FLAGS, "--url", url, "--token-file", str(tmp_path / "nope")) == 2
    assert "cannot read --token-file" in capsys.readouterr().err
    assert await notify_main(*REPORT_FLAGS, "--url", "file:///etc/passwd", "--token-file", str(path)) == 2
    assert await notify_main(*REPORT_FLAGS, "--url", url, "--token-file", str(path), "--timeout", "0") == 2


async def test_notify_disabled_missing_api_and_server_errors(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """3 when the API is off; 1 for a server without the API, a 5xx, or nothing listening."""
    monkeypatch.setenv("WATCHER_API_TOKEN", TOKEN)
    off = await serve(aiohttp_client, token=None)
    assert await notify_main(*REPORT_FLAGS, "--url", str(off.client.make_url("/"))) == 3
    assert "disabled" in capsys.readouterr().err

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    other = web.Application()
    other.router.add_post("/api/v1/broken" + PATH, broken)
    server = await aiohttp_server(other)
    url = str(server.make_url("/"))
    assert await notify_main(*REPORT_FLAGS, "--url", url) == 1
    assert "no CI/CD API at this URL (404)" in capsys.readouterr().err
    assert await notify_main(*REPORT_FLAGS, "--url", str(server.make_url("/api/v1/broken"))) == 1
    assert "answered 500: boom" in capsys.readouterr().err
    await server.close()
    assert await notify_main(*REPORT_FLAGS, "--url", url, "--timeout", "2") == 1
    assert "cannot reach the watcher" in capsys.readouterr().err
