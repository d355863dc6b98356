"""A small application of the test's own for rollout analysis against a real Prometheus: it serves
``http_requests_total{code}`` and the latency histogram ``http_request_duration_seconds`` growing at
the rates and latency the test sets, one application per metrics path (one per scrape job, i.e. per
deployment), and Prometheus's scrape configuration for it (every second)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import yaml

from tests.conftest import Prometheus
from tests.polling import poll

# The latency histogram's buckets (the Prometheus client's defaults).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class App:
    """``http_requests_total{code}`` growing at the rates the test sets (requests a second), every request
    taking ``latency`` seconds in ``http_request_duration_seconds``. Zero rates: no traffic (the checks'
    ratios and quantiles are then NaN: no data)."""

    def __init__(self, *, ok: float = 99.0, errors: float = 1.0, latency: float = 0.08) -> None:
        self._lock = threading.Lock()
        self._since = time.time()
        self._totals = {"200": 0.0, "500": 0.0}
        self._rates = {"200": ok, "500": errors}
        self._seconds = 0.0  # the histogram's sum so far
        self._latency = latency

    def set(self, *, ok: float, errors: float, latency: float | None = None) -> None:
        with self._lock:
            self._totals, self._seconds = self._now()
            self._since = time.time()
            self._rates = {"200": ok, "500": errors}
            if latency is not None:
                self._latency = latency

    def _now(self) -> tuple[dict[str, float], float]:
        elapsed = time.time() - self._since
        totals = {code: self._totals[code] + rate * elapsed for code, rate in self._rates.items()}
        return totals, self._seconds + sum(self._rates.values()) * elapsed * self._latency

    def exposition(self) -> bytes:
        with self._lock:
            totals, seconds = self._now()
            latency = self._latency
        count = sum(totals.values())
        lines = ["# TYPE http_requests_total counter"]
        lines += [f'http_requests_total{{code="{code}"}} {value:.3f}' for code, value in totals.items()]
        lines.append("# TYPE http_request_duration_seconds histogram")
        lines += [
            f'http_request_duration_seconds_bucket{{le="{le}"}} {count if latency <= le else 0.0:.3f}' for le in BUCKETS
        ]
        lines.append(f'http_request_duration_seconds_bucket{{le="+Inf"}} {count:.3f}')
        lines += [
            f"http_request_duration_seconds_sum {seconds:.6f}",
            f"http_request_duration_seconds_count {count:.3f}",
        ]
        return ("\n".join(lines) + "\n").encode()


class AppServer:
    """An HTTP server on 127.0.0.1 serving one ``App`` per metrics path (404 for any other path)."""

    def __init__(self) -> None:
        self.apps: dict[str, App] = {}
        apps = self.apps

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served = apps.get(self.path)
                if served is None:
                    self.send_error(404)
                    return
                body = served.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="analysis-app", daemon=True).start()

    def app(self, path: str = "/metrics", **rates: float) -> App:
        """The application at ``path``, made with ``rates`` (``App``'s) the first time."""
        return self.apps.setdefault(path, App(**rates))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def scrape_config(directory: Path, app_port: int, jobs: Mapping[str, str] | None = None) -> Path:
    """A Prometheus configuration scraping the application every second: one job per entry of ``jobs``
    (job name → metrics path; by default the job ``web`` at ``/metrics``)."""
    jobs = {"web": "/metrics"} if jobs is None else jobs
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}
            for job, path in jobs.items()
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for_rates(prometheus: Prometheus, query: str, expected: float, *, timeout: float = 30) -> None:
    """Until Prometheus answers ``query`` with ``expected`` (one series)."""

    def close() -> bool:
        result = prometheus.query(query)
        return len(result) == 1 and abs(float(result[0]["value"][1]) - expected) < 1e-4

    poll(f"{query} = {expected} in Prometheus", close, timeout=timeout, interval=0.5)
