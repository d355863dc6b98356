"""Losing the Docker Engine: the watcher keeps serving, reconnects with backoff, and resyncs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Containers, WatcherProcess, start_watcher

pytestmark = pytest.mark.docker

DOCKER_SOCKET = "/var/run/docker.sock"


class SocketProxy:
    """A unix-socket forwarder to the daemon that a test can cut and restore."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self.thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        """Close every connection and stop accepting: the daemon seems gone."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()
        self.path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(DOCKER_SOCKET)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def proxy(tmp_path: Path, docker_engine: None) -> Iterator[SocketProxy]:
    made = SocketProxy(tmp_path / "docker.sock")
    made.start()
    try:
        yield made
    finally:
        made.close()


def test_reconnects_and_resyncs_after_losing_the_daemon(
    tmp_path: Path, proxy: SocketProxy, containers: Containers
) -> None:
    """While cut off: /metrics still served, /ready 503, docker_up 0; afterwards what changed is found."""
    before = containers.run(labels={"deployment.name": "reconnect-a", "deployment.version": "1"})
    watcher: WatcherProcess = start_watcher(
        tmp_path,
        "--rollout.stable-seconds=1",
        "--stats.enabled=false",
        "--docker.backoff-initial-seconds=0.2",
        "--docker.backoff-max-seconds=1",
        env={"DOCKER_HOST": f"unix://{proxy.path}"},
    )
    try:
        watcher.wait_for("synced", lambda: watcher.value("deployment_status", deployment="reconnect-a") == 1)
        proxy.cut()
        watcher.wait_for("not ready", lambda: watcher.get("/ready")[0] == 503)
        # The watcher's own metrics are re-read within exposition.max_staleness_seconds.
        watcher.wait_for("docker_up 0", lambda: watcher.value("deployment_watcher_docker_up") == 0)
        assert watcher.value("deployment_status", deployment="reconnect-a") == 1  # stale values still served
        # Changes while disconnected: one container replaced by a new version.
        containers.remove(before)
        containers.run(labels={"deployment.name": "reconnect-a", "deployment.version": "2"})
        watcher.wait_for("retrying", lambda: (watcher.value("deployment_watcher_docker_reconnects_total") or 0) >= 2)
        proxy.restore()
        watcher.wait_for("ready again", lambda: watcher.get("/ready")[0] == 200)
        watcher.wait_for("resynced", lambda: watcher.value("deployment_version", deployment="reconnect-a") == 2)
        watcher.wait_for("success", lambda: watcher.value("deployment_status", deployment="reconnect-a") == 1)
        assert watcher.value("deployment_info", deployment="reconnect-a", version="2") == 1
        assert (watcher.value("deployment_watcher_resyncs_total") or 0) >= 2
    finally:
        assert watcher.stop() == 0
