"""The CI/CD API: deploy tooling reports rollouts with ``POST /api/v1/deployments``.

A bearer token guards it, compared in constant time; without a token the API is off, not
open. A body is checked field by field and becomes one ``RolloutReported`` observation; the
state machine decides what it means, and the answer says what was recorded.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from aiohttp import hdrs, web

from watcher.config import API_TOKEN_ENV, ApiSettings, ConfigError, Settings
from watcher.domain import labels, text, times
from watcher.domain.analysis import Mode, Request
from watcher.domain.events import DeploymentRejected, RolloutStarted, StaleObservation
from watcher.domain.machine import Step
from watcher.domain.model import Deployment, DeploymentKey, State, Status
from watcher.domain.observations import Observation, RolloutReported
from watcher.selfmetrics import SelfMetrics
from watcher.sources.source import Given, Source
from watcher.wire import REPORTS_PATH as PATH

log = logging.getLogger(__name__)

FIELDS = (
    "deployment", "environment", "version", "commit", "status", "started_at", "finished_at", "commit_time",
    "change_type", "analysis", "analysis_mode",
)  # fmt: skip
MIN_TOKEN_LENGTH = 16
_CHALLENGE = 'Bearer realm="deployment-watcher"'


class Invalid(Exception):
    """A request body field that cannot be recorded; ``str()`` names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def read_token(settings: ApiSettings, environ: Mapping[str, str]) -> str | None:
    """The API's bearer token from ``api.token_file`` or $WATCHER_API_TOKEN; None: the API is off.

    Raises ConfigError (never quoting the token) when it cannot be read or is too weak.
    """
    from_env = environ.get(API_TOKEN_ENV, "")
    if settings.token_file and from_env:
        raise ConfigError([f"api.token_file and {API_TOKEN_ENV} are both set; set one of them"])
    if settings.token_file:
        where = f"api.token_file {settings.token_file}"
        try:
            token = Path(settings.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([f"{where}: cannot read it: {exc.strerror or exc}"]) from None
        except UnicodeDecodeError:
            raise ConfigError([f"{where}: not UTF-8 text"]) from None
    elif from_env:
        where, token = f"environment {API_TOKEN_ENV}", from_env.strip()
    else:
        return None
    if not token:
        raise ConfigError([f"{where}: the token is empty"])
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError([f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters (openssl rand -hex 32)"])
    if not (token.isascii() and token.isprintable()) or any(ch.isspace() for ch in token):
        raise ConfigError([f"{where}: the token may only hold printable ASCII characters without spaces"])
    return token


def parse_report(body: object, *, at: float, settings: Settings) -> RolloutReported:
    """A decoded JSON body → the report it makes, received at ``at``; raises Invalid."""
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise Invalid(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    limit = settings.labels.max_value_length
    status = _status(body.get("status"))
    started_at = _time(body, "started_at", at=at)
    finished_at = _time(body, "finished_at", at=at)
    if finished_at is not None and status is Status.IN_PROGRESS:
        raise Invalid("finished_at", "only for status success or failed")
    if started_at is not None and finished_at is not None and finished_at < started_at:
        raise Invalid("finished_at", "lies before started_at")
    return RolloutReported(
        at=at,
        key=DeploymentKey(
            _text(body, "deployment", limit=limit, required=True),
            _text(body, "environment", limit=limit) or settings.labels.default_environment,
        ),
        version=_text(body, "version", limit=limit, required=True),
        commit=_text(body, "commit", limit=limit),
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        commit_time=_time(body, "commit_time", at=at),
        hotfix=_change_type(body.get("change_type")) == "hotfix",
        analysis=_analysis(body, settings=settings),
    )


def _analysis(body: Mapping[str, Any], *, settings: Settings) -> Request | None:
    """``analysis``: check names, a list or a comma-separated string; ``analysis_mode``: gate (default) or observe."""
    raw, mode_raw = body.get("analysis"), body.get("analysis_mode")
    if isinstance(raw, str):
        raw = raw.split(",")
    if raw is not None and not (isinstance(raw, list) and all(isinstance(n, str) for n in raw)):
        raise Invalid("analysis", "must be a list of check names or a comma-separated string")
    mode = Mode.GATE
    if mode_raw is not None:
        if not isinstance(mode_raw, str) or mode_raw not in {m.value for m in Mode}:
            raise Invalid("analysis_mode", f"must be one of {', '.join(m.value for m in Mode)}")
        mode = Mode(mode_raw)
    names = tuple(dict.fromkeys(n.strip() for n in raw or () if n.strip()))
    configured = settings.analysis
    if configured.enabled:
        known = [c.name for c in configured.checks]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise Invalid(
                "analysis", f"unknown check {unknown[0]!r:.60} (analysis.checks: {', '.join(known) or 'none'})"
            )
    return Request(checks=names, mode=mode) if names else None


def _text(body: Mapping[str, Any], field: str, *, limit: int, required: bool = False) -> str:
    """A label value: the same length limit as labels, and nothing that needs cleaning."""
    raw = body.get(field)
    if raw is None:
        if required:
            raise Invalid(field, "is required")
        return ""
    if not isinstance(raw, str):
        raise Invalid(field, "must be a string")
    if required and not raw.strip():
        raise Invalid(field, "must not be empty")
    cleaned = text.clean(raw.strip(), limit=limit)  # stripped first: a trailing newline is no flaw
    if cleaned.length > limit:
        raise Invalid(field, f"is {cleaned.length} characters long; at most {limit} (labels.max_value_length)")
    if cleaned.unprintable or cleaned.unencodable:
        raise Invalid(field, "contains line breaks, control or other unprintable characters")
    return cleaned.value


def _change_type(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or raw not in labels.CHANGE_TYPES:
        raise Invalid("change_type", f"must be one of {', '.join(labels.CHANGE_TYPES)}")
    return raw


def _status(raw: object) -> Status:
    if raw is None:
        raise Invalid("status", "is required")
    if not isinstance(raw, str) or raw not in Status.texts():
        raise Invalid("status", f"must be one of {', '.join(Status.texts())}")
    return Status.from_text(raw)


def _time(body: Mapping[str, Any], field: str, *, at: float) -> float | None:
    """Unix seconds (a number) or an RFC 3339 string with a time zone."""
    raw = body.get(field)
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            moment = datetime.datetime.fromisoformat(raw.strip())
        except ValueError:
            raise Invalid(field, "is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)") from None
        if moment.tzinfo is None:
            raise Invalid(field, "needs a time zone (Z or +hh:mm)")
        value = moment.timestamp()
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise Invalid(field, "must be a finite number of unix seconds")
    else:
        raise Invalid(field, "must be unix seconds (a number) or an RFC 3339 string")
    problem = times.implausible(value, now=at)
    if problem:
        raise Invalid(field, problem)
    return value


def _authorized(header: str, token: str) -> bool:
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        presented = ""
    return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token.encode())


class DeploymentsApi(Source):
    """The handler of ``POST /api/v1/deployments``; ``step`` applies an observation to the state.

    A push source: deploy tooling comes to it, so it has nothing to run and is always fresh."""

    name: ClassVar[str] = "deployments api"

    def __init__(
        self,
        *,
        token: str | None,
        settings: Settings,
        snapshot: Callable[[], State],
        step: Callable[[Observation], Step],
        clock: Callable[[], float],
        metrics: SelfMetrics,
    ) -> None:
        self._token = token
        self._settings = settings
        self._snapshot = snapshot
        self._step = step
        self._clock = clock
        self._metrics = metrics
        self._analysis_off_said = False

    @classmethod
    def given(cls, given: Given) -> DeploymentsApi:
        return cls(
            token=given.api_token, settings=given.settings, snapshot=given.snapshot, step=given.step,
            clock=given.clock, metrics=given.metrics,
        )  # fmt: skip

    async def run_forever(self) -> NoReturn:
        await asyncio.Event().wait()  # never set: the requests are served by the HTTP server
        raise AssertionError("unreachable")

    def routes(self) -> list[web.RouteDef]:
        if self._token is None:
            log.info("CI/CD API off: no token configured (api.token_file or %s)", API_TOKEN_ENV)
        else:
            log.info("CI/CD API on: POST %s with the bearer token", PATH)
        return [web.post(PATH, self.post)]

    async def post(self, request: web.Request) -> web.Response:
        if self._token is None:
            disabled = f"the CI/CD API is disabled: no token configured (api.token_file or {API_TOKEN_ENV})"
            return self._refuse(request, status=403, outcome="disabled", error=disabled)
        if not _authorized(request.headers.get(hdrs.AUTHORIZATION, ""), self._token):
            # RFC 6750: name the scheme; say the token is wrong only when one was sent.
            challenge = _CHALLENGE + (', error="invalid_token"' if hdrs.AUTHORIZATION in request.headers else "")
            return self._refuse(
                request,
                status=401,
                outcome="unauthorized",
                error="missing or wrong bearer token",
                headers={hdrs.WWW_AUTHENTICATE: challenge},
            )
        limit = self._settings.api.max_body_bytes
        raw = await _read_body(request, limit=limit)
        if raw is None:
            too_large = f"the body is larger than {limit} bytes (api.max_body_bytes)"
            return self._refuse(request, status=413, outcome="too_large", error=too_large)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return self._refuse(request, status=400, outcome="invalid", error="body: not valid JSON", field="body")
        try:
            report = parse_report(body, at=self._clock(), settings=self._settings)
        except Invalid as exc:
            return self._refuse(request, status=400, outcome="invalid", error=str(exc), field=exc.field)
        if report.analysis is not None and not self._settings.analysis.enabled and not self._analysis_off_said:
            self._analysis_off_said = True  # once: every report asking would repeat it
            log.info("a report asks for rollout analysis, which is off (analysis.prometheus_url is empty): ignored")
        return self._record(request, report)

    def _record(self, request: web.Request, report: RolloutReported) -> web.Response:
        before = self._snapshot().deployments.get(report.key)
        step = self._step(report)
        events = [e for e in step.events if e.key == report.key]
        after = step.state.deployments.get(report.key)
        message = "; ".join(e.message for e in events)
        if after is None or any(isinstance(e, DeploymentRejected) for e in events):
            return self._refuse(request, status=507, outcome="rejected", error=f"not recorded: {message}")
        if any(isinstance(e, StaleObservation) for e in events):
            status, outcome = 202, "stale"
        elif any(isinstance(e, RolloutStarted) for e in events):
            status, outcome = 201, "started"
        elif before is None or after.rollout is not before.rollout:
            status, outcome = 200, "updated"
        else:
            status, outcome = 200, "unchanged"
        self._metrics.api_requests.labels(outcome).inc()
        name, environment = report.key
        log.info(
            "%s reported %s/%s %s %s: %s",
            request.remote, name, environment, report.version, report.status.text, outcome,
        )  # fmt: skip
        return web.json_response({"outcome": outcome, "message": message, **_describe(after)}, status=status)

    def _refuse(
        self,
        request: web.Request,
        *,
        status: int,
        outcome: str,
        error: str,
        headers: Mapping[str, str] | None = None,
        field: str | None = None,
    ) -> web.Response:
        self._metrics.api_requests.labels(outcome).inc()
        log.warning("refused a request from %s (%d): %s", request.remote, status, error)
        body: dict[str, object] = {"outcome": outcome, "error": error}
        if field is not None:
            body["field"] = field
        return web.json_response(body, status=status, headers=headers)


async def _read_body(request: web.Request, *, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _describe(deployment: Deployment) -> dict[str, object]:
    rollout = deployment.rollout
    return {
        "deployment": deployment.key.name,
        "environment": deployment.key.environment,
        "rollout": {
            "revision": rollout.revision,
            "version": rollout.version,
            "commit": rollout.commit,
            "status": rollout.status.text,
            "started_at": rollout.started_at,
            "finished_at": rollout.finished_at,
            "rollback": rollout.rollback,
            "reason": rollout.reason,
        },
        "rollbacks": deployment.rollbacks,
    }
