"""A web config applied to the aiohttp app: basic auth on the pages that need it, extra headers;
and the Host check against DNS rebinding, whatever the web config.

Which paths need a user: exporter-toolkit guards every path; here ``/health`` and ``/ready``
stay open for liveness and readiness probes (Docker's HEALTHCHECK, Kubernetes), and the CI/CD
API (``POST`` under ``/api/``) authenticates with its own bearer token in the same
Authorization header. Everything else (``/``, ``/metrics``, the read API's ``GET``s under
``/api/``, and paths that match no route) needs a user. TLS, when configured, covers every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import bcrypt
from aiohttp import BasicAuth, hdrs, web
from prometheus_client import Counter

from watcher.config.webconfig import WebConfig
from watcher.web.limits import OncePerKind

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready"})
OWN_AUTH_PREFIX = "/api/"
REALM = "deployment-watcher"
CACHE_SIZE = 100
# bcrypt checks under way at once for one client address: its guesses queue behind each other,
# never in front of another client's login.
CHECKS_PER_SOURCE = 1
# A bcrypt hash of a random password nobody knows, checked for unknown users so that a wrong
# username takes as long as a wrong password; its cost is set to the highest among the users.
_DECOY = b"$2b$10$ipuouoBKEfrdzMANJlxLueJ5XslszDr0M8D9sbbkK9iJFmlZisaoS"

Verdict = Literal["ok", "missing", "malformed", "invalid"]


def decoy(users: Mapping[str, bytes]) -> bytes:
    """The decoy hash at the highest cost among ``users`` (the cost is the number after the second ``$``)."""
    cost = max((int(hashed.split(b"$")[2]) for hashed in users.values()), default=10)
    return b"$2b$%02d$" % cost + _DECOY.split(b"$")[3]


@dataclass
class _Source:
    """The check slots of one client address, and how many requests hold or wait for one."""

    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CHECKS_PER_SOURCE))
    users: int = 0


class BasicAuthCheck:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt is slow on purpose (tens to hundreds of milliseconds per check), so checks run in
    threads of their own, off the event loop, and no client can make another wait for them:
    a client address has ``CHECKS_PER_SOURCE`` checks under way at most, so a flood of guesses
    queues behind itself (and takes one core) while a scraper's login is checked at once.
    Behind a reverse proxy every client has the proxy's address. Credentials that passed are
    remembered (by a SHA-256 of them) so a scrape every few seconds costs no bcrypt at all, as
    in exporter-toolkit; requests with the same new credentials share one check.
    """

    def __init__(self, *, users: Mapping[str, bytes], checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw) -> None:
        self._users = users
        self._checkpw = checkpw
        self._decoy = decoy(users)
        self._passed: OrderedDict[bytes, None] = OrderedDict()
        self._checking: dict[bytes, asyncio.Task[bool]] = {}
        self._sources: dict[str, _Source] = {}
        self._threads = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="bcrypt")

    async def verdict(self, header: str | None, *, source: str | None = None) -> Verdict:
        """The verdict on an Authorization header sent from the client address ``source``."""
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
            checking = self._checking.get(key)
            if checking is None:
                checking = asyncio.create_task(self._check(key, source or "", credentials))
                self._checking[key] = checking
            # Shielded: a client that hangs up does not cancel the check others wait for.
            if not await asyncio.shield(checking):
                return "invalid"
            self._passed[key] = None
            if len(self._passed) > CACHE_SIZE:
                self._passed.popitem(last=False)
        self._passed.move_to_end(key)
        return "ok"

    async def _check(self, key: bytes, source: str, credentials: BasicAuth) -> bool:
        try:
            async with self._slot(source):
                loop = asyncio.get_running_loop()
                login, password = credentials.login, credentials.password.encode()
                return await loop.run_in_executor(self._threads, self._verify, login, password)
        finally:
            del self._checking[key]

    @contextlib.asynccontextmanager
    async def _slot(self, source: str) -> AsyncIterator[None]:
        """One of the source's ``CHECKS_PER_SOURCE`` slots; sources nobody waits for are forgotten."""
        state = self._sources.setdefault(source, _Source())
        state.users += 1
        try:
            async with state.slots:
                yield
        finally:
            state.users -= 1
            if not state.users:
                del self._sources[source]

    def _verify(self, login: str, password: bytes) -> bool:
        stored: bytes | None = None
        for user, hashed in self._users.items():  # every name compared, in constant time
            if hmac.compare_digest(user.encode(), login.encode()):
                stored = hashed
        try:
            ok = self._checkpw(password, stored or self._decoy)
        except ValueError:  # bcrypt refuses passwords over 72 bytes
            ok = False
        return ok and stored is not None

    def close(self) -> None:
        """Let the threads go (checks under way finish; nobody waits for them)."""
        self._threads.shutdown(wait=False, cancel_futures=True)


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
            verdict = await check.verdict(request.headers.get(hdrs.AUTHORIZATION), source=request.remote)
            if verdict == "ok":
                return await handler(request)
            failures.labels(verdict).inc()
            # No credentials is how every browser starts; bad ones are worth a look.
            log.log(logging.DEBUG if verdict == "missing" else logging.WARNING,
                    "basic auth: %s credentials for %s %s from %s", verdict, request.method, request.path,
                    request.remote)  # fmt: skip
            raise web.HTTPUnauthorized(headers=challenge)

        app.middlewares.insert(0, basic_auth)

        async def close(app: web.Application) -> None:
            check.close()

        app.on_cleanup.append(close)
    if config.headers:
        headers = dict(config.headers)

        async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(headers)

        app.on_response_prepare.append(add_headers)


