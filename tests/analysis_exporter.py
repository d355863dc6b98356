"""A scrape target serving the rollout analysis families (docs/analysis.md) in the watcher's format, for
the deploy kit's tests whose watchers run no analysis: the dashboard's analysis panels and the
DeploymentAnalysisFailed alert read these series in a real Prometheus. (An analysis needs a Prometheus
before the rollouts and a scraped application; the analysis's own tests run those.)"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASSED, FAILED = 1, 0  # deployment_analysis_status's values (watcher.domain.analysis.Outcome)


def exposition(analyses: Mapping[tuple[str, str], int]) -> str:
    """The four families for each (deployment, environment) with this outcome: one check, error_rate,
    with its current value and baseline (three times the baseline when failed) and its measurements
    by result; the watcher's own query counter."""
    status = ["# TYPE deployment_analysis_status gauge"]
    values = ["# TYPE deployment_analysis_value gauge"]
    measurements = ["# TYPE deployment_analysis_measurements_total counter"]
    for (deployment, environment), outcome in sorted(analyses.items()):
        labels = f'deployment="{deployment}",environment="{environment}"'
        status.append(f"deployment_analysis_status{{{labels}}} {outcome}")
        current = 0.012 if outcome == FAILED else 0.004
        for sample, value in (("current", current), ("baseline", 0.004)):
            values.append(f'deployment_analysis_value{{{labels},check="error_rate",sample="{sample}"}} {value}')
        counts = {"pass": 1, "fail": 2} if outcome == FAILED else {"pass": 10}
        for result in ("pass", "fail", "nodata", "error"):
            measurements.append(
                f'deployment_analysis_measurements_total{{{labels},check="error_rate",result="{result}"}} '
                f"{counts.get(result, 0)}"
            )
    queries = ["# TYPE deployment_watcher_analysis_queries_total counter"]
    for result, count in (("ok", 13), ("nodata", 0), ("error", 0)):
        queries.append(f'deployment_watcher_analysis_queries_total{{result="{result}"}} {count}')
    return "\n".join([*status, *values, *measurements, *queries]) + "\n"


class AnalysisExporter:
    """An HTTP server on 127.0.0.1 answering every GET with ``exposition(analyses)``."""

    def __init__(self, analyses: Mapping[tuple[str, str], int]) -> None:
        body = exposition(analyses).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="analysis-exporter", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
