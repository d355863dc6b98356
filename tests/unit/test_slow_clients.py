"""/metrics bodies written a slice at a time: served whole, and a client that stops reading is dropped."""

from __future__ import annotations

import asyncio
import gzip
import logging

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from tests.polling import poll_async
from tests.unit.builders import app_for, scenario
from watcher.web import app as webapp
from watcher.web.app import make_app


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of 256 bytes, so the few kilobytes of the scenario's body go out in many."""
    monkeypatch.setattr(webapp, "WRITE_SLICE", 256)


@pytest.mark.parametrize("encoding", ["", "gzip"])  # "": identity
async def test_sliced_bodies_arrive_whole(aiohttp_client: AiohttpClient, encoding: str) -> None:
    """A body of many slices arrives byte for byte, with its Content-Length; HEAD gets the headers alone."""
    exposition = app_for(scenario().state)
    expected = (await exposition.page(accept="", accept_encoding=encoding)).body
    assert len(expected) > 4 * webapp.WRITE_SLICE
    client = await aiohttp_client(make_app(exposition=exposition, ready=lambda: True))
    headers = {"Accept-Encoding": encoding or "identity"}
    for _ in range(2):  # and again on the same connection
        response = await client.get("/metrics", headers=headers, auto_decompress=False)
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(expected))
        assert "Transfer-Encoding" not in response.headers
        body = await response.read()
        assert body == expected
    if encoding:
        assert gzip.decompress(body).startswith(b"# HELP ")
    head = await client.head("/metrics", headers=headers)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(expected))
    assert await head.read() == b""


async def test_a_client_that_stops_reading_is_dropped(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that pipelines more than it reads is disconnected, quietly, once a slice waits STALL_SECONDS."""
    monkeypatch.setattr(webapp, "STALL_SECONDS", 0.3)
    server = await aiohttp_server(make_app(exposition=app_for(scenario().state), ready=lambda: True))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    requests = 5000  # megabytes of answers: more than the sockets' buffers hold
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: watcher\r\n\r\n" * requests)

    async def dropped() -> bool:  # the point: the client reads nothing, until the server gives up on it
        return not server.handler.connections  # its handler has returned (an error would be logged by then)

    await poll_async("the server dropping the client", dropped, timeout=10, interval=0.02)
    received = b""
    with pytest.raises((ConnectionResetError, EOFError)):
        while True:
            chunk = await asyncio.wait_for(reader.read(1 << 20), timeout=10)
            if not chunk:
                raise EOFError
            received += chunk
    writer.close()
    assert received.count(b"HTTP/1.1 200 OK") < requests
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_client_leaving_midway_is_no_error(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up in the middle of a body ends that response quietly; the server serves on."""
    server = await aiohttp_server(make_app(exposition=app_for(scenario().state), ready=lambda: True))
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: watcher\r\n\r\n" * 200)
        await reader.readexactly(1000)
        writer.transport.abort()
    await asyncio.sleep(0.5)  # the server meets the hang-ups: nothing to poll, an error would only be logged
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: watcher\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200 OK")
    writer.close()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
