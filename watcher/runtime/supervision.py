"""Root tasks: started named, watched until one ends (it crashed) or the stop, ended for sure.

None of them ends on what the outside world does: the sources turn every failure of the engine
into an ``EngineError`` and retry (``watcher.sources.reconnect``), the state saver retries a
failed save, the HTTP server answers each request on its own. So a root task that ends has met a
bug in the watcher: it is logged with the task's name, the others are stopped, the final save is
made, and the process exits with the error (``start``, ``raise_crashes``) for the supervisor
(Docker's restart policy, systemd) to restart it from the state file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, NoReturn

log = logging.getLogger(__name__)

RECANCEL_SECONDS = 1.0  # a root task still running this long after its cancellation gets another


def start(coroutines: dict[str, Coroutine[Any, Any, NoReturn]]) -> list[asyncio.Task[None]]:
    """The root tasks, named: a crash is logged with the name, and so is a task that does not stop."""

    async def watch(name: str, coroutine: Coroutine[Any, Any, NoReturn]) -> None:
        try:
            await coroutine
        except Exception:
            log.exception("root task %r crashed; stopping the watcher", name)
            raise

    return [asyncio.create_task(watch(name, coroutine), name=name) for name, coroutine in coroutines.items()]


async def until_stopped(roots: list[asyncio.Task[None]], *, stop: asyncio.Event) -> None:
    """Until ``stop`` is set or a root task ends (they never should: it crashed)."""
    stopped = asyncio.create_task(stop.wait(), name="until stopped")
    try:
        await asyncio.wait([stopped, *roots], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()


async def ended(roots: list[asyncio.Task[None]]) -> None:
    """Until the cancelled root tasks have ended.

    One still running RECANCEL_SECONDS after its cancellation is cancelled again: a cancellation
    can be lost (Python 3.11's asyncio.wait_for drops one that arrives in the same instant as
    the result it waits for; the watcher's own loops use asyncio.timeout, libraries may not),
    and the task then carries on as if never told to stop.
    """
    pending = {task for task in roots if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
        for task in pending:
            log.warning("root task %r still running after its cancellation; cancelling it again", task.get_name())
            task.cancel()


def raise_crashes(roots: list[asyncio.Task[None]]) -> None:
    errors = [error for task in roots if not task.cancelled() and (error := task.exception()) is not None]
    if errors:
        raise BaseExceptionGroup("root tasks crashed", errors)
