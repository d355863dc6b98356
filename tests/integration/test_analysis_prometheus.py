"""The analysis source against a real Prometheus (Debian's) scraping a small application of the
test's own every second, whose error rate the test sets: the error-rate check measures what the
application does, at the rollout's start (the baseline) and now; a hostile deployment name filled
into the query changes nothing of its meaning; Prometheus stopped is error measurements, never a
crash; basic auth against Prometheus's own web config file."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.analysis_app import App, AppServer, scrape_config, wait_for_rates
from tests.conftest import Prometheus, free_port, require_binary, run_prometheus
from tests.polling import poll, poll_async
from watcher.config import Settings
from watcher.domain.analysis import Analysis, Check, Measured, Mode, fill
from watcher.domain.model import Deployment, DeploymentKey, Rollout, State
from watcher.domain.observations import AnalysisMeasured
from watcher.domain.settings import AnalysisSettings
from watcher.selfmetrics import SelfMetrics
from watcher.sources.analysis.prometheus import Prometheus as Client
from watcher.sources.analysis.source import AnalysisSource
from watcher.sources.analysis.trial import try_checks

pytestmark = pytest.mark.prometheus

# The check, over a short window so that a change of error rate shows within seconds.
ERROR_RATE = Check(
    name="error_rate",
    query='sum(rate(http_requests_total{job="{{deployment}}",code=~"5.."}[5s])) '
    '/ sum(rate(http_requests_total{job="{{deployment}}"}[5s]))',
    max=0.02,
)
HOSTILE = 'a"} or vector(1) #'


@pytest.fixture(scope="module")
def app() -> Iterator[tuple[App, int]]:
    with AppServer() as server:
        yield server.app(), server.port


@pytest.fixture(scope="module")
def prometheus(app: tuple[App, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    server = run_prometheus(tmp, scrape_config(tmp / "config", app[1]))
    yield server
    server.stop()


def rollout_state(name: str, analysis: Analysis, *, started_at: float) -> State:
    key = DeploymentKey(name, "production")
    rollout = Rollout(revision=1, version="v2", commit="", image="web:2", started_at=started_at, analysis=analysis)
    return State(deployments={key: Deployment(key=key, rollout=rollout)})


def analysed(name: str, *checks: Check, measuring: bool) -> Analysis:
    """An analysis of ``checks`` for deployment ``name``, their queries filled as the core fills them;
    ``measuring``: past its baselines, measuring."""
    values = {"deployment": name, "environment": "production", "version": "v2", "previous_version": "v1", "host": "h"}
    filled = tuple(
        Measured(check=dataclasses.replace(c, query=fill(c.query, values)), baseline_taken=measuring) for c in checks
    )
    now = time.time()
    return Analysis(
        mode=Mode.GATE, checks=filled, measuring_since=now if measuring else None,
        ends_at=now + 300 if measuring else None,
    )  # fmt: skip


class Running:
    """An analysis source over a fixed state, its observations collected."""

    def __init__(self, settings: AnalysisSettings, state: State) -> None:
        self.seen: list[AnalysisMeasured] = []
        self.registry = CollectorRegistry()
        self.source = AnalysisSource(
            settings=Settings(analysis=settings), snapshot=lambda: state, submit=self.seen.append,
            metrics=SelfMetrics(self.registry), scan_seconds=0.05,
        )  # fmt: skip
        self.task = asyncio.create_task(self.source.run_forever())

    async def until(self, what: str, count: int, *, timeout: float = 30) -> list[AnalysisMeasured]:
        async def enough() -> bool:
            assert not self.task.done(), self.task
            return len(self.seen) >= count

        await poll_async(what, enough, timeout=timeout, interval=0.05)
        return self.seen

    def queries(self, result: str) -> float | None:
        return self.registry.get_sample_value("deployment_watcher_analysis_queries_total", {"result": result})

    async def stop(self) -> None:
        assert not self.task.done(), "run_forever ended"
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_the_error_rate_at_the_rollouts_start_and_now(app: tuple[App, int], prometheus: Prometheus) -> None:
    served, _ = app
    served.set(ok=99, errors=1)
    query = fill(ERROR_RATE.query, {"deployment": "web"})
    wait_for_rates(prometheus, query, 0.01)
    await asyncio.sleep(3)  # the rate window at the start holds only the previous version's scrapes
    started_at = time.time()
    await asyncio.sleep(1)
    served.set(ok=90, errors=10)  # the new version: ten times the errors
    wait_for_rates(prometheus, query, 0.1)
    settings = AnalysisSettings(prometheus_url=f"http://127.0.0.1:{prometheus.port}", interval_seconds=1)

    baseline = Running(
        settings, rollout_state("web", analysed("web", ERROR_RATE, measuring=False), started_at=started_at)
    )
    try:
        [first, *_] = await baseline.until("the baseline", 1)
    finally:
        await baseline.stop()
    assert first.baseline and first.error == "" and first.value == pytest.approx(0.01, abs=1e-4)
    assert (first.key, first.revision, first.check) == (DeploymentKey("web", "production"), 1, "error_rate")

    measuring = Running(
        settings, rollout_state("web", analysed("web", ERROR_RATE, measuring=True), started_at=started_at)
    )
    try:
        began = time.monotonic()
        seen = await measuring.until("three measurements", 3)
        took = time.monotonic() - began
    finally:
        await measuring.stop()
    assert [(m.baseline, m.error) for m in seen[:3]] == [(False, "")] * 3
    assert [m.value for m in seen[:3]] == [pytest.approx(0.1, abs=1e-4)] * 3
    assert took >= 1.9  # one a second: the state records none of them, the schedule still waits its interval
    assert measuring.queries("ok") == len(seen) and measuring.queries("error") == 0


async def test_a_hostile_deployment_name_does_not_change_the_query(prometheus: Prometheus) -> None:
    plain = Check(name="plain", query='http_requests_total{job="{{deployment}}",code="500"}', max=1)
    naive = plain.query.replace("{{deployment}}", HOSTILE)
    assert prometheus.query(naive)[0]["value"][1] == "1"  # unescaped, the name would rewrite the check
    regex = Check(name="regex", query='sum(http_requests_total{job=~"{{deployment}}"})', max=1)
    settings = AnalysisSettings(prometheus_url=f"http://127.0.0.1:{prometheus.port}", interval_seconds=1)
    hostile = Running(settings, rollout_state(HOSTILE, analysed(HOSTILE, ERROR_RATE, plain, regex, measuring=True),
                                              started_at=time.time()))  # fmt: skip
    try:
        seen = await hostile.until("every check", 3)
    finally:
        await hostile.stop()
    assert {(m.check, m.value, m.error) for m in seen} == {(c, None, "") for c in ("error_rate", "plain", "regex")}
    dots = analysed(".*", regex, measuring=True).checks[0].check.query  # a regex matching every job, as a name
    async with Client(settings) as client:
        assert (await client.query(dots)).value is None
        assert (await client.query(dots.replace("\\\\.\\\\*", ".*"))).value is not None


async def test_prometheus_stopped_is_errors_never_a_crash(app: tuple[App, int], tmp_path: Path) -> None:
    server = run_prometheus(tmp_path, scrape_config(tmp_path / "config", app[1]))
    settings = AnalysisSettings(prometheus_url=f"http://127.0.0.1:{server.port}", interval_seconds=1, timeout_seconds=2)
    running = Running(
        settings, rollout_state("web", analysed("web", ERROR_RATE, measuring=True), started_at=time.time())
    )
    try:
        await running.until("a measurement", 1)
        server.stop()
        await running.until("measurements with Prometheus away", 4)
    finally:
        await running.stop()
    after = running.seen[1:]
    assert after and all(m.value is None and m.error for m in after)
    assert "Cannot connect" in after[-1].error or "Connect" in after[-1].error
    assert running.queries("error") == len(after)
    assert running.source.problem().startswith("analysis error_rate: ")


def start_with_auth(tmp: Path, app_port: int, password: str) -> Prometheus:
    """A Prometheus whose API wants basic auth (its own --web.config.file)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp / "web.yml"
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"watcher": hashed}}))
    binary = require_binary("prometheus")
    port = free_port()
    log = tmp / "prometheus.log"
    process = subprocess.Popen(
        [binary, f"--config.file={scrape_config(tmp / 'config', app_port)}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web_config}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Prometheus(port, process, log)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/-/ready")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"watcher:{password}".encode()).decode())

    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)

    try:
        poll("prometheus /-/ready with basic auth", ready, timeout=60, interval=0.5, retry_on=(OSError,))
    except AssertionError:
        server.stop()
        raise
    return server


