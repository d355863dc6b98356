"""Figure 10: rollout analysis (#20) at 100 deployments × 2 checks, against baselines in the same run.

``python -m tests.benchmark analysis [--minutes 10] [--deployments 100]`` (as root, with a Docker
Engine running: the watcher follows it as on the host; the deployments come through the CI/CD API).
A real Prometheus (Debian's) scrapes an exporter of this process serving ``http_requests_total``
with a ``deployment`` label for each deployment; a real watcher process analyses every deployment
with two checks every 30 s, its window longer than the run. Figures:

- Prometheus queries per minute made by the watcher, counted by Prometheus itself
  (``prometheus_http_requests_total{handler="/api/v1/query"}`` on its ``/metrics``; nothing else
  queries it meanwhile), beside the expected checks × deployments × 60 / interval;
- the watcher's CPU seconds per minute (``/proc/<pid>/stat``), against the same queries made by
  ``curl`` in a shell loop (the loop's and its children's CPU, from ``getrusage`` of children),
  and against a watcher with analysis off at the same deployments;
- the watcher's RSS every 30 s over the run: first, last, max and the growth, against the watcher
  with analysis off.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.analysis_app import scrape_config
from tests.conftest import Prometheus, WatcherProcess, run_prometheus, start_watcher
from tests.procstats import cpu_seconds, rss_bytes
from watcher.domain.analysis import fill

INTERVAL = 30.0  # analysis.interval_seconds
ENVIRONMENT = "production"
ERRORS = 0.01  # of the exporter's requests: under error_rate's max, so every measurement passes
CHECKS = (
    {
        "name": "bench_error_rate",
        "query": 'sum(rate(http_requests_total{deployment="{{deployment}}",code=~"5.."}[1m])) '
        '/ sum(rate(http_requests_total{deployment="{{deployment}}"}[1m]))',
        "max": 0.02,
        "max_increase": 0.5,
    },
    {
        "name": "bench_request_rate",
        "query": 'sum(rate(http_requests_total{deployment="{{deployment}}"}[1m]))',
        "min": 1,
    },
)
QUERY_HANDLER = "/api/v1/query"
SAMPLE_EVERY = 30.0  # seconds between RSS samples
BASELINE_MINUTES = 2.0  # of the curl loop (and of the watcher with analysis off, at the same time)
TOKEN = "benchmark-token-" + uuid.uuid4().hex

# One round: every query once, one curl process each; then sleep until the next round is due.
CURL_LOOP = r"""
url=$1 file=$2 rounds=$3 interval=$4
for ((r = 1; r <= rounds; r++)); do
    while IFS= read -r q; do
        curl -s -o /dev/null -G --data-urlencode "query=$q" "$url/api/v1/query"
    done < "$file"
    left=$(( r * interval - SECONDS ))
    if (( left > 0 )); then sleep "$left"; fi
done
"""


def names(deployments: int) -> list[str]:
    return [f"bench-{d:03d}" for d in range(deployments)]


def expected_per_minute(*, deployments: int, checks: int = len(CHECKS), interval: float = INTERVAL) -> float:
    """What the issue asks: every check of every deployment once an interval, no more."""
    return deployments * checks * 60 / interval


def exposition(deployments: Sequence[str], elapsed: float, *, rate: float = 100.0) -> bytes:
    """``http_requests_total{deployment,code}`` of each deployment, ``rate`` requests a second of which ERRORS fail."""
    lines = ["# TYPE http_requests_total counter"]
    for name in deployments:
        for code, share in (("200", 1 - ERRORS), ("500", ERRORS)):
            lines.append(f'http_requests_total{{deployment="{name}",code="{code}"}} {rate * share * elapsed:.3f}')
    return ("\n".join(lines) + "\n").encode()


def filled_queries(deployments: Sequence[str]) -> list[str]:
    """Every check of every deployment, filled as the watcher fills them (the curl loop's queries)."""
    queries = []
    for name in deployments:
        values = {"deployment": name, "environment": ENVIRONMENT}
        queries += [fill(str(check["query"]), values) for check in CHECKS]
    return queries


def query_count(metrics_text: str) -> float:
    """``prometheus_http_requests_total{handler="/api/v1/query"}`` in Prometheus's own /metrics (all codes)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "prometheus_http_requests_total" and sample.labels.get("handler") == QUERY_HANDLER
    )


@dataclass(frozen=True)
class Growth:
    """RSS samples (bytes) over a run."""

    samples: tuple[int, ...]

    @property
    def first(self) -> int:
        return self.samples[0]

    @property
    def last(self) -> int:
        return self.samples[-1]

    @property
    def max(self) -> int:
        return max(self.samples)

    @property
    def growth(self) -> float:
        """last / first - 1."""
        return self.last / self.first - 1


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:.1f} MiB"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextmanager
def exporter(deployments: Sequence[str]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 serving ``exposition`` of these deployments; yields its port."""
    started = time.time()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(deployments, time.time() - started)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="bench-exporter", daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def prometheus_queries(prometheus: Prometheus) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus.port}/metrics", timeout=10) as response:
        return query_count(response.read().decode())


