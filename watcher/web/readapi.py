"""The read API: ``GET /api/v1/deployments[?environment=]``, ``GET /api/v1/deployments/{environment}/{name}``,
the rollouts of all of them ``GET /api/v1/rollouts[?since=&limit=]`` (``watcher.web.rollouts``), the event stream ``GET /api/v1/events`` and its description ``GET /api/v1/openapi.json``.

Behind the same web config as ``/metrics`` (TLS, basic auth). ``POST /api/v1/deployments``
on the same path is the CI/CD API, a source (``watcher.sources.api.reports``): the router
picks the route by method. An answer depends on the state alone: the list is encoded once
per state (and environment), each deployment's row only when it changed, and served from
memory until the state changes.

Each answer of the list and of one deployment (a 404 too) carries what a client needs to tell
"not there" from "not known yet" and to follow on from it (``rollout status`` does): the newest
event id of the snapshot it was made from (``<run>.<sequence>``, as on the stream: resume the
stream from it, and see a restart of the watcher in ``run``), whether the watcher is synced with
the Docker Engine (until it is, a deployment missing may only not be seen yet), and the length
its label values are cut to. A name or environment asked for is cleaned and cut as the labels'
values are, so a deployment is found by the name its labels give.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import time
from collections.abc import Callable

from aiohttp import web

from watcher.domain import text
from watcher.domain.model import Deployment, DeploymentKey, State, iter_sorted
from watcher.domain.settings import RuleSettings
from watcher.web import rollouts, views
from watcher.web import stream as event_stream
from watcher.wire import EVENT_ID_HEADER, MAX_LENGTH_HEADER, READY_HEADER, REPORTS_PATH

DEPLOYMENTS_PATH = REPORTS_PATH  # GET here; POST is the CI/CD API
OPENAPI_PATH = "/api/v1/openapi.json"
JSON_TYPE = "application/json"


class ReadApi:
    """The read API's routes over ``snapshot()``; the event stream's route is ``stream.handle``."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], State],
        settings: RuleSettings,
        stream: event_stream.EventStream,
        ready: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock  # for the rollouts' default ``since``
        self._snapshot = snapshot
        self._settings = settings
        self._stream = stream
        self._ready = ready
        self._openapi = (importlib.resources.files("watcher.web") / "openapi.json").read_bytes()
        self._cached: tuple[State, str | None, bytes] | None = None
        self._rows: dict[DeploymentKey, tuple[Deployment, bytes]] = {}  # each deployment's row, as last encoded

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(DEPLOYMENTS_PATH, self.deployments, allow_head=False),
            # Any segment: aiohttp's default pattern ([^{}/]+) refuses braces, which label values may hold.
            web.get(DEPLOYMENTS_PATH + "/{environment:[^/]+}/{name:[^/]+}", self.deployment, allow_head=False),
            web.get(rollouts.PATH, self.rollouts, allow_head=False),
            web.get(event_stream.PATH, self._stream.handle, allow_head=False),
            web.get(OPENAPI_PATH, self.openapi, allow_head=False),
        ]

    async def deployments(self, request: web.Request) -> web.Response:
        environment = request.query.get("environment")
        environment = None if environment is None else self._label(environment)
        state, headers = self._snapshot(), self._headers()  # together: the event id is the state's
        body = self.cached(state, environment)
        if body is None:
            # Tens of milliseconds at 1,000 deployments: in a worker thread (the state is immutable), not on the loop.
            body = await asyncio.to_thread(self.list_body, state, environment)
        return web.Response(body=body, content_type=JSON_TYPE, headers=headers)

    def cached(self, state: State, environment: str | None) -> bytes | None:
        """The list's JSON when ``state`` is the one it was last encoded from."""
        cached = self._cached
        if cached is not None and cached[0] is state and cached[1] == environment:
            return cached[2]
        return None

    def list_body(self, state: State, environment: str | None) -> bytes:
        """The list as JSON, from memory while the state is the one it was encoded from. After a
        change, only the deployments that changed are encoded again: one that did not is the very
        same object in the new state (copy-on-write), and its row depends on nothing else."""
        body = self.cached(state, environment)
        if body is not None:
            return body
        rows, encoded = self._rows, {}
        for deployment in iter_sorted(state):
            if environment is not None and deployment.key.environment != environment:
                continue
            if deployment.usage_only:
                continue  # a Swarm service judged by another node's watcher, as on /metrics
            known = rows.get(deployment.key)
            row = (
                known[1]
                if known is not None and known[0] is deployment
                else _encode(views.summary(deployment, settings=self._settings))
            )
            encoded[deployment.key] = (deployment, row)
        body = b'{"deployments":[' + b",".join(row for _, row in encoded.values()) + b"]}"
        # Replaced whole, never changed in place: a request on the loop may read it meanwhile.
        self._rows = (
            encoded
            if environment is None
            else {key: known for key, known in {**rows, **encoded}.items() if key in state.deployments}
        )
        self._cached = (state, environment, body)
        return body

    async def deployment(self, request: web.Request) -> web.Response:
        key = DeploymentKey(self._label(request.match_info["name"]), self._label(request.match_info["environment"]))
        found, headers = self._snapshot().deployments.get(key), self._headers()
        if found is None:
            error = f"no deployment {key.name!r} in environment {key.environment!r}"
            if headers[READY_HEADER] == "false":
                error += " (not synced with the Docker Engine yet: it may not be known yet)"
            return web.Response(body=_encode({"error": error}), status=404, content_type=JSON_TYPE, headers=headers)
        body = _encode(views.detail(found, settings=self._settings))
        return web.Response(body=body, content_type=JSON_TYPE, headers=headers)

    async def rollouts(self, request: web.Request) -> web.Response:
        """The rollouts of every deployment, newest first: ``since`` (unix seconds) and ``limit`` bound them."""
        state, headers = self._snapshot(), self._headers()
        try:
            since, limit = rollouts.parse(request.query, now=self._clock())
        except rollouts.BadQuery as exc:
            return web.Response(body=_encode({"error": str(exc)}), status=400, content_type=JSON_TYPE, headers=headers)
        # Up to 5,000 items made JSON: in a worker thread (the state is immutable), not on the loop.
        body = await asyncio.to_thread(rollouts.body, state, since=since, limit=limit)
        return web.Response(body=body, content_type=JSON_TYPE, headers=headers)

    def _headers(self) -> dict[str, str]:
        return {
            EVENT_ID_HEADER: self._stream.last_id,
            READY_HEADER: "true" if self._ready() else "false",
            MAX_LENGTH_HEADER: str(self._settings.labels.max_value_length),
        }

    def _label(self, raw: str) -> str:
        """``raw`` as the watcher makes a label value of it (watcher.domain.labels)."""
        return text.clean(raw, limit=self._settings.labels.max_value_length).value

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type=JSON_TYPE)


def _encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
