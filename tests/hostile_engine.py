"""A fake Docker Engine on a unix socket that misbehaves on command (or at random).

It answers what the watcher asks a daemon, in the shapes Docker 20.10 gives (minimal but
valid): ``/_ping``, ``/version``, ``/info``, ``/containers/json``, ``/containers/{id}/json``,
``/containers/{id}/stats`` and ``/events`` (live, or replayed between ``since`` and ``until``),
each with or without an API version prefix. Containers live in ``containers``; ``run``,
``stop``, ``remove``, ``health`` and ``exec`` change them and send the events a daemon sends.

Faults (``FAULTS``), one at a time on command or drawn at random with ``chaos``:

- ``huge_line``: an event line of megabytes (an untracked container's huge label)
- ``beyond_cap``: an event line longer than any reader should hold (``BEYOND_CAP`` bytes)
- ``invalid_json``: a line that is not JSON; ``not_an_object``: JSON that is not an object
- ``garbage``: binary bytes, newline-free, in the event stream
- ``truncated``: half an event, then the stream closes (a close in the middle of an event)
- ``drip``: an event a few bytes at a time, slowly
- ``ghost``: events of a container that does not exist (create, start, die, destroy)
- ``error_500``: the next requests answer 500 (a JSON message, or garbage under a JSON content type)
- ``garbage_body``: the next requests answer 200 with a body that is not what was asked for
  (and could not pass for it)
- ``hang``: the next requests are held past any sane timeout (then answered)
- ``close_streams``: every event stream closes between events
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import random
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

API_VERSION = "1.41"
HISTORY = 256  # events a daemon keeps for `since`
BEYOND_CAP = 17 * 1024 * 1024  # more than the watcher's hard cap on one event line
HANG_SECONDS = 30.0
FAULTS = (
    "huge_line",
    "beyond_cap",
    "invalid_json",
    "not_an_object",
    "garbage",
    "truncated",
    "drip",
    "ghost",
    "error_500",
    "garbage_body",
    "hang",
    "close_streams",
)
_VERSIONED = re.compile(r"/v[0-9]+\.[0-9]+(/.*)")
_CONTAINER = re.compile(r"/containers/([^/]+)/(json|stats)")


def rfc3339(micros: int) -> str:
    """Docker's time format, with nanoseconds and ``Z``."""
    seconds, rest = divmod(micros, 1_000_000)
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{rest:06d}000Z"