def config_file(tmp: Path, *, prometheus_url: str, window: float) -> Path:
    config = {
        "analysis": {
            "prometheus_url": prometheus_url,
            "interval_seconds": INTERVAL,
            "window_seconds": window,
            "checks": [dict(check) for check in CHECKS],
        }
    }
    path = tmp / f"watcher-{'on' if prometheus_url else 'off'}.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def watcher(tmp: Path, *, prometheus_url: str, window: float) -> WatcherProcess:
    """A real `python -m watcher`, the CI/CD API on (a token file), analysis on when ``prometheus_url``."""
    tmp.mkdir(parents=True, exist_ok=True)
    token_file = tmp / "api-token"
    token_file.write_text(TOKEN)
    return start_watcher(
        tmp, f"--config.file={config_file(tmp, prometheus_url=prometheus_url, window=window)}",
        f"--api.token-file={token_file}", "--log.level=info",
    )  # fmt: skip


async def _report(url: str, deployments: Sequence[str]) -> None:
    """v2 of each deployment in progress, then a success, asking for both checks (a gate analysis each)."""
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        limit = asyncio.Semaphore(8)

        started_at = time.time() - 5

        async def one(name: str, status: str) -> None:
            body = {
                "deployment": name, "environment": ENVIRONMENT, "version": "2.0.0", "status": status,
                "started_at": started_at, "analysis": [str(check["name"]) for check in CHECKS],
            }  # fmt: skip
            async with limit, session.post("/api/v1/deployments", json=body) as response:
                assert response.status in (200, 201), await response.text()

        # As deploy tooling reports: the start (the checks' baselines are asked), then the success.
        for status in ("in_progress", "success"):
            await asyncio.gather(*(one(name, status) for name in deployments))


def report(process: WatcherProcess, deployments: Sequence[str]) -> None:
    asyncio.run(_report(process.url, deployments))


def watcher_queries(process: WatcherProcess) -> dict[str, float]:
    """deployment_watcher_analysis_queries_total by result."""
    return {
        s.labels["result"]: s.value for s in process.samples() if s.name == "deployment_watcher_analysis_queries_total"
    }


def in_progress(process: WatcherProcess, deployments: Sequence[str]) -> int:
    """Deployments whose rollout is in progress (``deployment_status`` 2): a gate analysis under way."""
    ours = set(deployments)
    return sum(
        1 for s in process.samples() if s.name == "deployment_status" and s.labels.get("deployment") in ours
        and s.value == 2
    )  # fmt: skip


