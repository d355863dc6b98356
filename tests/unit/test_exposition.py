"""The collector and the HTTP app: what a scrape sees, in both exposition formats."""

from __future__ import annotations

import gzip

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Sample
from pytest_aiohttp import AiohttpClient

from tests.unit.test_state import SETTINGS, Run, started
from watcher.collector import DeploymentCollector
from watcher.http import make_app
from watcher.observations import DeploymentKey, InstanceExited, InstanceGone, Usage, UsageSampled
from watcher.selfmetrics import SelfMetrics
from watcher.state import State

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
OM_FAMILIES = {
    "deployment_status": "gauge", "deployment_version": "gauge", "deployment_timestamp": "gauge",
    "deployment_health_status": "gauge", "deployment": "info", "deployment_cpu_usage_seconds": "counter",
    "deployment_memory_usage_bytes": "gauge", "deployment_rollback_count": "counter",
    "deployment_health_check": "gauge", "deployment_duration_seconds": "histogram", "deployment_version_info": "gauge",
}  # fmt: skip


def scenario() -> Run:
    """Two deployments: api rolled 1 → 2 → back to 1 with a failure; web with an odd version."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    run(started("b", "2.0.0", 200), InstanceExited(201, "b", 1), started("c", "1.0.0", 300)).tick(311)
    run(started("w", 'x"y\\z\nü', 400, key=DeploymentKey("web", "staging")))
    run(UsageSampled(410, {"c": Usage(2.5, 1024), "w": Usage(1.0, 2048)}))
    return run


def registry_for(state: State) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DeploymentCollector(snapshot=lambda: state, settings=SETTINGS))
    return registry


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: list[Sample] = [s for f in parse_text(text) for s in f.samples]
    return {(s.name, frozenset(s.labels.items())): s.value for s in found}


async def test_text_exposition_values(aiohttp_client: AiohttpClient) -> None:
    """Every family is there with the values of the state, in the Prometheus text format."""
    app = make_app(registry=registry_for(scenario().state), ready=lambda: True)
    client = await aiohttp_client(app)
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    got = samples(await response.text())
    api = frozenset({("deployment", "api"), ("environment", "production")})
    assert got[("deployment_status", api)] == 1
    assert got[("deployment_version", api)] == 3
    assert got[("deployment_rollback_count_total", api)] == 1
    assert got[("deployment_cpu_usage_seconds_total", api)] == 2.5
    assert got[("deployment_memory_usage_bytes", api)] == 1024
    assert got[("deployment_duration_seconds_count", api)] == 3
    assert got[("deployment_duration_seconds_bucket", api | {("le", "+Inf")})] == 3
    assert got[("deployment_timestamp", api | {("version", "1.0.0")})] == 300
    info = api | {("status", "success"), ("version", "1.0.0"), ("commit", "c-1.0.0"), ("image", "shop/api:1.0.0")}
    assert got[("deployment_info", info)] == 1
    assert got[("deployment_version_info", api | {("version", "2.0.0"), ("commit_sha", "c-2.0.0")})] == 1
    assert got[("deployment_health_check", api | {("check_type", "containers_running")})] == 1
    web = frozenset({("deployment", "web"), ("environment", "staging")})
    assert got[("deployment_status", web)] == 2
    assert got[("deployment_timestamp", web | {("version", 'x"y\\z\nü')})] == 400


async def test_openmetrics_negotiated_and_valid(aiohttp_client: AiohttpClient) -> None:
    """With Prometheus' Accept header the body is OpenMetrics, every family typed as documented."""
    app = make_app(registry=registry_for(scenario().state), ready=lambda: True)
    client = await aiohttp_client(app)
    response = await client.get("/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": "gzip"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.headers.get("Content-Encoding") == "gzip"
    text = await response.text()  # aiohttp decompresses
    families = {f.name: f.type for f in parse_openmetrics(text)}
    assert families == OM_FAMILIES


async def test_self_metrics_precreated_and_both_formats(aiohttp_client: AiohttpClient) -> None:
    """The watcher's own counters exist at zero before anything happens, valid in both formats."""
    registry = registry_for(State())
    SelfMetrics(registry)
    client = await aiohttp_client(make_app(registry=registry, ready=lambda: False))
    text = await (await client.get("/metrics")).text()
    got = samples(text)
    assert got[("deployment_watcher_docker_reconnects_total", frozenset())] == 0
    assert got[("deployment_watcher_label_errors_total", frozenset({("label", "deployment.timestamp")}))] == 0
    assert got[("deployment_watcher_events_total", frozenset({("action", "die")}))] == 0
    assert not any(name.startswith("deployment_status") for name, _ in got)
    om = await (await client.get("/metrics", headers={"Accept": OPENMETRICS})).text()
    names = [f.name for f in parse_openmetrics(om)]
    assert len(names) == len(set(names))


async def test_removed_deployment_disappears(aiohttp_client: AiohttpClient) -> None:
    """Series are built per scrape: a dropped deployment is simply gone."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    current = {"state": run.state}
    registry = CollectorRegistry()
    registry.register(DeploymentCollector(snapshot=lambda: current["state"], settings=SETTINGS))
    client = await aiohttp_client(make_app(registry=registry, ready=lambda: True))
    assert "deployment_status{" in await (await client.get("/metrics")).text()
    run(InstanceGone(200, "a")).tick(200 + SETTINGS.retention.gone_seconds)
    current["state"] = run.state
    assert "deployment_status{" not in await (await client.get("/metrics")).text()


async def test_health_ready_and_landing(aiohttp_client: AiohttpClient) -> None:
    """/health is 200 while the process works; /ready follows the Docker connection."""
    connected = {"up": False}
    app = make_app(registry=CollectorRegistry(), ready=lambda: connected["up"])
    client = await aiohttp_client(app)
    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status == 503
    connected["up"] = True
    assert (await client.get("/ready")).status == 200
    landing = await client.get("/")
    assert landing.status == 200 and 'href="metrics"' in await landing.text()


def test_gzip_roundtrip_sanity() -> None:
    """gzip of an exposition is smaller (guards the compression header test's premise)."""
    from prometheus_client import generate_latest

    body = generate_latest(registry_for(scenario().state))
    assert len(gzip.compress(body)) < len(body)
