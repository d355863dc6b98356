"""Many clients on a watcher's event stream at once: how long a change takes to reach all of them.
Used by the integration test of the stream and by the benchmark."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiohttp


def caps_for(clients: int) -> tuple[str, str]:
    """A watcher's flags to take ``clients`` stream clients from one address (by default it takes 256,
    32 from one address; these fan-outs all come from 127.0.0.1). Its descriptor limit must allow them."""
    return f"--web.max-stream-clients={clients + 8}", f"--web.max-stream-clients-per-address={clients + 8}"


async def fan_out(url: str, clients: int, changes: Sequence[Callable[[], object]]) -> list[list[float]]:
    """``clients`` streams open at once; then each of ``changes`` (each starting a rollout) in turn.
    For each change, the seconds from it until each client had it."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        responses = await asyncio.gather(*(session.get(url + "/api/v1/events") for _ in range(clients)))
        try:
            ready = [await r.content.readline() for r in responses]  # the retry line: each stream is open
            assert all(line.startswith(b"retry:") for line in ready), "a stream did not open"
            rounds = []
            for change in changes:
                waiting = [asyncio.create_task(_next_event(r)) for r in responses]
                await asyncio.sleep(0.2)  # every client waiting
                start = time.monotonic()
                await asyncio.to_thread(change)
                rounds.append([arrived - start for arrived in await asyncio.gather(*waiting)])
            return rounds
        finally:
            for response in responses:
                response.close()


async def _next_event(response: aiohttp.ClientResponse) -> float:
    """When the data of the next ``rollout_started`` arrived (each change starts one rollout; a report
    of a success makes a second event, which the next round skips)."""
    started = False
    async for line in response.content:
        if line.startswith(b"event: "):
            started = line.strip() == b"event: rollout_started"
        elif started and line.startswith(b"data: "):
            return time.monotonic()
    raise AssertionError("the stream ended before an event")
