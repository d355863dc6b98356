"""Issue #21's memory breakdown: a real watcher (``python -m watcher``), deployments reported through
the CI/CD API, then its RSS, and (``--trace``) a tracemalloc snapshot taken in it after a full
collection, grouped by file:line and by package.

    python -m tests.scale --deployments 1000 --versions 3 [--trace] [--top 15]

``SCALE_SOURCE``: a directory whose ``watcher`` package to run instead (an older checkout, for a
before/after). The traced run is slower and larger than the plain one: read RSS from a plain run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections import defaultdict
from contextlib import suppress
from pathlib import Path

from tests.benchmark import TOKEN, Scraper, _report_deployments
from tests.conftest import free_port
from tests.procstats import rss_bytes
from watcher.config import Settings

T0 = 1_700_000_000.0
SETTLE_SECONDS = 4.0  # the last save (debounced 1 s) and rendering after the reports
# Run inside the watcher with --trace: SIGUSR1 writes a snapshot after a full collection.
TRACED = """
import gc, os, runpy, signal, sys, tracemalloc
tracemalloc.start(1)
def dump(signum, frame):
    gc.collect()
    tracemalloc.take_snapshot().dump(os.environ["SCALE_SNAPSHOT"] + ".part")
    os.replace(os.environ["SCALE_SNAPSHOT"] + ".part", os.environ["SCALE_SNAPSHOT"])
signal.signal(signal.SIGUSR1, dump)
sys.argv[0] = "watcher"
runpy.run_module("watcher", run_name="__main__", alter_sys=True)
"""


def measure(*, deployments: int, versions: int, trace: bool, top: int) -> None:
    port, data = free_port(), tempfile.mkdtemp(prefix="watcher-scale-")
    snapshot_path = Path(data) / "snapshot"
    env = {**os.environ, "WATCHER_API_TOKEN": TOKEN, "SCALE_SNAPSHOT": str(snapshot_path)}
    # Run from that directory: its ``watcher`` comes first on the path, before the installed one.
    source = os.environ.get("SCALE_SOURCE", os.getcwd())
    code = ["-c", TRACED] if trace else ["-m", "watcher"]
    args = [
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warning",
        f"--storage.directory={data}/state",
        "--retention.max-deployments=6000",
    ]  # containers of other runs on the host add deployments
    watcher = subprocess.Popen([sys.executable, *code, *args], env=env, cwd=source)
    try:
        for _ in range(600):  # a traced watcher on a busy machine takes a while
            with suppress(OSError):
                Scraper(port).scrape("/health")
                break
            time.sleep(0.1)
        assert watcher.poll() is None, "the watcher did not start"
        idle = rss_bytes(watcher.pid)
        started = time.monotonic()
        asyncio.run(_report_deployments(port, deployments=deployments, versions=versions))
        reported = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        busy = rss_bytes(watcher.pid)
        file_bytes = (Path(data) / "state" / "state.json").stat().st_size
        scraped, served = 0, busy  # a traced watcher takes minutes over a plain /metrics: not served
        if not trace:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
                scraped = len(response.read())  # the plain text format, as most scrapers ask
            time.sleep(SETTLE_SECONDS)
            served = rss_bytes(watcher.pid)
        mb = 1024 * 1024
        print(f"{deployments:,} deployments × {versions} versions ({reported:.1f} s to report): RSS idle "
              f"{idle / mb:.1f} MB, after the reports {busy / mb:.1f} MB, after one plain-text /metrics ({scraped / mb:.1f} MB) "
              f"{served / mb:.1f} MB; state file {file_bytes / mb:.2f} MB")  # fmt: skip
        if trace:
            watcher.send_signal(signal.SIGUSR1)
            for _ in range(600):
                if snapshot_path.exists():
                    break
                time.sleep(0.1)
            _breakdown(tracemalloc.Snapshot.load(str(snapshot_path)), top=top)
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def _breakdown(snapshot: tracemalloc.Snapshot, *, top: int) -> None:
    mib = 1024 * 1024
    stats = snapshot.statistics("lineno")
    print(f"traced, live after gc: {sum(s.size for s in stats) / mib:.1f} MiB")
    by_package: dict[str, int] = defaultdict(int)
    for stat in stats:
        name = stat.traceback[0].filename
        part = (
            name.split("/watcher/", 1)[1].split("/")[0] if "/watcher/" in name and "site-packages" not in name else ""
        )
        by_package[f"watcher/{part}" if part else ("site-packages" if "site-packages" in name else "other")] += (
            stat.size
        )
    for package, size in sorted(by_package.items(), key=lambda item: -item[1]):
        print(f"  {package:28} {size / mib:7.2f} MiB")
    print(f"top {top} by file:line")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = frame.filename.split("/wt-scale-state/")[-1].split("site-packages/")[-1].split("/tmp/")[-1]
        print(f"  {stat.size / mib:7.2f} MiB {stat.count:8,} blocks  {where}:{frame.lineno}")


def cost(sizes: tuple[int, ...] = (50, 1_000, 5_000), *, reports: int = 400) -> None:
    """In this process: the CPU of one report applied, and of the state file's encoding after it, at
    each size (what the report path costs beyond HTTP and rendering). The ``watcher`` on the path
    decides what is measured: ``cd`` to an older checkout with this repository on PYTHONPATH for a before."""
    from watcher.domain.machine import apply
    from watcher.domain.model import DeploymentKey, State, Status
    from watcher.domain.observations import RolloutReported, Tick
    from watcher.persistence import codec

    settings = Settings()
    for size in sizes:
        state = State()
        for n in range(size):
            key = DeploymentKey(f"service-{n:04d}", ("production", "staging")[n % 2])
            report = RolloutReported(at=T0, key=key, version="1.0.0", commit="c", status=Status.SUCCESS)
            state = apply(state, report, now=T0, settings=settings).state
        state = apply(state, Tick(T0 + 1), now=T0 + 1, settings=settings).state
        encoder = getattr(codec, "Encoder", None)
        encode = encoder().encode if encoder else codec.encode
        encode(state)
        applied = encoded = 0.0
        for r in range(reports):
            key = DeploymentKey(f"service-{r % size:04d}", ("production", "staging")[r % size % 2])
            report = RolloutReported(at=T0 + 2 + r, key=key, version=f"2.{r}.0", commit="d", status=Status.SUCCESS)
            started = time.process_time()
            state = apply(state, report, now=T0 + 2 + r, settings=settings).state
            applied += time.process_time() - started
            started = time.process_time()
            encode(state)
            encoded += time.process_time() - started
        print(f"{size:6,} deployments: apply {applied / reports * 1e6:8.0f} µs per report, "
              f"state file encoding after it {encoded / reports * 1e3:7.2f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--trace", action="store_true", help="a tracemalloc breakdown (a slower run)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--cost", action="store_true", help="in process: CPU per report and per save, by size")
    arguments = parser.parse_args()
    if arguments.cost:
        cost()
        return
    measure(deployments=arguments.deployments, versions=arguments.versions, trace=arguments.trace, top=arguments.top)


if __name__ == "__main__":
    main()
