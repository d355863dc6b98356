"""The soak: one watcher process against a hostile fake engine and hostile clients, for minutes.

``python -m tests.benchmark soak --minutes 10`` runs it; ``tests/integration/test_soak.py`` runs it for
seconds so it cannot rot. The watcher (``python -m watcher``, a subprocess) follows the fake
Docker Engine of ``tests/hostile_engine.py`` served by this process, which throws random faults
for the whole run while containers are rolled out, crash, turn (un)healthy and are removed, and
while hostile clients hit the watcher's HTTP side (event streams among them, far beyond its caps,
under a descriptor limit they would exhaust without the caps). Every few seconds: the process is alive,
``/metrics`` parses, and its RSS is sampled. At the end the faults stop, the watcher must
reconnect and resync, and its state must equal a clean resync's (``view``); then it is hung up
on (SIGHUP): it must stop cleanly, its final save holding every deployment it showed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import resource
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.hostile_engine import FAULTS, HostileEngine
from tests.procstats import rss_bytes
from watcher.domain.model import DeploymentKey
from watcher.persistence import codec, statefile
from watcher.wire import REPORTS_PATH

USER, PASSWORD = "prometheus", "soak-password"
ENVIRONMENT = "soak"
NAMES = tuple(f"app-{i}" for i in range(8))
MAX_CONTAINERS = 40  # the fake engine's containers, bounded so the machine is not the bottleneck
CHAOS = 0.02  # a random fault per request and per event, on top of the explicit ones
FAULT_EVERY = 3.0  # seconds between explicit faults
BEYOND_CAP_EVERY = 60.0  # a 17 MiB event line this often (costly on both sides)
CHECK_EVERY = 2.0
# The soaked watcher's descriptor limit (ulimit -n) and stream caps: a stream flood would take every
# descriptor without the caps (and did: "Too many open files" and a traceback per connection). A
# burst of connections beyond the limit still meets it for a moment (the accept loop takes 128 at a
# time, before any is answered): the watcher must say so a few times a minute at most, and serve on.
OPEN_FILES = 256
DESCRIPTOR_LINES_PER_MINUTE = 5  # the accept loop, the state file, the Docker watch: once a minute each
STREAM_CAPS = ("--web.max-stream-clients=64", "--web.max-stream-clients-per-address=16")
FLOOD_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(2, 10))  # loopback: any 127/8 address is ours
# Deploy tooling whose clock runs hours ahead (within the day a unit mistake is told from): its
# times are refused as skew and its deployments must go on as usual, never frozen ("stale").
API_TOKEN = "soak-api-token-0123456789abcdef"
REPORT_ENVIRONMENT = "soak-reports"  # deployments known from reports alone: no containers, not compared
REPORT_NAMES = tuple(f"reported-{i}" for i in range(3))
SKEW_SECONDS = 8 * 3600.0
RSS_TOLERANCE = 0.20
WATCHER_FLAGS = (
    "--docker.backoff-initial-seconds=0.05",
    "--docker.backoff-max-seconds=1",
    "--docker.request-timeout-seconds=2",
    "--docker.silence-seconds=5",
    "--stats.enabled=true",
    "--stats.source=api",
    "--stats.interval-seconds=2",
    "--rollout.stable-seconds=1",
    "--exposition.max-staleness-seconds=1",
    "--log.level=info",
)
Member = tuple[str, bool, str, int | None]  # version, running, health, exit code
View = dict[tuple[str, str], dict[str, Any]]


@dataclass
class Result:
    seconds: float
    warmup_seconds: float
    rss_tolerance: float = RSS_TOLERANCE
    rss_start: int = 0  # bytes, the first sample after the warm-up
    rss_end: int = 0  # after the final resync
    rss_max: int = 0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds in, bytes) at each check
    checks: int = 0
    scrape_failures: list[str] = field(default_factory=list)
    scrape_max_seconds: float = 0.0
    faults: int = 0
    changes: int = 0
    hostile: dict[str, int] = field(default_factory=dict)  # hostile client connections, by kind
    docker_errors: dict[str, float] = field(default_factory=dict)
    resyncs: float = 0.0
    exited: str = ""  # how the watcher ended, if it did
    deployments: int = 0
    containers: int = 0
    compared: bool = False  # the final states were compared (not when the watcher exited before)
    differences: list[str] = field(default_factory=list)
    settled_seconds: float = 0.0
    hung_up: bool = False  # SIGHUP sent at the end, and the watcher stopped
    hangup_problem: str = ""  # what went wrong after it: an exit code, deployments missing from the save
    log_tail: list[str] = field(default_factory=list)  # the soaked watcher's last log lines, on FAIL
    descriptor_errors: int = 0  # log lines of the soaked watcher saying it was out of descriptors
    skewed_reports: int = 0  # rollouts reported with times hours ahead
    skew_problems: list[str] = field(default_factory=list)  # answers that froze or refused such a deployment
    skew_counted: float = 0.0  # deployment_watcher_clock_skew_total at the end

    @property
    def rss_change(self) -> float:
        return (self.rss_end - self.rss_start) / self.rss_start if self.rss_start else float("inf")

    def failures(self) -> list[str]:
        found = []
        if self.exited:
            found.append(f"the watcher exited: {self.exited}")
        if self.scrape_failures:
            found.append(f"{len(self.scrape_failures)} failed /metrics checks, first: {self.scrape_failures[0]}")
        if self.rss_change > self.rss_tolerance:
            found.append(f"RSS grew {self.rss_change:+.1%} (limit +{self.rss_tolerance:.0%})")
        if not self.compared:
            found.append("the final state was not compared")
        if self.differences:
            found.append(f"state differs from a clean resync: {'; '.join(self.differences[:5])}")
        if self.hangup_problem:
            found.append(f"after SIGHUP: {self.hangup_problem}")
        if self.skew_problems:
            found.append(f"{len(self.skew_problems)} wrong answers to skewed reports, first: {self.skew_problems[0]}")
        if self.skewed_reports and not self.skew_counted:
            found.append("skewed reports were not counted in deployment_watcher_clock_skew_total")
        if self.descriptor_errors > DESCRIPTOR_LINES_PER_MINUTE * max(1.0, self.seconds / 60):
            found.append(f"{self.descriptor_errors} log lines of 'Too many open files' (a flood of them)")
        return found

    @property
    def passed(self) -> bool:
        return not self.failures()

    def print(self) -> None:
        mib = 1024 * 1024
        print(f"\n## Soak ({self.seconds:.0f} s of faults, RSS start after {self.warmup_seconds:.0f} s warm-up)")
        print(f"  watcher exited            {self.exited or 'never'}")
        print(f"  /metrics checks           {self.checks}, failed {len(self.scrape_failures)}, "
              f"slowest {self.scrape_max_seconds * 1000:.0f} ms")  # fmt: skip
        print(f"  RSS start / end / max     {self.rss_start / mib:.1f} / {self.rss_end / mib:.1f} / "
              f"{self.rss_max / mib:.1f} MiB ({self.rss_change:+.1%}, limit +{self.rss_tolerance:.0%})")  # fmt: skip
        step = 60.0 if self.seconds >= 120 else 5.0
        marks = {int(at // step): rss for at, rss in self.rss_samples}  # the last sample of each step
        print(f"  RSS every {step:.0f} s         " + " ".join(f"{rss / mib:.1f}" for _, rss in sorted(marks.items())))
        print(f"  daemon faults             {self.faults} explicit + chaos p={CHAOS} per request and event")
        print(f"  container changes         {self.changes}")
        print(f"  hostile connections       {', '.join(f'{k} {v}' for k, v in sorted(self.hostile.items()))}")
        print(f"  'Too many open files'     {self.descriptor_errors} log lines (ulimit -n {OPEN_FILES})")
        print(f"  skewed reports            {self.skewed_reports} rollouts {SKEW_SECONDS / 3600:g} h ahead, "
              f"{self.skew_counted:.0f} times refused as skew, {len(self.skew_problems)} wrong answers")  # fmt: skip
        errors = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.docker_errors.items()) if v)
        print(f"  docker errors counted     {errors or 'none'}; resyncs {self.resyncs:.0f}")
        if self.compared:
            print(f"  final state               {self.deployments} deployments, {self.containers} containers, "
                  f"{'equal to' if not self.differences else 'DIFFERENT from'} a clean resync "
                  f"(settled in {self.settled_seconds:.1f} s)")  # fmt: skip
        else:
            print("  final state               not compared")
        for difference in self.differences[:20]:
            print(f"    {difference}")
        hangup = self.hangup_problem or ("exit 0, every deployment in its final save" if self.hung_up else "not sent")
        print(f"  SIGHUP at the end         {hangup}")
        if self.log_tail:
            print("  the soaked watcher's log ends:")
            for line in self.log_tail:
                print(f"    {line}")
        print("  PASS" if self.passed else "  FAIL: " + "; ".join(self.failures()))


# -- the watcher processes


@dataclass
class Watcher:
    process: asyncio.subprocess.Process
    port: int
    log: Path
    headers: dict[str, str]  # the Authorization header, when the watcher has basic auth

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exited(self) -> str:
        if self.process.returncode is None:
            return ""
        last = self.log.read_text(errors="replace").splitlines()[-1:]
        return f"exit code {self.process.returncode} ({' '.join(last)})"

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


async def start_watcher(
    tmp: Path, name: str, socket_path: Path, *, web_config: Path | None, limited: bool = False
) -> Watcher:
    """A watcher on the engine's socket; ``limited``: under OPEN_FILES descriptors, with STREAM_CAPS."""
    port = free_port()
    log = tmp / f"{name}.log"
    flags = [
        f"--web.listen-address=127.0.0.1:{port}",
        f"--docker.host=unix://{socket_path}",
        f"--storage.directory={tmp}/{name}-state",
        *WATCHER_FLAGS,
    ]
    if web_config is not None:
        flags.append(f"--web.config-file={web_config}")
    if limited:
        flags += STREAM_CAPS
        token = tmp / f"{name}-api-token"
        token.write_text(API_TOKEN)
        flags.append(f"--api.token-file={token}")
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "watcher", *flags, stdout=out, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_limit_open_files if limited else None,
        )  # fmt: skip
    headers = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)} if web_config is not None else {}
    watcher = Watcher(process, port, log, headers)
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            if watcher.exited():
                raise RuntimeError(f"{name} did not start: {watcher.exited()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{watcher.url}/ready", headers=headers) as response:
                    if response.status == 200:
                        return watcher
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{name} not ready after 20 s; log: {log}")


