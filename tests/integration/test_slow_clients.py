"""Clients that do not read, against a real `python -m watcher`: 200 connections pipelining GET
/metrics and never reading the answers cost a bounded amount of memory, and a scraper is still
served meanwhile. No Docker Engine needed: deployments come through the CI/CD API."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from tests.conftest import API_TOKEN, report_service, start_watcher

DEPLOYMENTS = 300  # a plain-text body of about 650 KB
CLIENTS = 200
PIPELINED = 1000  # requests each client sends in one go
MB = 1024 * 1024
# Per connection aiohttp parses at most 32 pipelined requests ahead (~50 KB of objects), and the
# watcher holds one 16 KB slice of a body in the transport's buffer: ~70 KB, 14 MB for 200
# clients, and allocator slack. Each used to hold a copy of the whole body: 150 MB here.
GROWTH_BOUND = 30 * MB
# Half Prometheus' default scrape_timeout (10 s): ~20 ms alone, 2.2 s once beside the parallel suite.
SCRAPE_BOUND = 5.0


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_pipelining_clients_that_never_read_cost_bounded_memory(tmp_path: Path) -> None:
    """200 clients each pipelining 1,000 GET /metrics (650 KB bodies) without reading: the watcher
    grows by less than 30 MB, and a scraper gets /metrics within SCRAPE_BOUND meanwhile."""
    watcher = start_watcher(
        tmp_path, f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false", "--log.level=info",
        env={"WATCHER_API_TOKEN": API_TOKEN},
    )  # fmt: skip
    sockets: list[socket.socket] = []
    try:
        for n in range(DEPLOYMENTS):
            report_service(watcher, n)
        watcher.wait_for("the deployments in /metrics", lambda: len(watcher.get("/metrics")[2]) > 500_000)
        before = peak = rss(watcher.process.pid)
        pipeline = b"GET /metrics HTTP/1.1\r\nHost: watcher\r\n\r\n" * PIPELINED
        unsent = []
        for _ in range(CLIENTS):
            client = socket.create_connection(("127.0.0.1", watcher.port))
            client.setblocking(False)
            sockets.append(client)
            unsent.append(memoryview(pipeline))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # send what the kernel takes, read nothing
            for i, client in enumerate(sockets):
                if unsent[i]:
                    with contextlib.suppress(BlockingIOError):
                        unsent[i] = unsent[i][client.send(unsent[i]) :]
            peak = max(peak, rss(watcher.process.pid))
            time.sleep(0.05)
        started = time.monotonic()
        status, _, body = watcher.get("/metrics")
        took = time.monotonic() - started
        peak = max(peak, rss(watcher.process.pid))
    finally:
        for client in sockets:
            client.close()
        code = watcher.stop()
    assert status == 200 and "service-0299" in body
    assert took < SCRAPE_BOUND, f"the scrape took {took:.2f} s"
    assert peak - before < GROWTH_BOUND, f"RSS grew by {(peak - before) / MB:.0f} MB\n{watcher.tail()}"
    assert code == 0, watcher.tail()
