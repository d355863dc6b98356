"""Basic auth and extra headers on the HTTP app: which paths are guarded, the answers, the cache."""

from __future__ import annotations

import asyncio
import base64
import logging
import statistics
import threading
import time

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from tests.polling import poll_async
from watcher.config import Settings
from watcher.config.webconfig import FAILURES, WebConfig
from watcher.domain.model import State
from watcher.exposition.rendering import Exposition
from watcher.selfmetrics import SelfMetrics
from watcher.web.app import make_app
from watcher.web.security import CACHE_SIZE, BasicAuthCheck, allowed_hosts, decoy, guard_hosts, host_kind, install

USERS = {"alice": bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)), "bob": bcrypt.hashpw(b"builder", bcrypt.gensalt(4))}
HEADERS = {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=60"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class CountingCheck:
    """bcrypt.checkpw, counting its calls and the hashes it was given."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.hashes.append(hashed)
        return bcrypt.checkpw(password, hashed)


def guarded_app(*, ready: bool = True, users: dict[str, bytes] = USERS) -> tuple[web.Application, Counter]:
    """The watcher's app with basic auth and headers, plus an /api/v1 route with its own (fake) bearer auth."""
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    exposition = Exposition(snapshot=State, registry=registry, settings=Settings(), metrics=metrics)
    app = make_app(exposition=exposition, ready=lambda: ready)

    async def api(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer token":
            raise web.HTTPUnauthorized(text="bearer token needed")
        return web.json_response({"recorded": True}, status=201)

    api_app = web.Application()
    api_app.router.add_post("/deployments", api)
    app.add_subapp("/api/v1", api_app)
    install(app, config=WebConfig(users=users, headers=HEADERS), failures=metrics.basic_auth_failures)
    return app, metrics.basic_auth_failures


def failures(counter: Counter) -> dict[str, float]:
    return {s.labels["reason"]: s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")}


@pytest.mark.parametrize("path", ["/", "/metrics", "/no-such-page", "/api/../metrics", "/health/../metrics"])
async def test_guarded_paths_need_a_user(aiohttp_client: AiohttpClient, path: str) -> None:
    """/, /metrics and unknown paths answer 401 with a Basic challenge to a stranger."""
    client = await aiohttp_client(guarded_app()[0])
    response = await client.get(path)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="deployment-watcher", charset="UTF-8"'


@pytest.mark.parametrize(("path", "status"), [("/health", 200), ("/ready", 200)])
async def test_probes_are_open(aiohttp_client: AiohttpClient, path: str, status: int) -> None:
    """/health and /ready answer without credentials (liveness and readiness probes)."""
    client = await aiohttp_client(guarded_app()[0])
    assert (await client.get(path)).status == status


async def test_ready_stays_open_when_not_ready(aiohttp_client: AiohttpClient) -> None:
    """/ready says 503, not 401, while Docker is away."""
    client = await aiohttp_client(guarded_app(ready=False)[0])
    assert (await client.get("/ready")).status == 503


async def test_api_keeps_its_own_auth(aiohttp_client: AiohttpClient) -> None:
    """The API under /api/ sees its bearer token: basic auth neither blocks nor replaces it."""
    app, counter = guarded_app()
    client = await aiohttp_client(app)
    assert (await client.post("/api/v1/deployments", headers={"Authorization": "Bearer token"})).status == 201
    refused = await client.post("/api/v1/deployments", headers=basic("alice", "wonderland"))
    assert refused.status == 401 and await refused.text() == "bearer token needed"
    assert failures(counter) == {"missing": 0, "malformed": 0, "invalid": 0}


async def test_right_credentials_get_the_exposition(aiohttp_client: AiohttpClient) -> None:
    """Each user with their password gets /metrics, a parseable exposition."""
    client = await aiohttp_client(guarded_app()[0])
    for user, password in (("alice", "wonderland"), ("bob", "builder")):
        response = await client.get("/metrics", headers=basic(user, password))
        assert response.status == 200
        names = {family.name for family in text_string_to_metric_families(await response.text())}
        assert "deployment_watcher_basic_auth_failures" in names
    assert (await client.get("/no-such-page", headers=basic("alice", "wonderland"))).status == 404


BAD = [
    ("no header", {}, "missing"),
    ("bearer", {"Authorization": "Bearer token"}, "missing"),
    ("empty basic", {"Authorization": "Basic"}, "malformed"),
    ("not base64", {"Authorization": "Basic !!!"}, "malformed"),
    ("no colon", {"Authorization": "Basic " + base64.b64encode(b"alice").decode()}, "malformed"),
    ("not utf-8", {"Authorization": "Basic " + base64.b64encode(b"alice:\xff").decode()}, "malformed"),
    ("wrong password", basic("alice", "builder"), "invalid"),
    ("other user's password", basic("bob", "wonderland"), "invalid"),
    ("unknown user", basic("mallory", "wonderland"), "invalid"),
    ("empty", basic("", ""), "invalid"),
    ("case of user", basic("Alice", "wonderland"), "invalid"),
    ("over 72 bytes", basic("alice", "wonderland" + "x" * 80), "invalid"),
]


@pytest.mark.parametrize(("headers", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_credentials(aiohttp_client: AiohttpClient, headers: dict[str, str], reason: str) -> None:
    """Each kind of bad credentials is a 401 on /metrics, counted by its reason."""
    app, counter = guarded_app()
    client = await aiohttp_client(app)
    response = await client.get("/metrics", headers=headers)
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers
    assert failures(counter) == {r: (1 if r == reason else 0) for r in FAILURES}


@pytest.mark.parametrize("path", ["/metrics", "/health", "/no-such-page"])
async def test_headers_on_every_answer(aiohttp_client: AiohttpClient, path: str) -> None:
    """The configured headers are on 200, 401 and 404 answers alike."""
    client = await aiohttp_client(guarded_app()[0])
    response = await client.get(path)
    assert {name: response.headers.get(name) for name in HEADERS} == HEADERS


async def test_no_users_no_auth(aiohttp_client: AiohttpClient) -> None:
    """Without basic_auth_users, /metrics is open as before; headers alone still apply."""
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    exposition = Exposition(snapshot=State, registry=registry, settings=Settings(), metrics=metrics)
    app = make_app(exposition=exposition, ready=lambda: True)
    install(app, config=WebConfig(headers={"X-Content-Type-Options": "nosniff"}), failures=metrics.basic_auth_failures)
    response = await (await aiohttp_client(app)).get("/metrics")
    assert response.status == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_successes_are_cached_failures_are_not() -> None:
    """A user who passed once costs no more bcrypt; every wrong password does."""
    counting = CountingCheck()
    check = BasicAuthCheck(users=USERS, checkpw=counting)
    for _ in range(3):
        assert await check.verdict(basic("alice", "wonderland")["Authorization"]) == "ok"
    assert len(counting.hashes) == 1
    for _ in range(2):
        assert await check.verdict(basic("alice", "nope")["Authorization"]) == "invalid"
    assert len(counting.hashes) == 3


async def test_concurrent_first_requests_check_once() -> None:
    """Scrapes arriving together with the same new credentials wait for one bcrypt check."""
    counting = CountingCheck()
    check = BasicAuthCheck(users=USERS, checkpw=counting)
    verdicts = await asyncio.gather(*(check.verdict(basic("bob", "builder")["Authorization"]) for _ in range(5)))
    assert verdicts == ["ok"] * 5
    assert counting.hashes == [USERS["bob"]]


async def test_unknown_user_costs_a_bcrypt_check() -> None:
    """An unknown username is checked against a decoy hash, so it takes as long as a wrong password."""
    counting = CountingCheck()
    check = BasicAuthCheck(users=USERS, checkpw=counting)
    assert await check.verdict(basic("mallory", "wonderland")["Authorization"]) == "invalid"
    assert len(counting.hashes) == 1 and counting.hashes[0] not in USERS.values()
    assert bcrypt.checkpw(b"", counting.hashes[0]) is False  # a real hash, of something nobody knows


async def test_cache_is_bounded() -> None:
    """The cache of successes keeps CACHE_SIZE entries, dropping the least recently used."""
    calls: list[bytes] = []

    def accept_all(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return True

    check = BasicAuthCheck(users={"u": USERS["alice"]}, checkpw=accept_all)
    for n in range(CACHE_SIZE + 1):
        assert await check.verdict(basic("u", f"p{n}")["Authorization"]) == "ok"
    assert len(calls) == CACHE_SIZE + 1
    await check.verdict(basic("u", f"p{CACHE_SIZE}")["Authorization"])  # still cached
    assert len(calls) == CACHE_SIZE + 1
    await check.verdict(basic("u", "p0")["Authorization"])  # dropped: checked again
    assert calls[-1] == b"p0" and len(calls) == CACHE_SIZE + 2


async def test_a_flood_of_wrong_passwords_does_not_delay_a_login(aiohttp_client: AiohttpClient) -> None:
    """While one client sends 24 wrong passwords at once (cost-10 bcrypt, ~0.1 s each), another's right
    password is answered within a second: the flood queues behind itself, not in front of others."""
    app, counter = guarded_app(users={"prometheus": bcrypt.hashpw(b"scrape", bcrypt.gensalt(10))})
    client = await aiohttp_client(app)
    flooding = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)  # another client address
    async with aiohttp.ClientSession(connector=flooding) as attacker:

        async def guess(n: int) -> int:
            async with attacker.get(client.make_url("/metrics"), headers=basic("prometheus", f"guess-{n}")) as r:
                return r.status

        flood = asyncio.gather(*(guess(n) for n in range(24)))

        async def refused() -> float:
            return failures(counter).get("invalid", 0)

        await poll_async("the flood in front", refused, timeout=10, interval=0.01)  # the others wait for bcrypt
        started = time.perf_counter()
        response = await client.get("/metrics", headers=basic("prometheus", "scrape"))
        took = time.perf_counter() - started
        assert response.status == 200
        assert took < 1.0, f"the login took {took:.2f} s behind the flood"
        assert await flood == [401] * 24
    assert failures(counter)["invalid"] == 24


async def test_unknown_users_take_as_long_as_known_ones(aiohttp_client: AiohttpClient) -> None:
    """A wrong password takes about as long for an unknown user as for a real one with a cost-8 hash:
    response times do not tell user names apart (medians of three, interleaved). Cost 8, not the default
    decoy's 10: a decoy that ignored the users' cost would take 4 times as long, and fail the ratio."""
    client = await aiohttp_client(guarded_app(users={"alice": bcrypt.hashpw(b"wonderland", bcrypt.gensalt(8))})[0])

    async def took(user: str) -> float:
        started = time.perf_counter()
        response = await client.get("/metrics", headers=basic(user, "wrong"))
        assert response.status == 401
        return time.perf_counter() - started

    known, unknown = [], []
    for _ in range(3):
        known.append(await took("alice"))
        unknown.append(await took("mallory"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 <= ratio <= 2, f"unknown {unknown} vs known {known}"


def test_the_decoy_has_the_highest_cost_of_the_users() -> None:
    """The decoy hash has the cost of the slowest user hash, and matches no password."""
    users = {"a": bcrypt.hashpw(b"x", bcrypt.gensalt(4)), "b": bcrypt.hashpw(b"y", bcrypt.gensalt(6))}
    hashed = decoy(users)
    assert hashed.startswith(b"$2b$06$") and len(hashed) == 60
    assert bcrypt.checkpw(b"", hashed) is False and bcrypt.checkpw(b"x", hashed) is False
    assert decoy({}).startswith(b"$2b$10$")


async def test_checks_are_bounded_per_client_address() -> None:
    """One check at a time per client address, while other addresses are checked meanwhile; an
    address is forgotten once none of its checks is pending."""
    running = {"a": 0, "b": 0}
    seen: list[dict[str, int]] = []
    lock = threading.Lock()

    def slow(password: bytes, hashed: bytes) -> bool:
        source = password.decode()[0]
        with lock:
            running[source] += 1
            seen.append(dict(running))
        time.sleep(0.05)
        with lock:
            running[source] -= 1
        return False

    check = BasicAuthCheck(users=USERS, checkpw=slow)
    verdicts = await asyncio.gather(
        *(check.verdict(basic("alice", f"a-{n}")["Authorization"], source="10.0.0.1") for n in range(6)),
        *(check.verdict(basic("alice", f"b-{n}")["Authorization"], source="10.0.0.2") for n in range(2)),
    )
    check.close()
    assert verdicts == ["invalid"] * 8
    assert max(at["a"] for at in seen) == 1 and max(at["b"] for at in seen) == 1
    assert any(at["a"] and at["b"] for at in seen)  # both addresses at once
    assert check._sources == {}


HOSTS = [
    ("127.0.0.1", "ok"), ("127.0.0.1:9102", "ok"), ("10.1.2.3:80", "ok"), ("[::1]", "ok"), ("[::1]:9102", "ok"),
    ("[2001:db8::7]:9102", "ok"), ("localhost", "ok"), ("LOCALHOST:9102", "ok"), ("localhost.:9102", "ok"),
    ("watcher.example.com:9102", "ok"), ("Watcher.Example.COM.", "ok"),
    ("attacker.example", "name"), ("attacker.example:9102", "name"), ("127.0.0.1.attacker.example", "name"),
    ("localhost.attacker.example", "name"), ("127.1", "name"), ("watcher.example.com.evil", "name"),
    ("", "malformed"), ("::1", "malformed"), ("[::1", "malformed"), ("[attacker.example]", "malformed"),
    ("127.0.0.1:", "malformed"), ("127.0.0.1:http", "malformed"), (":9102", "malformed"), ("[::1]x", "malformed"),
    ("localhost:99999999", "malformed"), ("localhost:\u00b2", "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("host", "kind"), HOSTS)
def test_host_kinds(host: str, kind: str) -> None:
    """IP literals (IPv6 in brackets) and localhost, with or without a port, and the allowed names are
    this watcher; other names are not; what no browser would send is malformed."""
    assert host_kind(host, allowed_hosts(" watcher.example.com , other.example.")) == kind


def host_guarded(allowed: str = "") -> tuple[web.Application, Counter]:
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    exposition = Exposition(snapshot=State, registry=registry, settings=Settings(), metrics=metrics)
    app = make_app(exposition=exposition, ready=lambda: True)
    guard_hosts(app, allowed=allowed_hosts(allowed), refusals=metrics.host_refusals)
    return app, metrics.host_refusals


# What Chromium sends from a page on http://attacker.example (no fetch metadata over plain http), and
# what it sends to trustworthy origins; each marker alone is a browser.
BROWSERS = [
    {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0", "Accept-Language": "en-US"},
    {"Accept-Language": ""}, {"User-Agent": "Mozilla/5.0"}, {"Sec-Fetch-Mode": "cors"},
    {"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://attacker.example"}, {"Referer": "http://attacker.example/"},
    {"Upgrade-Insecure-Requests": "1"},
]  # fmt: skip
# How Prometheus scrapes (2.x and 3.x), and other clients that are no browsers.
SCRAPERS = [
    {"User-Agent": "Prometheus/2.53.0", "Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding":
     "gzip", "X-Prometheus-Scrape-Timeout-Seconds": "10"},
    {"User-Agent": "curl/8.5.0", "Accept": "*/*"}, {"User-Agent": "Python-urllib/3.11"}, {"User-Agent": "Go-http-client/1.1"},
]  # fmt: skip


@pytest.mark.parametrize("browser", BROWSERS)
async def test_a_browser_page_under_a_foreign_name_is_refused(
    aiohttp_client: AiohttpClient, browser: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A browser's request (fetch metadata or Origin) with ``Host: attacker.example``: 403 with a body that
    says why, on every path; logged once for many, counted."""
    app, refusals = host_guarded()
    client = await aiohttp_client(app)
    for path in ("/metrics", "/health", "/", "/no-such-page", "/metrics"):
        response = await client.get(path, headers={"Host": "attacker.example", **browser})
        assert response.status == 403, path
        assert "web.allowed_hosts" in await response.text() and "DNS rebinding" in await response.text()
    assert {s.labels["kind"]: s.value for m in refusals.collect() for s in m.samples if s.name.endswith("_total")} == {
        "name": 5, "malformed": 0,
    }  # fmt: skip
    assert len([r for r in caplog.records if r.levelno == logging.WARNING and "DNS rebinding" in r.message]) == 1


async def test_requests_without_browser_headers_pass_whatever_their_host(aiohttp_client: AiohttpClient) -> None:
    """Prometheus scraping by a service name, curl, the CLI: no browser headers, never refused; a browser
    using an IP address, localhost or an allowed name is served too."""
    client = await aiohttp_client(host_guarded("watcher.example.com")[0])
    for host in ("attacker.example", "deployment-watcher:9102", "watcher.monitoring.svc.cluster.local"):
        for scraper in SCRAPERS:
            assert (await client.get("/metrics", headers={"Host": host, **scraper})).status == 200, (host, scraper)
    cors = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}
    for host in ("127.0.0.1:9102", "[::1]:9102", "localhost:9102", "watcher.example.com"):
        assert (await client.get("/metrics", headers={"Host": host, **cors})).status == 200, host