async def test_basic_auth_against_prometheus_web_config(app: tuple[App, int], tmp_path: Path) -> None:
    server = start_with_auth(tmp_path, app[1], "pässword 1")
    try:
        url = f"http://127.0.0.1:{server.port}"
        password = tmp_path / "password"
        password.write_text("pässword 1\n")
        wrong = tmp_path / "wrong"
        wrong.write_text("guess")
        good = AnalysisSettings(prometheus_url=url, username="watcher", password_file=str(password))
        async with Client(good) as client:
            assert (await client.query("vector(42)")).value == 42
        for settings in (dataclasses.replace(good, password_file=str(wrong)), AnalysisSettings(prometheus_url=url)):
            async with Client(settings) as client:
                refused = await client.query("vector(42)")
            assert (refused.error, refused.answered) == ("HTTP 401", True)
        # --check-config's trial: the live queries, every problem at once.
        checks = (ERROR_RATE, Check(name="typo", query='sum(rate(x{job="{{deployment}}"}[1m])', max=1))
        tried = await try_checks(Settings(analysis=dataclasses.replace(good, checks=checks)))
        assert [p.split(":", 1)[0] for p in tried.problems] == ["analysis.checks typo"]
        assert "bad_data" in tried.problems[0] and not tried.unreachable
        denied = await try_checks(Settings(analysis=AnalysisSettings(prometheus_url=url, checks=checks)))
        assert len(denied.problems) == 2 and all(p.endswith("HTTP 401") for p in denied.problems)
    finally:
        server.stop()
