"""TLS and basic auth from a web config file, with real clients on real ports: Python's ssl and
urllib against a real `python -m watcher`, aiohttp against the app with every client_auth_type,
`promtool check web-config` on the same files, and a real Prometheus scraping over TLS."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpServer

from tests.conftest import WatcherProcess, free_port, require_binary, run_prometheus, start_watcher
from tests.pki import Pki, make_pki
from tests.polling import poll
from watcher.clients import healthcheck
from watcher.config import Settings, WebSettings, webconfig
from watcher.domain.model import State
from watcher.exposition.rendering import Exposition
from watcher.selfmetrics import SelfMetrics
from watcher.web.app import make_app

PASSWORD = "scrape-me"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()  # the cost htpasswd -B uses


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def client_context(*, trust: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A verifying client context: trusts ``trust`` only, presents ``cert`` when given."""
    context = ssl.create_default_context(cafile=str(trust))
    if cert:
        context.load_cert_chain(*cert)
    return context


def fetch(url: str, *, context: ssl.SSLContext | None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Status and headers of a GET (HTTP errors included); connection and TLS failures raise."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def web_config(pki: Pki, name: str, body: dict[str, Any]) -> Path:
    """A web config file next to the PKI's files, which it names relatively."""
    path = pki.ca.parent / name
    path.write_text(yaml.safe_dump(body))
    return path


def tls_body(pki: Pki, **tls: str) -> dict[str, Any]:
    return {
        "tls_server_config": {"cert_file": pki.server_cert.name, "key_file": pki.server_key.name, **tls},
        "basic_auth_users": {"prometheus": HASH},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
    }


@pytest.fixture(scope="module")
def tls_watcher(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatcherProcess]:
    """A watcher with TLS and basic auth, no client certificates."""
    path = web_config(pki, "tls.yml", tls_body(pki))
    watcher = start_watcher(tmp_path_factory.mktemp("tls"), f"--web.config-file={path}", "--stats.enabled=false",
                            ssl_context=client_context(trust=pki.ca), headers=basic("prometheus", PASSWORD))  # fmt: skip
    try:
        yield watcher
    finally:
        watcher.stop()


@pytest.fixture(scope="module")
def mtls_watcher(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatcherProcess]:
    """A watcher with TLS, required client certificates from the test CA, and basic auth."""
    body = tls_body(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca.name)
    path = web_config(pki, "mtls.yml", body)
    context = client_context(trust=pki.ca, cert=(pki.client_cert, pki.client_key))
    watcher = start_watcher(tmp_path_factory.mktemp("mtls"), f"--web.config-file={path}", "--stats.enabled=false",
                            ssl_context=context, headers=basic("prometheus", PASSWORD))  # fmt: skip
    try:
        yield watcher
    finally:
        watcher.stop()


# --- a real watcher, real clients -----------------------------------------------------


def test_https_with_basic_auth_serves_the_exposition(tls_watcher: WatcherProcess) -> None:
    """Over https verified against the CA, the right user gets a parseable /metrics with the configured header."""
    status, headers = fetch(tls_watcher.url + "/metrics", context=tls_watcher.ssl_context,
                            headers=basic("prometheus", PASSWORD))  # fmt: skip
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    assert tls_watcher.value("deployment_watcher_build_info") == 1
    assert "serving metrics on https://127.0.0.1:" in tls_watcher.log.read_text()


def test_client_checks_the_server_certificate(tls_watcher: WatcherProcess, pki: Pki) -> None:
    """A client that trusts another CA refuses the watcher's certificate."""
    with pytest.raises(urllib.error.URLError) as caught:
        fetch(tls_watcher.url + "/health", context=client_context(trust=pki.rogue_ca))
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_to_the_tls_port_gets_no_answer(tls_watcher: WatcherProcess) -> None:
    """Plain HTTP to the TLS port gets no HTTP answer at all, and the watcher serves on."""
    with pytest.raises((http.client.HTTPException, OSError)):
        fetch(f"http://127.0.0.1:{tls_watcher.port}/health", context=None)
    assert tls_watcher.get("/health")[0] == 200


def test_basic_auth_refuses_strangers(tls_watcher: WatcherProcess) -> None:
    """No or wrong credentials get 401 with a Basic challenge on / and /metrics; the probes stay open."""

    def refused(reason: str) -> float:
        return tls_watcher.value("deployment_watcher_basic_auth_failures_total", reason=reason) or 0

    tls_watcher.fresh()
    before = {"invalid": refused("invalid"), "missing": refused("missing")}
    for path in ("/", "/metrics"):
        for headers in ({}, basic("prometheus", "wrong"), basic("nobody", PASSWORD)):
            status, answer = fetch(tls_watcher.url + path, context=tls_watcher.ssl_context, headers=headers)
            assert status == 401 and answer["WWW-Authenticate"].startswith("Basic realm="), (path, headers)
    assert fetch(tls_watcher.url + "/health", context=tls_watcher.ssl_context)[0] == 200
    assert fetch(tls_watcher.url + "/ready", context=tls_watcher.ssl_context)[0] in (200, 503)
    tls_watcher.fresh()
    assert refused("invalid") - before["invalid"] == 4 and refused("missing") - before["missing"] == 2


def test_required_client_certificate(mtls_watcher: WatcherProcess, pki: Pki) -> None:
    """RequireAndVerifyClientCert: no certificate or one from another CA is refused; the right one still needs a user."""
    url = mtls_watcher.url + "/health"
    for cert in (None, (pki.rogue_client_cert, pki.rogue_client_key)):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            fetch(url, context=client_context(trust=pki.ca, cert=cert))
    status, _ = fetch(mtls_watcher.url + "/metrics", context=mtls_watcher.ssl_context)
    assert status == 401
    assert mtls_watcher.value("deployment_watcher_build_info") == 1


# --- the container's HEALTHCHECK ------------------------------------------------------


def run_healthcheck(port: int, config_file: Path | None) -> subprocess.CompletedProcess[str]:
    """`python -m watcher.healthcheck` configured by environment, as in the image."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("WATCHER_")}
    env["WATCHER_WEB_LISTEN_ADDRESS"] = f":{port}"
    if config_file:
        env["WATCHER_WEB_CONFIG_FILE"] = str(config_file)
    return subprocess.run([sys.executable, "-m", "watcher.clients.healthcheck"], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip


def test_healthcheck_speaks_https(tls_watcher: WatcherProcess, pki: Pki) -> None:
    """The HEALTHCHECK reads the web config and speaks https; without it, plain http to the TLS port fails."""
    assert run_healthcheck(tls_watcher.port, pki.ca.parent / "tls.yml").returncode == 0
    plain = run_healthcheck(tls_watcher.port, None)
    assert plain.returncode == 1 and "http://127.0.0.1" in plain.stderr


def test_healthcheck_with_required_client_certificates(mtls_watcher: WatcherProcess, pki: Pki) -> None:
    """With client certificates required, the watcher's TLS refusal of the certless probe counts as alive."""
    result = run_healthcheck(mtls_watcher.port, pki.ca.parent / "mtls.yml")
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_when_nothing_listens(pki: Pki) -> None:
    """No watcher on the port: unhealthy, with the reason on stderr."""
    result = run_healthcheck(free_port(), pki.ca.parent / "mtls.yml")
    assert result.returncode == 1 and "refused" in result.stderr.lower()


@pytest.mark.parametrize("version", ["TLS12", "TLS13"])
async def test_probe_takes_a_refusal_for_want_of_a_certificate_as_alive(
    aiohttp_server: AiohttpServer, pki: Pki, version: str
) -> None:
    """Whether the watcher ends the session in the handshake (TLS 1.2) or after it (TLS 1.3), the probe sees it alive."""
    tls = {"cert_file": pki.server_cert.name, "key_file": pki.server_key.name, "max_version": version,
           "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": pki.ca.name}  # fmt: skip
    path = web_config(pki, f"probe-{version}.yml", {"tls_server_config": tls})
    url = await served(aiohttp_server, pki, path)
    settings = Settings(web=WebSettings(listen_address=f"0.0.0.0:{urllib.parse.urlsplit(url).port}",
                                        config_file=str(path)))  # fmt: skip
    probe_url, context, client_cert_required = healthcheck.url_and_context(settings)
    assert (probe_url, client_cert_required) == (url, True)
    assert await asyncio.to_thread(healthcheck.probe, probe_url, context=context, client_cert_required=True) == ""


def test_probe_of_a_hung_watcher_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port that accepts connections but never answers (a hung event loop) is unhealthy, certificates or not."""
    monkeypatch.setattr(healthcheck, "TIMEOUT_SECONDS", 0.5)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/health"
        for required in (True, False):
            assert "timed out" in healthcheck.probe(url, context=context, client_cert_required=required)


# --- the app in process, every client_auth_type ----------------------------------------

NONE, TRUSTED, ROGUE = "no certificate", "trusted certificate", "rogue certificate"
CLIENT_AUTH_CASES = [
    ("NoClientCert", {NONE: True, TRUSTED: True, ROGUE: True}),
    ("VerifyClientCertIfGiven", {NONE: True, TRUSTED: True, ROGUE: False}),
    ("RequireAndVerifyClientCert", {NONE: False, TRUSTED: True, ROGUE: False}),
]


async def served(server: AiohttpServer, pki: Pki, config: Path) -> str:
    """Serve the watcher's app with the web config's TLS context; its https URL."""
    loaded = webconfig.load(str(config))
    registry = CollectorRegistry()
    exposition = Exposition(snapshot=State, registry=registry, settings=Settings(), metrics=SelfMetrics(registry))
    app = make_app(exposition=exposition, ready=lambda: True)
    test_server = await server(app, ssl=loaded.tls)
    return f"https://127.0.0.1:{test_server.port}/health"


async def answers(url: str, context: ssl.SSLContext) -> bool:
    """Whether a GET over TLS with this client context gets an HTTP answer."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as response:
            return response.status == 200
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
        return False


@pytest.mark.parametrize(("auth", "expected"), CLIENT_AUTH_CASES, ids=[case[0] for case in CLIENT_AUTH_CASES])
async def test_client_auth_types(aiohttp_server: AiohttpServer, pki: Pki, auth: str, expected: dict[str, bool]) -> None:
    """Each client_auth_type lets in exactly the clients exporter-toolkit's would."""
    tls = {"cert_file": pki.server_cert.name, "key_file": pki.server_key.name, "client_auth_type": auth}
    if auth != "NoClientCert":
        tls["client_ca_file"] = pki.ca.name
    url = await served(aiohttp_server, pki, web_config(pki, f"{auth}.yml", {"tls_server_config": tls}))
    clients = {
        NONE: client_context(trust=pki.ca),
        TRUSTED: client_context(trust=pki.ca, cert=(pki.client_cert, pki.client_key)),
        ROGUE: client_context(trust=pki.ca, cert=(pki.rogue_client_cert, pki.rogue_client_key)),
    }
    assert {name: await answers(url, context) for name, context in clients.items()} == expected


async def test_versions_and_cipher_suites(aiohttp_server: AiohttpServer, pki: Pki) -> None:
    """min_version and cipher_suites hold: a TLS 1.2 client gets in only with a listed suite."""
    tls = {"cert_file": pki.server_cert.name, "key_file": pki.server_key.name,
           "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]}  # fmt: skip
    url12 = await served(aiohttp_server, pki, web_config(pki, "ciphers.yml", {"tls_server_config": tls}))
    url13 = await served(aiohttp_server, pki, web_config(pki, "tls13.yml", {"tls_server_config": {
        "cert_file": pki.server_cert.name, "key_file": pki.server_key.name, "min_version": "TLS13"}}))  # fmt: skip

    def tls12_client(cipher: str) -> ssl.SSLContext:
        context = client_context(trust=pki.ca)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
        return context

    assert await answers(url12, tls12_client("ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert not await answers(url12, tls12_client("ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert await answers(url12, client_context(trust=pki.ca))  # TLS 1.3: its suites are always on
    assert not await answers(url13, tls12_client("ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert await answers(url13, client_context(trust=pki.ca))


# --- the reference implementation agrees ----------------------------------------------


@pytest.mark.prometheus
def test_promtool_agrees_on_accepted_and_refused_files(pki: Pki) -> None:
    """`promtool check web-config` (exporter-toolkit itself) passes the files the watcher accepts and fails
    the ones both refuse (the watcher is stricter in places, each a documented problem of its own)."""
    promtool = require_binary("promtool")
    server = {"cert_file": pki.server_cert.name, "key_file": pki.server_key.name}
    accepted: dict[str, dict[str, Any]] = {
        "empty": {},
        "tls": {"tls_server_config": server},
        "mtls": {"tls_server_config": {**server, "client_auth_type": "RequireAndVerifyClientCert",
                                       "client_ca_file": pki.ca.name, "min_version": "TLS13"}},
        "optional": {"tls_server_config": {**server, "client_auth_type": "VerifyClientCertIfGiven",
                                           "client_ca_file": pki.ca.name, "max_version": "TLS12",
                                           "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
                                           "prefer_server_cipher_suites": False}},
        "users": {"basic_auth_users": {"alice": HASH, "bob": "$2y$" + HASH[4:]}},
        "headers": {"http_server_config": {"http2": False, "headers": {"X-Frame-Options": "sameorigin",
                                                                      "Content-Security-Policy": "default-src 'self'"}}},
    }  # fmt: skip
    refused: dict[str, dict[str, Any]] = {
        "unknown key": {"tls_server_config": {**server, "cert_filse": "x"}},
        "no key": {"tls_server_config": {"cert_file": pki.server_cert.name}},
        "missing cert": {"tls_server_config": {**server, "cert_file": "nope.crt"}},
        "bad client auth": {"tls_server_config": {**server, "client_auth_type": "Always"}},
        "ca without policy": {"tls_server_config": {**server, "client_ca_file": pki.ca.name}},
        "bad version": {"tls_server_config": {**server, "min_version": "TLS111"}},
        "bad cipher": {"tls_server_config": {**server, "cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]}},
        "bad hash": {"basic_auth_users": {"john": "doe"}},
        "bad header": {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
        "extra header": {"http_server_config": {"headers": {"Server": "me"}}},
    }  # fmt: skip
    for verdict, cases in (("SUCCESS", accepted), ("FAILED", refused)):
        for name, body in cases.items():
            path = web_config(pki, f"promtool-{name.replace(' ', '-')}.yml", body)
            output = subprocess.run([promtool, "check", "web-config", str(path)], capture_output=True, text=True,
                                    timeout=60)  # fmt: skip
            assert f"{path} {verdict}" in output.stdout + output.stderr, (name, output.stdout, output.stderr)
            if verdict == "SUCCESS":
                webconfig.load(str(path))
            else:
                with pytest.raises(webconfig.WebConfigError):
                    webconfig.load(str(path))


# --- a real Prometheus scrapes over TLS -----------------------------------------------


@pytest.mark.prometheus
def test_prometheus_scrapes_over_tls_with_basic_auth(
    tls_watcher: WatcherProcess, mtls_watcher: WatcherProcess, pki: Pki, tmp_path: Path
) -> None:
    """Prometheus with scheme https, tls_config and basic_auth scrapes both watchers (up 1); a wrong password is up 0."""
    tls_config = {"ca_file": str(pki.ca)}
    auth = {"username": "prometheus", "password": PASSWORD}
    jobs = [
        ("tls", tls_watcher, tls_config, auth),
        ("mtls", mtls_watcher, {**tls_config, "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)},
         auth),
        ("wrong-password", tls_watcher, tls_config, {**auth, "password": "wrong"}),
    ]  # fmt: skip
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": name, "scheme": "https", "tls_config": tls, "basic_auth": credentials,
             "static_configs": [{"targets": [f"127.0.0.1:{watcher.port}"]}]}
            for name, watcher, tls, credentials in jobs
        ],
    }  # fmt: skip
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    prometheus = run_prometheus(tmp_path, config_file)
    try:

        def up() -> dict[str, float]:
            assert prometheus.process.poll() is None, prometheus.log.read_text()[-3000:]
            return {series["metric"]["job"]: float(series["value"][1]) for series in prometheus.query("up")}

        expected = {"tls": 1, "mtls": 1, "wrong-password": 0}
        poll("up of each job", up, timeout=60, interval=0.5, until=lambda seen: seen == expected)
    finally:
        prometheus.stop()


def test_the_read_side_over_tls_with_basic_auth(tls_watcher: WatcherProcess, pki: Pki, tmp_path: Path) -> None:
    """The board, the JSON API and the stream are behind TLS and basic auth; `status` reaches them with
    --ca-file and the user's password, and exits 4 with a wrong password or an untrusted certificate."""
    for path in ("/", "/api/v1/deployments", "/api/v1/events", "/api/v1/openapi.json"):
        assert fetch(tls_watcher.url + path, context=tls_watcher.ssl_context)[0] == 401, path
    status, headers = fetch(tls_watcher.url + "/api/v1/deployments", context=tls_watcher.ssl_context,
                            headers=basic("prometheus", PASSWORD))  # fmt: skip
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")

    def status_command(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "watcher", "status", "--url", tls_watcher.url, *flags],
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    done = status_command("--ca-file", str(pki.ca), "--user", "prometheus", "--password-file", str(password))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["NAME", "ENVIRONMENT"]
    password.write_text("wrong\n")
    done = status_command("--ca-file", str(pki.ca), "--user", "prometheus", "--password-file", str(password))
    assert done.returncode == 4 and "refused the credentials" in done.stderr
    done = status_command("--ca-file", str(pki.rogue_ca), "--user", "prometheus", "--password-file", str(password))
    assert done.returncode == 4 and "CERTIFICATE_VERIFY_FAILED" in done.stderr