# Headers browsers send and scrapers (Prometheus, curl, Go's and Python's clients) do not. Fetch
# metadata (Sec-Fetch-*) goes to trustworthy origins only (https, localhost), never to a rebound
# http://attacker.example, and Origin not with a same-origin GET; but every browser adds
# Accept-Language to each request, which a page's script may set but not remove, and a User-Agent
# starting "Mozilla/", which Chromium does not let a script change.
BROWSER_HEADERS = ("Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User", hdrs.ORIGIN,
                   hdrs.ACCEPT_LANGUAGE, "Upgrade-Insecure-Requests", hdrs.REFERER)  # fmt: skip
BROWSER_AGENT = "Mozilla/"
LOCAL_NAMES = frozenset({"localhost"})
HostKind = Literal["ok", "name", "malformed"]


def allowed_hosts(setting: str) -> frozenset[str]:
    """``web.allowed_hosts`` (comma-separated) as the names a Host header is compared with (``guard_hosts``)."""
    return frozenset(name for name in (_name(part) for part in setting.split(",")) if name)


def _name(host: str) -> str:
    """A host name as compared: lower case, without the trailing dot of a fully qualified name."""
    return host.strip().lower().removesuffix(".")


def host_kind(host: str | None, allowed: frozenset[str]) -> HostKind:
    """Whether a Host header names this watcher: an IP literal (IPv6 in brackets), with or without a
    port, ``localhost``, or one of ``allowed``; ``name`` for another name, ``malformed`` when unreadable."""
    if not host:
        return "malformed"
    if host.startswith("["):
        address, bracket, after = host[1:].partition("]")
        if not bracket or not _is_ip(address, ipaddress.IPv6Address) or (after and not _is_port(after)):
            return "malformed"
        return "ok"
    name, colon, port = host.rpartition(":") if ":" in host else (host, "", "")
    if not name or ":" in name or (colon and not _is_port(colon + port)):
        return "malformed"
    if _is_ip(name, ipaddress.IPv4Address) or _name(name) in LOCAL_NAMES | allowed:
        return "ok"
    return "name"


def _is_ip(text: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _is_port(text: str) -> bool:
    """``:`` and up to five ASCII digits."""
    digits = text.removeprefix(":")
    return text.startswith(":") and 0 < len(digits) <= 5 and digits.isascii() and digits.isdigit()


def from_browser(headers: Mapping[str, str]) -> bool:
    """Whether a request carries a browser's headers (``BROWSER_HEADERS``, a browser's User-Agent)."""
    agent = headers.get(hdrs.USER_AGENT, "")
    return agent.startswith(BROWSER_AGENT) or any(header in headers for header in BROWSER_HEADERS)


def guard_hosts(app: web.Application, *, allowed: frozenset[str], refusals: Counter) -> None:
    """Refuse with 403 a browser's request whose Host is not an address of this watcher (outermost).

    DNS rebinding: a page on attacker.example re-resolves its own name to 127.0.0.1 (or any address
    the browser can reach), and the browser lets it read the answers, same-origin, carrying
    ``Host: attacker.example``. Requests without a browser's headers pass, whatever their Host:
    Prometheus scrapes by any service name (a Compose service, a Kubernetes Service, a DNS SD
    record), and only a browser is at risk of being turned against its network.
    """
    lines = OncePerKind(log, logging.WARNING)

    @web.middleware
    async def host_check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not from_browser(request.headers):
            return await handler(request)
        host = request.headers.get(hdrs.HOST)
        kind = host_kind(host, allowed)
        if kind == "ok":
            return await handler(request)
        refusals.labels(kind).inc()
        lines.log(kind, "refused a browser's request for %s with Host %r (DNS rebinding?): add the name to "
                  "web.allowed_hosts if it is this watcher's", request.path, host)  # fmt: skip
        raise web.HTTPForbidden(
            text=f"403 Forbidden: {host!r} is not a name of this watcher. A browser page reached it under a "
            "foreign name, which is how DNS rebinding attacks look. Use its IP address or localhost, or add "
            "the name to the setting web.allowed_hosts.\n"
        )

    app.middlewares.insert(0, host_check)
