"""The event stream in process: events in order with ids, replay after Last-Event-ID, resync,
filters, slow clients dropped, streams ended at shutdown."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from hypothesis import given
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient

from tests.polling import poll_async
from tests.unit.builders import API, reported, started
from tests.unit.readside import NOW, read_side
from watcher.domain.model import DeploymentKey, Health
from watcher.domain.observations import InstanceGone, InstanceHealth, Tick
from watcher.web.stream import SWEEP_SLICE, EventStream, _Client
from watcher.wire import StreamEvent

WEB = DeploymentKey("web", "staging")


async def frames(response: ClientResponse) -> AsyncIterator[dict[str, str]]:
    """Each SSE frame's fields (comments and the retry line skipped)."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "event" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


async def take(response: ClientResponse, count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The next ``count`` events: (id, name, data)."""
    got = []
    async with asyncio.timeout(5):
        async for frame in frames(response):
            got.append((frame["id"], frame["event"], json.loads(frame["data"])))
            if len(got) == count:
                break
    return got


async def until(what: str, check: Callable[[], bool]) -> None:
    async def checked() -> bool:
        return check()

    await poll_async(what, checked, timeout=5, interval=0.01)


async def connected(stream: EventStream, count: int) -> None:
    await until(f"{count} stream clients", lambda: stream.clients == count)


async def test_events_arrive_in_order_with_ids(aiohttp_client: AiohttpClient) -> None:
    """A rollout, its health, its verdict, a rollback, its removal, the deployment gone: in order, each with the next id."""
    app, side = read_side()
    client = await aiohttp_client(app)
    response = await client.get("/api/v1/events")
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    await connected(side.stream, 1)
    side.submit(started("a", "2.0.0", NOW, healthcheck=True), InstanceHealth(NOW + 1, "a", Health.HEALTHY))
    side.submit(
        started("b", "1.0.0", NOW + 5), Tick(NOW + 16), InstanceGone(NOW + 17, "a"), InstanceGone(NOW + 17, "b")
    )
    side.submit(Tick(NOW + 86400))
    got = await take(response, 7)
    run = side.stream.run
    assert [(i, name) for i, name, _ in got] == [
        (f"{run}.1", "rollout_started"), (f"{run}.2", "health_changed"), (f"{run}.3", "rollout_finished"),
        (f"{run}.4", "rollback_started"), (f"{run}.5", "rollout_finished"), (f"{run}.6", "deployment_removed"),
        (f"{run}.7", "deployment_gone"),
    ]  # fmt: skip
    finished = got[2][2]
    assert (finished["status"], finished["revision"], finished["name"], finished["environment"]) == (
        "success", 1, "api", "production",
    )  # fmt: skip
    assert finished["deployment"]["status"] == "success"
    assert got[1][2]["instance"] == "a" and (got[1][2]["before"], got[1][2]["health"]) == ("starting", "healthy")
    assert got[3][2]["rollback"] is True and got[3][2]["deployment"]["rollbacks"] == 1
    assert got[5][2]["deployment"]["removed"] is True and got[5][2]["reason"] == "no container of it is left"
    assert got[6][2]["deployment"] is None and got[6][2]["reason"]


async def test_reconnecting_with_last_event_id_resumes(aiohttp_client: AiohttpClient) -> None:
    """Last-Event-ID (or ?last_event_id=) replays exactly what came after it, then goes on live."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(reported("1.0.0", "in_progress", NOW))
    first = side.stream.last_id
    side.submit(reported("1.0.0", "success", NOW + 1), reported("2.0.0", "in_progress", NOW + 2))
    response = await client.get("/api/v1/events", headers={"Last-Event-ID": first})
    await connected(side.stream, 1)
    side.submit(reported("2.0.0", "failed", NOW + 3))
    got = await take(response, 3)
    assert [name for _, name, _ in got] == ["rollout_finished", "rollout_started", "rollout_finished"]
    assert got[-1][2]["status"] == "failed"
    by_query = await client.get("/api/v1/events", params={"last_event_id": got[1][0]})
    assert [name for _, name, _ in await take(by_query, 1)] == ["rollout_finished"]


async def test_an_id_too_old_or_of_another_run_gets_resync(aiohttp_client: AiohttpClient) -> None:
    """When the buffer no longer holds what came after the id, or the id is from before a restart: resync."""
    app, side = read_side(buffer_events=2)
    client = await aiohttp_client(app)
    side.submit(reported("1.0.0", "in_progress", NOW))
    old = side.stream.last_id
    for i in range(3):
        side.submit(reported(f"1.0.{i + 1}", "in_progress", NOW + i + 1))
    for last in (old, "deadbeef.1", "garbage", f"{side.stream.run}.999"):
        response = await client.get("/api/v1/events", headers={"Last-Event-ID": last})
        [(event_id, name, data)] = await take(response, 1)
        assert (event_id, name) == (side.stream.last_id, "resync"), last
        assert data["event"] == "resync"
        response.close()


@given(st.one_of(st.text(), st.from_regex(r"[0-9a-f]{8}\.[0-9\u00b2\u0660]{0,5000}", fullmatch=True)))
def test_any_last_event_id_is_read_without_raising(last: str) -> None:
    """Whatever a client sends as Last-Event-ID (``<run>.²``, thousands of digits, garbage): a list of
    frames or None (resync), never an exception; and only ids this run sent resume."""
    _, side = read_side()
    side.submit(reported("1.0.0", "in_progress", NOW))
    for candidate in (last, f"{side.stream.run}.{last}", f"{side.stream.run}.{last.partition('.')[2]}"):
        missed = side.stream.missed(candidate)
        assert missed is None or re.fullmatch(rf"{side.stream.run}\.0*[01]", candidate.strip())


async def test_a_last_event_id_that_is_no_number_gets_resync_not_500(aiohttp_client: AiohttpClient) -> None:
    """``<run>.²`` (a digit to str.isdigit, not to int) and a number of 5,000 digits: a resync event."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(reported("1.0.0", "in_progress", NOW))
    for last in (f"{side.stream.run}.\u00b2", f"{side.stream.run}." + "9" * 5000, f"{side.stream.run}.-1"):
        response = await client.get("/api/v1/events", params={"last_event_id": last})
        assert response.status == 200
        [(_, name, _)] = await take(response, 1)
        assert name == "resync", last
        response.close()


async def test_streams_beyond_the_caps_get_503_with_retry_after(aiohttp_client: AiohttpClient) -> None:
    """Beyond the clients one address may hold, and beyond all: 503 with Retry-After, the connection
    closed, counted by cap; a client that leaves makes room again."""
    app, side = read_side(max_clients=3, max_clients_per_address=2)
    client = await aiohttp_client(app)
    held = [await client.get("/api/v1/events") for _ in range(2)]
    await connected(side.stream, 2)
    refused = await client.get("/api/v1/events")
    assert refused.status == 503 and refused.headers["Retry-After"] == "10"
    assert refused.headers["Connection"] == "close"
    assert "web.max_stream_clients_per_address" in (await refused.json())["error"]
    side.stream._max_per_address = 5  # the one test client has one address: the total cap next
    held.append(await client.get("/api/v1/events"))
    await connected(side.stream, 3)
    assert (await client.get("/api/v1/events")).status == 503
    held.pop().close()
    await connected(side.stream, 2)
    held.append(await client.get("/api/v1/events"))
    assert held[-1].status == 200
    refusals = {limit: side.registry.get_sample_value("deployment_watcher_stream_refused_clients_total",
                                                      {"limit": limit}) for limit in ("address", "total")}  # fmt: skip
    assert refusals == {"address": 1, "total": 1}
    for response in held:
        response.close()


async def test_filters_by_environment_and_name(aiohttp_client: AiohttpClient) -> None:
    """?environment= and ?name= keep the events of matching deployments only."""
    app, side = read_side()
    client = await aiohttp_client(app)
    response = await client.get("/api/v1/events", params={"environment": "staging", "name": "web"})
    await connected(side.stream, 1)
    side.submit(reported("1.0.0", "in_progress", NOW), reported("3.0.0", "in_progress", NOW, key=WEB))
    [(_, name, data)] = await take(response, 1)
    assert (name, data["name"], data["environment"], data["version"]) == ("rollout_started", "web", "staging", "3.0.0")


async def test_a_client_too_far_behind_is_dropped(aiohttp_client: AiohttpClient) -> None:
    """More frames waiting in a client's buffer than its queue bound (its socket full): it is dropped (counted)
    before any write timeout, the client that reads is not."""
    app, side = read_side(queue_events=2, write_timeout=60)
    client = await aiohttp_client(app)
    reading = await client.get("/api/v1/events")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    sock.send(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        await connected(side.stream, 2)
        for i in range(20000):
            side.core.submit(reported(f"1.{i}.0", "in_progress", NOW + i))
            assert all(c.waiting <= 2 for c in side.stream._clients)
            if side.stream.clients == 1:
                break
            await asyncio.sleep(0)
        assert side.stream.clients == 1
        assert side.registry.get_sample_value("deployment_watcher_stream_dropped_clients_total") == 1
        assert (await reading.content.readuntil(b"event: ")).endswith(b"event: ")
    finally:
        sock.close()


async def test_a_client_that_stops_reading_is_dropped(aiohttp_client: AiohttpClient) -> None:
    """A socket that takes no more data: the write times out, the client is dropped and its connection
    aborted; the queue never holds more than its bound meanwhile."""
    app, side = read_side(queue_events=64, write_timeout=0.2)
    client = await aiohttp_client(app)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    sock.send(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        await connected(side.stream, 1)
        queued: list[int] = []
        for i in range(20000):
            side.core.submit(reported(f"1.{i}.0", "in_progress", NOW + i))
            queued.extend(c.waiting for c in side.stream._clients)
            if side.stream.clients == 0:
                break
            await asyncio.sleep(0)
        await until("the client dropped", lambda: side.stream.clients == 0)
        assert side.registry.get_sample_value("deployment_watcher_stream_dropped_clients_total") == 1
        assert max(queued) <= 64
    finally:
        sock.close()


async def test_a_heartbeat_keeps_a_quiet_stream_alive(aiohttp_client: AiohttpClient) -> None:
    """With no events, a comment line every heartbeat period."""
    app, side = read_side()
    side.stream._heartbeat = 0.05
    client = await aiohttp_client(app)
    response = await client.get("/api/v1/events")
    async with asyncio.timeout(5):
        lines = [await response.content.readline() for _ in range(4)]
    assert b": keepalive\n" in lines


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.closing = True


async def test_one_sweep_looks_at_every_client_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """No task per client woken every second: one sweep sends the heartbeats and ends the clients that hung
    up, handing the loop back between slices, so an event never waits behind a look at them all."""
    _, side = read_side()
    stream = side.stream
    stream._heartbeat = 0.01
    turns: list[float] = []
    sleep = asyncio.sleep

    async def counted(delay: float) -> None:
        turns.append(delay)
        await sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", counted)
    clients = [_Client(environment=None, name=None, address="a") for _ in range(2 * SWEEP_SLICE + 50)]
    transports = [FakeTransport() for _ in clients]
    for client, transport in zip(clients, transports, strict=True):
        stream._join(client)
        client.transport = transport  # type: ignore[assignment]
        stream._start(client, [])
    transports[7].closing = True  # hung up
    sweep = asyncio.create_task(stream._sweep_forever())
    await until("a heartbeat to each", lambda: all(b"keepalive" in b"".join(t.written) for t in transports[8:]))
    assert clients[7].done.is_set() and not any(c.done.is_set() for c in clients[8:])
    assert turns.count(0) >= 2  # a turn of the loop after each slice of SWEEP_SLICE (none elsewhere sleeps 0)
    await stream.close()
    await asyncio.wait([sweep], timeout=5)
    assert sweep.done()  # it ends with the stream


async def test_close_ends_every_stream(aiohttp_client: AiohttpClient) -> None:
    """At shutdown each stream ends at once (clients reconnect to the next run), not counted as dropped."""
    app, side = read_side()
    client = await aiohttp_client(app)
    responses = [await client.get("/api/v1/events") for _ in range(3)]
    await connected(side.stream, 3)
    await side.stream.close()
    async with asyncio.timeout(5):
        for response in responses:
            await response.content.read()
    await connected(side.stream, 0)
    assert side.registry.get_sample_value("deployment_watcher_stream_dropped_clients_total") == 0


def test_events_that_change_nothing_are_not_streamed() -> None:
    """A stale observation or a rejected deployment: no frame, no id used."""
    _, side = read_side()
    side.submit(started("a", "1.0.0", NOW))
    before = side.stream.last_id
    side.submit(InstanceGone(NOW - 10, "a"))  # older than what the state holds: stale
    assert side.stream.last_id == before
    assert side.core.snapshot().deployments[API].members


def test_every_event_name_is_described_and_followed() -> None:
    """The names the stream sends are the ones openapi.json lists and board.js listens for."""
    spec = json.loads((importlib.resources.files("watcher.web") / "openapi.json").read_text())
    assert spec["components"]["schemas"]["Event"]["properties"]["event"]["enum"] == list(StreamEvent)
    script = (importlib.resources.files("watcher.web") / "static" / "board.js").read_text()
    listened = re.search(r"const EVENTS = \[(.*?)\];", script, re.DOTALL)
    assert listened is not None
    assert re.findall(r'"(\w+)"', listened.group(1)) == list(StreamEvent)
