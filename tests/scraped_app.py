"""A small application of the test's own that a real Prometheus scrapes for rollout analysis:
``http_requests_total{code}`` growing at the rates the test sets, served on 127.0.0.1; and the
Prometheus config that scrapes it every second under a job name (the checks' ``{{deployment}}``)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


class App:
    """``http_requests_total{code}`` growing at the rates the test sets (requests a second)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = time.time()
        self._totals = {"200": 0.0, "500": 0.0}
        self._rates = {"200": 99.0, "500": 1.0}

    def set(self, *, ok: float, errors: float) -> None:
        with self._lock:
            self._totals = self._now()
            self._since = time.time()
            self._rates = {"200": ok, "500": errors}

    def _now(self) -> dict[str, float]:
        elapsed = time.time() - self._since
        return {code: self._totals[code] + rate * elapsed for code, rate in self._rates.items()}

    def exposition(self) -> bytes:
        with self._lock:
            totals = self._now()
        lines = ["# TYPE http_requests_total counter"]
        lines += [f'http_requests_total{{code="{code}"}} {value:.3f}' for code, value in totals.items()]
        return ("\n".join(lines) + "\n").encode()


class AppServer:
    """``app`` served over HTTP on 127.0.0.1 (any path), in a thread, until ``stop``."""

    def __init__(self, app: App) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = app.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="scraped-app", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def scrape_config(directory: Path, app_port: int, *, job: str = "web") -> Path:
    """A Prometheus config scraping the app every second as ``job``."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path