def curl_loop(url: str, queries: Sequence[str], *, minutes: float, tmp: Path) -> tuple[float, float]:
    """The queries once an interval for ``minutes``, by curl processes of a shell loop: (CPU seconds of the
    loop and its children, wall seconds)."""
    file = tmp / "queries.txt"
    file.write_text("".join(q + "\n" for q in queries))
    rounds = max(1, round(minutes * 60 / INTERVAL))
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    subprocess.run(["bash", "-c", CURL_LOOP, "curl-loop", url, str(file), str(rounds), f"{INTERVAL:g}"], check=True)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def run(*, minutes: float, deployments: int) -> tuple[str, list[tuple[str, str, str, str]]]:
    """The figure's title and rows (what, watcher, baseline, ratio)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    targets = names(deployments)
    expected = expected_per_minute(deployments=deployments)
    baseline_minutes = min(BASELINE_MINUTES, minutes)
    window = max(11 * 60, (minutes + 4) * 60)  # longer than the whole run: no analysis ends meanwhile
    loads = [load_average()]
    with exporter(targets) as port:
        prometheus = run_prometheus(tmp / "prometheus", scrape_config(tmp / "prometheus", port))
        processes: list[WatcherProcess] = []
        try:
            probe = fill(str(CHECKS[0]["query"]), {"deployment": targets[-1]})
            deadline = time.monotonic() + 120
            while not prometheus.query(probe):  # two scrapes in the rate's minute: the checks have data
                assert time.monotonic() < deadline, "Prometheus has no rate of the exporter's series"
                time.sleep(1)

            # Baselines: the curl loop, and meanwhile a watcher with analysis off at the same deployments.
            off = watcher(tmp / "off", prometheus_url="", window=window)
            processes.append(off)
            report(off, targets)
            off_cpu = cpu_seconds(off.process.pid)
            counted = prometheus_queries(prometheus)
            curl_cpu, curl_wall = curl_loop(
                f"http://127.0.0.1:{prometheus.port}", filled_queries(targets), minutes=baseline_minutes, tmp=tmp
            )
            curl_queries = prometheus_queries(prometheus) - counted
            off_cpu_min = (cpu_seconds(off.process.pid) - off_cpu) / curl_wall * 60
            off_rss = rss_bytes(off.process.pid)
            off.stop()
            loads.append(load_average())

            # The watcher analysing every deployment.
            on = watcher(tmp / "on", prometheus_url=f"http://127.0.0.1:{prometheus.port}", window=window)
            processes.append(on)
            report(on, targets)
            # Every analysis is measuring once the reports are in; a first round of queries passes.
            warm = deployments * len(CHECKS)
            on.wait_for("every analysis measuring", lambda: sum(watcher_queries(on).values()) >= warm, timeout=180)
            time.sleep(5)  # the first round's last answers
            pid = on.process.pid
            queries_before, ours_before = prometheus_queries(prometheus), watcher_queries(on)
            cpu_before, started = cpu_seconds(pid), time.monotonic()
            rss = [rss_bytes(pid)]
            while (elapsed := time.monotonic() - started) < minutes * 60:
                time.sleep(min(SAMPLE_EVERY * len(rss) - elapsed, minutes * 60 - elapsed))
                if time.monotonic() - started >= SAMPLE_EVERY * len(rss) - 0.01:
                    rss.append(rss_bytes(pid))
            wall = time.monotonic() - started
            cpu = cpu_seconds(pid) - cpu_before
            queries = prometheus_queries(prometheus) - queries_before
            ours = {k: v - ours_before.get(k, 0) for k, v in watcher_queries(on).items()}
            running = in_progress(on, targets)
            loads.append(load_average())
            on.stop()
        finally:
            for process in processes:
                process.stop()
            prometheus.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    growth = Growth(tuple(rss))
    per_minute = queries / wall * 60
    cpu_min = cpu / wall * 60
    curl_min = curl_cpu / curl_wall * 60
    curl_rate = curl_queries / curl_wall * 60
    title = (
        f"10. Rollout analysis: {deployments} deployments × {len(CHECKS)} checks every {INTERVAL:g} s, through the "
        f"CI/CD API, over {wall / 60:.1f} min (baselines over {curl_wall / 60:.1f} min); load average "
        f"{' → '.join(loads)}"
    )
    rows = [
        ("Prometheus queries per minute, counted by Prometheus", f"{per_minute:.1f}",
         f"{expected:g} expected", "≤ expected ✓" if per_minute <= expected else "MORE THAN EXPECTED ✗"),
        ("same, by the watcher's own counter (ok/nodata/error)",
         "/".join(f"{ours.get(r, 0) / wall * 60:.1f}" for r in ("ok", "nodata", "error")), "", ""),
        ("rollouts still in progress (gate analysis) at the end", f"{running}", f"{deployments}", ""),
        ("CPU seconds per minute", f"{cpu_min:.3f} s",
         f"{curl_min:.3f} s (curl loop, {curl_rate:.0f} queries/min)", f"{cpu_min / curl_min:.2f}× the loop"),
        ("same, against the watcher with analysis off", f"{cpu_min:.3f} s", f"{off_cpu_min:.3f} s",
         f"+{cpu_min - off_cpu_min:.3f} s for the analysis"),
        (f"RSS every {SAMPLE_EVERY:g} s: first / last / max", f"{mib(growth.first)} / {mib(growth.last)} / "
         f"{mib(growth.max)}", f"{mib(off_rss)} (analysis off)", f"growth {growth.growth:+.1%}"),
        ("RSS samples (MiB)", " ".join(f"{s / 1024 / 1024:.1f}" for s in growth.samples), "", ""),
    ]  # fmt: skip
    return title, rows
