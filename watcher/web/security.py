"""A web config applied to the aiohttp app: basic auth on the pages that need it, extra headers.

Which paths need a user: exporter-toolkit guards every path; here ``/health`` and ``/ready``
stay open for liveness and readiness probes (Docker's HEALTHCHECK, Kubernetes), and the CI/CD
API (``POST`` under ``/api/``) authenticates with its own bearer token in the same
Authorization header. Everything else (``/``, ``/metrics``, the read API's ``GET``s under
``/api/``, and paths that match no route) needs a user. TLS, when configured, covers every path.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import bcrypt
from aiohttp import BasicAuth, hdrs, web
from prometheus_client import Counter

from watcher.config.webconfig import WebConfig

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready"})
OWN_AUTH_PREFIX = "/api/"
REALM = "deployment-watcher"
CACHE_SIZE = 100
# A bcrypt hash (cost 10, like the hashes htpasswd makes) of a random password nobody knows:
# checked for unknown users so that a wrong username takes as long as a wrong password.
_DECOY = b"$2b$10$ipuouoBKEfrdzMANJlxLueJ5XslszDr0M8D9sbbkK9iJFmlZisaoS"

Verdict = Literal["ok", "missing", "malformed", "invalid"]


class BasicAuthCheck:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds per check): checks run in a thread, one at
    a time, so a flood of guesses takes one core and never stalls the event loop; credentials
    that passed are remembered (by a SHA-256 of them) so a scrape every few seconds costs no
    bcrypt at all, as in exporter-toolkit.
    """

    def __init__(self, *, users: Mapping[str, bytes], checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw) -> None:
        self._users = users
        self._checkpw = checkpw
        self._passed: OrderedDict[bytes, None] = OrderedDict()
        self._one_at_a_time = asyncio.Lock()

    async def verdict(self, header: str | None) -> Verdict:
        scheme, _, _ = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return "missing"
        try:
            credentials = BasicAuth.decode(header or "", encoding="utf-8")
        except ValueError:
            return "malformed"
        # The login has no ':' (decode splits at the first one), so this key is unambiguous.
        key = hashlib.sha256(f"{credentials.login}:{credentials.password}".encode()).digest()
        if key not in self._passed:
            async with self._one_at_a_time:
                if key not in self._passed:  # another request may have checked it meanwhile
                    if not await asyncio.to_thread(self._check, credentials.login, credentials.password.encode()):
                        return "invalid"
                    self._passed[key] = None
                    if len(self._passed) > CACHE_SIZE:
                        self._passed.popitem(last=False)
        self._passed.move_to_end(key)
        return "ok"

    def _check(self, login: str, password: bytes) -> bool:
        stored: bytes | None = None
        for user, hashed in self._users.items():  # every name compared, in constant time
            if hmac.compare_digest(user.encode(), login.encode()):
                stored = hashed
        try:
            ok = self._checkpw(password, stored or _DECOY)
        except ValueError:  # bcrypt refuses passwords over 72 bytes
            ok = False
        return ok and stored is not None


def needs_user(request: web.Request) -> bool:
    """Whether basic auth guards this request; decided by the route matched, not the raw path."""
    route = request.match_info.route
    resource = route.resource
    canonical = resource.canonical if resource is not None else ""
    own_auth = route.method == hdrs.METH_POST and canonical.startswith(OWN_AUTH_PREFIX)
    return canonical not in OPEN_PATHS and not own_auth


def install(app: web.Application, *, config: WebConfig, failures: Counter) -> None:
    """Add basic auth (outermost, so nothing else runs for a stranger) and the configured headers to ``app``."""
    if config.users:
        check = BasicAuthCheck(users=config.users)
        challenge = {hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}", charset="UTF-8"'}

        @web.middleware
        async def basic_auth(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if not needs_user(request):
                return await handler(request)
            verdict = await check.verdict(request.headers.get(hdrs.AUTHORIZATION))
            if verdict == "ok":
                return await handler(request)
            failures.labels(verdict).inc()
            # No credentials is how every browser starts; bad ones are worth a look.
            log.log(logging.DEBUG if verdict == "missing" else logging.WARNING,
                    "basic auth: %s credentials for %s %s from %s", verdict, request.method, request.path,
                    request.remote)  # fmt: skip
            raise web.HTTPUnauthorized(headers=challenge)

        app.middlewares.insert(0, basic_auth)
    if config.headers:
        headers = dict(config.headers)

        async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(headers)

        app.on_response_prepare.append(add_headers)
