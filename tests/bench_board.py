"""The board at 5,000 deployments (#22): its first paint in headless Chromium (Debian's), and /health
while 100 loads of it arrive at once, beside /health alone, in the same run.

    python -m tests.benchmark board          # figure 8 (the board's render) and this one
    python -m tests.bench_board              # this one alone

The summary's counts are over all 5,000; the table shows a page of them (watcher.web.boardparts).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.conftest import require_binary
from tests.served import serving
from watcher.config import Settings
from watcher.domain.machine import apply
from watcher.domain.model import Deployment, DeploymentKey, State, Status
from watcher.domain.observations import RolloutReported
from watcher.exposition.rendering import Exposition
from watcher.selfmetrics import SelfMetrics
from watcher.web.app import make_app
from watcher.web.board import Board
from watcher.web.stream import EventStream

PAINT_LIMIT = 1.0  # seconds: the bound for the first paint at 5,000 deployments
HEALTH_LIMIT = 0.1  # seconds: /health's p99 while 100 loads arrive
Row = tuple[str, str, str, str]


def board_state(deployments: int, *, settings: Settings, now: float) -> State:
    """``deployments`` deployments, a few failed and in progress, started over the last two days."""
    key = DeploymentKey("service-0000", "production")
    report = RolloutReported(at=now, key=key, version="1.0.0", commit="c" * 40, status=Status.SUCCESS,
                             started_at=now, finished_at=now)  # fmt: skip
    one = apply(State(), report, now=now, settings=settings).state.deployments[key]
    made: dict[DeploymentKey, Deployment] = {}
    for n in range(deployments):
        status = Status.FAILED if n % 97 == 0 else Status.IN_PROGRESS if n % 41 == 0 else Status.SUCCESS
        rollout = dataclasses.replace(one.rollout, status=status, started_at=now - n * 35.0)
        key = DeploymentKey(f"service-{n:04d}", ("production", "staging")[n % 2])
        made[key] = dataclasses.replace(one, key=key, rollout=rollout)
    return State(made)


def app_of(snapshot: Callable[[], State], settings: Settings) -> web.Application:
    own = CollectorRegistry()
    metrics = SelfMetrics(own)
    exposition = Exposition(snapshot=snapshot, registry=own, settings=settings, metrics=metrics)
    stream = EventStream(snapshot=snapshot, settings=settings, metrics=metrics)
    board = Board(snapshot=snapshot, settings=settings, stream=stream, clock=time.time, metrics=metrics)
    return make_app(exposition=exposition, ready=lambda: True, board=board)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def first_paints(port: int, *, loads: int) -> list[float]:
    """first-contentful-paint of ``loads`` loads of the board (after one to warm up), in seconds."""
    from playwright.sync_api import sync_playwright

    paints = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=require_binary("chromium"), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            for n in range(loads + 1):
                page.goto(f"http://127.0.0.1:{port}/?load={n}", wait_until="load")
                fcp = "performance.getEntriesByName('first-contentful-paint')"
                entry: Any = None
                while entry is None:  # reported a frame after the paint (no wait_for_function: the CSP has no eval)
                    entry = page.evaluate(f"{fcp}.length ? {fcp}[0].startTime : null")
                    if entry is None:
                        page.wait_for_timeout(20)
                paints.append(float(entry) / 1000)
        finally:
            browser.close()
    return paints[1:]


async def health_under_loads(port: int, *, loads: int, probes: int = 200) -> tuple[list[float], list[float]]:
    """/health's times alone, then while ``loads`` loads of the board arrive at once (again and again)."""
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def probe() -> float:
            started = time.perf_counter()
            async with session.get(url + "/health") as answer:
                await answer.read()
            return time.perf_counter() - started

        alone = [await probe() for _ in range(probes)]

        async def load(n: int) -> None:
            async with session.get(url + f"/?page={1 + n % 3}") as answer:
                await answer.read()

        loaded: list[float] = []
        while len(loaded) < probes:
            burst = [asyncio.create_task(load(n)) for n in range(loads)]
            while not all(task.done() for task in burst):
                loaded.append(await probe())
                await asyncio.sleep(0.005)
            await asyncio.gather(*burst)
    return alone, loaded


def figure(*, deployments: int = 5000, loads: int = 5, concurrent: int = 100) -> tuple[str, list[Row]]:
    """The figure's title and rows (what, the board, baseline, verdict)."""
    settings, now = Settings(), time.time()
    large, small = board_state(deployments, settings=settings, now=now), board_state(10, settings=settings, now=now)
    # A new state object every 50 ms: each burst of loads finds a page to render again, as after a change.
    current = {"state": large}

    def changing() -> State:
        return current["state"]

    stop = threading.Event()

    def churn() -> None:
        while not stop.wait(0.05):
            current["state"] = State(dict(large.deployments))

    with serving(app_of(changing, settings)) as port, serving(app_of(lambda: small, settings)) as small_port:
        paint = statistics.median(first_paints(port, loads=loads))
        paint_small = statistics.median(first_paints(small_port, loads=loads))
        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        try:
            alone, loaded = asyncio.run(health_under_loads(port, loads=concurrent))
        finally:
            stop.set()
            thread.join()
    rows: list[Row] = [
        (f"first paint, {deployments:,} deployments", f"{paint * 1000:.0f} ms", f"{paint_small * 1000:.0f} ms",
         "under 1 s" if paint < PAINT_LIMIT else "OVER 1 s"),
        (f"/health p99, {concurrent} loads at once", f"{p99(loaded) * 1000:.1f} ms", f"{p99(alone) * 1000:.1f} ms",
         "under 100 ms" if p99(loaded) < HEALTH_LIMIT else "OVER 100 ms"),
        ("/health median, same", f"{statistics.median(loaded) * 1000:.1f} ms",
         f"{statistics.median(alone) * 1000:.1f} ms", f"{len(loaded)} probes"),
    ]  # fmt: skip
    title = (f"8b. The board at {deployments:,} deployments: first contentful paint in headless Chromium (median of "
             f"{loads}; baseline: 10 deployments), and /health during {concurrent} concurrent loads (baseline: alone)")  # fmt: skip
    return title, rows


if __name__ == "__main__":
    name, found = figure()
    print(f"\n## {name}")
    for what, ours, base, verdict in found:
        print(f"  {what:<40}  {ours:>10}  baseline {base:>10}  {verdict}")
