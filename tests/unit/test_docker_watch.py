"""The event pipeline: each container's work in order, containers concurrently."""

from __future__ import annotations

import asyncio

from watcher.docker_watch import _PerContainer


async def test_jobs_of_one_container_run_in_order_and_others_do_not_wait() -> None:
    """A slow job holds back later jobs of its container only."""
    done: list[str] = []
    release = asyncio.Event()

    async def job(name: str, *, wait: bool = False) -> None:
        if wait:
            await release.wait()
        done.append(name)

    async with asyncio.TaskGroup() as group:
        work = _PerContainer(group)
        work.add("a", job("a1", wait=True))
        work.add("a", job("a2"))
        work.add("b", job("b1"))
        assert work.busy("a") and work.busy("b")
        while "b1" not in done:
            await asyncio.sleep(0)
        assert done == ["b1"]  # b did not wait for a's slow inspect
        release.set()
    assert done == ["b1", "a1", "a2"]
    assert not work.busy("a") and not work.busy("b")


async def test_a_failing_job_ends_the_group_and_closes_waiting_jobs() -> None:
    """A job's error (a lost connection) cancels the rest; jobs never started are closed, not leaked."""
    started: list[str] = []

    async def fails() -> None:
        raise ConnectionResetError("gone")

    async def never() -> None:
        started.append("never")

    blocker = asyncio.Event()

    async def blocks() -> None:
        await blocker.wait()

    try:
        async with asyncio.TaskGroup() as group:
            work = _PerContainer(group)
            work.add("a", blocks())
            work.add("a", never())
            work.add("b", fails())
    except* ConnectionResetError:
        pass
    else:
        raise AssertionError("the group did not fail")
    assert started == []
