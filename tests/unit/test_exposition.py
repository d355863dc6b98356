"""The collector, the cached exposition and the HTTP app: what a scrape sees, in every format."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import itertools
import math
import subprocess
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from pytest_aiohttp import AiohttpClient

from tests.conftest import require_binary
from tests.polling import poll_async
from tests.unit.builders import (
    ANALYSED,
    PROMETHEUS_2,
    SETTINGS,
    Run,
    app_for,
    exposition_for,
    measured,
    scenario,
    started,
)
from watcher.config import ExpositionSettings, Settings, StorageSettings
from watcher.domain.analysis import Request, Result
from watcher.domain.model import Deployment, DeploymentKey, State, Usage
from watcher.domain.observations import InstanceGone, Observation, ServiceGone, UsageSampled
from watcher.exposition import pieces
from watcher.exposition.deflate import gzip_member, inflate
from watcher.exposition.families import DeploymentCollector, deployment_families
from watcher.exposition.pieces import (
    USAGE_FAMILIES,
    USAGE_FIELDS,
    DeploymentsPart,
    Families,
    same_but_usage,
    without_eof,
)
from watcher.exposition.rendering import (
    MAX_VARIANTS,
    VARIANT_IDLE_SECONDS,
    Exposition,
    Format,
    next_rendering_at,
)
from watcher.runtime.compose import Watcher
from watcher.selfmetrics import SERVICE_ACTIONS, EngineErrorKind, SelfMetrics
from watcher.sources.engine import Engine
from watcher.sources.swarm import causes as swarm_causes
from watcher.sources.swarm.watch import SwarmWatch
from watcher.web.app import make_app

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
OM_FAMILIES = {
    "deployment_status": "gauge", "deployment_version": "gauge", "deployment_timestamp": "gauge",
    "deployment_health_status": "gauge", "deployment_removed": "gauge", "deployment": "info",
    "deployment_cpu_usage_seconds": "counter", "deployment_memory_usage_bytes": "gauge", "deployment_rollback_count": "counter",
    "deployment_health_check": "gauge", "deployment_duration_seconds": "histogram", "deployment_version_info": "gauge",
    "deployment_replicas": "gauge", "deployment_swarm_update_state": "gauge",
    "deployment_rollouts": "counter", "deployment_change_failures": "counter",
    "deployment_lead_time_seconds": "histogram", "deployment_recovery_seconds": "histogram",
    "deployment_rework": "counter", "deployment_analysis_status": "gauge", "deployment_analysis_value": "gauge",
    "deployment_analysis_measurements": "counter",
}  # fmt: skip
FAST = dataclasses.replace(SETTINGS, exposition=ExpositionSettings(min_interval_seconds=0, max_staleness_seconds=3600))


def fleet(deployments: int, revisions: int) -> list[State]:
    """The states of ``deployments`` deployments after each of ``revisions`` rollouts of all of them."""
    run, states = Run(), []
    for revision in range(1, revisions + 1):
        for i in range(deployments):
            key = DeploymentKey(f"d{i}", "production")
            run(started(f"c{i}-{revision}", f"{revision}.0.0", revision * 1000 + i, key=key))
        states.append(run.state)
    return states


class Counting(Collector):
    """A collector that counts how often it is collected."""

    def __init__(self) -> None:
        self.collected = 0

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        return iter(())


class Chain(Collector):
    """Several collectors as one, in order: what client_python would serve in one registry."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        return itertools.chain.from_iterable(c.collect() for c in self._collectors)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def renders(metrics: SelfMetrics, part: str) -> float:
    """How often that part of /metrics was rendered."""
    [family] = metrics.exposition_renders.collect()
    return float(next(s.value for s in family.samples if s.name.endswith("_total") and s.labels == {"part": part}))