@dataclass
class FakeContainer:
    id: str
    name: str
    image: str
    labels: dict[str, str]
    created: int  # microseconds since the epoch, as every time here
    healthcheck: bool = False
    running: bool = False
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    health: str = ""  # "", "starting", "healthy", "unhealthy"

    def summary(self) -> dict[str, Any]:
        """As ``/containers/json`` lists it."""
        return {
            "Id": self.id,
            "Names": [f"/{self.name}"],
            "Image": self.image,
            "ImageID": image_id(self.image),
            "Command": "sleep 600",
            "Created": self.created // 1_000_000,
            "Labels": dict(self.labels),
            "State": "running" if self.running else ("exited" if self.started_at else "created"),
            "Status": "Up" if self.running else "Exited",
        }

    def inspect(self) -> dict[str, Any]:
        """As ``/containers/{id}/json`` answers."""
        status = "running" if self.running else ("exited" if self.started_at else "created")
        state: dict[str, Any] = {
            "Status": status,
            "Running": self.running,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": 4242 if self.running else 0,
            "ExitCode": self.exit_code,
            "Error": "",
            "StartedAt": rfc3339(self.started_at) if self.started_at else "0001-01-01T00:00:00Z",
            "FinishedAt": rfc3339(self.finished_at) if self.finished_at else "0001-01-01T00:00:00Z",
        }
        if self.healthcheck:
            state["Health"] = {"Status": self.health or "starting", "FailingStreak": 0, "Log": []}
        config: dict[str, Any] = {"Hostname": self.id[:12], "Image": self.image, "Labels": dict(self.labels)}
        if self.healthcheck:
            config["Healthcheck"] = {"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000}
        return {
            "Id": self.id,
            "Created": rfc3339(self.created),
            "Path": "sleep",
            "Args": ["600"],
            "State": state,
            "Image": image_id(self.image),
            "Name": f"/{self.name}",
            "RestartCount": 0,
            "HostConfig": {"CgroupParent": "", "RestartPolicy": {"Name": "no"}},
            "Config": config,
        }


def image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


@dataclass(eq=False)
class _Stream:
    """One live ``/events`` reader: what to write to it, in order."""

    queue: asyncio.Queue[bytes | str] = field(default_factory=asyncio.Queue)  # str: a command


class HostileEngine:
    """A fake daemon serving on ``path`` (``await start()``, ``await close()``), on the caller's loop."""

    def __init__(self, path: Path, *, seed: int = 0) -> None:
        self.path = path
        self.containers: dict[str, FakeContainer] = {}
        self.requests: list[str] = []  # paths asked, without the version prefix
        self._history: deque[tuple[int, bytes]] = deque(maxlen=HISTORY)
        self._streams: set[_Stream] = set()
        self._failing: list[str] = []  # faults for the next requests, one each
        self._chaos = 0.0  # probability of a random fault per request and per event
        self._rng = random.Random(seed)
        self._clock = 0  # the newest time handed out, microseconds
        self._serial = 0
        self._runner: web.AppRunner | None = None
        self._held: set[asyncio.Task[Any]] = set()

    # -- life

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()

    async def close(self) -> None:
        """Stop serving: connections closed, socket file gone."""
        for stream in list(self._streams):
            stream.queue.put_nowait("close")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.path.unlink(missing_ok=True)

    # -- the daemon's side: containers and their events

    def now(self) -> int:
        """The daemon's clock in microseconds, strictly increasing."""
        self._clock = max(self._clock + 1, int(time.time() * 1_000_000))
        return self._clock

    def run(
        self,
        name: str,
        *,
        labels: Mapping[str, str],
        image: str = "busybox:latest",
        healthcheck: bool = False,
        start: bool = True,
    ) -> str:
        """``docker run``: created (and started), with its events."""
        self._serial += 1
        container_id = hashlib.sha256(f"{name}-{self._serial}".encode()).hexdigest()
        made = FakeContainer(container_id, name, image, dict(labels), self.now(), healthcheck=healthcheck)
        self.containers[container_id] = made
        self._event(made, "create", at=made.created)
        if start:
            self.start_container(container_id)
        return container_id

    def start_container(self, container_id: str) -> None:
        made = self.containers[container_id]
        made.running, made.started_at, made.finished_at, made.exit_code = True, self.now(), 0, 0
        made.health = "starting" if made.healthcheck else ""
        self._event(made, "start", at=made.started_at)

    def stop(self, container_id: str, *, exit_code: int = 143, signal: str = "15") -> None:
        """``docker stop``: a kill with ``signal``, then the exit."""
        made = self.containers[container_id]
        if not made.running:
            return
        self._event(made, "kill", at=self.now(), signal=signal)
        made.running, made.finished_at, made.exit_code = False, self.now(), exit_code
        self._event(made, "die", at=made.finished_at, exitCode=str(exit_code))

    def crash(self, container_id: str, *, exit_code: int = 1) -> None:
        """The process exits on its own."""
        made = self.containers[container_id]
        if not made.running:
            return
        made.running, made.finished_at, made.exit_code = False, self.now(), exit_code
        self._event(made, "die", at=made.finished_at, exitCode=str(exit_code))

    def remove(self, container_id: str) -> None:
        """``docker rm -f``."""
        made = self.containers[container_id]
        if made.running:
            self.stop(container_id, exit_code=137, signal="9")
        del self.containers[container_id]
        self._event(made, "destroy", at=self.now())

    def health(self, container_id: str, status: str) -> None:
        made = self.containers[container_id]
        if not (made.running and made.healthcheck):
            return
        made.health = status
        self._event(made, f"health_status: {status}", at=self.now())

    def exec(self, container_id: str, command: list[str]) -> None:
        """``docker exec``: its events carry the command, whatever its length."""
        made = self.containers[container_id]
        exec_id = hashlib.sha256(f"exec-{self.now()}".encode()).hexdigest()
        line = " ".join(command)
        self._event(made, f"exec_create: {line}", at=self.now(), execID=exec_id)
        self._event(made, f"exec_start: {line}", at=self.now(), execID=exec_id)
        self._event(made, "exec_die", at=self.now(), execID=exec_id, exitCode="0")

    # -- faults

    def fault(self, kind: str) -> None:
        """Misbehave once in the way ``kind`` (one of FAULTS) says."""
        match kind:
            case "huge_line":
                self._ghost_event("create", labels={"huge": "x" * self._rng.randint(600_000, 3_000_000)})
            case "beyond_cap":
                self._ghost_event("create", labels={"huge": "x" * BEYOND_CAP})
            case "invalid_json":
                self._broadcast(b'{"Type": "container", "Action": "start", "Actor": {\n')
            case "not_an_object":
                self._broadcast(self._rng.choice([b"[1, 2, 3]\n", b'"start"\n', b"null\n", b"42\n"]))
            case "garbage":
                self._broadcast(bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 4096))))
            case "truncated":
                line = self._line(self._ghost("start"))
                for stream in self._streams:
                    stream.queue.put_nowait(line[: len(line) // 2])
                    stream.queue.put_nowait("close")
            case "drip":
                for stream in self._streams:
                    stream.queue.put_nowait("drip")
                self._ghost_event("create")
            case "ghost":
                for action in ("create", "start", "die", "destroy"):
                    self._ghost_event(action)
            case "error_500" | "garbage_body" | "hang":
                self._failing.extend([kind] * self._rng.randint(1, 3))
            case "close_streams":
                for stream in self._streams:
                    stream.queue.put_nowait("close")
            case _:
                raise ValueError(f"no such fault: {kind}")

    def chaos(self, probability: float) -> None:
        """From now on, each request and each event misbehaves with this probability (0: never)."""
        self._chaos = probability

    def calm(self) -> None:
        """No more faults: chaos off, pending request faults dropped, held requests answered."""
        self._chaos = 0.0
        self._failing.clear()
        for task in self._held:
            task.cancel()

    # -- events

    def _event(self, made: FakeContainer, action: str, *, at: int, **extra: str) -> None:
        attributes = {**made.labels, "image": made.image, "name": made.name, **extra}
        event = {
            "status": action,
            "id": made.id,
            "from": made.image,
            "Type": "container",
            "Action": action,
            "Actor": {"ID": made.id, "Attributes": attributes},
            "scope": "local",
            "time": at // 1_000_000,
            "timeNano": at * 1000,
        }
        line = self._line(event)
        self._history.append((at, line))
        if self._chaos and self._rng.random() < self._chaos:
            self.fault(self._rng.choice([f for f in FAULTS if f not in ("hang", "beyond_cap")]))
        self._broadcast(line)

    def _ghost(self, action: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """An event of a container that does not exist (nor ever will)."""
        at = self.now()
        ghost = hashlib.sha256(f"ghost-{at}".encode()).hexdigest()
        attributes = {**(labels or {}), "image": "busybox", "name": f"ghost-{ghost[:6]}", "exitCode": "0"}
        return {
            "status": action,
            "id": ghost,
            "Type": "container",
            "Action": action,
            "Actor": {"ID": ghost, "Attributes": attributes},
            "scope": "local",
            "time": at // 1_000_000,
            "timeNano": at * 1000,
        }

    def _ghost_event(self, action: str, *, labels: Mapping[str, str] | None = None) -> None:
        event = self._ghost(action, labels=labels)
        line = self._line(event)
        self._history.append((event["timeNano"] // 1000, line))
        self._broadcast(line)

    @staticmethod
    def _line(event: Mapping[str, Any]) -> bytes:
        return json.dumps(event).encode() + b"\n"

    def _broadcast(self, data: bytes) -> None:
        for stream in self._streams:
            stream.queue.put_nowait(data)

    # -- HTTP

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if versioned := _VERSIONED.fullmatch(path):
            path = versioned.group(1)
        self.requests.append(path)
        fault = self._next_fault()
        if fault == "hang":
            await self._hold()
        elif fault == "error_500":
            if self._rng.random() < 0.5:
                return web.json_response({"message": "fake daemon: internal error"}, status=500)
            return web.Response(status=500, body=b"\x00\xffnot json", content_type="application/json")
        elif fault == "garbage_body":
            return web.Response(status=200, body=self._garbage_body(), content_type="application/json")
        if path == "/events":
            return await self._events(request)
        return self._answer(request, path)

    def _next_fault(self) -> str | None:
        if self._failing:
            return self._failing.pop(0)
        if self._chaos and self._rng.random() < self._chaos:
            return self._rng.choice(["error_500", "garbage_body"])
        return None

    async def _hold(self) -> None:
        task = asyncio.ensure_future(asyncio.sleep(HANG_SECONDS))
        self._held.add(task)
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the request itself was cancelled
        finally:
            self._held.discard(task)

    def _garbage_body(self) -> bytes:
        """Wrong for any request; never ``[]`` or ``{}``, which some requests could mean: a daemon
        lying that plausibly (no containers) cannot be caught by any client."""
        return self._rng.choice(
            [b"null", b'"text"', b"[1, {}]", b'{"Id": 5}', b"<html>proxy error</html>", b"\xff\xfe", b"[[]]"]
        )

    def _answer(self, request: web.Request, path: str) -> web.StreamResponse:
        if path == "/_ping":
            return web.Response(text="OK", headers={"Api-Version": API_VERSION, "Docker-Experimental": "false"})
        if path == "/version":
            return web.json_response(
                {"Version": "20.10.99-hostile", "ApiVersion": API_VERSION, "MinAPIVersion": "1.12", "Os": "linux",
                 "Arch": "amd64", "KernelVersion": "6.0.0"}
            )  # fmt: skip
        if path == "/info":
            return web.json_response(
                {"ID": "HOST:ILE", "Containers": len(self.containers), "SystemTime": rfc3339(self.now()),
                 "CgroupDriver": "cgroupfs", "CgroupVersion": "2", "ServerVersion": "20.10.99-hostile"}
            )  # fmt: skip
        if path == "/containers/json":
            wanted = _label_filter(request.query.get("filters", ""))
            listed = [c.summary() for c in self.containers.values() if _matches(c.labels, wanted)]
            return web.json_response(listed)
        if found := _CONTAINER.fullmatch(path):
            made = self.containers.get(found.group(1))
            if made is None:
                return web.json_response({"message": f"No such container: {found.group(1)}"}, status=404)
            if found.group(2) == "json":
                return web.json_response(made.inspect())
            return web.json_response(_stats(made))
        return web.json_response({"message": "page not found"}, status=404)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        since = _micros(request.query.get("since"))
        until = _micros(request.query.get("until"))
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Api-Version": API_VERSION})
        response.enable_chunked_encoding()
        await response.prepare(request)
        past = [line for at, line in self._history if (since is None or at > since) and (until is None or at <= until)]
        if until is not None:
            for line in past:
                await response.write(line)
            await response.write_eof()
            return response
        # Subscribed before the replay, as a daemon does: what happens meanwhile follows it.
        stream = _Stream()
        for line in past:
            stream.queue.put_nowait(line)
        self._streams.add(stream)
        drip = False
        try:
            while True:
                item = await stream.queue.get()
                if item == "close":
                    break
                if item == "drip":
                    drip = True
                    continue
                assert isinstance(item, bytes)
                if drip:
                    drip = False
                    for start in range(0, len(item), 7):
                        await response.write(item[start : start + 7])
                        await asyncio.sleep(0.002)
                else:
                    await response.write(item)
        finally:
            self._streams.discard(stream)
        # A close in the middle: no final chunk, the connection just ends.
        if request.transport is not None:
            request.transport.close()
        return response


def _micros(text: str | None) -> int | None:
    """``since``/``until`` as Docker takes them: unix seconds, with a fraction."""
    if not text:
        return None
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _label_filter(text: str) -> list[str]:
    try:
        filters = json.loads(text) if text else {}
    except ValueError:
        return []
    labels = filters.get("label", []) if isinstance(filters, dict) else []
    return list(labels) if isinstance(labels, list | dict) else []


def _matches(labels: Mapping[str, str], wanted: list[str]) -> bool:
    for condition in wanted:
        key, has_value, value = condition.partition("=")
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


def _stats(made: FakeContainer) -> dict[str, Any]:
    if not made.running:
        return {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {}}
    busy = (time.time_ns() // 1000 - made.started_at) * 10  # a tenth of a CPU
    return {
        "read": rfc3339(int(time.time() * 1_000_000)),
        "cpu_stats": {"cpu_usage": {"total_usage": busy}, "online_cpus": 2},
        "memory_stats": {"usage": 8_000_000, "limit": 1 << 30, "stats": {"inactive_file": 1_000_000}},
    }
