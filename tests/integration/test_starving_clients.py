"""Clients that would starve a real `python -m watcher`: event streams held open up to its descriptor
limit (``ulimit -n``), connections that take every descriptor, and browser pages reaching it under a
foreign name (DNS rebinding). No Docker Engine needed: deployments come through the CI/CD API."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import API_TOKEN, WatcherProcess, report_service, start_watcher, stream

OPEN_FILES = 128  # the watcher's descriptor limit: idle, it uses about 20
MAX_STREAMS, PER_ADDRESS = 40, 16
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 12)]  # loopback: any 127/8 address is ours


def timed_get(watcher: WatcherProcess, path: str) -> tuple[int, float]:
    started = time.monotonic()
    status, _, _ = watcher.get(path)
    return status, time.monotonic() - started


@contextlib.contextmanager
def closing_all(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for each in sockets:
            each.close()


def test_streams_up_to_the_descriptor_limit_starve_nothing(tmp_path: Path) -> None:
    """Under `ulimit -n 128`, 20 streams from one address and 140 from ten others: 16 and 24 are served
    (the caps), the rest answered 503 with Retry-After and closed; /health, /metrics and the CI/CD API
    answer at once meanwhile, and the refusals make a line per kind, not one per client."""
    watcher = start_watcher(
        tmp_path, f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false", "--log.level=info",
        f"--web.max-stream-clients={MAX_STREAMS}", f"--web.max-stream-clients-per-address={PER_ADDRESS}",
        env={"WATCHER_API_TOKEN": API_TOKEN}, open_files=OPEN_FILES,
    )  # fmt: skip
    heads: list[str] = []
    with closing_all([]) as held:
        try:
            for source in ["127.0.0.1"] * 20 + ADDRESSES * 14:
                client, answer = stream(watcher.port, source)
                held.append(client)
                heads.append(answer)
            health = timed_get(watcher, "/health")
            scrape = timed_get(watcher, "/metrics")
            report_service(watcher, 1)
            watcher.fresh()
            served = watcher.value("deployment_watcher_stream_clients")
            by_address = watcher.value("deployment_watcher_stream_refused_clients_total", limit="address")
            in_all = watcher.value("deployment_watcher_stream_refused_clients_total", limit="total")
        finally:
            code = watcher.stop()
    log = watcher.log.read_text(errors="replace")
    ok = [h for h in heads if h.startswith("HTTP/1.1 200")]
    refused = [h for h in heads if h.startswith("HTTP/1.1 503")]
    assert (len(ok), len(refused)) == (MAX_STREAMS, 160 - MAX_STREAMS), heads[-1]
    assert all("Retry-After: 10" in h and "Connection: close" in h for h in refused), refused[0]
    assert (served, by_address, in_all) == (MAX_STREAMS, 4, 160 - MAX_STREAMS - 4)
    assert health[0] == scrape[0] == 200 and max(health[1], scrape[1]) < 2, (health, scrape)
    assert log.count("refused an event stream client") == 2, watcher.tail()
    assert "leaves fewer than" not in log  # 40 streams and 128 descriptors: no warning at start-up
    assert "Traceback" not in log and "Too many open files" not in log, watcher.tail()
    assert len(log) < 20_000, watcher.tail()
    assert code == 0, watcher.tail()


def test_a_stream_that_hangs_up_frees_its_place_at_once(tmp_path: Path) -> None:
    """With one place on the stream: a client that closes its connection, no event and no keepalive due,
    leaves it to the next client within a couple of seconds (aiohttp tells a handler nothing; the
    next write would have found out, 15 s later)."""
    watcher = start_watcher(
        tmp_path, f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false",
        "--web.max-stream-clients=1",
    )  # fmt: skip
    try:
        first, answer = stream(watcher.port, "127.0.0.1")
        assert answer.startswith("HTTP/1.1 200")
        first.close()
        started = time.monotonic()

        def next_one_served() -> bool:
            client, answer = stream(watcher.port, "127.0.0.1")
            client.close()
            return answer.startswith("HTTP/1.1 200")

        watcher.wait_for("the place free again", next_one_served, timeout=5)
        took = time.monotonic() - started
    finally:
        code = watcher.stop()
    assert took < 3, took
    assert code == 0, watcher.tail()


def test_accept_errors_are_logged_once_and_counted(tmp_path: Path) -> None:
    """Connections that never send a request take every descriptor (the caps above cannot help): the
    accept loop's errors make one log line and a count, not a traceback per connection, and once they
    go the watcher serves again. At start-up, it warned that its stream caps did not fit its limit."""
    watcher = start_watcher(
        tmp_path, f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false", "--log.level=info",
        open_files=OPEN_FILES,
    )  # fmt: skip
    try:
        with closing_all([]) as idle:
            for _ in range(OPEN_FILES + 20):
                idle.append(socket.create_connection(("127.0.0.1", watcher.port), timeout=5))
            watcher.wait_for("the first accept error", lambda: "(EMFILE)" in watcher.log.read_text(errors="replace"))
            time.sleep(1.5)  # the point: the accept loop retries (every second) while still full, logging no more
        watcher.wait_for("the watcher serving again", lambda: timed_get(watcher, "/health")[0] == 200)
        watcher.fresh()
        errors = watcher.value("deployment_watcher_http_accept_errors_total", kind="EMFILE")
    finally:
        code = watcher.stop()
    log = watcher.log.read_text(errors="replace")
    assert errors is not None and errors >= 1
    assert log.count("cannot accept connections: Too many open files (EMFILE)") == 1, watcher.tail()
    assert "web.max_stream_clients (256) leaves fewer than 64 of the process's 128 file descriptors" in log
    assert "Traceback" not in log, watcher.tail()
    assert len(log) < 20_000, watcher.tail()
    assert code == 0, watcher.tail()


def get_with(watcher: WatcherProcess, path: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(watcher.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_page_rebound_to_the_watcher_reads_nothing(tmp_path: Path) -> None:
    """DNS rebinding, as a browser makes the requests: ``Host: attacker.example`` with fetch metadata is
    refused with 403 on the board, the API, the stream and /metrics (one log line); the same without
    browser headers (Prometheus scraping by a service name) is served, and so is a browser using the
    address, localhost or a name in web.allowed_hosts."""
    watcher = start_watcher(
        tmp_path, f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false", "--log.level=info",
        "--web.allowed-hosts=watcher.example.com,board.example.com", env={"WATCHER_API_TOKEN": API_TOKEN},
    )  # fmt: skip
    browser = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
    try:
        report_service(watcher, 1)
        rebound = {"Host": f"attacker.example:{watcher.port}", **browser}
        refused = [get_with(watcher, path, rebound) for path in ("/", "/api/v1/deployments", "/api/v1/events",
                                                                 "/metrics", "/deployment?name=x")]  # fmt: skip
        scraped = get_with(watcher, "/metrics", {"Host": "attacker.example"})
        allowed = [
            get_with(watcher, "/api/v1/deployments", {"Host": host, **browser})
            for host in (f"127.0.0.1:{watcher.port}", f"localhost:{watcher.port}", "watcher.example.com")
        ]
        watcher.fresh()
        counted = watcher.value("deployment_watcher_host_refusals_total", kind="name")
    finally:
        code = watcher.stop()
    assert all(status == 403 and "web.allowed_hosts" in body for status, body in refused), refused
    assert scraped[0] == 200 and "deployment_watcher_build_info" in scraped[1]
    assert all(status == 200 and "service-0001" in body for status, body in allowed), allowed
    assert counted == len(refused)
    assert watcher.log.read_text().count("DNS rebinding") == 1, watcher.tail()
    assert code == 0, watcher.tail()