async def scrape(http: aiohttp.ClientSession, watcher: Watcher) -> dict[str, float]:
    """/metrics parsed by Prometheus' parser: each sample by name and sorted labels."""
    async with http.get(f"{watcher.url}/metrics", headers=watcher.headers) as response:
        body = await response.text()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}: {body[:200]}")
    return {
        sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


# -- what "equals a clean resync" compares


async def view(http: aiohttp.ClientSession, watcher: Watcher) -> View:
    """Each deployment that has containers, from the read API: its members' facts (version,
    running, health, exit code, by container id), and where a clean resync can decide them (every
    member of one version, and its current rollout still has one; for the status also all running
    and none unhealthy or starting) the deployment's version and status. History, durations,
    counters and times are left out: a clean watcher never saw the rollouts that led here."""
    async with http.get(f"{watcher.url}/api/v1/deployments", headers=watcher.headers) as response:
        listed = await response.json()
    found: View = {}
    for row in listed["deployments"] if isinstance(listed, dict) else listed:
        env, name = row["environment"], row["name"]
        async with http.get(f"{watcher.url}/api/v1/deployments/{env}/{name}", headers=watcher.headers) as response:
            if response.status == 404:
                continue  # gone since the list
            detail = await response.json()
        members: dict[str, Member] = {
            m["id"]: (m["version"], m["running"], m["health"], None if m["running"] else m["exit_code"])
            for m in detail["members"]
        }
        if not members:
            continue
        entry: dict[str, Any] = {"members": members}
        versions = {m[0] for m in members.values()}
        # A current rollout whose containers were all removed (a failed version cleaned up, the
        # older one left running) is a version no list shows any more: a clean resync cannot know it.
        if len(versions) == 1 and detail["instances"]["current"]:
            entry["version"] = detail["version"]
            if all(m[1] and m[2] in ("none", "healthy") for m in members.values()):
                entry["status"] = detail["status"]
        found[(env, name)] = entry
    return found


def differences(ours: View, clean: View) -> list[str]:
    found = [f"{key} only in the soaked watcher" for key in sorted(ours.keys() - clean.keys())]
    found += [f"{key} only in the clean watcher" for key in sorted(clean.keys() - ours.keys())]
    for key in sorted(ours.keys() & clean.keys()):
        decided = ours[key].keys() & clean[key].keys()  # what both could decide (see ``view``)
        if {k: ours[key][k] for k in decided} != {k: clean[key][k] for k in decided}:
            found.append(f"{key}: soaked {ours[key]} != clean {clean[key]}")
    return found


# -- the daemon's side: containers changing all the time, and faults


class Workload:
    """Rollouts, failed rollouts, crashes, health changes, removals, big execs, untracked noise."""

    def __init__(self, engine: HostileEngine, rng: random.Random) -> None:
        self.engine, self.rng = engine, rng
        self.versions = dict.fromkeys(NAMES, 0)
        self.changes = 0

    def labels(self, name: str) -> dict[str, str]:
        return {"deployment.name": name, "deployment.version": f"1.0.{self.versions[name]}",
                "deployment.environment": ENVIRONMENT}  # fmt: skip

    def of(self, name: str) -> list[str]:
        return [i for i, c in self.engine.containers.items() if c.labels.get("deployment.name") == name]

    def step(self) -> None:
        engine, rng = self.engine, self.rng
        ids = [i for i, c in engine.containers.items() if "deployment.name" in c.labels]
        action = rng.choices(
            ["rollout", "failed_rollout", "crash", "health", "restart", "remove", "exec", "untracked"],
            weights=[4, 1, 2, 4, 2, 1, 1, 1],
        )[0]
        name = rng.choice(NAMES)
        if action in ("rollout", "failed_rollout") and len(engine.containers) < MAX_CONTAINERS - 3:
            old = self.of(name)
            self.versions[name] += 1
            healthcheck = rng.random() < 0.5
            new = [
                engine.run(f"{name}-{self.versions[name]}-{r}", labels=self.labels(name), healthcheck=healthcheck)
                for r in range(rng.randint(1, 3))
            ]
            for made in new:
                if action == "failed_rollout":
                    engine.crash(made, exit_code=rng.choice([1, 2, 137]))
                elif healthcheck:
                    engine.health(made, "healthy")
            if action == "rollout":
                for gone in old:
                    engine.remove(gone)
        elif action == "untracked":
            made = engine.run(f"noise-{self.changes}", labels={"noise": "x" * rng.randint(10, 700_000)})
            engine.remove(made)
        elif ids:
            target = rng.choice(ids)
            if action == "crash":
                engine.crash(target, exit_code=rng.choice([1, 137]))
            elif action == "health":
                engine.health(target, rng.choice(["healthy", "unhealthy", "healthy"]))
            elif action == "restart" and not engine.containers[target].running:
                engine.start_container(target)
            elif action == "remove":
                engine.remove(target)
            elif action == "exec":
                engine.exec(target, ["sh", "-c", "echo " + "z" * rng.choice([10, 1000, 300_000])])
        self.changes += 1


async def faults(engine: HostileEngine, rng: random.Random, result: Result) -> None:
    engine.chaos(CHAOS)
    last_beyond = time.monotonic()
    while True:
        await asyncio.sleep(rng.uniform(0.5, 2 * FAULT_EVERY - 0.5))
        if time.monotonic() - last_beyond > BEYOND_CAP_EVERY:
            kind, last_beyond = "beyond_cap", time.monotonic()
        else:
            kind = rng.choice([f for f in FAULTS if f != "beyond_cap"])
        engine.fault(kind)
        result.faults += 1


async def changes(workload: Workload) -> None:
    while True:
        workload.step()
        workload.engine.requests.clear()  # the harness's log of requests, unneeded here
        await asyncio.sleep(workload.rng.uniform(0.05, 0.5))


# -- hostile clients


async def _connect(port: int, *, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=4096)


def _auth_header(user: str = USER, password: str = PASSWORD) -> str:
    return f"Authorization: {aiohttp.encode_basic_auth(user, password)}\r\n"


async def _pipeline(port: int, rng: random.Random) -> None:
    """Many /metrics requests in one write, never read, held open a while."""
    _, writer = await _connect(port, rcvbuf=4096)
    request = f"GET /metrics HTTP/1.1\r\nHost: soak\r\n{_auth_header()}\r\n"
    writer.write(request.encode() * rng.randint(20, 200))
    await asyncio.sleep(rng.uniform(1, 8))
    writer.close()


async def _slow_reader(port: int, rng: random.Random) -> None:
    """A /metrics answer read a few bytes at a time."""
    reader, writer = await _connect(port, rcvbuf=4096)
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: soak\r\n{_auth_header()}Connection: close\r\n\r\n".encode())
    for _ in range(rng.randint(5, 40)):
        if not await reader.read(16):
            break
        await asyncio.sleep(0.25)
    writer.close()


async def _garbage(port: int, rng: random.Random) -> None:
    """Binary bytes, a broken request line, or an absurd method and path."""
    reader, writer = await _connect(port)
    writer.write(rng.choice([
        bytes(rng.randrange(256) for _ in range(rng.randint(1, 8192))),
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"BREW /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/v1/deployments HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]))  # fmt: skip
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(65536), 2)
    writer.close()


async def _huge_headers(port: int, rng: random.Random) -> None:
    """One header of 100 KB, or thousands of them."""
    reader, writer = await _connect(port)
    if rng.random() < 0.5:
        headers = "X-Big: " + "h" * 100_000 + "\r\n"
    else:
        headers = "".join(f"X-{i}: {i}\r\n" for i in range(5000))
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: soak\r\n{headers}\r\n".encode())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(65536), 2)
    writer.close()


async def _wrong_auth(port: int, rng: random.Random) -> None:
    """Wrong passwords for the real user and for unknown ones, as fast as they are answered."""
    async with aiohttp.ClientSession() as http:
        for _ in range(rng.randint(5, 30)):
            user = rng.choice([USER, "nobody", "admin"])
            wrong = {"Authorization": aiohttp.encode_basic_auth(user, rng.choice(["wrong", "", "x" * 1000]))}
            async with http.get(f"http://127.0.0.1:{port}/metrics", headers=wrong) as response:
                await response.read()


async def _stalled_sse(port: int, rng: random.Random) -> None:
    """An event stream client that reads the headers and then stops reading."""
    reader, writer = await _connect(port, rcvbuf=4096)
    writer.write(f"GET /api/v1/events HTTP/1.1\r\nHost: soak\r\n{_auth_header()}\r\n".encode())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await asyncio.sleep(rng.uniform(5, 30))
    writer.close()


async def _half_open(port: int, rng: random.Random) -> None:
    """Half a request, then nothing (or our side shut for writing), held open."""
    _, writer = await _connect(port)
    writer.write(b"GET /metr")
    if rng.random() < 0.5:
        writer.write_eof()
    await asyncio.sleep(rng.uniform(2, 20))
    writer.close()


async def _stream_flood(port: int, rng: random.Random) -> None:
    """Event streams from several addresses, far beyond the caps (more than the descriptor limit),
    held open a while: the ones beyond get 503 and are closed, the others stay."""
    loop = asyncio.get_running_loop()
    request = f"GET /api/v1/events HTTP/1.1\r\nHost: soak\r\n{_auth_header()}\r\n".encode()
    held: list[socket.socket] = []
    try:
        for _ in range(rng.randint(OPEN_FILES, 2 * OPEN_FILES)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((rng.choice(FLOOD_ADDRESSES), 0))
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, request)
        await asyncio.sleep(rng.uniform(2, 10))
    finally:
        for sock in held:
            sock.close()


HOSTILE: dict[str, tuple[Callable[[int, random.Random], Awaitable[None]], int]] = {
    # kind: (client, how many at once)
    "pipeline": (_pipeline, 3),
    "slow_reader": (_slow_reader, 2),
    "garbage": (_garbage, 1),
    "huge_headers": (_huge_headers, 1),
    "wrong_auth": (_wrong_auth, 2),
    "stalled_sse": (_stalled_sse, 4),
    "half_open": (_half_open, 3),
    "stream_flood": (_stream_flood, 1),
}


async def hostile_client(kind: str, port: int, rng: random.Random, result: Result) -> None:
    client = HOSTILE[kind][0]
    while True:
        result.hostile[kind] = result.hostile.get(kind, 0) + 1
        with contextlib.suppress(OSError, aiohttp.ClientError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await client(port, rng)
        await asyncio.sleep(rng.uniform(0.05, 0.5))


# -- deploy tooling with a clock hours ahead


async def skewed_reports(port: int, rng: random.Random, result: Result) -> None:
    """Rollouts reported in progress with a start (sometimes a commit time) hours ahead, then their
    success; the next version, reported with true times, must start a new rollout: a time refused
    as skew never freezes a deployment (202 "stale") nor fails it."""
    url = f"http://127.0.0.1:{port}{REPORTS_PATH}"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    versions = dict.fromkeys(REPORT_NAMES, 0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def report(name: str, version: int, status: str, **times: float) -> None:
            body = {"deployment": name, "environment": REPORT_ENVIRONMENT, "version": f"1.0.{version}",
                    "status": status, **times}  # fmt: skip
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):  # a refused connection: the flood
                async with http.post(url, json=body, headers=headers) as response:
                    answer = await response.json(content_type=None)
                    expected = 201 if status == "in_progress" else 200
                    if response.status != expected or answer.get("rollout", {}).get("status") != status:
                        what = f"{name} 1.0.{version} {status} {sorted(times)}"
                        result.skew_problems.append(f"{what}: {response.status} {answer.get('message', answer)}")

        while True:
            name = rng.choice(REPORT_NAMES)
            versions[name] += 1
            now = time.time()
            ahead = {"started_at": now + SKEW_SECONDS}
            if rng.random() < 0.5:
                ahead["commit_time"] = now + SKEW_SECONDS / 2
            await report(name, versions[name], "in_progress", **ahead)
            await report(name, versions[name], "success", **ahead)
            result.skewed_reports += 1
            versions[name] += 1
            await report(name, versions[name], "in_progress", started_at=time.time())
            await asyncio.sleep(rng.uniform(0.2, 1.0))


# -- the run


async def soak(
    seconds: float, *, seed: int = 0, warmup_seconds: float | None = None, rss_tolerance: float = RSS_TOLERANCE
) -> Result:
    """Faults, changes and hostile clients for ``seconds``; then the checks of the end. RSS is
    compared from the first sample after the warm-up (a minute, or a quarter of a shorter run):
    before it the heap grows to its working size (the first huge event lines, caches filled)."""
    warmup = min(60.0, seconds / 4) if warmup_seconds is None else warmup_seconds
    result = Result(seconds=seconds, warmup_seconds=warmup, rss_tolerance=rss_tolerance)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        tmp = Path(directory)
        web_config = tmp / "web.yml"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        web_config.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
        engine = HostileEngine(tmp / "engine.sock", seed=seed)
        await engine.start()
        workload = Workload(engine, rng)
        for name in NAMES:  # something to follow from the start
            workload.versions[name] = 1
            engine.run(f"{name}-1-0", labels=workload.labels(name))
        soaked = await start_watcher(tmp, "soaked", engine.path, web_config=web_config, limited=True)
        clean: Watcher | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks.append(asyncio.create_task(faults(engine, rng, result)))
            tasks.append(asyncio.create_task(changes(workload)))
            tasks.append(asyncio.create_task(skewed_reports(soaked.port, rng, result)))
            for kind, (_, count) in HOSTILE.items():
                tasks += [asyncio.create_task(hostile_client(kind, soaked.port, rng, result)) for _ in range(count)]
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                await _checks(http, soaked, result, seconds=seconds, warmup=warmup, tasks=tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                tasks.clear()
                result.changes = workload.changes
                if not result.exited:
                    clean = await _end(http, engine, soaked, tmp, result)
                    result.exited = result.exited or soaked.exited()
                if not result.exited:
                    await _hang_up(http, soaked, tmp, result)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await soaked.stop()
            if clean is not None:
                await clean.stop()
            await engine.close()
            result.descriptor_errors = soaked.log.read_text(errors="replace").count("Too many open files")
            if not result.passed:
                result.log_tail = soaked.log.read_text(errors="replace").splitlines()[-40:]
    return result


async def _checks(
    http: aiohttp.ClientSession, soaked: Watcher, result: Result, *, seconds: float, warmup: float,
    tasks: list[asyncio.Task[None]],
) -> None:  # fmt: skip
    """Every CHECK_EVERY seconds until the end: alive, /metrics parses, RSS sampled."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(CHECK_EVERY)
        elapsed = time.monotonic() - started
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"the soak's own task failed: {task.exception()!r}")
        result.exited = soaked.exited()
        if result.exited:
            return
        result.checks += 1
        began = time.monotonic()
        try:
            await scrape(http, soaked)
        except Exception as error:  # any failure of a scrape is a finding, reported
            result.scrape_failures.append(f"at {elapsed:.0f} s: {error!r}")
        result.scrape_max_seconds = max(result.scrape_max_seconds, time.monotonic() - began)
        rss = rss_bytes(soaked.process.pid)
        if elapsed >= warmup and not result.rss_start:
            result.rss_start = rss
        result.rss_max = max(result.rss_max, rss)
        result.rss_samples.append((elapsed, rss))


async def _end(
    http: aiohttp.ClientSession, engine: HostileEngine, soaked: Watcher, tmp: Path, result: Result
) -> Watcher:
    """Faults off, one reconnect and resync awaited, then compared with a clean watcher's state."""
    engine.calm()
    before = (await scrape(http, soaked))["deployment_watcher_resyncs_total"]
    engine.fault("close_streams")  # the reconnect: the soaked watcher must find it all again

    async def resynced() -> bool:
        samples = await scrape(http, soaked)
        return samples["deployment_watcher_resyncs_total"] > before and samples["deployment_watcher_docker_up"] == 1

    await _until(resynced, soaked, timeout=30, what="the soaked watcher reconnected and resynced")
    clean = await start_watcher(tmp, "clean", engine.path, web_config=None)
    began = time.monotonic()
    found: list[str] = []
    while time.monotonic() - began < 30:
        result.exited = soaked.exited()
        if result.exited:
            return clean
        ours, theirs = await view(http, soaked), await view(http, clean)
        found = differences(ours, theirs)
        if not found:
            result.deployments, result.containers = len(ours), sum(len(v["members"]) for v in ours.values())
            break
        await asyncio.sleep(0.5)
    result.settled_seconds = time.monotonic() - began
    result.compared, result.differences = True, found
    samples = await scrape(http, soaked)
    result.resyncs = samples["deployment_watcher_resyncs_total"]
    prefix = "deployment_watcher_docker_errors_total,kind="
    result.docker_errors = {k.removeprefix(prefix): v for k, v in samples.items() if k.startswith(prefix)}
    result.skew_counted = sum(v for k, v in samples.items() if k.startswith("deployment_watcher_clock_skew_total"))
    result.rss_end = rss_bytes(soaked.process.pid)
    result.rss_max = max(result.rss_max, result.rss_end)
    if not result.rss_start:  # a run shorter than its warm-up
        result.rss_start = result.rss_end
    return clean


async def _hang_up(http: aiohttp.ClientSession, soaked: Watcher, tmp: Path, result: Result) -> None:
    """SIGHUP, as a closed terminal or a "reload" sends it: a clean stop (exit 0) whose final save
    holds every deployment the watcher showed a moment before."""
    shown = await view(http, soaked)
    soaked.process.send_signal(signal.SIGHUP)
    try:
        code = await asyncio.wait_for(soaked.process.wait(), 15)
    except TimeoutError:
        result.hangup_problem = "still running 15 s later"
        return
    result.hung_up = True
    if code != 0:
        result.hangup_problem = f"exit code {code}"
        return
    saved = codec.decode((tmp / "soaked-state" / statefile.FILE_NAME).read_bytes())
    missing = [f"{env}/{name}" for env, name in sorted(shown) if DeploymentKey(name, env) not in saved.deployments]
    if missing:
        result.hangup_problem = f"not in the final save: {', '.join(missing)}"


async def _until(check: Callable[[], Awaitable[bool]], soaked: Watcher, *, timeout: float, what: str) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if soaked.exited():
            return
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
            if await check():
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"not within {timeout} s: {what}")


def run(minutes: float, *, seed: int = 0) -> int:
    """The benchmark's entry: prints the summary, returns the exit status (1 on FAIL)."""
    # The fake engine writing to a stream the watcher dropped: expected here, not worth a traceback.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    print(f"soak: {minutes} min, seed {seed}, pid {os.getpid()}", flush=True)
    result = asyncio.run(soak(minutes * 60, seed=seed))
    result.print()
    return 0 if result.passed else 1
