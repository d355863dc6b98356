"""The plumbing of `python -m tests.benchmark analysis` (tests/bench_analysis.py), without Prometheus or a
watcher: what it serves, what it expects, how it counts and what it queries."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import bench_analysis
from tests.bench_analysis import CHECKS, Growth, expected_per_minute, exposition, filled_queries, query_count
from watcher.config import Settings, load


def test_the_issues_figure_is_400_queries_a_minute() -> None:
    assert expected_per_minute(deployments=100) == 2 * 100 * 2 == 400


def test_the_exporter_serves_a_rate_per_deployment_with_one_percent_errors() -> None:
    text = exposition(["bench-000", "bench-001"], elapsed=10.0).decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    by = {(s.labels["deployment"], s.labels["code"]): s.value for s in samples}
    assert by == {
        ("bench-000", "200"): 990.0, ("bench-000", "500"): 10.0,
        ("bench-001", "200"): 990.0, ("bench-001", "500"): 10.0,
    }  # fmt: skip


def test_the_curl_loop_asks_every_check_of_every_deployment_filled_as_the_watcher_fills_it() -> None:
    queries = filled_queries(["bench-000", "bench-001"])
    assert len(queries) == 2 * len(CHECKS)
    assert all("{{" not in q for q in queries)
    assert sum('deployment="bench-001"' in q for q in queries) == len(CHECKS)


def test_only_the_query_handler_is_counted() -> None:
    text = "\n".join([
        "# TYPE prometheus_http_requests_total counter",
        'prometheus_http_requests_total{code="200",handler="/api/v1/query"} 390',
        'prometheus_http_requests_total{code="400",handler="/api/v1/query"} 10',
        'prometheus_http_requests_total{code="200",handler="/api/v1/query_range"} 7',
        'prometheus_http_requests_total{code="200",handler="/metrics"} 3',
    ]) + "\n"  # fmt: skip
    assert query_count(text) == 400


def test_rss_growth_is_last_over_first() -> None:
    growth = Growth((100, 130, 110))
    assert (growth.first, growth.last, growth.max) == (100, 110, 130)
    assert growth.growth == pytest.approx(0.10)


def test_the_watchers_config_loads(tmp_path: Path) -> None:
    """The config file the benchmark writes is one the watcher accepts, both checks and the window."""
    path = bench_analysis.config_file(tmp_path, prometheus_url="http://127.0.0.1:9090", window=780)
    settings: Settings = load(file=str(path), environ={})
    assert [c.name for c in settings.analysis.checks] == [str(c["name"]) for c in CHECKS]
    assert (settings.analysis.interval_seconds, settings.analysis.window_seconds) == (30, 780)