def samples(
    text: str, parse: Callable[[str], Iterable[Metric]] = parse_text
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: list[Sample] = [s for f in parse(text) for s in f.samples]
    return {(s.name, frozenset(s.labels.items())): s.value for s in found}


@contextlib.asynccontextmanager
async def renderer(exposition: Exposition) -> AsyncIterator[None]:
    """The exposition's background renderer, running for the block."""
    task = asyncio.create_task(exposition.run_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def text_of(exposition: Exposition) -> str:
    """What a scrape in the text format gets."""
    return (await exposition.page(accept="", accept_encoding="")).body.decode()


async def test_text_exposition_values(aiohttp_client: AiohttpClient) -> None:
    """Every family is there with the values of the state, in the Prometheus text format."""
    client = await aiohttp_client(make_app(exposition=app_for(scenario().state), ready=lambda: True))
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
    assert got[("deployment_info", info | {("kind", "container")})] == 1
    assert got[("deployment_version_info", api | {("version", "2.0.0"), ("commit_sha", "c-2.0.0")})] == 1
    assert got[("deployment_health_check", api | {("check_type", "containers_running")})] == 1
    web = frozenset({("deployment", "web"), ("environment", "staging")})
    assert got[("deployment_status", web)] == 2
    assert got[("deployment_timestamp", web | {("version", 'x"y\\z\nü')})] == 400


async def test_openmetrics_negotiated_gzipped_and_valid(aiohttp_client: AiohttpClient) -> None:
    """With Prometheus' headers the body is gzipped OpenMetrics, every family typed as documented."""
    client = await aiohttp_client(make_app(exposition=app_for(scenario().state), ready=lambda: True))
    response = await client.get("/metrics", headers={"Accept": PROMETHEUS_2, "Accept-Encoding": "gzip"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept, Accept-Encoding"
    text = await response.text()  # aiohttp decompresses
    families = {f.name: f.type for f in parse_openmetrics(text)}
    assert families == OM_FAMILIES


async def test_self_metrics_precreated_and_both_formats(aiohttp_client: AiohttpClient) -> None:
    """The watcher's own counters exist at zero before anything happens, valid in both formats."""
    registry = CollectorRegistry()
    empty = State()
    exposition = Exposition(snapshot=lambda: empty, registry=registry, settings=SETTINGS, metrics=SelfMetrics(registry))
    client = await aiohttp_client(make_app(exposition=exposition, ready=lambda: False))
    text = await (await client.get("/metrics")).text()
    got = samples(text)
    assert got[("deployment_watcher_docker_reconnects_total", frozenset())] == 0
    assert got[("deployment_watcher_label_errors_total", frozenset({("label", "deployment.timestamp")}))] == 0
    assert got[("deployment_watcher_events_total", frozenset({("action", "die")}))] == 0
    assert got[("deployment_watcher_exposition_renders_total", frozenset({("part", "deployments")}))] == 1
    assert not any(name.startswith("deployment_status") for name, _ in got)
    om = await (await client.get("/metrics", headers={"Accept": OPENMETRICS})).text()
    names = [f.name for f in parse_openmetrics(om)]
    assert len(names) == len(set(names))
    assert "deployment_watcher_exposition_render_duration_seconds" in names


async def test_swarm_service_events_counted_apart_from_container_events() -> None:
    """A Swarm service event counts in its own family, by action; a container event in the other."""
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    removed: list[Observation] = []
    watch = SwarmWatch(Settings(), removed.append, metrics)
    event = {"Type": "service", "Action": "remove", "Actor": {"ID": "s1"}, "timeNano": 1_700_000_000 * 10**9}
    await watch._handle(cast(Engine, None), [event])  # a removal needs no request
    metrics.event("health_status: healthy")
    assert removed == [ServiceGone(1_700_000_000.0, "s1")]
    swarm, containers = "deployment_watcher_swarm_events_total", "deployment_watcher_events_total"
    assert registry.get_sample_value(swarm, {"action": "remove"}) == 1
    assert registry.get_sample_value(swarm, {"action": "create"}) == 0  # pre-created
    assert registry.get_sample_value(containers, {"action": "health_status"}) == 1
    assert registry.get_sample_value(containers, {"action": "remove"}) is None
    # The actions pre-created are the ones the Swarm source follows.
    assert all(swarm_causes.classify({**event, "Action": action}) for action in SERVICE_ACTIONS)


def test_engine_error_kinds_precreated_and_explained() -> None:
    """Every engine error kind has its series at zero and its meaning in the help text."""
    registry = CollectorRegistry()
    SelfMetrics(registry)
    (family,) = [f for f in registry.collect() if f.name == "deployment_watcher_docker_errors"]
    assert [s.labels["kind"] for s in family.samples if s.name.endswith("_total")] == list(EngineErrorKind)
    assert all(f"{kind} ({kind.meaning})" in family.documentation for kind in EngineErrorKind)


@pytest.mark.prometheus
def analysed_state() -> State:
    """api: an analysis of error_rate (a baseline of +Inf, two measurements) and p99 (nothing measured yet);
    web: a rollout without analysis."""
    run = Run(ANALYSED)(
        started("a", "1.0.0", 100, analysis=Request(checks=("error_rate", "p99"))),
        measured(101, math.inf, baseline=True),
        started("w", "1.0.0", 100, key=DeploymentKey("web", "staging")),
    )
    return run.tick(110)(measured(140, 0.004), measured(170, None, error="timeout")).state


async def test_analysis_families_in_both_formats() -> None:
    """An analysis' status, values (+Inf as Prometheus writes it; absent while None) and every result's count;
    nothing of it for a rollout without analysis."""
    state = analysed_state()
    exposition, _ = exposition_for(lambda: state, settings=ANALYSED)
    api = frozenset({("deployment", "api"), ("environment", "production")})
    error_rate, p99 = api | {("check", "error_rate")}, api | {("check", "p99")}
    om = (await exposition.page(accept=OPENMETRICS, accept_encoding="")).body.decode()
    for got in (samples(await text_of(exposition)), samples(om, parse_openmetrics)):
        assert got[("deployment_analysis_status", api)] == 2
        assert got[("deployment_analysis_value", error_rate | {("sample", "baseline")})] == math.inf
        assert got[("deployment_analysis_value", error_rate | {("sample", "current")})] == 0.004
        assert not any(name == "deployment_analysis_value" and labels >= p99 for name, labels in got)
        counts = {
            r.value: got[("deployment_analysis_measurements_total", error_rate | {("result", r.value)})] for r in Result
        }
        assert counts == {"pass": 1, "fail": 0, "nodata": 0, "error": 1}
        assert got[("deployment_analysis_measurements_total", p99 | {("result", "fail")})] == 0
        assert not any(dict(labels).get("deployment") == "web" for name, labels in got if "analysis" in name)
    assert 'sample="baseline"} +Inf' in om


async def test_promtool_finds_nothing_to_say() -> None:
    """The text body, deployments and own metrics together, passes `promtool check metrics`."""
    registry = CollectorRegistry()
    state = scenario().state
    state = dataclasses.replace(state, deployments={**state.deployments, **analysed_state().deployments})
    exposition = Exposition(snapshot=lambda: state, registry=registry, settings=SETTINGS, metrics=SelfMetrics(registry))
    body = (await exposition.page(accept="", accept_encoding="")).body
    checked = subprocess.run([require_binary("promtool"), "check", "metrics"], input=body, capture_output=True)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        "text/plain;version=0.0.4",
        PROMETHEUS_2,
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3",
        "text/plain;version=0.0.4;q=0.1,application/openmetrics-text;version=1.0.0",  # order wins, as in client_python
        "text/plain;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=0.0.1",
    ],
)
@pytest.mark.parametrize("encoding", ["", "gzip", "br, gzip;q=0.5"])
async def test_every_accept_gets_what_client_python_serves(accept: str, encoding: str) -> None:
    """Byte for byte the body and Content-Type prometheus-client would serve for one registry of both parts."""
    registry = CollectorRegistry()
    Gauge("odd_gauge", "A gauge.", ["label"], registry=registry).labels('a"b\\c\nd').set(1.5)
    Info("odd_build", "Build.", registry=registry).info({"version": "1.0"})
    state = scenario().state
    exposition, _ = exposition_for(lambda: state, registry=registry)
    page = await exposition.page(accept=accept, accept_encoding=encoding)
    encoder, content_type = choose_encoder(accept)
    expected = encoder(Chain(DeploymentCollector(snapshot=lambda: state, settings=SETTINGS), registry))
    assert page.headers["Content-Type"] == content_type
    if encoding:
        assert page.headers["Content-Encoding"] == "gzip"
        stream = zlib.decompressobj(zlib.MAX_WBITS | 16)
        assert stream.decompress(page.body) == expected
        assert stream.eof and not stream.unused_data  # one gzip member, nothing after it
    else:
        assert "Content-Encoding" not in page.headers
        assert page.body == expected


async def test_scrapes_are_served_from_memory() -> None:
    """Once rendered, scrapes in any known variant collect nothing: no per-series work."""
    registry = CollectorRegistry()
    counting = Counting()
    registry.register(counting)
    snapshots = []
    state = scenario().state

    def snapshot() -> State:
        snapshots.append(state)
        return state

    exposition, metrics = exposition_for(snapshot, registry=registry)
    await exposition.refresh()
    assert (counting.collected, len(snapshots)) == (1, 1)
    await exposition.page(accept="", accept_encoding="")  # plain text: not kept until asked for
    assert (counting.collected, len(snapshots)) == (2, 2)
    for _ in range(20):
        await exposition.page(accept=PROMETHEUS_2, accept_encoding="gzip")
        await exposition.page(accept="", accept_encoding="")
    assert (counting.collected, len(snapshots)) == (2, 2)
    assert renders(metrics, "deployments") == 2


async def test_gzip_copy_is_the_body_after_an_own_refresh() -> None:
    """Refreshing only the own part keeps the gzip copy equal to the plain body, and reuses the deployments part."""
    registry = CollectorRegistry()
    events = Counter("events", "Events.", registry=registry)
    state = scenario().state
    exposition, metrics = exposition_for(lambda: state, registry=registry)
    for accept in ("", OPENMETRICS):  # both variants of both formats are asked for, plain first
        await exposition.page(accept=accept, accept_encoding="")
        await exposition.page(accept=accept, accept_encoding="gzip")
    events.inc(7)
    await exposition.refresh()
    for accept in ("", OPENMETRICS):
        plain = (await exposition.page(accept=accept, accept_encoding="")).body
        assert gzip.decompress((await exposition.page(accept=accept, accept_encoding="gzip")).body) == plain
        assert b"events_total 7.0\n" in plain
    # Renderings: plain text (new, and OpenMetrics as it starts), gzipped text, plain OpenMetrics
    # (the same part inflated: no rendering of the deployments), the refresh.
    assert renders(metrics, "own") == 4
    assert renders(metrics, "deployments") == 1


async def test_change_rendered_in_the_background(aiohttp_client: AiohttpClient) -> None:
    """A change of state reaches /metrics through the renderer, without a scrape doing the work."""
    run = Run()(started("a", "1.0.0", 100)).tick(111)
    current = {"state": run.state}
    exposition, metrics = exposition_for(lambda: current["state"], settings=FAST)
    client = await aiohttp_client(make_app(exposition=exposition, ready=lambda: True))

    async def gone() -> bool:
        return "deployment_status{" not in await (await client.get("/metrics")).text()

    assert not await gone()
    async with renderer(exposition):
        run(InstanceGone(200, "a")).tick(200 + SETTINGS.retention.gone_seconds)
        current["state"] = run.state
        exposition.changed()
        await poll_async("the gone deployment dropped", gone, timeout=10, interval=0.005)
    assert renders(metrics, "deployments") == 2


async def test_burst_of_changes_is_one_rendering() -> None:
    """Changes within the minimum interval are coalesced into one rendering of the newest state."""
    states = fleet(3, 20)
    current = {"state": states[0]}
    settings = dataclasses.replace(SETTINGS, exposition=ExpositionSettings(min_interval_seconds=2.0))
    exposition, metrics = exposition_for(lambda: current["state"], settings=settings)
    await exposition.refresh()
    async with renderer(exposition):
        for state in states[1:]:  # well within the interval, the renderer running in between
            current["state"] = state
            exposition.changed()
            await asyncio.sleep(0.005)
        d0 = ("deployment_version", frozenset({("deployment", "d0"), ("environment", "production")}))

        async def newest() -> bool:
            return samples(await text_of(exposition))[d0] == 20

        await poll_async("the newest state rendered", newest, timeout=10, interval=0.005)
    assert renders(metrics, "deployments") == 2


async def test_own_metrics_refreshed_at_the_staleness_bound() -> None:
    """Without any change of state, the own part is re-read within the bound; the deployments are not re-rendered."""
    registry = CollectorRegistry()
    events = Counter("events", "Events.", registry=registry)
    state = scenario().state
    settings = dataclasses.replace(SETTINGS, exposition=ExpositionSettings(max_staleness_seconds=0.1))
    exposition, metrics = exposition_for(lambda: state, registry=registry, settings=settings)
    await text_of(exposition)
    before = renders(metrics, "deployments")
    events.inc()

    async def counted() -> bool:
        return "events_total 1.0\n" in await text_of(exposition)

    async with renderer(exposition):
        await poll_async("the counter re-read", counted, timeout=10, interval=0.005)
    assert renders(metrics, "deployments") == before


@pytest.mark.parametrize(
    ("own_read_at", "finished_at", "changed", "due"),
    [
        (100.0, 100.5, False, 105.0),  # nothing changed: at the staleness bound
        (100.0, 100.5, True, 101.5),  # changed: one interval after the last rendering ended
        (100.0, 104.5, True, 105.0),  # changed, but the bound comes first
    ],
)
def test_next_rendering_at(own_read_at: float, finished_at: float, changed: bool, due: float) -> None:
    """The renderer's schedule: the staleness bound, or one interval after the last rendering once changed."""
    settings = ExpositionSettings(min_interval_seconds=1.0, max_staleness_seconds=5.0)
    assert (
        next_rendering_at(own_read_at=own_read_at, finished_at=finished_at, changed=changed, settings=settings) == due
    )


async def test_concurrent_scrapes_during_rerenders_get_whole_renderings(aiohttp_client: AiohttpClient) -> None:
    """Scrapes racing re-renders each get one complete rendering of one state: never a mix, never torn."""
    states = fleet(20, 4)
    current = {"state": states[0]}
    registry = CollectorRegistry()
    exposition = Exposition(
        snapshot=lambda: current["state"], registry=registry, settings=FAST, metrics=SelfMetrics(registry)
    )
    client = await aiohttp_client(make_app(exposition=exposition, ready=lambda: True))
    seen: set[float] = set()
    checked: dict[tuple[str, str], set[float]] = {}  # a body checked once: the same bytes parse the same

    async def scrape(accept: str) -> None:
        response = await client.get("/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
        text = await response.text()
        if (accept, text) not in checked:
            parse = parse_openmetrics if accept == OPENMETRICS else parse_text
            families = {f.name: f for f in parse(text)}  # OpenMetrics: fails unless the body ends with # EOF
            versions = {s.value for s in families["deployment_version"].samples}
            assert len(versions) == 1 and len(families["deployment_version"].samples) == 20, versions
            assert "deployment_watcher_tracked_deployments" in families
            checked[accept, text] = versions
        seen.update(checked[accept, text])

    async with renderer(exposition):
        for revision, state in enumerate(states, start=1):
            current["state"] = state
            exposition.changed()
            async with asyncio.timeout(30):
                while revision not in seen:
                    await asyncio.gather(*(scrape(OPENMETRICS if i % 2 else "") for i in range(6)))
    assert seen == set(range(1, 5))


async def test_new_variant_waits_for_one_rendering_then_is_cached() -> None:
    """A format nobody asked for yet is rendered once for the scrape that asks, then kept."""
    state = scenario().state
    exposition, metrics = exposition_for(lambda: state)
    await exposition.refresh()
    accept = "text/plain;version=1.0.0;escaping=allow-utf-8"
    first = await exposition.page(accept=accept, accept_encoding="gzip")
    assert renders(metrics, "deployments") == 2
    assert await exposition.page(accept=accept, accept_encoding="gzip") == first
    assert renders(metrics, "deployments") == 2


async def test_too_many_variants_are_rendered_alone() -> None:
    """Beyond the cap, a made-up variant is rendered for its request alone and never cached."""
    state = scenario().state
    exposition, metrics = exposition_for(lambda: state)
    accepts = [f"application/openmetrics-text;version=1.0.{i}" for i in range(1, MAX_VARIANTS + 2)]
    for accept in accepts:
        page = await exposition.page(accept=accept, accept_encoding="")
        assert page.headers["Content-Type"].startswith(accept.replace(";", "; ") + ";")
        assert page.body.endswith(b"# EOF\n")
    before = renders(metrics, "deployments")
    await exposition.page(accept=accepts[0], accept_encoding="")  # within the cap (with the two start variants)
    assert renders(metrics, "deployments") == before
    await exposition.page(accept=accepts[-1], accept_encoding="")  # beyond it: rendered again
    assert renders(metrics, "deployments") == before + 1


async def test_idle_variants_are_no_longer_rendered() -> None:
    """A variant nobody asked for within VARIANT_IDLE_SECONDS drops out of the renderings."""
    clock = FakeClock()
    state = scenario().state
    exposition, metrics = exposition_for(lambda: state, clock=clock)
    await exposition.page(accept="", accept_encoding="")  # the first rendering, with both start variants
    clock.now += VARIANT_IDLE_SECONDS / 2
    await exposition.page(accept=PROMETHEUS_2, accept_encoding="gzip")
    clock.now += VARIANT_IDLE_SECONDS / 2 + 1
    await exposition.refresh()
    assert renders(metrics, "deployments") == 1
    assert len(exposition._by_format) == 1  # its format's pieces are let go too: caches only for what is asked
    await exposition.page(accept="", accept_encoding="")  # plain text was dropped: rendered again
    assert renders(metrics, "deployments") == 2


async def test_service_renders_what_the_core_applies() -> None:
    """Wiring: the core's changes wake the exposition, which shows them; the own part is the registry."""
    service = Watcher(Settings(storage=StorageSettings(directory="")))  # not the machine's state directory
    await service.exposition.refresh()
    service.core.submit(started("a", "1.0.0", 100))
    api = ("deployment_version", frozenset({("deployment", "api"), ("environment", "production")}))

    async def shown() -> bool:
        return api in samples(await text_of(service.exposition))

    async with renderer(service.exposition):
        await poll_async("the deployment shown", shown, timeout=10, interval=0.005)
    assert ("process_cpu_seconds_total", frozenset()) in samples(await text_of(service.exposition))


async def test_health_ready_and_landing(aiohttp_client: AiohttpClient) -> None:
    """/health is 200 while the process works; /ready follows the Docker connection."""
    connected = {"up": False}
    app = make_app(exposition=app_for(State()), ready=lambda: connected["up"])
    client = await aiohttp_client(app)
    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status == 503
    connected["up"] = True
    assert (await client.get("/ready")).status == 200
    landing = await client.get("/")
    assert landing.status == 200 and 'href="metrics"' in await landing.text()


def shown(part: DeploymentsPart, state: State) -> bytes:
    """The part brought to ``state``, as its plain and its gzip bodies both show it (they must agree)."""
    part.update(state)
    plain = b"".join(inflate(segment) for segment in part.segments())
    assert gzip.decompress(gzip_member(part.segments())) == plain
    return plain


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
def test_only_changed_deployments_are_encoded_again(accept: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change re-encodes the deployments it touched; the part stays what encoding all at once gives."""
    fmt = Format.negotiate(accept)[0]

    def whole(state: State) -> bytes:
        body = fmt.encode(Families(DeploymentCollector(snapshot=lambda: state, settings=SETTINGS).collect()))
        return bytes(without_eof(body))

    run = scenario()
    part = DeploymentsPart(fmt.encode, settings=SETTINGS)
    assert shown(part, run.state) == whole(run.state)
    encoded: list[tuple[str, set[str]]] = []
    real = deployment_families

    def spy(deployment: Deployment, *, settings: Settings) -> list[Metric]:
        families = real(deployment, settings=settings)
        encoded.append((deployment.key.name, {f.name for f in families}))
        return families

    monkeypatch.setattr(pieces, "deployment_families", spy)
    encode = part._encode
    families_encoded: list[set[str]] = []

    def encode_spy(families: list[Metric], which: Sequence[int]) -> list[bytes]:
        families_encoded.append({families[i].name for i in which})
        return encode(families, which)

    monkeypatch.setattr(part, "_encode", encode_spy)
    run(UsageSampled(500, {"w": Usage(9.0, 4096)}))  # only web/staging changes, and only its usage
    assert shown(part, run.state) == whole(run.state)
    assert [name for name, _ in encoded] == ["web"]
    assert families_encoded == [USAGE_FAMILIES]
    assert shown(part, State()) == whole(State())  # no deployments: the headers alone


def test_usage_fields_are_fields_only_the_usage_families_read() -> None:
    """USAGE_FIELDS names fields of the model, and changing them changes the usage families alone."""
    for cls, names in USAGE_FIELDS.items():
        assert names <= {f.name for f in dataclasses.fields(cls)}, cls
    web = scenario().state.deployments[DeploymentKey("web", "staging")]
    members = {i: dataclasses.replace(m, cpu_nanos=m.cpu_nanos + 7, memory_bytes=m.memory_bytes + 7)
               for i, m in web.members.items()}  # fmt: skip
    sampled = dataclasses.replace(web, members=members, retired_cpu_nanos=web.retired_cpu_nanos + 10**9)
    assert same_but_usage(web, sampled)

    def shown(deployment: Deployment) -> dict[str, list[Sample]]:
        return {f.name: f.samples for f in deployment_families(deployment, settings=SETTINGS)}

    before, after = shown(web), shown(sampled)
    assert {name for name in before if before[name] != after[name]} == USAGE_FAMILIES


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
def test_a_new_field_read_by_a_family_never_goes_stale(accept: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A field added to Deployment and shown by a family: changing it alone re-encodes that family."""
    extended = dataclasses.make_dataclass(
        "Extended", [("team", str, dataclasses.field(default=""))], bases=(Deployment,), frozen=True, slots=True,
        kw_only=True,
    )  # fmt: skip

    def families_with_team(deployment: Deployment, *, settings: Settings) -> list[Metric]:
        families = deployment_families(deployment, settings=settings)
        info = next(f for f in families if f.name == "deployment_version_info")
        assert isinstance(info, GaugeMetricFamily)
        info.add_metric([*deployment.key, "team", getattr(deployment, "team", "")], 1)
        return families

    monkeypatch.setattr(pieces, "deployment_families", families_with_team)
    fmt = Format.negotiate(accept)[0]
    web = scenario().state.deployments[DeploymentKey("web", "staging")]
    ours = extended(**{f.name: getattr(web, f.name) for f in dataclasses.fields(Deployment)}, team="blue")
    part = DeploymentsPart(fmt.encode, settings=SETTINGS)
    assert b'commit_sha="blue"' in shown(part, State({web.key: ours}))
    theirs = State({web.key: dataclasses.replace(ours, team="green")})
    body = shown(part, theirs)
    assert b'commit_sha="green"' in body and b'commit_sha="blue"' not in body
    assert body == shown(DeploymentsPart(fmt.encode, settings=SETTINGS), theirs)  # a fresh encoding
